//! The storage node over gRPC on loopback, with the real example modules and hand-written bad
//! ones: deploy checks, failing invocations that leave the node serving, tenant isolation, size
//! limits, the remote key-value API and the stats stream.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::net::SocketAddr;
use std::time::Duration;

use sandstorm_identity::{ClusterCa, Peer, Role};
use sandstorm_node_agent::storage::store::Limits;
use sandstorm_node_agent::storage::{StorageConfig, StorageNode, service};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use tonic::Code;
use tonic::transport::Channel;

struct Node {
    agent: NodeAgentClient<Channel>,
    kv: KeyValueClient<Channel>,
    ca: ClusterCa,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Node {
    let config = StorageConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        worker_cores: 2,
        limits: Limits {
            max_key_bytes: 64,
            max_value_bytes: 1024,
            max_batch_keys: 100,
        },
        ..StorageConfig::default()
    };
    let node = StorageNode::start(config).expect("node starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ca = ClusterCa::ephemeral().unwrap();
    let credentials = ca.issue_with_key(&storage_peer(), &[]).unwrap();
    tokio::spawn(async move {
        service::serve(node, listener, &credentials, async {
            let _ = stopped.await;
        })
        .await
    });
    let channel = dial(&ca, Peer::scheduler(), addr).await.expect("connect");
    Node {
        agent: NodeAgentClient::new(channel.clone()),
        kv: KeyValueClient::new(channel),
        ca,
        addr,
        _stop: stop,
    }
}

fn storage_peer() -> Peer {
    Peer::new(Role::Storage, "storage-0").unwrap()
}

/// A connection to the node at `addr` as `caller`, with a certificate from `ca`.
async fn dial(
    ca: &ClusterCa,
    caller: Peer,
    addr: SocketAddr,
) -> Result<Channel, tonic::transport::Error> {
    let credentials = ca.issue_with_key(&caller, &[]).unwrap();
    credentials
        .endpoint(&storage_peer(), &addr.to_string())
        .unwrap()
        .connect()
        .await
}

fn function(tenant: u32, name: &str) -> Option<pb::FunctionRef> {
    Some(pb::FunctionRef {
        tenant,
        name: name.into(),
    })
}

async fn deploy(
    node: &mut Node,
    tenant: u32,
    name: &str,
    module: Vec<u8>,
    limits: Option<pb::FunctionLimits>,
) -> Result<pb::DeployResponse, tonic::Status> {
    node.agent
        .deploy(pb::DeployRequest {
            function: function(tenant, name),
            module,
            limits,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn deploy_example(node: &mut Node, tenant: u32, name: &str) {
    let module = sandstorm_guest_examples::module(name)
        .expect("example")
        .to_vec();
    deploy(node, tenant, name, module, None)
        .await
        .expect("deploy example");
}

async fn invoke(
    node: &mut Node,
    tenant: u32,
    name: &str,
    input: &str,
) -> Result<pb::ExecuteResponse, tonic::Status> {
    node.agent
        .execute(pb::ExecuteRequest {
            function: function(tenant, name),
            input: input.as_bytes().to_vec(),
            invocation_id: 7,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn put(node: &mut Node, tenant: u32, key: &str, value: &str) {
    node.kv
        .put(pb::PutRequest {
            tenant,
            key: key.into(),
            value: value.into(),
        })
        .await
        .expect("put");
}

fn text(r: &pb::ExecuteResponse) -> &str {
    std::str::from_utf8(&r.output).expect("utf-8 output")
}

#[tokio::test]
async fn example_functions_run_next_to_their_data() {
    let mut node = start().await;
    for name in ["echo", "kv-sum", "graph-walk", "hash-chain", "counter"] {
        deploy_example(&mut node, 1, name).await;
    }
    assert_eq!(
        text(&invoke(&mut node, 1, "echo", "hello").await.unwrap()),
        "hello"
    );

    put(&mut node, 1, "a", "40").await;
    put(&mut node, 1, "b", "2").await;
    let r = invoke(&mut node, 1, "kv-sum", "a b missing").await.unwrap();
    // 40 + 2 + 0 (absent).
    assert_eq!(text(&r), "42");
    let record = r.record.expect("record");
    assert_eq!(record.tier, pb::Tier::Storage as i32);
    assert_eq!(
        (record.data_calls, record.keys_read, record.bytes_read),
        (1, 2, 3)
    );
    assert_eq!(record.invocation_id, 7);

    // node:0 -> [1, 2]; hop 0 takes index 0 (1), hop 1 takes 1 mod 2 of node:1's [0, 2] (2),
    // hop 2 takes 2 mod 1 of node:2's [0] (0).
    put(&mut node, 1, "node:0", "1,2").await;
    put(&mut node, 1, "node:1", "0,2").await;
    put(&mut node, 1, "node:2", "0").await;
    let r = invoke(&mut node, 1, "graph-walk", "0 3").await.unwrap();
    assert_eq!(text(&r), "0 1 2 0");
    assert_eq!(r.record.unwrap().data_calls, 3);

    put(&mut node, 1, "blob", "x").await;
    let once = invoke(&mut node, 1, "hash-chain", "blob 10").await.unwrap();
    assert_eq!(text(&once).len(), 16);
    assert_eq!(
        text(&invoke(&mut node, 1, "hash-chain", "blob 10").await.unwrap()),
        text(&once),
        "deterministic"
    );
    assert_ne!(
        text(&invoke(&mut node, 1, "hash-chain", "blob 11").await.unwrap()),
        text(&once)
    );

    assert_eq!(
        text(&invoke(&mut node, 1, "counter", "hits").await.unwrap()),
        "1"
    );
    assert_eq!(
        text(&invoke(&mut node, 1, "counter", "hits 41").await.unwrap()),
        "42"
    );
    let stored = node
        .kv
        .get(pb::GetRequest {
            tenant: 1,
            key: b"hits".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.value, b"42");
}

#[tokio::test]
async fn large_values_come_back_whole_through_the_second_call() {
    let mut node = start().await;
    deploy_example(&mut node, 1, "graph-walk").await;
    // An adjacency list longer than the SDK's first 256-byte buffer.
    let list: Vec<String> = (1..200).map(|i| i.to_string()).collect();
    put(&mut node, 1, "node:0", &list.join(",")).await;
    put(&mut node, 1, "node:1", "0").await;
    let r = invoke(&mut node, 1, "graph-walk", "0 2").await.unwrap();
    assert_eq!(text(&r), "0 1 0");
}

const RUN_OK: &str =
    r#"(memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0))"#;

fn wat(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {body})")).expect("valid text")
}

#[tokio::test]
async fn bad_modules_are_refused_with_the_reason() {
    let mut node = start().await;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "not wasm",
            b"#!/bin/sh\necho hi".to_vec(),
            "not a WebAssembly module",
        ),
        // Magic and version, then a type section that claims 5 bytes and has 1.
        (
            "fails validation",
            vec![0, b'a', b's', b'm', 1, 0, 0, 0, 1, 5, 0],
            "invalid WebAssembly module",
        ),
        (
            "no run export",
            wat(r#"(memory (export "memory") 1)"#),
            "must export a function `run`",
        ),
        (
            "no memory export",
            wat(r#"(func (export "run") (result i32) (i32.const 0))"#),
            "linear memory as `memory`",
        ),
        (
            "unknown host call",
            wat(&format!(
                r#"(import "sandstorm" "open_socket" (func (param i32))) {RUN_OK}"#
            )),
            "imports `sandstorm::open_socket`, which the host does not provide",
        ),
        (
            "wrong host call type",
            wat(&format!(
                r#"(import "sandstorm" "kv_get" (func (param i32))) {RUN_OK}"#
            )),
            "does not match the host interface",
        ),
    ];
    for (what, module, expected) in cases {
        let err = deploy(&mut node, 1, "bad", module, None)
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{what}: {}",
            err.message()
        );
    }
    let err = invoke(&mut node, 1, "bad", "")
        .await
        .expect_err("nothing was deployed");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("no function \"bad\""),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn failing_invocations_leave_the_node_serving() {
    let mut node = start().await;
    deploy_example(&mut node, 1, "echo").await;
    let limits = Some(pb::FunctionLimits {
        deadline_ms: 50,
        memory_bytes: 1 << 20,
        ..Default::default()
    });
    let cases: [(&str, String, Code, &str); 6] = [
        ("trap", r#"(func (export "run") (result i32) unreachable)"#.into(), Code::Aborted, "trapped"),
        (
            "out of bounds",
            r#"(func (export "run") (result i32) (i32.load (i32.const 0x7fff0000)))"#.into(),
            Code::Aborted,
            "out of bounds",
        ),
        ("infinite loop", r#"(func (export "run") (result i32) (loop $l (br $l)) (i32.const 0))"#.into(), Code::DeadlineExceeded, "deadline of 50ms"),
        // The deadline covers instantiation: a start function that never returns is ended too.
        (
            "spinning start function",
            r#"(func $spin (loop $l (br $l))) (start $spin) (func (export "run") (result i32) (i32.const 0))"#.into(),
            Code::DeadlineExceeded,
            "deadline of 50ms",
        ),
        (
            "memory bomb",
            r#"(func (export "run") (result i32) (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) (i32.const 0))"#.into(),
            Code::ResourceExhausted,
            "past its limit of 1048576 bytes",
        ),
        (
            "host call with a wild pointer",
            r#"(import "sandstorm" "kv_get" (func $get (param i32 i32 i32 i32) (result i64)))
               (func (export "run") (result i32) (drop (call $get (i32.const -8) (i32.const 16) (i32.const 0) (i32.const 8))) (i32.const 0))"#
                .into(),
            Code::Aborted,
            "host call argument out of bounds",
        ),
    ];
    for (what, body, code, expected) in cases {
        let module = wat(&format!(r#"{body} (memory (export "memory") 1)"#));
        deploy(&mut node, 1, what, module, limits)
            .await
            .expect(what);
        let err = invoke(&mut node, 1, what, "").await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{what}: {}",
            err.message()
        );
        // The node still serves others.
        assert_eq!(
            text(&invoke(&mut node, 1, "echo", "still here").await.unwrap()),
            "still here",
            "after {what}"
        );
    }
    let err = invoke(&mut node, 1, "kv-sum-never-deployed", "")
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_tenants_keys() {
    let mut node = start().await;
    for tenant in [1, 2] {
        deploy_example(&mut node, tenant, "kv-sum").await;
        deploy_example(&mut node, tenant, "counter").await;
    }
    put(&mut node, 1, "secret", "1000").await;
    // Whatever bytes tenant 2 passes, it sees only its own keyspace.
    for key in ["secret", "1/secret", "tenant-1/secret", "\u{1}secret"] {
        assert_eq!(
            text(&invoke(&mut node, 2, "kv-sum", key).await.unwrap()),
            "0",
            "{key:?}"
        );
    }
    assert_eq!(
        text(&invoke(&mut node, 2, "counter", "secret 5").await.unwrap()),
        "5"
    );
    assert_eq!(
        text(&invoke(&mut node, 1, "kv-sum", "secret").await.unwrap()),
        "1000"
    );
    // Tenant 2 cannot invoke tenant 1's functions either: names are per tenant.
    deploy_example(&mut node, 1, "echo").await;
    assert_eq!(
        invoke(&mut node, 2, "echo", "x").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn oversized_keys_values_and_payloads_are_refused() {
    let mut node = start().await;
    let long_key = vec![b'k'; 65];
    let err = node
        .kv
        .put(pb::PutRequest {
            tenant: 1,
            key: long_key.clone(),
            value: b"v".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("key of 65 bytes is longer than the limit of 64"),
        "{}",
        err.message()
    );
    let err = node
        .kv
        .put(pb::PutRequest {
            tenant: 1,
            key: b"k".to_vec(),
            value: vec![0; 1025],
        })
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("value of 1025 bytes is larger than the limit of 1024"),
        "{}",
        err.message()
    );
    let err = node
        .kv
        .multi_get(pb::MultiGetRequest {
            tenant: 1,
            keys: vec![b"k".to_vec(); 101],
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("101 keys in one request"),
        "{}",
        err.message()
    );
    let err = node
        .kv
        .get(pb::GetRequest {
            tenant: 1,
            key: vec![],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("key is empty"), "{}", err.message());

    // From inside a function: the guest gets an error code, the SDK a message.
    deploy_example(&mut node, 1, "counter").await;
    let err = invoke(&mut node, 1, "counter", &"k".repeat(65))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("key too large"), "{}", err.message());

    // An input over the payload limit (4 MiB less 64 KiB by default).
    deploy_example(&mut node, 1, "echo").await;
    let big = "x".repeat(sandstorm_proto::MAX_PAYLOAD_BYTES + 1);
    let err = invoke(&mut node, 1, "echo", &big).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("larger than the limit of 4128768 bytes"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn remote_key_value_api_covers_every_operation() {
    let mut node = start().await;
    for (k, v) in [
        ("user:1", "ann"),
        ("user:2", "bob"),
        ("user:3", "cy"),
        ("video:1", "x"),
    ] {
        put(&mut node, 9, k, v).await;
    }
    let got = node
        .kv
        .get(pb::GetRequest {
            tenant: 9,
            key: b"user:2".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"bob");
    let many = node
        .kv
        .multi_get(pb::MultiGetRequest {
            tenant: 9,
            keys: vec![b"user:3".to_vec(), b"nope".to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        many.values.iter().map(|v| v.found).collect::<Vec<_>>(),
        [true, false]
    );
    let scan = node
        .kv
        .scan(pb::ScanRequest {
            tenant: 9,
            prefix: b"user:".to_vec(),
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = scan
        .pairs
        .iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect();
    assert_eq!(keys, ["user:1", "user:2"]);
    let deleted = node
        .kv
        .delete(pb::DeleteRequest {
            tenant: 9,
            key: b"user:1".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.existed);
    let again = node
        .kv
        .delete(pb::DeleteRequest {
            tenant: 9,
            key: b"user:1".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.existed);
}

#[tokio::test]
async fn stats_stream_pushes_per_core_figures_and_measured_costs() {
    let mut node = start().await;
    deploy_example(&mut node, 1, "kv-sum").await;
    put(&mut node, 1, "a", "1").await;
    for _ in 0..100 {
        invoke(&mut node, 1, "kv-sum", "a").await.unwrap();
    }
    let mut stream = node
        .agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 5 })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a sample in time")
        .unwrap()
        .unwrap();
    assert_eq!(first.cores.len(), 2);
    assert_eq!(first.cores.iter().map(|c| c.invocations).sum::<u64>(), 100);
    assert_eq!(
        first.cores.iter().map(|c| c.instance_starts).sum::<u64>(),
        100
    );
    assert_eq!((first.keys, first.functions), (1, 1));
    let kinds: Vec<i32> = first.samples.iter().map(|s| s.kind).collect();
    assert!(
        kinds.contains(&(pb::cost_sample::Kind::WasmStart as i32)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(pb::cost_sample::Kind::LocalAccess as i32)),
        "{kinds:?}"
    );
    assert!(first.samples.iter().all(|s| s.micros > 0.0));
    // It keeps coming.
    let second = stream.message().await.unwrap().unwrap();
    assert!(second.at_unix_us >= first.at_unix_us);
}

/// Whether a call on `channel` was refused for want of an acceptable certificate or role.
async fn kv_get(channel: Channel) -> Result<pb::GetResponse, tonic::Status> {
    KeyValueClient::new(channel)
        .get(pb::GetRequest {
            tenant: 1,
            key: b"k".to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn only_cluster_members_in_their_roles_reach_the_node() {
    let mut node = start().await;
    put(&mut node, 1, "k", "secret").await;
    let addr = node.addr;

    // Plaintext: no TLS, nothing served.
    let plaintext = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let refused = kv_get(channel).await.unwrap_err();
        assert_ne!(refused.code(), Code::Ok);
    }

    // TLS that trusts the cluster CA but shows no certificate: the handshake is refused.
    let anonymous = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(sandstorm_identity::anonymous_client_tls(
            node.ca.cert_pem(),
            Some(&storage_peer()),
        ))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = anonymous {
        let refused = kv_get(channel).await.unwrap_err();
        assert!(
            format!("{refused:?}").contains("CertificateRequired"),
            "{refused:?}"
        );
    }

    // A certificate from another CA, naming a scheduler: refused too.
    let stranger_ca = ClusterCa::ephemeral().unwrap();
    if let Ok(channel) = dial(&stranger_ca, Peer::scheduler(), addr).await {
        let refused = kv_get(channel).await.unwrap_err();
        assert!(
            format!("{refused:?}").contains("Certificate"),
            "{refused:?}"
        );
    }

    // A compute node may make data calls (its containers'), but not manage the node.
    let compute = dial(
        &node.ca,
        Peer::new(Role::Compute, "compute-0").unwrap(),
        addr,
    )
    .await
    .unwrap();
    let value = kv_get(compute.clone()).await.unwrap();
    assert!(value.found);
    assert_eq!(value.value, b"secret");
    let refused = NodeAgentClient::new(compute)
        .remove(pb::RemoveRequest {
            function: function(1, "any"),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("compute"), "{refused:?}");

    // Another storage node is a member, but neither calls the other's API.
    let storage = dial(
        &node.ca,
        Peer::new(Role::Storage, "storage-1").unwrap(),
        addr,
    )
    .await
    .unwrap();
    let refused = kv_get(storage).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

#[tokio::test]
async fn tenant_allowances_and_data_quotas_answer_resource_exhausted() {
    let mut node = start().await;
    node.agent
        .set_tenant_quotas(pb::SetTenantQuotasRequest {
            tenants: vec![pb::TenantAllowance {
                tenant: 4,
                max_bytes: 10,
                max_keys: 100,
                quota_bytes: 30,
                quota_keys: 300,
            }],
        })
        .await
        .unwrap();
    put(&mut node, 4, "k1", "1234").await; // 2 + 4 = 6 bytes
    let err = node
        .kv
        .put(pb::PutRequest {
            tenant: 4,
            key: b"k2".to_vec(),
            value: b"abc".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "tenant-4 is over its storage quota: it holds 6 bytes on this node, this write would add \
         5, and its allowance here is 10 bytes (its share of its max_stored_bytes quota of 30 bytes \
         over the cluster)"
    );
    // Nothing was lost, and a delete makes room.
    let got = node
        .kv
        .get(pb::GetRequest {
            tenant: 4,
            key: b"k1".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"1234");
    node.kv
        .delete(pb::DeleteRequest {
            tenant: 4,
            key: b"k1".to_vec(),
        })
        .await
        .unwrap();
    put(&mut node, 4, "k2", "abc").await;
    put(&mut node, 5, "other", "x").await;
    let mut stream = node
        .agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 5 })
        .await
        .unwrap()
        .into_inner();
    let stats = stream.message().await.unwrap().unwrap();
    assert_eq!(
        stats.tenants,
        [
            pb::TenantUsage {
                tenant: 4,
                keys: 1,
                bytes: 5
            },
            pb::TenantUsage {
                tenant: 5,
                keys: 1,
                bytes: 6
            }
        ]
    );

    // A function past its data-call quota.
    let limits = Some(pb::FunctionLimits {
        max_data_calls: 3,
        ..Default::default()
    });
    let module = wat(r#"
        (import "sandstorm" "kv_get" (func $get (param i32 i32 i32 i32) (result i64)))
        (memory (export "memory") 1)
        (data (i32.const 0) "k")
        (func (export "run") (result i32)
          (loop $l (drop (call $get (i32.const 0) (i32.const 1) (i32.const 64) (i32.const 64))) (br $l))
          (i32.const 0))"#);
    deploy(&mut node, 4, "reader", module, limits)
        .await
        .unwrap();
    let err = invoke(&mut node, 4, "reader", "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "the invocation reached its max_data_calls quota of 3 data calls and was stopped"
    );
}
