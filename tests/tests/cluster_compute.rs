//! The compute tier in the live scheduler, with real processes on one host: a compute agent
//! registered with the scheduler (no `--storage` flag) learns the storage node from it, even
//! when the storage node joins after it; invocations placed on the compute node run there and
//! read their data from the storage node; the scheduler expects the warm container a run left
//! behind (its record predicts a warm start, and the node confirms it); the compute node's
//! statistics feed the view (its pools make a new container "assembled", not "cold"). Needs
//! root (the compute role): without it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{Tenant, hash_chain};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;

const WARM: i32 = pb::StartKind::Warm as i32;
const ASSEMBLED: i32 = pb::StartKind::Assembled as i32;
/// A CPU-heavy hash-chain (a few ms): the profile learns it from the forced runs.
const HEAVY: &str = "blob 400000";
const ROUNDS: u32 = 400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_places_on_a_registered_compute_node_that_reads_from_storage() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    // The compute node first: it knows no storage node until the scheduler tells it.
    let compute = scheduler.start_agent(&[
        "agent",
        "--role",
        "compute",
        "--name",
        "compute-0",
        "--listen",
        "127.0.0.1:0",
        "--pool-size",
        "2",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    compute.wait_for_stdout("registered with the scheduler", 1);
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
    let registered = storage.wait_for_stdout("registered with the scheduler", 1);
    // `... as node-N (...)`: the id the scheduler's key ring uses.
    let id = registered
        .split(" as node-")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap();
    let learned = compute.wait_for_stdout("storage nodes:", 1);
    assert!(
        learned.contains(&format!("node-{id}=storage-0@https://{}", storage.addr)),
        "the compute node routes by the scheduler's ids and addresses: {learned}"
    );

    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "compute").await;
    tenant.deploy("hash-chain").await;
    tenant.deploy("graph-walk").await;
    for (key, value) in [
        ("blob", "sandstorm"),
        ("node:1", "2,3"),
        ("node:2", "3,1"),
        ("node:3", "1,2"),
    ] {
        tenant.put(key, value).await;
    }
    let node = tenant.wait_alive("compute-0", true).await;
    assert_eq!(node.role, pb::Tier::Compute as i32);

    // Forced to compute: it runs there and reads the value from the storage node. Before the
    // first run there is no warm container; the pools the node reported make it "assembled".
    let (out, first) = tenant.invoke("hash-chain", HEAVY, pb::Tier::Compute).await;
    assert_eq!(out, hash_chain(b"sandstorm", ROUNDS));
    assert_eq!(first.node, "compute-0");
    assert_eq!(first.tier, pb::Tier::Compute as i32);
    assert_eq!(first.keys_read, 1, "{first:?}");
    assert_eq!(first.bytes_read, 9, "{first:?}");
    let predicted = common::candidate(&first, "compute-0");
    assert_eq!(predicted.start, ASSEMBLED, "{predicted:?}");
    let storage_candidate = common::candidate(&first, "storage-0");
    assert_eq!(
        storage_candidate.verdict,
        pb::candidate_cost::Verdict::Rejected as i32
    );
    assert!(storage_candidate.cost.unwrap().objective > 0.0);

    // The container it left is warm: the scheduler predicts it and the node confirms it.
    let (out, second) = tenant.invoke("hash-chain", HEAVY, pb::Tier::Compute).await;
    assert_eq!(out, hash_chain(b"sandstorm", ROUNDS));
    assert_eq!(common::candidate(&second, "compute-0").start, WARM);
    assert_eq!(second.start, WARM, "{second:?}");

    // Calibration is per node and per kind, and counts measurements: compute-0's own figures
    // are its one start of the first kind and its one warm start, however many stats messages
    // (one every 10 ms) have gone by; its in-container Wasm instantiation is no storage node's
    // Wasm start.
    let first_kind = if first.start == ASSEMBLED {
        "container_assembled_us"
    } else {
        "container_cold_us"
    };
    let own = |status: &pb::ClusterStatusResponse, name: &str| {
        status
            .params
            .iter()
            .find(|p| p.node == "compute-0" && p.name == name)
            .map(|p| p.samples)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = tenant.status().await;
        if own(&status, first_kind) == Some(1) && own(&status, "warm_start_us") == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compute-0's starts not calibrated after 30 s: {:#?}",
            status.params
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Twenty more stats messages later (read from the node's own stream, at the scheduler's
    // interval): still one measurement each.
    let mut agent = sandstorm_proto::v1::node_agent_client::NodeAgentClient::new(
        common::agent_channel(
            &scheduler.data_dir(),
            compute.addr,
            sandstorm_identity::Role::Compute,
            "compute-0",
        )
        .await,
    );
    let mut stats = agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 10 })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..20 {
        stats.message().await.unwrap().unwrap();
    }
    let status = tenant.status().await;
    assert_eq!(own(&status, first_kind), Some(1), "{:#?}", status.params);
    assert_eq!(
        own(&status, "warm_start_us"),
        Some(1),
        "{:#?}",
        status.params
    );
    assert_eq!(own(&status, "wasm_start_us"), None, "{:#?}", status.params);
    for p in &status.params {
        println!(
            "calibrated {} {} = {:.1} us ({} samples)",
            p.node, p.name, p.micros, p.samples
        );
    }

    // Left to the cost model, a CPU-heavy hash-chain goes to the compute node's own cores (the
    // sandbox slowdown and the storage CPU price outweigh one round trip and a warm start) and
    // still reads its data from the storage node.
    for _ in 0..3 {
        let (out, record) = tenant
            .invoke("hash-chain", HEAVY, pb::Tier::Unspecified)
            .await;
        assert_eq!(out, hash_chain(b"sandstorm", ROUNDS));
        assert_eq!(record.node, "compute-0", "{record:#?}");
        assert_eq!(record.bytes_read, 9);
        assert!(
            common::objective(&record, "storage-0") > common::objective(&record, "compute-0"),
            "{record:#?}"
        );
    }
    // A graph walk of dependent reads stays next to its data, once the profile knows what it
    // does (a function never run is costed with the prior: 1 ms of compute, one access). 32
    // hops: the round trips dominate its cost on a compute node even when a loaded machine
    // stretches the profiled compute time.
    let path = (0..=32)
        .map(|i| if i % 2 == 0 { "1" } else { "2" })
        .collect::<Vec<_>>()
        .join(" ");
    for _ in 0..3 {
        let (out, _) = tenant.invoke("graph-walk", "1 32", pb::Tier::Storage).await;
        assert_eq!(out, path);
    }
    let (out, record) = tenant
        .invoke("graph-walk", "1 32", pb::Tier::Unspecified)
        .await;
    assert_eq!(out, path);
    assert_eq!(record.node, "storage-0", "{record:#?}");
    assert_eq!(record.bytes_moved, 0);
}
