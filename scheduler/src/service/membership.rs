//! Who may be a member of the cluster: the cluster CA, the scheduler's own certificate, join
//! tokens, and the certificate each node name is bound to.
//!
//! - On first start the CA is created in the data directory ([`sandstorm_identity::ClusterCa`]);
//!   the scheduler issues itself a fresh certificate at every start (with the names clients dial
//!   it by), used on both of its ports and for dialling agents.
//! - The admin makes join tokens (`Admin.CreateJoinToken`, `sandstorm cluster join-token`):
//!   `j<ID>.<SECRET>`, usable until they expire, stored only as hashes.
//! - An agent without a certificate calls `Cluster.Join` on the cluster port with a join token,
//!   its node name, role and public key, and gets a certificate bound to that name and role. The
//!   name is bound to that certificate from then on: a second join for it is refused, and
//!   `Cluster.Register` for a name needs the certificate bound to it. A certificate the operator
//!   issued offline (`sandstorm cluster issue`) binds its name the first time it registers.
//!
//! This is a narrow handle of its own, not part of the scheduler's big state lock: joins and
//! registrations never wait behind placements.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandstorm_identity::{AltName, ClusterCa, Credentials, Peer, Role};
use tracing::info;

use super::auth::{self, TokenHash};
use super::error::ApiError;
use super::store::{CertificateRecord, JoinTokenRecord, Loaded, Store};

/// A join token's lifetime when the admin does not say.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a join token may live.
pub const MAX_JOIN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The join token with id `id` and `secret`.
pub fn join_token(id: u32, secret: &str) -> String {
    format!("j{id}.{secret}")
}

/// The id a join token names, or why it is malformed.
fn parse_join_token(token: &str) -> Result<u32, ApiError> {
    let bad = ApiError::BadJoinToken(
        "a join token is `j<ID>.<SECRET>`, as `sandstorm cluster join-token` prints it",
    );
    let (id, secret) = token.split_once('.').ok_or(bad)?;
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadJoinToken(
            "a join token's secret is hexadecimal",
        ));
    }
    id.strip_prefix('j')
        .and_then(|id| id.parse().ok())
        .ok_or(ApiError::BadJoinToken(
            "a join token is `j<ID>.<SECRET>`, as `sandstorm cluster join-token` prints it",
        ))
}

