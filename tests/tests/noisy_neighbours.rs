//! Noisy neighbours, with real processes: a tenant that floods the cluster with `spin` (a
//! function that burns CPU until its deadline stops it) must not stop another tenant's calls from
//! completing with the right output, on either tier. The noisy tenant's excess is refused with
//! RESOURCE_EXHAUSTED naming its share of the node (one tenant holds all of a node's admission
//! places but one per core); before that rule, its spinners took every place of the node and the quiet
//! tenant's calls were refused with UNAVAILABLE for as long as they ran. Outputs and error codes
//! are asserted, never timings. The compute test needs root.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{Tenant, authed, hash_chain};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;
use tokio::task::JoinSet;
use tonic::Code;

/// The spinners' deadline: long enough that the quiet tenant's calls run while they spin.
const SPIN_DEADLINE_MS: u32 = 8_000;

async fn deploy_spin(tenant: &mut Tenant) {
    let request = pb::DeployFunctionRequest {
        name: "spin".into(),
        module: sandstorm_guest_examples::module("spin").unwrap().to_vec(),
        limits: Some(pb::Limits {
            deadline_ms: SPIN_DEADLINE_MS,
            ..Default::default()
        }),
        ..Default::default()
    };
    tenant
        .client
        .deploy_function(authed(request, &tenant.token))
        .await
        .unwrap();
}

/// `count` spinners of `tenant` forced to `tier`, each its own call: how each ended.
fn spinners(
    tenant: &Tenant,
    count: usize,
    tier: pb::Tier,
) -> JoinSet<Result<String, tonic::Status>> {
    let mut set = JoinSet::new();
    for _ in 0..count {
        let mut t = tenant.clone();
        set.spawn(async move {
            t.try_invoke("spin", "", tier, false)
                .await
                .map(|r| String::from_utf8(r.output).unwrap())
        });
    }
    set
}

