//! Every port of a running cluster, tried as a stranger, as a tenant and as another node: the
//! scheduler's client port, its cluster port and dashboard, the storage agent's and (where the
//! compute role runs) the compute agent's port. Each refusal is asserted with its code, and
//! afterwards the victim tenant is still served with its data intact.
//! `membership.rs` covers joining and registering in depth; this file covers the rest.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{Tenant, admin_token, authed, http_status};
use sandstorm_identity::{Credentials, Peer, Role};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::cluster_client::ClusterClient;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use sandstorm_tests::Service;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// `request` with no credentials at all.
fn bare<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

/// A plaintext channel to `addr`, if a connection opens at all (a TLS port accepts TCP).
async fn plaintext(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// A TLS channel to the agent `peer` at `addr` that trusts the cluster CA but shows no
/// certificate: a stranger who read the CA file. `None` when the handshake is refused.
async fn anonymous_tls(ca_file: &std::path::Path, peer: &Peer, addr: &str) -> Option<Channel> {
    let ca = std::fs::read_to_string(ca_file).unwrap();
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(sandstorm_identity::anonymous_client_tls(&ca, Some(peer)))
        .unwrap()
        .connect()
        .await
        .ok()
}

/// Fails unless `result` is a refusal: a gRPC error with one of `codes`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    codes: &[Code],
) {
    match result {
        Ok(r) => panic!("{what}: answered {r:?}"),
        Err(e) => assert!(codes.contains(&e.code()), "{what}: {e:?}"),
    }
}

