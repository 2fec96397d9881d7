//! Who is who in a Sandstorm cluster, and the mutual TLS every cluster link runs on.
//!
//! - **The cluster CA** ([`ClusterCa`]): created by the scheduler in its data directory on first
//!   start (`ca.pem`, and `ca-key.pem` readable only by its owner). It signs every certificate of
//!   the cluster; nothing else is trusted on a cluster link.
//! - **A peer** ([`Peer`]): a role (scheduler, storage node, compute node) and a name. A
//!   certificate is bound to exactly one, written as the DNS name `NAME.ROLE.sandstorm.internal`
//!   in its subject alternative names. A server's certificate is checked against the peer the
//!   client means to reach (so a storage node's certificate cannot stand in for the scheduler, or
//!   for another storage node), and a server reads its caller's peer from the client certificate
//!   ([`authorize`]). No request field is ever taken as proof of who sent it.
//! - **Credentials** ([`Credentials`]): a peer's certificate, private key and the CA, kept in an
//!   identity directory (`ca.pem`, `node.pem`, `node-key.pem`). An agent gets them once, by TLS
//!   bootstrap: it makes its key pair, presents a join token and its public key to the
//!   scheduler's cluster port, and receives a certificate; its private key never leaves it.
//!
//! The crypto is rustls (through tonic), certificates are made by rcgen and read by x509-parser;
//! nothing here implements a cryptographic primitive.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SubjectPublicKeyInfo,
};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS suffix of every peer name in a certificate (`.internal` is reserved for private use).
pub const DOMAIN: &str = "sandstorm.internal";

/// The CA's certificate and key files in the scheduler's data directory.
pub const CA_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The admin token's file in the scheduler's data directory (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The files of an identity directory.
pub const CERT_FILE: &str = "node.pem";
pub const KEY_FILE: &str = "node-key.pem";

/// How long a node certificate is valid.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest TLS handshake a server waits for (a stranger holding a connection open costs it).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What part a cluster member plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Scheduler,
    Storage,
    Compute,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Storage => "storage",
            Role::Compute => "compute",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scheduler" => Ok(Role::Scheduler),
            "storage" => Ok(Role::Storage),
            "compute" => Ok(Role::Compute),
            other => Err(IdentityError::UnknownRole(other.chars().take(40).collect())),
        }
    }
}

/// A cluster member: a role and a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub role: Role,
    pub name: String,
}

/// Why a name, a certificate or an identity directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// a node name that cannot be bound to a certificate
    #[error("invalid node name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    /// a role word this version does not know
    #[error("unknown role {0:?}: scheduler, storage or compute")]
    UnknownRole(String),
    /// the certificate could not be parsed
    #[error("the certificate is not valid X.509: {0}")]
    NotX509(String),
    /// the certificate names no peer of this cluster
    #[error(
        "the certificate names no Sandstorm peer (no subject alternative name NAME.ROLE.{DOMAIN})"
    )]
    NoPeer,
    /// the certificate names more than one peer
    #[error("the certificate names more than one Sandstorm peer")]
    SeveralPeers,
    /// a file of an identity directory could not be read or written
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// an identity directory holds some of its files but not all
    #[error("identity directory {dir} is incomplete: {missing} is missing")]
    Incomplete { dir: PathBuf, missing: &'static str },
    /// a PEM file does not hold what it should
    #[error("{what}: {why}")]
    BadPem { what: String, why: String },
    /// an address that cannot be dialled
    #[error("address {address:?}: {why}")]
    BadAddress { address: String, why: String },
    /// rcgen refused to make or sign a certificate
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Checks a node name: what a DNS label allows, lowercase (1 to 63 of `a-z`, `0-9`, `-`, not
/// starting or ending with `-`), so it can be written into a certificate unambiguously.
pub fn check_node_name(name: &str) -> Result<(), IdentityError> {
    let bad = |why| {
        Err(IdentityError::BadName {
            name: name.chars().take(80).collect(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("longer than 63 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and `-` are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it starts or ends with `-`");
    }
    Ok(())
}

impl Peer {
    /// A peer, its name checked.
    pub fn new(role: Role, name: &str) -> Result<Self, IdentityError> {
        check_node_name(name)?;
        Ok(Self {
            role,
            name: name.to_owned(),
        })
    }

    /// The scheduler (there is one per cluster).
    pub fn scheduler() -> Self {
        Self {
            role: Role::Scheduler,
            name: "scheduler".into(),
        }
    }

    /// `NAME.ROLE.sandstorm.internal`: how a certificate names this peer.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.{DOMAIN}", self.name, self.role)
    }

    /// The peer a certificate (DER) is bound to. Only the chain's check (done by TLS against the
    /// cluster CA) makes it trustworthy; this only reads it.
    pub fn of_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::NotX509(e.to_string()))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::NotX509(e.to_string()))?;
        let mut found = None;
        for name in names.iter().flat_map(|n| n.value.general_names.iter()) {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name
                && let Some(peer) = Self::of_dns_name(dns)
            {
                if found.is_some() {
                    return Err(IdentityError::SeveralPeers);
                }
                found = Some(peer);
            }
        }
        found.ok_or(IdentityError::NoPeer)
    }

    fn of_dns_name(dns: &str) -> Option<Self> {
        let rest = dns.strip_suffix(DOMAIN)?.strip_suffix('.')?;
        let (name, role) = rest.rsplit_once('.')?;
        let role = role.parse().ok()?;
        Peer::new(role, name).ok()
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} node {}", self.role, self.name)
    }
}