/// Polls the cluster status (every 20 ms, at most 60 s: a bound on a broken run) until node
/// `name`'s load (invocations it holds) passes `ok`.
async fn wait_for_load(tenant: &mut Tenant, name: &str, what: &str, ok: impl Fn(u32) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let node = tenant.node(name).await;
        if ok(node.load) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never held {what}: {node:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits for `refused` spinners to be refused (each must be RESOURCE_EXHAUSTED naming the
/// tenant's share of `node`), leaving the admitted ones spinning in `set`.
async fn take_refusals(
    set: &mut JoinSet<Result<String, tonic::Status>>,
    refused: usize,
    node: &str,
) {
    for _ in 0..refused {
        let ended = set.join_next().await.unwrap().unwrap();
        let e = ended.expect_err("a spinner over the tenant's share returned");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        for needle in [node, "share", "admission places", "retry when"] {
            assert!(
                e.message().contains(needle),
                "{needle:?} in {}",
                e.message()
            );
        }
    }
}

/// Waits for the remaining spinners: each is stopped at its deadline (DEADLINE_EXCEEDED).
async fn take_deadlines(set: &mut JoinSet<Result<String, tonic::Status>>) -> usize {
    let mut stopped = 0;
    while let Some(ended) = set.join_next().await {
        let e = ended
            .unwrap()
            .expect_err("spin without ROUNDS never returns");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        stopped += 1;
    }
    stopped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_a_storage_node_with_spinners_leaves_room_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    // One core: admission 9 places (1 running, 8 queued); the noisy tenant sends 16 spinners.
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
    let admin = common::admin_token(dir.path());
    let mut quiet = Tenant::create(&scheduler, &admin, "quiet").await;
    let mut noisy = Tenant::create(&scheduler, &admin, "noisy").await;
    quiet.deploy("kv-sum").await;
    deploy_spin(&mut noisy).await;
    for (key, value) in [("a", "40"), ("b", "2")] {
        quiet.put(key, value).await;
    }
    quiet.wait_alive("storage-0", true).await;
    // The noisy tenant's share of the node: its 9 places but one.
    let share = 8;

    let mut spinning = spinners(&noisy, 16, pb::Tier::Storage);
    take_refusals(&mut spinning, 16 - share, "storage-0").await;
    wait_for_load(&mut quiet, "storage-0", "the spinners", |l| {
        l >= share as u32
    })
    .await;

    // The quiet tenant's storage-tier calls succeed with the right data while the node's core
    // is full of spinners. Each call is made while the spinners still hold their places.
    let mut overlapped = 0;
    for i in 0..40 {
        let held = quiet.node("storage-0").await.load;
        let (out, record) = quiet.invoke("kv-sum", "a b", pb::Tier::Storage).await;
        assert_eq!(out, "42", "call {i}");
        assert_eq!(record.node, "storage-0");
        if held >= share as u32 && spinning.len() == share {
            overlapped += 1;
        }
    }
    println!("{overlapped} of 40 quiet calls ran beside {share} spinners");
    assert!(
        overlapped > 0,
        "no quiet call ran while the spinners held the node"
    );
    // Its writes too: a counter of its own is not held back.
    quiet.deploy("counter").await;
    for n in 1..=5 {
        let (out, _) = quiet.invoke("counter", "hits", pb::Tier::Storage).await;
        assert_eq!(out, n.to_string());
    }

    let stopped = take_deadlines(&mut spinning).await;
    assert_eq!(stopped, share, "every admitted spinner ran to its deadline");

    // After the deadlines the node serves both tenants again, the noisy one included.
    let (out, _) = noisy.invoke("spin", "1000", pb::Tier::Storage).await;
    assert_eq!(out.len(), 16, "{out}");
    let (out, _) = quiet.invoke("kv-sum", "a b", pb::Tier::Storage).await;
    assert_eq!(out, "42");
    wait_for_load(&mut quiet, "storage-0", "nothing", |l| l == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_compute_invocations_do_not_stop_another_tenants_compute_calls() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
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
    storage.wait_for_stdout("registered with the scheduler", 1);
    compute.wait_for_stdout("registered with the scheduler", 1);
    let admin = common::admin_token(dir.path());
    let mut quiet = Tenant::create(&scheduler, &admin, "quiet").await;
    let mut noisy = Tenant::create(&scheduler, &admin, "noisy").await;
    quiet.deploy("hash-chain").await;
    deploy_spin(&mut noisy).await;
    quiet.put("blob", "sandstorm").await;
    let node = quiet.wait_alive("compute-0", true).await;
    assert_eq!(node.role, pb::Tier::Compute as i32);
    // The compute node's places (cores x 9) but one per core.
    let cores = usize::try_from(node.cores).unwrap();
    let share = cores * 8;

    let spinners_sent = share + 4;
    let mut spinning = spinners(&noisy, spinners_sent, pb::Tier::Compute);
    take_refusals(&mut spinning, spinners_sent - share, "compute-0").await;

    let mut overlapped = 0;
    for i in 0..10u32 {
        let input = format!("blob {}", 100 + i);
        let (out, record) = quiet.invoke("hash-chain", &input, pb::Tier::Compute).await;
        assert_eq!(out, hash_chain(b"sandstorm", 100 + i), "call {i}");
        assert_eq!(record.node, "compute-0");
        if spinning.len() == share {
            overlapped += 1;
        }
    }
    println!("{overlapped} of 10 quiet compute calls ran beside {share} spinners");
    assert!(
        overlapped > 0,
        "no quiet call ran while the spinners held the node"
    );

    assert_eq!(take_deadlines(&mut spinning).await, share);
    // After the spinners' deadlines the cluster keeps serving both tenants on compute.
    let (out, _) = noisy.invoke("spin", "1000", pb::Tier::Compute).await;
    assert_eq!(out.len(), 16, "{out}");
    let (out, _) = quiet
        .invoke("hash-chain", "blob 7", pb::Tier::Compute)
        .await;
    assert_eq!(out, hash_chain(b"sandstorm", 7));
    wait_for_load(&mut quiet, "compute-0", "nothing", |l| l == 0).await;
}
