//! The real compute node binary beside a real storage node: WebAssembly functions run in
//! containers and read and write data owned by the storage node, native programs run in the
//! base root file system, warm containers are reused, chains hand off on the node's local bus,
//! the scheduler's execute stream answers by tag, failures get the right status, and a
//! killed agent's leftovers are cleared by the next one. Needs root (namespaces, cgroups,
//! mounts): without it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;
use tonic::Code;

mod common;
use common::TestCa;

const TENANT: u32 = 7;
const OTHER: u32 = 8;

/// The standalone compute node `name` reading from `storage` (`storage-0`), with credentials
/// from `ca`.
fn compute_agent(ca: &TestCa, name: &str, storage: &Service, state: &std::path::Path) -> Service {
    let identity = ca.identity(Role::Compute, name);
    Service::start([
        "agent",
        "--role",
        "compute",
        "--name",
        name,
        "--identity-dir",
        identity.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--storage",
        &format!("storage-0={}", storage.addr),
        "--pool-size",
        "2",
        "--state-dir",
        state.to_str().unwrap(),
    ])
}

fn cgroups_of(node: &str) -> usize {
    std::fs::read_dir(format!("/sys/fs/cgroup/memory/sandstorm/{node}"))
        .or_else(|_| std::fs::read_dir(format!("/sys/fs/cgroup/sandstorm/{node}")))
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
                .count()
        })
        .unwrap_or(0)
}

fn function(tenant: u32, name: &str) -> Option<pb::FunctionRef> {
    Some(pb::FunctionRef {
        tenant,
        name: name.into(),
    })
}

