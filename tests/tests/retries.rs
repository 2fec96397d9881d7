//! Retries follow the failure's kind, as the node types it. An invocation that started on an
//! agent that then died (`kill -9` mid-run) may have had effects: it runs again elsewhere only
//! if the caller marked it retryable, and otherwise fails naming why, with the other node
//! never having run it. Needs root (two compute agents): without it the test says so and is
//! skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::{Tenant, authed};
use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;

/// Invocations the compute agent `name` at `agent` has counted (they ride on core 0).
async fn invocations(scheduler: &Service, agent: &Service, name: &str) -> u64 {
    let mut client = NodeAgentClient::new(
        common::agent_channel(&scheduler.data_dir(), agent.addr, Role::Compute, name).await,
    );
    common::next_stats(&mut client)
        .await
        .cores
        .iter()
        .map(|c| c.invocations)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_invocation_runs_again_only_if_it_was_marked_retryable() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let names = ["compute-a", "compute-b"];
    let scheduler = Service::scheduler(dir.path(), &[]);
    let mut agents: Vec<Service> = names
        .iter()
        .zip(&states)
        .map(|(name, state)| scheduler.start_compute(name, state.path(), &[]))
        .collect();
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "retries").await;
    let token = tenant.token.clone();
    tenant
        .client
        .deploy_function(authed(
            pb::DeployFunctionRequest {
                name: "slow".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "sleep 2; echo done".into()],
                limits: Some(pb::Limits {
                    deadline_ms: 20_000,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();

    for retryable in [false, true] {
        let before = [
            invocations(&scheduler, &agents[0], names[0]).await,
            invocations(&scheduler, &agents[1], names[1]).await,
        ];
        let mut caller = tenant.clone();
        let call = tokio::spawn(async move {
            caller
                .try_invoke("slow", "", pb::Tier::Unspecified, retryable)
                .await
        });
        // The node it was placed on has started it: it counts it, and the scheduler's load
        // says it holds it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let runner = loop {
            let status = tenant.status().await;
            if let Some(i) = names
                .iter()
                .position(|name| status.nodes.iter().any(|n| n.name == *name && n.load > 0))
                && invocations(&scheduler, &agents[i], names[i]).await > before[i]
            {
                break i;
            }
            assert!(Instant::now() < deadline, "nothing started: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let other = 1 - runner;
        agents[runner].kill();
        let result = call.await.unwrap();
        let after_other = invocations(&scheduler, &agents[other], names[other]).await;
        if retryable {
            let response = result.unwrap();
            assert_eq!(response.output, b"done\n");
            let record = response.record.unwrap();
            assert_eq!(record.node, names[other], "{record:#?}");
            assert_eq!(record.failed_attempts.len(), 1, "{record:#?}");
            assert_eq!(record.failed_attempts[0].node, names[runner]);
            assert_eq!(
                after_other,
                before[other] + 1,
                "it ran again on the other node"
            );
        } else {
            let refused = result.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
            assert!(
                refused.message().contains("not retried"),
                "{}",
                refused.message()
            );
            assert_eq!(
                after_other, before[other],
                "a started invocation not marked retryable never runs twice"
            );
        }
        // The killed agent comes back under its name (its lock and parts released).
        agents[runner] = scheduler.start_compute(names[runner], states[runner].path(), &[]);
        tenant.wait_alive(names[runner], true).await;
    }
    drop((scheduler, agents));
}