/// The cluster's members and how they prove it.
pub struct Membership {
    ca: ClusterCa,
    /// The scheduler's own certificate and key.
    pub credentials: Credentials,
    /// Node name -> the certificate bound to it.
    bound: Mutex<HashMap<String, CertificateRecord>>,
    tokens: Mutex<Vec<JoinTokenRecord>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

/// Names the scheduler's certificate is valid for besides its peer name: loopback, this host's
/// name, the addresses it listens on (unless unspecified) and `extra`.
pub fn server_names(listen: &[SocketAddr], extra: &[String]) -> Vec<AltName> {
    let mut names: Vec<AltName> = vec![
        AltName::Dns("localhost".into()),
        AltName::Ip([127, 0, 0, 1].into()),
        AltName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !host.ends_with(sandstorm_identity::DOMAIN) {
            names.push(AltName::Dns(host.to_owned()));
        }
    }
    for addr in listen {
        if !addr.ip().is_unspecified() {
            names.push(AltName::Ip(addr.ip()));
        }
    }
    names.extend(
        extra
            .iter()
            .map(|s| s.parse().unwrap_or(AltName::Dns(s.clone()))),
    );
    names.dedup();
    names
}

impl Membership {
    /// The CA in `dir` (created on first start), a fresh certificate for the scheduler valid for
    /// `names`, and what the store holds of bindings and tokens.
    pub fn open(dir: &Path, names: &[AltName], loaded: &Loaded) -> Result<Self, ApiError> {
        let identity = |e: sandstorm_identity::IdentityError| {
            ApiError::Identity(format!("the cluster CA in {}: {e}", dir.display()))
        };
        let (ca, created) = ClusterCa::load_or_create(dir).map_err(identity)?;
        if created {
            info!(dir = %dir.display(), "cluster CA created");
        }
        let credentials = ca
            .issue_with_key(&Peer::scheduler(), names)
            .map_err(identity)?;
        Ok(Self {
            ca,
            credentials,
            bound: Mutex::new(
                loaded
                    .certificates
                    .iter()
                    .map(|c| (c.name.clone(), c.clone()))
                    .collect(),
            ),
            tokens: Mutex::new(loaded.join_tokens.clone()),
        })
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A new join token valid for `ttl` (0: the default), stored as its hash.
    pub fn create_join_token(
        &self,
        store: &Store,
        ttl: Duration,
    ) -> Result<(String, u64), ApiError> {
        let ttl = if ttl.is_zero() { DEFAULT_JOIN_TTL } else { ttl };
        if ttl > MAX_JOIN_TTL {
            return Err(ApiError::InvalidArgument(format!(
                "ttl_s {} is over the maximum of {} s",
                ttl.as_secs(),
                MAX_JOIN_TTL.as_secs()
            )));
        }
        let secret = auth::new_secret()
            .map_err(|e| ApiError::InvalidArgument(format!("no randomness for a token: {e}")))?;
        let now = unix_now_s();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Forget expired ones on the way.
        for expired in tokens.iter().filter(|t| t.expires_unix_s <= now) {
            store.remove_join_token(expired.id)?;
        }
        tokens.retain(|t| t.expires_unix_s > now);
        let id = tokens.iter().map(|t| t.id + 1).max().unwrap_or(1);
        let token = join_token(id, &secret);
        let record = JoinTokenRecord {
            id,
            token_sha256: auth::hash(&token),
            expires_unix_s: now + ttl.as_secs(),
        };
        store.put_join_token(&record)?;
        tokens.push(record.clone());
        info!(
            id,
            expires_unix_s = record.expires_unix_s,
            "join token created"
        );
        Ok((token, record.expires_unix_s))
    }

    fn check_join_token(&self, token: &str) -> Result<(), ApiError> {
        let id = parse_join_token(token)?;
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let record = tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(ApiError::BadJoinToken(
                "no such join token (it may have expired and been removed)",
            ))?;
        let stored: &TokenHash = &record.token_sha256;
        if !auth::matches(token, stored) {
            return Err(ApiError::BadJoinToken(
                "the join token's secret does not match",
            ));
        }
        if record.expires_unix_s <= unix_now_s() {
            return Err(ApiError::BadJoinToken("the join token has expired"));
        }
        Ok(())
    }

    /// TLS bootstrap: a certificate for `name` in `role`, for `public_key`, against a join token.
    pub fn join(
        &self,
        store: &Store,
        token: &str,
        name: &str,
        role: Role,
        public_key: &[u8],
    ) -> Result<(String, String), ApiError> {
        self.check_join_token(token)?;
        if role == Role::Scheduler {
            return Err(ApiError::InvalidArgument(
                "join: a node joins as TIER_STORAGE or TIER_COMPUTE".into(),
            ));
        }
        let peer =
            Peer::new(role, name).map_err(|e| ApiError::InvalidArgument(format!("join: {e}")))?;
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = bound.get(name) {
            return Err(ApiError::NodeTaken(format!(
                "node {name} already has a certificate (a {} node's, bound since {}); only its \
                 holder may register that name",
                existing.role, existing.bound_unix_s
            )));
        }
        let pem = self
            .ca
            .issue(&peer, public_key, &[])
            .map_err(|e| ApiError::InvalidArgument(format!("join: the public key: {e}")))?;
        let der = x509_der(&pem)?;
        let record = CertificateRecord {
            name: name.to_owned(),
            role: role.to_string(),
            fingerprint: sandstorm_identity::fingerprint(&der),
            bound_unix_s: unix_now_s(),
        };
        store.put_certificate(&record)?;
        bound.insert(name.to_owned(), record);
        info!(node = name, %role, "node joined: certificate issued");
        Ok((pem, self.ca.cert_pem().to_owned()))
    }

    /// Whether the caller that presented `leaf` (DER, already checked against the CA) may
    /// register as `peer`: the certificate bound to the name, or (for a certificate issued
    /// offline) the first one to register it, which is then bound.
    pub fn admit(&self, store: &Store, peer: &Peer, leaf: &[u8]) -> Result<(), ApiError> {
        let fingerprint = sandstorm_identity::fingerprint(leaf);
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        match bound.get(&peer.name) {
            Some(b) if b.fingerprint == fingerprint && b.role == peer.role.as_str() => Ok(()),
            Some(b) => Err(ApiError::Denied(format!(
                "node {} is bound to another certificate (a {} node's); only its holder may \
                 register that name",
                peer.name, b.role
            ))),
            None => {
                let record = CertificateRecord {
                    name: peer.name.clone(),
                    role: peer.role.to_string(),
                    fingerprint,
                    bound_unix_s: unix_now_s(),
                };
                store.put_certificate(&record)?;
                bound.insert(peer.name.clone(), record);
                info!(node = %peer.name, role = %peer.role, "node name bound to its certificate at first registration");
                Ok(())
            }
        }
    }
}

fn x509_der(pem: &str) -> Result<Vec<u8>, ApiError> {
    sandstorm_identity::first_pem_der(pem, "an issued certificate")
        .map_err(|e| ApiError::Identity(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_name_what_is_wrong() {
        assert_eq!(parse_join_token("j12.00ff").ok(), Some(12));
        for (token, says) in [
            ("12.00", "j<ID>.<SECRET>"),
            ("j12", "j<ID>.<SECRET>"),
            ("j12.xyz", "hexadecimal"),
            ("jx.00", "j<ID>.<SECRET>"),
        ] {
            let e = parse_join_token(token).expect_err(token).to_string();
            assert!(e.contains(says), "{token}: {e}");
        }
    }

    fn membership() -> (tempfile::TempDir, Store, Membership) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let m = Membership::open(dir.path(), &[], &Loaded::default()).expect("membership");
        (dir, store, m)
    }

    #[test]
    fn a_name_joins_once_and_only_its_certificate_registers_it() {
        let (dir, store, m) = membership();
        let (token, _) = m.create_join_token(&store, Duration::ZERO).expect("token");
        let (_, public_key) = sandstorm_identity::new_key().expect("key");
        let (cert, ca) = m
            .join(&store, &token, "storage-0", Role::Storage, &public_key)
            .expect("joins");
        assert_eq!(ca, m.ca_pem());
        let der = x509_der(&cert).expect("der");
        let peer = Peer::of_certificate(&der).expect("peer");
        assert_eq!(peer, Peer::new(Role::Storage, "storage-0").expect("peer"));
        m.admit(&store, &peer, &der)
            .expect("its own certificate registers it");
        // (what, the error's gRPC code)
        let again = m.join(&store, &token, "storage-0", Role::Compute, &public_key);
        assert_eq!(
            tonic::Status::from(again.expect_err("taken")).code(),
            tonic::Code::AlreadyExists
        );
        let bad = m.join(&store, "j1.00", "storage-1", Role::Storage, &public_key);
        assert_eq!(
            tonic::Status::from(bad.expect_err("bad secret")).code(),
            tonic::Code::Unauthenticated
        );
        // An impostor with another certificate for the same name (say, issued offline).
        let (ca, _) = ClusterCa::load_or_create(dir.path()).expect("ca");
        let other = ca.issue_with_key(&peer, &[]).expect("cert");
        let other_der = x509_der(&other.cert_pem).expect("der");
        let e = m
            .admit(&store, &peer, &other_der)
            .expect_err("not its holder");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        // Bindings and tokens survive a restart.
        let loaded = store.load().expect("load");
        let m2 = Membership::open(dir.path(), &[], &loaded).expect("reopen");
        m2.admit(&store, &peer, &der).expect("still bound");
        assert!(m2.admit(&store, &peer, &other_der).is_err());
        m2.join(
            &store,
            &token,
            "compute-0",
            Role::Compute,
            &sandstorm_identity::new_key().expect("key").1,
        )
        .expect("the token still works");
    }

    #[test]
    fn join_tokens_expire_and_are_bounded() {
        let (_dir, store, m) = membership();
        let e = m
            .create_join_token(&store, MAX_JOIN_TTL + Duration::from_secs(1))
            .expect_err("too long");
        assert!(e.to_string().contains("maximum"), "{e}");
        let (token, _) = m
            .create_join_token(&store, Duration::from_secs(1))
            .expect("token");
        // Expire it by hand: the store's record says when.
        m.tokens
            .lock()
            .expect("lock")
            .iter_mut()
            .for_each(|t| t.expires_unix_s = 1);
        let e = m.check_join_token(&token).expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
    }
}