async fn deploy_example(
    agent: &mut NodeAgentClient<tonic::transport::Channel>,
    tenant: u32,
    name: &str,
) {
    agent
        .deploy(pb::DeployRequest {
            function: function(tenant, name),
            module: sandstorm_guest_examples::module(name).unwrap().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
}

async fn execute(
    agent: &mut NodeAgentClient<tonic::transport::Channel>,
    tenant: u32,
    name: &str,
    input: &str,
) -> Result<pb::ExecuteResponse, tonic::Status> {
    agent
        .execute(pb::ExecuteRequest {
            function: function(tenant, name),
            input: input.as_bytes().to_vec(),
            invocation_id: 1,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until the node's statistics say every part pool is at its target (60 s at most).
async fn wait_for_full_pools(agent: &mut NodeAgentClient<tonic::transport::Channel>) {
    let mut stats = agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 20 })
        .await
        .unwrap()
        .into_inner();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let sample = stats.message().await.unwrap().unwrap();
        let full = |p: &pb::PoolLevel| p.ready >= p.target;
        if !sample.pools.is_empty() && sample.pools.iter().all(full) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "the pools never filled: {:?}",
            sample.pools
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_run_in_containers_next_to_a_real_storage_node() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        eprintln!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let storage_identity = ca.identity(Role::Storage, "storage-0");
    let storage = Service::start([
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--identity-dir",
        storage_identity.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--in-memory",
        "--cores",
        "1",
    ]);
    let node = "compute-e2e";
    let mut compute = compute_agent(&ca, node, &storage, state.path());
    let mut kv = KeyValueClient::new(ca.dial(&storage, Role::Storage, "storage-0").await);
    let mut agent = NodeAgentClient::new(ca.dial(&compute, Role::Compute, node).await);

    for (key, value) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "39"),
        ("node:1", "2,3"),
        ("node:2", "3"),
        ("node:3", "1"),
    ] {
        kv.put(pb::PutRequest {
            tenant: TENANT,
            key: key.into(),
            value: value.into(),
        })
        .await
        .unwrap();
    }
    for name in ["kv-sum", "counter", "graph-walk", "echo"] {
        deploy_example(&mut agent, TENANT, name).await;
    }
    deploy_example(&mut agent, OTHER, "kv-sum").await;

    // Data read from the storage node through the agent; the first call assembles the
    // function's container from pooled parts (once every pool is full: before that, on a busy
    // machine, a part could still be built on the critical path), the next reuses it warm.
    wait_for_full_pools(&mut agent).await;
    let first = execute(&mut agent, TENANT, "kv-sum", "a b c")
        .await
        .unwrap();
    assert_eq!(first.output, b"42");
    let record = first.record.unwrap();
    assert_eq!(record.tier(), pb::Tier::Compute);
    assert_eq!(record.start(), pb::StartKind::Assembled);
    assert_eq!((record.data_calls, record.keys_read), (1, 3));
    let second = execute(&mut agent, TENANT, "kv-sum", "a b").await.unwrap();
    assert_eq!(second.output, b"3");
    assert_eq!(second.record.unwrap().start(), pb::StartKind::Warm);

    // Dependent reads, and the same path as the storage node computes.
    let walk = execute(&mut agent, TENANT, "graph-walk", "1 4")
        .await
        .unwrap();
    assert_eq!(walk.record.unwrap().keys_read, 4);
    let mut on_storage = NodeAgentClient::new(ca.dial(&storage, Role::Storage, "storage-0").await);
    deploy_example(&mut on_storage, TENANT, "graph-walk").await;
    let expected = execute(&mut on_storage, TENANT, "graph-walk", "1 4")
        .await
        .unwrap();
    assert_eq!(walk.output, expected.output);

    // Writes land on the storage node.
    for expected in 1..=3 {
        let out = execute(&mut agent, TENANT, "counter", "visits")
            .await
            .unwrap();
        assert_eq!(out.output, expected.to_string().as_bytes());
    }
    let stored = kv
        .get(pb::GetRequest {
            tenant: TENANT,
            key: b"visits".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.value, b"3");

    // Another tenant's container sees none of it.
    let other = execute(&mut agent, OTHER, "kv-sum", "a b c").await.unwrap();
    assert_eq!(other.output, b"0");

    // Native programs of the base root file system: input on stdin, output on stdout.
    agent
        .deploy(pb::DeployRequest {
            function: function(TENANT, "upper"),
            command: vec!["/bin/sh".into(), "-c".into(), "tr a-z A-Z".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        execute(&mut agent, TENANT, "upper", "hello")
            .await
            .unwrap()
            .output,
        b"HELLO"
    );
    agent
        .deploy(pb::DeployRequest {
            function: function(TENANT, "fails"),
            command: vec!["/bin/sh".into(), "-c".into(), "echo oops; exit 3".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let failed = execute(&mut agent, TENANT, "fails", "").await.unwrap_err();
    assert_eq!(failed.code(), Code::Aborted, "{failed:?}");
    assert!(
        failed.message().contains("exited with code 3"),
        "{failed:?}"
    );

    // An endless loop is stopped at its deadline; the node keeps serving.
    let endless = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "run") (result i32) (loop (br 0)) (i32.const 0)))"#,
    )
    .unwrap();
    agent
        .deploy(pb::DeployRequest {
            function: function(TENANT, "endless"),
            module: endless,
            limits: Some(pb::FunctionLimits {
                deadline_ms: 200,
                memory_bytes: 0,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let stopped = execute(&mut agent, TENANT, "endless", "")
        .await
        .unwrap_err();
    assert_eq!(stopped.code(), Code::DeadlineExceeded, "{stopped:?}");
    assert_eq!(
        execute(&mut agent, TENANT, "echo", "still here")
            .await
            .unwrap()
            .output,
        b"still here"
    );

    // A chain on the node's local bus: each output handed to the next step in the node.
    let chain = |steps: &[(&str, u64)], input: &str| pb::ExecuteChainRequest {
        steps: steps
            .iter()
            .map(|&(name, id)| pb::ChainStep {
                function: function(TENANT, name),
                invocation_id: id,
            })
            .collect(),
        input: input.as_bytes().to_vec(),
    };
    let ran = agent
        .execute_chain(chain(&[("echo", 1), ("echo", 2), ("kv-sum", 3)], "a b c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ran.output, b"42");
    assert!(ran.failure.is_none(), "{:?}", ran.failure);
    let ids: Vec<u64> = ran.records.iter().map(|r| r.invocation_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(ran.records[0].handoff_ns, 0);
    assert!(
        ran.records[1..].iter().all(|r| r.handoff_ns > 0),
        "{:?}",
        ran.records
    );
    // A failing step ends the chain and is named; an unknown one runs nothing.
    let failing = agent
        .execute_chain(chain(&[("echo", 4), ("fails", 5), ("echo", 6)], "x"))
        .await
        .unwrap()
        .into_inner();
    let failure = failing.failure.unwrap();
    assert_eq!(failure.step, 1, "{failure:?}");
    assert_eq!(failure.code, Code::Aborted as i32, "{failure:?}");
    assert_eq!(failing.records.len(), 1);
    let unknown = agent
        .execute_chain(chain(&[("echo", 7), ("nope", 8)], "x"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // The scheduler's stream: tagged answers, errors as Execute's.
    let requests = [("echo", "one"), ("nope", ""), ("kv-sum", "a b")].map(|(name, input)| {
        pb::ExecuteStreamRequest {
            tag: u64::from(name.as_bytes()[0]),
            request: Some(pb::ExecuteRequest {
                function: function(TENANT, name),
                input: input.as_bytes().to_vec(),
                invocation_id: 9,
            }),
        }
    });
    let mut answers = agent
        .execute_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(answer) = answers.message().await.unwrap() {
        seen.insert(answer.tag, answer.result.unwrap());
    }
    use pb::execute_stream_response::Result as Answer;
    assert!(
        matches!(&seen[&u64::from(b'e')], Answer::Response(r) if r.output == b"one"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[&u64::from(b'n')], Answer::Error(e) if e.code == Code::NotFound as i32),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[&u64::from(b'k')], Answer::Response(r) if r.output == b"3"),
        "{seen:?}"
    );

    // Bad input gets a status that names it.
    let bad = agent
        .deploy(pb::DeployRequest {
            function: function(TENANT, "junk"),
            module: b"not wasm".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let missing = execute(&mut agent, TENANT, "nope", "").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    agent
        .remove(pb::RemoveRequest {
            function: function(TENANT, "echo"),
        })
        .await
        .unwrap();
    let removed = execute(&mut agent, TENANT, "echo", "x").await.unwrap_err();
    assert_eq!(removed.code(), Code::NotFound, "{removed:?}");

    // The stats stream reports the compute role, its warm containers and pool levels.
    let mut stats = agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 20 })
        .await
        .unwrap()
        .into_inner();
    let sample = stats.message().await.unwrap().unwrap();
    assert_eq!(sample.role(), pb::Tier::Compute);
    assert!(sample.warm_containers >= 4, "{sample:?}");
    assert_eq!(sample.pools.len(), 5, "{sample:?}");
    assert!(!sample.cores.is_empty());
    drop(stats);

    // A killed agent leaves cgroups behind; the next one with its name clears them at start.
    assert!(
        cgroups_of(node) > 2,
        "warm containers and pools hold cgroups"
    );
    compute.kill();
    let mut again = compute_agent(&ca, node, &storage, state.path());
    let mut agent = NodeAgentClient::new(ca.dial(&again, Role::Compute, node).await);
    deploy_example(&mut agent, TENANT, "kv-sum").await;
    assert_eq!(
        execute(&mut agent, TENANT, "kv-sum", "a b c")
            .await
            .unwrap()
            .output,
        b"42"
    );
    // A clean shutdown removes everything.
    again.terminate();
    assert_eq!(cgroups_of(node), 0, "cgroups left after a clean shutdown");
}
