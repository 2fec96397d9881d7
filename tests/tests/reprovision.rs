//! The re-provisioner's plan, applied for real.
//!
//! - A storage agent told to dedicate cores to a function runs that function only on them and
//!   every other function only on the cores left shared; its statistics say which core is whose;
//!   a plan naming an unknown function or more cores than it has is applied as far as it can be
//!   and the rest named.
//! - A live scheduler solves the plan from the profiles of real invocations and applies it: the
//!   compute node keeps the busy function's container past its keep-alive window, its pools
//!   take the planned size, and the status shows the plan. Needs root (the compute role).

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::{Tenant, hash_chain};
use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;

fn function(tenant: u32, name: &str) -> Option<pb::FunctionRef> {
    Some(pb::FunctionRef {
        tenant,
        name: name.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_agent_runs_a_function_on_the_cores_dedicated_to_it() {
    let ca = common::TestCa::new();
    let identity = ca.identity(Role::Storage, "storage-0");
    let node = Service::start([
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--identity-dir",
        identity.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "3",
        "--in-memory",
    ]);
    let mut agent = NodeAgentClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    for name in ["echo", "counter"] {
        agent
            .deploy(pb::DeployRequest {
                function: function(7, name),
                module: sandstorm_guest_examples::module(name).unwrap().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let skipped = agent
        .provision(pb::ProvisionRequest {
            dedicated: vec![
                pb::DedicatedCores {
                    function: function(7, "echo"),
                    cores: 2,
                },
                pb::DedicatedCores {
                    function: function(7, "missing"),
                    cores: 1,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("missing"), "{skipped:?}");
    let stats = common::next_stats(&mut agent).await;
    let owners: Vec<&str> = stats
        .cores
        .iter()
        .map(|c| c.dedicated_to.as_str())
        .collect();
    assert_eq!(owners, ["", "7/echo", "7/echo"]);

    // Concurrent invocations: echo spreads over its two cores, counter stays on the shared one.
    let mut runs = Vec::new();
    for i in 0..40u64 {
        let mut agent = agent.clone();
        let name = if i % 2 == 0 { "echo" } else { "counter" };
        runs.push(tokio::spawn(async move {
            let record = agent
                .execute(pb::ExecuteRequest {
                    function: function(7, name),
                    input: b"hits".to_vec(),
                    invocation_id: i,
                })
                .await
                .unwrap()
                .into_inner()
                .record
                .unwrap();
            (name, record.core)
        }));
    }
    let mut echo_cores = std::collections::BTreeSet::new();
    for run in runs {
        let (name, core) = run.await.unwrap();
        match name {
            "echo" => {
                assert!(core == 1 || core == 2, "echo ran on core {core}");
                echo_cores.insert(core);
            }
            _ => assert_eq!(core, 0, "counter ran on echo's core {core}"),
        }
    }
    println!("echo ran on cores {echo_cores:?}; counter on core 0");

    // More than it has: one core always stays shared, and the response says so.
    let skipped = agent
        .provision(pb::ProvisionRequest {
            dedicated: vec![pb::DedicatedCores {
                function: function(7, "counter"),
                cores: 5,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .skipped;
    assert!(
        skipped.len() == 1 && skipped[0].contains("5 dedicated cores asked, 2 given"),
        "{skipped:?}"
    );
    let owners: Vec<String> = common::next_stats(&mut agent)
        .await
        .cores
        .into_iter()
        .map(|c| c.dedicated_to)
        .collect();
    assert_eq!(owners, ["", "7/counter", "7/counter"]);
    // An empty plan gives every core back.
    agent
        .provision(pb::ProvisionRequest::default())
        .await
        .unwrap();
    let stats = common::next_stats(&mut agent).await;
    assert!(stats.cores.iter().all(|c| c.dedicated_to.is_empty()));
    // A bad function reference is refused, and the node keeps serving.
    let refused = agent
        .provision(pb::ProvisionRequest {
            dedicated: vec![pb::DedicatedCores {
                function: None,
                cores: 1,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(common::next_stats(&mut agent).await.cores.len(), 3);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_plans_from_live_profiles_and_the_compute_node_keeps_what_it_planned() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &["--reprovision-ms", "300"]);
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
    // Containers idle for a second are reclaimed, unless the plan keeps them.
    let compute = scheduler.start_agent(&[
        "agent",
        "--role",
        "compute",
        "--name",
        "compute-0",
        "--listen",
        "127.0.0.1:0",
        "--pool-size",
        "1",
        "--keep-alive-secs",
        "1",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    compute.wait_for_stdout("registered with the scheduler", 1);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "busy").await;
    tenant.deploy("hash-chain").await;
    tenant.put("blob", "sandstorm").await;
    tenant.wait_alive("compute-0", true).await;

    // Until the compute node's first statistics say its pool is ready, a container there would
    // be a cold start and the cost model rightly keeps the function on storage.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, record) = tenant
            .invoke("hash-chain", "blob 400000", pb::Tier::Unspecified)
            .await;
        if record.node == "compute-0" {
            break;
        }
        assert_eq!(
            common::candidate(&record, "compute-0").start,
            pb::StartKind::Cold as i32,
            "only a cold compute node loses to storage: {record:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "the compute node's pool is not ready within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A busy CPU-heavy function, which the cost model sends to the compute node.
    for _ in 0..30 {
        let (out, record) = tenant
            .invoke("hash-chain", "blob 400000", pb::Tier::Unspecified)
            .await;
        assert_eq!(out, hash_chain(b"sandstorm", 400_000));
        assert_eq!(record.node, "compute-0", "{record:#?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let plan = loop {
        let plan = tenant.status().await.plan.unwrap_or_default();
        if plan
            .functions
            .iter()
            .any(|f| f.function == "hash-chain" && f.warm_on == ["compute-0"])
        {
            break plan;
        }
        assert!(
            Instant::now() < deadline,
            "no plan keeps hash-chain warm within 10 s: {plan:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{plan:#?}");
    assert!(plan.solve_us > 0);
    assert!(plan.problems.is_empty(), "a tenant sees no problems list");
    let planned_pool = plan
        .pools
        .iter()
        .find(|p| p.node == "compute-0")
        .expect("a pool size for the compute node")
        .size;

    // Past the keep-alive window the container is still there, the pools are at the planned
    // size, and the next invocation is warm, as the scheduler predicted.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut agent = NodeAgentClient::new(
        common::agent_channel(
            &scheduler.data_dir(),
            compute.addr,
            Role::Compute,
            "compute-0",
        )
        .await,
    );
    let stats = common::next_stats(&mut agent).await;
    let status = tenant.status().await;
    assert!(
        stats.warm_containers >= 1,
        "{stats:#?}\n{:#?}\n{:#?}",
        status.params,
        status.plan
    );
    for pool in &stats.pools {
        assert_eq!(pool.target, planned_pool, "{stats:#?}");
    }
    let (_, record) = tenant
        .invoke("hash-chain", "blob 400000", pb::Tier::Unspecified)
        .await;
    assert_eq!(record.node, "compute-0");
    assert_eq!(record.start, pb::StartKind::Warm as i32, "{record:#?}");
    assert_eq!(
        common::candidate(&record, "compute-0").start,
        pb::StartKind::Warm as i32
    );
    drop((scheduler, storage, compute));
}