/// SHA-256 of a certificate (DER), hex: what the scheduler binds a node name to.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A name a server certificate is also valid for (beyond its peer name): how clients outside
/// the cluster dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltName {
    Dns(String),
    Ip(IpAddr),
}

impl FromStr for AltName {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<IpAddr>() {
            Ok(ip) => AltName::Ip(ip),
            Err(_) => AltName::Dns(s.to_owned()),
        })
    }
}

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to `path` (mode `mode`, replaced atomically: written beside and renamed).
fn write(path: &Path, text: &str, mode: u32) -> Result<(), IdentityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

fn validity(params: &mut CertificateParams, valid: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // An hour's leeway for clocks that disagree a little.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(i64::try_from(valid.as_secs()).unwrap_or(0));
}

impl ClusterCa {
    /// The CA in `dir`, created there (with a new key) if it holds none. Returns whether it was
    /// created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
        if dir.join(CA_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
            return Ok((Self::load(dir)?, false));
        }
        let (ca, key_pem) = Self::generate()?;
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write(&dir.join(CA_KEY_FILE), &key_pem, 0o600)?;
        write(&dir.join(CA_FILE), &ca.cert_pem, 0o644)?;
        Ok((ca, true))
    }

    /// A new CA kept only in memory: for tests and benchmarks that start nodes in-process.
    pub fn ephemeral() -> Result<Self, IdentityError> {
        Ok(Self::generate()?.0)
    }

    /// A new CA and its private key (PEM).
    fn generate() -> Result<(Self, String), IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Sandstorm cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok((
            Self {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    /// The CA kept in `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let cert_path = dir.join(CA_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| IdentityError::BadPem {
            what: key_path.display().to_string(),
            why: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| IdentityError::BadPem {
                what: cert_path.display().to_string(),
                why: e.to_string(),
            })?;
        Ok(Self { cert_pem, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate (PEM) for `peer`'s public key (SubjectPublicKeyInfo, DER), valid for
    /// [`NODE_VALIDITY`] as a TLS server and client, also for `also` (a server's other names).
    pub fn issue(
        &self,
        peer: &Peer,
        public_key_der: &[u8],
        also: &[AltName],
    ) -> Result<String, IdentityError> {
        let public_key = SubjectPublicKeyInfo::from_der(public_key_der)?;
        Ok(self
            .params(peer, also)?
            .signed_by(&public_key, &self.issuer)?
            .pem())
    }

    /// Credentials for `peer` with a key made here: the scheduler's own, and what an operator
    /// issues offline (`sandstorm cluster issue`).
    pub fn issue_with_key(
        &self,
        peer: &Peer,
        also: &[AltName],
    ) -> Result<Credentials, IdentityError> {
        let key = KeyPair::generate()?;
        let cert = self.params(peer, also)?.signed_by(&key, &self.issuer)?;
        Ok(Credentials {
            peer: peer.clone(),
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn params(&self, peer: &Peer, also: &[AltName]) -> Result<CertificateParams, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, peer.dns_name());
        params.distinguished_name = dn;
        let mut names = vec![SanType::DnsName(peer.dns_name().try_into()?)];
        for name in also {
            names.push(match name {
                // Another peer's name is never a server's extra name.
                AltName::Dns(dns) if dns.ends_with(DOMAIN) => {
                    return Err(IdentityError::BadName {
                        name: dns.clone(),
                        why: "names under sandstorm.internal are peer names only",
                    });
                }
                AltName::Dns(dns) => SanType::DnsName(dns.clone().try_into()?),
                AltName::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        params.subject_alt_names = names;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, NODE_VALIDITY);
        Ok(params)
    }
}

/// A new key pair for a node that will join: its private key (PEM) and its public key
/// (SubjectPublicKeyInfo, DER) to send with the join token.
pub fn new_key() -> Result<(String, Vec<u8>), IdentityError> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.subject_public_key_info()))
}

/// Whether a server asks its callers for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// It does not: callers authenticate otherwise (the scheduler's client port: bearer tokens).
    None,
    /// Every caller presents a certificate of the cluster CA, or the handshake fails.
    Required,
    /// Callers may present one; calls without are told apart by [`authorize`] (the scheduler's
    /// cluster port: `Join` comes from nodes that have none yet).
    Optional,
}

/// A peer's certificate, key and the cluster CA.
#[derive(Clone)]
pub struct Credentials {
    pub peer: Peer,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from their PEM texts; the peer is read from the certificate.
    pub fn from_pem(
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    ) -> Result<Self, IdentityError> {
        let der = first_pem_der(&cert_pem, "the certificate")?;
        let peer = Peer::of_certificate(&der)?;
        KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::BadPem {
            what: "the private key".into(),
            why: e.to_string(),
        })?;
        first_pem_der(&ca_pem, "the CA certificate")?;
        Ok(Self {
            peer,
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// The credentials kept in `dir`; `None` if it holds none of their files.
    pub fn load(dir: &Path) -> Result<Option<Self>, IdentityError> {
        let files = [CA_FILE, CERT_FILE, KEY_FILE];
        let present: Vec<bool> = files.iter().map(|f| dir.join(f).exists()).collect();
        if present.iter().all(|p| !p) {
            return Ok(None);
        }
        if let Some(i) = present.iter().position(|p| !p) {
            return Err(IdentityError::Incomplete {
                dir: dir.to_owned(),
                missing: files[i],
            });
        }
        Self::from_pem(
            read(&dir.join(CA_FILE))?,
            read(&dir.join(CERT_FILE))?,
            read(&dir.join(KEY_FILE))?,
        )
        .map(Some)
    }

    /// Keeps them in `dir` (created; the key readable only by its owner).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write(&dir.join(KEY_FILE), &self.key_pem, 0o600)?;
        write(&dir.join(CERT_FILE), &self.cert_pem, 0o644)?;
        write(&dir.join(CA_FILE), &self.ca_pem, 0o644)
    }

    /// The certificate's SHA-256, hex.
    pub fn fingerprint(&self) -> Result<String, IdentityError> {
        Ok(fingerprint(&first_pem_der(
            &self.cert_pem,
            "the certificate",
        )?))
    }

    /// Serving with these credentials, trusting only the cluster CA for callers.
    pub fn server_tls(&self, client_auth: ClientAuth) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        match client_auth {
            ClientAuth::None => config,
            ClientAuth::Required | ClientAuth::Optional => config
                .client_ca_root(Certificate::from_pem(&self.ca_pem))
                .client_auth_optional(client_auth == ClientAuth::Optional),
        }
    }

    /// Dialling `server` with these credentials: its certificate must be the cluster CA's and
    /// name exactly that peer, whatever address it is reached at.
    pub fn client_tls(&self, server: &Peer) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server.dns_name())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// An endpoint dialling `server` at `address` (`host:port`, `http://host:port` or
    /// `https://host:port`: always TLS whatever the scheme says) with these credentials.
    /// Connection settings (timeouts, lazy or eager connect) are the caller's.
    pub fn endpoint(
        &self,
        server: &Peer,
        address: &str,
    ) -> Result<tonic::transport::Endpoint, IdentityError> {
        let host = address
            .strip_prefix("https://")
            .or_else(|| address.strip_prefix("http://"))
            .unwrap_or(address);
        let bad = |e: tonic::transport::Error| IdentityError::BadAddress {
            address: address.to_owned(),
            why: e.to_string(),
        };
        tonic::transport::Endpoint::from_shared(format!("https://{host}"))
            .map_err(bad)?
            .tls_config(self.client_tls(server))
            .map_err(bad)
            .map(|e| e.tcp_nodelay(true))
    }
}

/// The DER of the first PEM block of `pem`.
pub fn first_pem_der(pem: &str, what: &str) -> Result<Vec<u8>, IdentityError> {
    let bad = |why: String| IdentityError::BadPem {
        what: what.to_owned(),
        why,
    };
    let parsed =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    Ok(parsed.1.contents)
}

/// Dialling `server` trusting the CA in `ca_pem`, with no certificate of our own: what a node
/// that has none yet uses to join, and what clients of the scheduler's client port use.
pub fn anonymous_client_tls(ca_pem: &str, server: Option<&Peer>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .timeout(HANDSHAKE_TIMEOUT);
    match server {
        Some(peer) => config.domain_name(peer.dns_name()),
        None => config,
    }
}

/// The peer a call comes from, as its client certificate (checked against the cluster CA by
/// the TLS handshake) says; UNAUTHENTICATED without one, PERMISSION_DENIED unless its role is
/// one of `allowed`.
pub fn authorize<T>(request: &tonic::Request<T>, allowed: &[Role]) -> Result<Peer, tonic::Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated(
            "this port serves cluster members only: present a certificate of the cluster CA",
        )
    })?;
    let leaf = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated("the TLS handshake carried no client certificate")
    })?;
    let peer = Peer::of_certificate(leaf)
        .map_err(|e| tonic::Status::unauthenticated(format!("client certificate: {e}")))?;
    if !allowed.contains(&peer.role) {
        let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(tonic::Status::permission_denied(format!(
            "{peer} may not call this service (only: {})",
            roles.join(", ")
        )));
    }
    Ok(peer)
}

/// A tonic interceptor that lets through only callers with one of `allowed` roles, and puts
/// their [`Peer`] in the request's extensions.
pub fn require(
    allowed: &'static [Role],
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        let peer = authorize(&request, allowed)?;
        request.extensions_mut().insert(peer);
        Ok(request)
    }
}

#[cfg(test)]
mod tests;
