//! The scheduler's view of a compute node is the node's own report: containers and their memory
//! come and go with the node, not with the scheduler's bookkeeping. Before the view was rebuilt
//! from each report, every new container added its memory for good (nothing took it off when
//! the container fell idle or was reclaimed), so after enough churn every placement on a node
//! without a warm container was refused with "no memory". Real processes: a scheduler and a
//! compute agent. Needs root (the compute role): without it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::{Tenant, authed};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;

/// Functions deployed, each with the compute node's largest instance memory (256 MiB): their
/// containers need more than the 16 GiB the node registered (the default).
const FUNCTIONS: u32 = 72;
const MEMORY_MB: u32 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_memory_in_the_view_follows_the_nodes_report() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let _compute = scheduler.start_compute("compute-0", state.path(), &[]);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "churn").await;
    // The operator's view of the same cluster: a tenant is not shown containers or memory.
    let mut operator = Tenant {
        client: tenant.client.clone(),
        token: admin.clone(),
    };
    tenant.wait_alive("compute-0", true).await;
    let registered = operator.node("compute-0").await;
    for i in 0..FUNCTIONS {
        let request = pb::DeployFunctionRequest {
            name: format!("echo-{i}"),
            module: sandstorm_guest_examples::module("echo").unwrap().to_vec(),
            limits: Some(pb::Limits {
                memory_mb: MEMORY_MB,
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
    // The first run makes its container, the second (of a few) finds it warm.
    for round in 0..2 {
        for i in (0..FUNCTIONS).filter(|i| round == 0 || i % 8 == 0) {
            let (out, record) = tenant
                .invoke(
                    &format!("echo-{i}"),
                    &format!("r{round} f{i}"),
                    pb::Tier::Compute,
                )
                .await;
            assert_eq!(out, format!("r{round} f{i}"));
            assert_eq!(record.node, "compute-0");
        }
    }
    let tenant_view = tenant.node("compute-0").await;
    assert_eq!(
        (tenant_view.memory_used_mb, tenant_view.containers),
        (0, 0),
        "a tenant is not shown what the node keeps"
    );

    // The node keeps a container per function, idle now; the view agrees with its report.
    let want_mb = u64::from(FUNCTIONS * MEMORY_MB);
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        let node = operator.node("compute-0").await;
        // The reply can reach the client before the node's next report shows the last
        // container idle, so the wait covers the report's side too.
        if node.containers == FUNCTIONS
            && node.load == 0
            && node.memory_used_mb == want_mb
            && node.idle_containers == FUNCTIONS
            && node.reported_running == 0
        {
            break node;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the last call the view and the report still differ: {node:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("compute-0 after the calls: {node:?} (registered: {registered:?})");
    assert_eq!(node.reported_memory_mb, want_mb, "{node:?}");
    assert_eq!(node.idle_containers, FUNCTIONS, "{node:?}");
    assert_eq!(node.reported_running, 0, "{node:?}");
}
