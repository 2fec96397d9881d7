#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use super::*;

#[test]
fn node_names_are_dns_labels() {
    // (name, accepted)
    let table = [
        ("storage-0", true),
        ("a", true),
        ("x1-y2", true),
        ("", false),
        ("Storage", false), // uppercase
        ("a.b", false),     // would read as another peer's role
        ("a_b", false),     // not a DNS label
        ("-a", false),      // leading dash
        ("a-", false),      // trailing dash
        (&"a".repeat(64), false),
    ];
    for (name, ok) in table {
        assert_eq!(check_node_name(name).is_ok(), ok, "{name:?}");
    }
    assert_eq!(
        check_node_name("a.b").unwrap_err().to_string(),
        "invalid node name \"a.b\": only lowercase letters, digits and `-` are allowed"
    );
}

#[test]
fn roles_read_and_print_the_same() {
    for role in [Role::Scheduler, Role::Storage, Role::Compute] {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
    }
    assert!("admin".parse::<Role>().is_err());
}

#[test]
fn a_certificate_names_exactly_the_peer_it_was_issued_to() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, created) = ClusterCa::load_or_create(dir.path()).unwrap();
    assert!(created);
    let peer = Peer::new(Role::Storage, "storage-0").unwrap();
    let (key_pem, public_key) = new_key().unwrap();
    let cert_pem = ca.issue(&peer, &public_key, &[]).unwrap();
    let creds = Credentials::from_pem(ca.cert_pem().into(), cert_pem, key_pem).unwrap();
    assert_eq!(creds.peer, peer);
    assert_eq!(peer.dns_name(), "storage-0.storage.sandstorm.internal");
    // The scheduler's own, with the names clients dial it by.
    let scheduler = ca
        .issue_with_key(
            &Peer::scheduler(),
            &["localhost".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        )
        .unwrap();
    assert_eq!(scheduler.peer, Peer::scheduler());
    // A server's extra name can never be another peer's.
    let e = ca
        .issue_with_key(
            &Peer::scheduler(),
            &["compute-0.compute.sandstorm.internal".parse().unwrap()],
        )
        .unwrap_err();
    assert!(e.to_string().contains("peer names only"), "{e}");
    // A public key that is not one.
    assert!(ca.issue(&peer, b"not a key", &[]).is_err());
}

#[test]
fn the_ca_is_created_once_and_loaded_after() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = ClusterCa::load_or_create(dir.path()).unwrap();
    let (again, created) = ClusterCa::load_or_create(dir.path()).unwrap();
    assert!(!created);
    assert_eq!(first.cert_pem(), again.cert_pem());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is its owner's only");
    // A CA key without its certificate is an error, not a new CA.
    std::fs::remove_file(dir.path().join(CA_FILE)).unwrap();
    assert!(ClusterCa::load_or_create(dir.path()).is_err());
}

#[test]
fn an_identity_directory_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = ClusterCa::load_or_create(&dir.path().join("ca")).unwrap();
    let ids = dir.path().join("node");
    assert!(Credentials::load(&ids).unwrap().is_none());
    let creds = ca
        .issue_with_key(&Peer::new(Role::Compute, "compute-1").unwrap(), &[])
        .unwrap();
    creds.save(&ids).unwrap();
    let loaded = Credentials::load(&ids).unwrap().unwrap();
    assert_eq!(loaded.peer, creds.peer);
    assert_eq!(loaded.fingerprint().unwrap(), creds.fingerprint().unwrap());
    std::fs::remove_file(ids.join(KEY_FILE)).unwrap();
    let e = Credentials::load(&ids).unwrap_err();
    assert!(e.to_string().contains("node-key.pem is missing"), "{e}");
}

mod tls {
    //! Real handshakes on loopback: a health service behind [`require`].
    use super::*;
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    struct Cluster {
        _dir: tempfile::TempDir,
        ca: ClusterCa,
    }

