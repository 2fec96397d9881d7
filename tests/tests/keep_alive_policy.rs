//! The cluster's keep-alive policy drives a live compute node: with `sandstorm scheduler
//! --keep-alive greedy-dual` a container the scheduler placed work in stays (greedy-dual keeps
//! idle containers until memory is needed) past the node's own 1 s window, while a container
//! of work the scheduler never saw, on the same node, is reclaimed by that window. The next
//! invocation through the scheduler then starts warm. Needs root (the compute role): without
//! it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::{Tenant, hash_chain};
use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;

const WARM: i32 = pb::StartKind::Warm as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_dual_keeps_a_container_the_nodes_own_window_would_reclaim() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // No re-provisioner: its plan could keep containers warm too.
    let scheduler = Service::scheduler(
        dir.path(),
        &["--keep-alive", "greedy-dual", "--reprovision-ms", "0"],
    );
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
    let compute = scheduler.start_agent(&[
        "agent",
        "--role",
        "compute",
        "--name",
        "compute-ka",
        "--listen",
        "127.0.0.1:0",
        "--pool-size",
        "2",
        "--keep-alive-secs",
        "1",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    compute.wait_for_stdout("registered with the scheduler", 1);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "keepalive").await;
    tenant.deploy("hash-chain").await;
    tenant.deploy("echo").await;
    tenant.put("blob", "sandstorm").await;
    tenant.wait_alive("compute-ka", true).await;

    // Through the scheduler: the policy hears of it and keeps its container until evicted.
    let (out, first) = tenant
        .invoke("hash-chain", "blob 1000", pb::Tier::Compute)
        .await;
    assert_eq!(out, hash_chain(b"sandstorm", 1000));
    assert_eq!(first.node, "compute-ka");
    assert_ne!(first.start, WARM, "{first:?}");

    // Straight to the node, which the scheduler never hears of: the node's own window applies.
    let mut agent = NodeAgentClient::new(
        common::agent_channel(
            &scheduler.data_dir(),
            compute.addr,
            Role::Compute,
            "compute-ka",
        )
        .await,
    );
    agent
        .execute(pb::ExecuteRequest {
            // The first tenant of a new cluster.
            function: Some(pb::FunctionRef {
                tenant: 0,
                name: "echo".into(),
            }),
            input: b"hello".to_vec(),
            invocation_id: 1,
        })
        .await
        .unwrap();
    let stats = common::next_stats(&mut agent).await;
    assert_eq!(stats.warm_containers, 2, "{stats:#?}");

    // The node reclaims the echo container after its 1 s window; hash-chain's stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = common::next_stats(&mut agent).await;
        if stats.warm_containers == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node's own window did not reclaim the echo container in 30 s: {stats:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // hash-chain's container has been idle longer than echo's: the round that reclaimed echo's
    // would have reclaimed it too under the node's own window.
    let stats = common::next_stats(&mut agent).await;
    assert_eq!(stats.warm_containers, 1, "{stats:#?}");
    let (out, second) = tenant
        .invoke("hash-chain", "blob 1000", pb::Tier::Compute)
        .await;
    assert_eq!(out, hash_chain(b"sandstorm", 1000));
    assert_eq!(second.start, WARM, "kept by the policy: {second:?}");
    drop((scheduler, storage, compute));
}
