//! Who may join the cluster, as an attacker who can reach the scheduler's ports would try it: the
//! cluster port serves `Join` to holders of a join token and `Register` to holders of the
//! certificate a name is bound to, and nothing to anyone else; agents' ports serve cluster members
//! in their roles only.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{admin_token, authed, issue};
use sandstorm_identity::{ClusterCa, Credentials, Peer, Role};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::cluster_client::ClusterClient;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;
use tonic::Code;
use tonic::transport::Channel;

fn register_as(name: &str, role: pb::Tier) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: name.into(),
        role: role.into(),
        address: "127.0.0.1:1".into(),
        cores: 1,
        incarnation: 7,
        ..Default::default()
    }
}

/// The cluster port, as `credentials`' holder.
async fn cluster_as(scheduler: &Service, credentials: &Credentials) -> ClusterClient<Channel> {
    ClusterClient::new(
        credentials
            .endpoint(&Peer::scheduler(), &scheduler.cluster_addr())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// The cluster port with TLS that trusts the cluster CA but shows no certificate: how a node
/// that has none yet joins.
async fn cluster_anonymous(scheduler: &Service) -> ClusterClient<Channel> {
    let ca = std::fs::read_to_string(scheduler.ca_file()).unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{}", scheduler.cluster_addr()))
            .unwrap()
            .tls_config(sandstorm_identity::anonymous_client_tls(
                &ca,
                Some(&Peer::scheduler()),
            ))
            .unwrap()
            .connect()
            .await
            .unwrap();
    ClusterClient::new(channel)
}

async fn join_token(scheduler: &Service, ttl_s: u32) -> String {
    let admin = admin_token(&scheduler.data_dir());
    AdminClient::connect(scheduler.endpoint())
        .await
        .unwrap()
        .create_join_token(authed(pb::CreateJoinTokenRequest { ttl_s }, &admin))
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Joins as the `role` node `name` with `token`.
async fn join(
    scheduler: &Service,
    token: &str,
    name: &str,
    role: pb::Tier,
) -> Result<Credentials, tonic::Status> {
    let (key_pem, public_key) = sandstorm_identity::new_key().unwrap();
    let joined = cluster_anonymous(scheduler)
        .await
        .join(pb::JoinRequest {
            token: token.into(),
            name: name.into(),
            role: role.into(),
            public_key,
        })
        .await?
        .into_inner();
    Ok(Credentials::from_pem(joined.ca_pem, joined.certificate_pem, key_pem).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_a_token_join_and_only_a_names_holder_registers_it() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let storage = scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--in-memory",
    ]);
    storage.wait_for_stdout("registered with the scheduler", 1);
    assert!(
        storage
            .stdout_lines()
            .iter()
            .any(|l| l.contains("joined the cluster as the storage node storage-0")),
        "{:?}",
        storage.stdout_lines()
    );

    // Register without a certificate: refused.
    let e = cluster_anonymous(&scheduler)
        .await
        .register(register_as("storage-0", pb::Tier::Storage))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Join with no token, a malformed one, a forged secret: refused.
    let token = join_token(&scheduler, 600).await;
    for bad in ["", "nonsense", "j1.00", &format!("{}0", token)] {
        let e = join(&scheduler, bad, "storage-9", pb::Tier::Storage)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}: {e:?}");
    }
    // An unknown role, a name no certificate can carry: refused with the reason.
    let e = join(&scheduler, &token, "storage-9", pb::Tier::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = join(&scheduler, &token, "Storage 9!", pb::Tier::Storage)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A valid token does not buy a name that is bound already.
    let e = join(&scheduler, &token, "storage-0", pb::Tier::Storage)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("storage-0"), "{e:?}");

    // It buys a new name; that certificate registers that name, and no other.
    let impostor = join(&scheduler, &token, "storage-9", pb::Tier::Storage)
        .await
        .unwrap();
    let mut as_impostor = cluster_as(&scheduler, &impostor).await;
    let e = as_impostor
        .register(register_as("storage-0", pb::Tier::Storage))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = as_impostor
        .register(register_as("storage-9", pb::Tier::Compute))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a storage certificate is not a compute node's: {e:?}"
    );

    // Even a certificate of the cluster CA for the same name (issued offline) is not the one the
    // name is bound to.
    let offline = issue(
        &scheduler.data_dir(),
        &Peer::new(Role::Storage, "storage-0").unwrap(),
    );
    let e = cluster_as(&scheduler, &offline)
        .await
        .register(register_as("storage-0", pb::Tier::Storage))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A certificate of another CA does not even get through the handshake.
    let stranger = ClusterCa::ephemeral()
        .unwrap()
        .issue_with_key(&Peer::new(Role::Storage, "storage-0").unwrap(), &[])
        .unwrap();
    let refused = stranger
        .endpoint(&Peer::scheduler(), &scheduler.cluster_addr())
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = refused {
        let e = ClusterClient::new(channel)
            .register(register_as("storage-0", pb::Tier::Storage))
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("ertificate"), "{e:?}");
    }

    // An expired token is refused. (A wait, not a timing assertion: the token lives 1 s.)
    let short = join_token(&scheduler, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = join(&scheduler, &short, "storage-8", pb::Tier::Storage)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // The real node still registers, and traffic still goes to it.
    let before = storage
        .stdout_lines()
        .iter()
        .filter(|l| l.contains("registered with the scheduler"))
        .count();
    assert!(before >= 1);
    assert!(
        scheduler.stderr().contains("node joined"),
        "{}",
        scheduler.stderr()
    );

    // The agent's own port: the scheduler's role only for NodeAgent; a storage node's
    // certificate (the impostor's) gets nothing; a compute node's gets data calls only.
    let agent_peer = Peer::new(Role::Storage, "storage-0").unwrap();
    let as_storage = impostor
        .endpoint(&agent_peer, &storage.addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = KeyValueClient::new(as_storage.clone())
        .get(pb::GetRequest {
            tenant: 0,
            key: b"k".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = NodeAgentClient::new(as_storage)
        .remove(pb::RemoveRequest {
            function: Some(pb::FunctionRef {
                tenant: 0,
                name: "echo".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let compute = join(&scheduler, &token, "compute-9", pb::Tier::Compute)
        .await
        .unwrap();
    let as_compute = compute
        .endpoint(&agent_peer, &storage.addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = NodeAgentClient::new(as_compute)
        .deploy(pb::DeployRequest {
            function: Some(pb::FunctionRef {
                tenant: 0,
                name: "evil".into(),
            }),
            module: sandstorm_guest_examples::module("echo").unwrap().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}