    fn cluster() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = ClusterCa::load_or_create(dir.path()).unwrap();
        Cluster { _dir: dir, ca }
    }

    /// Serves health as `server`, letting only `allowed` roles through; returns its address.
    async fn serve(
        server: &Credentials,
        auth: ClientAuth,
        allowed: &'static [Role],
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, health) = tonic_health::server::health_reporter();
        let service =
            tonic::service::interceptor::InterceptedService::new(health, require(allowed));
        let router = Server::builder()
            .tls_config(server.server_tls(auth))
            .unwrap()
            .add_service(service);
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    async fn check(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
        let channel = channel.map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint::from_shared(format!("https://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn only_the_peers_a_port_allows_get_through() {
        let c = cluster();
        let storage =
            c.ca.issue_with_key(&Peer::new(Role::Storage, "storage-0").unwrap(), &[])
                .unwrap();
        let scheduler = c.ca.issue_with_key(&Peer::scheduler(), &[]).unwrap();
        let compute =
            c.ca.issue_with_key(&Peer::new(Role::Compute, "compute-0").unwrap(), &[])
                .unwrap();
        let addr = serve(&storage, ClientAuth::Required, &[Role::Scheduler]).await;
        let as_peer = |creds: &Credentials| {
            endpoint(addr)
                .tls_config(creds.client_tls(&storage.peer))
                .unwrap()
        };
        // The scheduler gets through.
        check(as_peer(&scheduler).connect().await).await.unwrap();
        // A compute node is a cluster member but not allowed here.
        let e = check(as_peer(&compute).connect().await).await.unwrap_err();
        assert!(
            e.contains("PermissionDenied") && e.contains("compute node compute-0"),
            "{e}"
        );
        // No certificate: the handshake itself fails.
        let anonymous = endpoint(addr)
            .tls_config(anonymous_client_tls(&storage.ca_pem, Some(&storage.peer)))
            .unwrap();
        assert!(check(anonymous.connect().await).await.is_err());
        // Plaintext: refused.
        assert!(check(endpoint(addr).connect().await).await.is_err());
        // A certificate of another CA, even for the right name: refused.
        let other = cluster();
        let forged = other.ca.issue_with_key(&Peer::scheduler(), &[]).unwrap();
        let forged = Credentials {
            ca_pem: storage.ca_pem.clone(),
            ..forged
        };
        assert!(check(as_peer(&forged).connect().await).await.is_err());
    }

    #[tokio::test]
    async fn a_client_refuses_a_server_that_is_not_the_peer_it_dials() {
        let c = cluster();
        let storage0 =
            c.ca.issue_with_key(&Peer::new(Role::Storage, "storage-0").unwrap(), &[])
                .unwrap();
        let scheduler = c.ca.issue_with_key(&Peer::scheduler(), &[]).unwrap();
        let addr = serve(&storage0, ClientAuth::Required, &[Role::Scheduler]).await;
        // Dialling storage-1 at storage-0's address: storage-0's certificate does not do.
        let wrong = endpoint(addr)
            .tls_config(scheduler.client_tls(&Peer::new(Role::Storage, "storage-1").unwrap()))
            .unwrap();
        assert!(check(wrong.connect().await).await.is_err());
        // Nor does it pass for the scheduler.
        let wrong = endpoint(addr)
            .tls_config(scheduler.client_tls(&Peer::scheduler()))
            .unwrap();
        assert!(check(wrong.connect().await).await.is_err());
    }

    #[tokio::test]
    async fn an_optional_port_tells_callers_without_a_certificate_apart() {
        let c = cluster();
        let scheduler = c.ca.issue_with_key(&Peer::scheduler(), &[]).unwrap();
        let addr = serve(&scheduler, ClientAuth::Optional, &[Role::Storage]).await;
        let anonymous = endpoint(addr)
            .tls_config(anonymous_client_tls(
                &scheduler.ca_pem,
                Some(&scheduler.peer),
            ))
            .unwrap();
        let e = check(anonymous.connect().await).await.unwrap_err();
        assert!(e.contains("Unauthenticated"), "{e}");
    }
}