/// How tonic reports a call the transport never carried: the connection was refused, or the
/// server closed it in (or right after) the handshake.
const NO_TRANSPORT: [Code; 4] = [
    Code::Unavailable,
    Code::Unknown,
    Code::Internal,
    Code::Cancelled,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_port_serves_a_stranger_a_tenant_or_another_node_what_is_not_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &["--dashboard", "127.0.0.1:0"]);
    let storage = scheduler.start_storage("storage-0", &[]);
    let compute = match sandstorm_node_agent::compute::preflight() {
        Ok(()) => Some(scheduler.start_compute("compute-0", state.path(), &[])),
        Err(e) => {
            println!(
                "SKIPPED (the compute agent's port only): the compute role cannot run here: {e}"
            );
            None
        }
    };
    let admin = admin_token(dir.path());
    let mut victim = Tenant::create(&scheduler, &admin, "victim").await;
    victim.deploy("kv-sum").await;
    victim.put("secret", "41").await;
    let attacker = Tenant::create(&scheduler, &admin, "attacker").await;
    let cluster_port = scheduler.cluster_addr();
    let channel = common::client_channel(&scheduler).await;

    // The client port, with no credentials: nothing but health.
    let mut tenant_api = SchedulerClient::new(channel.clone());
    let mut admin_api = AdminClient::new(channel.clone());
    let invoke = pb::InvokeRequest {
        function: "kv-sum".into(),
        input: b"secret".to_vec(),
        ..Default::default()
    };
    let get = pb::GetDataRequest {
        key: b"secret".to_vec(),
    };
    assert_refused(
        "invoke, no token",
        tenant_api.invoke(bare(invoke.clone())).await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "get, no token",
        tenant_api.get_data(bare(get.clone())).await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "status, no token",
        tenant_api
            .cluster_status(bare(pb::ClusterStatusRequest {}))
            .await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "list tenants, no token",
        admin_api
            .list_tenants(bare(pb::ListTenantsRequest {}))
            .await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "join token, no token",
        admin_api
            .create_join_token(bare(pb::CreateJoinTokenRequest { ttl_s: 0 }))
            .await,
        &[Code::Unauthenticated],
    );
    // A made-up token, or the admin token's shape with a wrong secret.
    for forged in ["t0.AAAA", "t1.forged", "admin", &format!("{admin}x")] {
        assert_refused(
            "invoke, forged token",
            tenant_api.invoke(authed(invoke.clone(), forged)).await,
            &[Code::Unauthenticated],
        );
    }
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(bare(tonic_health::pb::HealthCheckRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "health is served to anyone: {health:?}");

    // With a tenant's token: its own namespace only, and no admin or cluster calls.
    let token = attacker.token.as_str();
    assert_refused(
        "the victim's function as the attacker",
        tenant_api.invoke(authed(invoke.clone(), token)).await,
        &[Code::NotFound],
    );
    let got = tenant_api
        .get_data(authed(get.clone(), token))
        .await
        .unwrap()
        .into_inner();
    assert!(!got.found, "the attacker reads its own namespace: {got:?}");
    for (what, result) in [
        (
            "list tenants",
            admin_api
                .list_tenants(authed(pb::ListTenantsRequest {}, token))
                .await
                .map(|_| ()),
        ),
        (
            "create tenant",
            admin_api
                .create_tenant(authed(
                    pb::CreateTenantRequest {
                        name: "mine".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "update tenant",
            admin_api
                .update_tenant(authed(
                    pb::UpdateTenantRequest {
                        name: "victim".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "join token",
            admin_api
                .create_join_token(authed(pb::CreateJoinTokenRequest { ttl_s: 0 }, token))
                .await
                .map(|_| ()),
        ),
    ] {
        assert_refused(
            &format!("{what} with a tenant token"),
            result,
            &[Code::PermissionDenied],
        );
    }
    let status = tenant_api
        .cluster_status(authed(pb::ClusterStatusRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.tenants, 0, "a tenant sees no cluster totals");
    for node in &status.nodes {
        assert!(
            node.address.is_empty(),
            "a tenant sees no addresses: {node:?}"
        );
        assert_eq!(node.keys, 0, "nor other tenants' keys: {node:?}");
    }
    // The Cluster service is not on the client port, whatever the token.
    let mut cluster_on_client_port = ClusterClient::new(channel.clone());
    for bearer in [token, admin.as_str()] {
        assert_refused(
            "join on the client port",
            cluster_on_client_port
                .join(authed(
                    pb::JoinRequest {
                        token: bearer.into(),
                        name: "mole".into(),
                        role: pb::Tier::Storage.into(),
                        public_key: Vec::new(),
                    },
                    bearer,
                ))
                .await,
            &[Code::Unimplemented],
        );
    }

    // The cluster port: TLS only; a tenant's token is not a join token; no tenant API there.
    assert_refused(
        "plaintext on the cluster port",
        ClusterClient::new(plaintext(&cluster_port).await)
            .join(bare(pb::JoinRequest::default()))
            .await,
        &NO_TRANSPORT,
    );
    let anonymous = anonymous_tls(&scheduler.ca_file(), &Peer::scheduler(), &cluster_port)
        .await
        .expect("the cluster port lets a node without a certificate join");
    let (_key, public_key) = sandstorm_identity::new_key().unwrap();
    assert_refused(
        "join with a tenant token",
        ClusterClient::new(anonymous.clone())
            .join(bare(pb::JoinRequest {
                token: token.into(),
                name: "mole".into(),
                role: pb::Tier::Storage.into(),
                public_key,
            }))
            .await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "register without a certificate",
        ClusterClient::new(anonymous.clone())
            .register(authed(
                pb::RegisterRequest {
                    name: "storage-0".into(),
                    role: pb::Tier::Storage.into(),
                    address: "127.0.0.1:1".into(),
                    cores: 1,
                    ..Default::default()
                },
                token,
            ))
            .await,
        &[Code::Unauthenticated],
    );
    assert_refused(
        "the tenant API on the cluster port",
        SchedulerClient::new(anonymous)
            .invoke(authed(invoke.clone(), &victim.token))
            .await,
        &[Code::Unimplemented],
    );

    // The dashboard: the admin token or a session, nothing else.
    let dashboard = scheduler
        .printed("dashboard on http://")
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    for header in [
        None,
        Some(format!("Authorization: Bearer {token}")),
        Some(format!("Authorization: Bearer {}", victim.token)),
        Some("Cookie: sandstorm_session=forged".to_owned()),
    ] {
        for path in ["/", "/api/cluster", "/api/functions", "/api/stream"] {
            assert_eq!(
                http_status(&dashboard, path, header.as_deref()),
                401,
                "{path} with {header:?}"
            );
        }
    }
    let bearer = format!("Authorization: Bearer {admin}");
    assert_eq!(http_status(&dashboard, "/api/cluster", Some(&bearer)), 200);

    // Agents' ports: plaintext, TLS without a certificate (a tenant token changes nothing),
    // and the certificate of another node, in the wrong role.
    let identities = dir.path().join("test-identities");
    let storage_peer = Peer::new(Role::Storage, "storage-0").unwrap();
    let storage_addr = storage.addr.to_string();
    let read = pb::GetRequest {
        tenant: 0,
        key: b"secret".to_vec(),
    };
    assert_refused(
        "plaintext to the storage node",
        KeyValueClient::new(plaintext(&storage_addr).await)
            .get(authed(read.clone(), &victim.token))
            .await,
        &NO_TRANSPORT,
    );
    if let Some(channel) = anonymous_tls(&scheduler.ca_file(), &storage_peer, &storage_addr).await {
        assert_refused(
            "the storage node, no certificate",
            KeyValueClient::new(channel)
                .get(authed(read.clone(), &victim.token))
                .await,
            &NO_TRANSPORT,
        );
    }
    if let Some(compute) = &compute {
        let compute_addr = compute.addr.to_string();
        let compute_peer = Peer::new(Role::Compute, "compute-0").unwrap();
        assert_refused(
            "plaintext to the compute node",
            NodeAgentClient::new(plaintext(&compute_addr).await)
                .execute(bare(pb::ExecuteRequest::default()))
                .await,
            &NO_TRANSPORT,
        );
        // The storage node's own certificate: a node, but not the scheduler.
        let as_storage = Credentials::load(&identities.join("storage-0"))
            .unwrap()
            .unwrap();
        let channel = as_storage
            .endpoint(&compute_peer, &compute_addr)
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_refused(
            "the compute node's NodeAgent as the storage node",
            NodeAgentClient::new(channel.clone())
                .deploy(pb::DeployRequest {
                    function: Some(pb::FunctionRef {
                        tenant: 0,
                        name: "evil".into(),
                    }),
                    command: vec!["/bin/sh".into()],
                    ..Default::default()
                })
                .await,
            &[Code::PermissionDenied],
        );
        assert_refused(
            "the compute node's NodeAgent as the storage node",
            NodeAgentClient::new(channel)
                .execute(pb::ExecuteRequest {
                    function: Some(pb::FunctionRef {
                        tenant: 0,
                        name: "kv-sum".into(),
                    }),
                    input: b"secret".to_vec(),
                    ..Default::default()
                })
                .await,
            &[Code::PermissionDenied],
        );
        // The compute node's own certificate: data calls on the storage node, nothing else.
        let as_compute = Credentials::load(&identities.join("compute-0"))
            .unwrap()
            .unwrap();
        let channel = as_compute
            .endpoint(&storage_peer, &storage_addr)
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_refused(
            "the storage node's NodeAgent as the compute node",
            NodeAgentClient::new(channel)
                .execute(pb::ExecuteRequest {
                    function: Some(pb::FunctionRef {
                        tenant: 0,
                        name: "kv-sum".into(),
                    }),
                    input: b"secret".to_vec(),
                    ..Default::default()
                })
                .await,
            &[Code::PermissionDenied],
        );
    }

    // Through all of it the victim is served, its data intact; the cluster was not touched.
    let (sum, _) = victim.invoke("kv-sum", "secret", pb::Tier::Storage).await;
    assert_eq!(sum, "41");
    let tenants = admin_api
        .list_tenants(authed(pb::ListTenantsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["victim", "attacker"]);
    let nodes = victim.status().await.nodes;
    assert_eq!(nodes.len(), 1 + usize::from(compute.is_some()), "{nodes:?}");
    drop((scheduler, storage, compute));
}
