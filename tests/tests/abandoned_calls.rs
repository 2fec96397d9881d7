//! Clients that go away mid-call, with real processes: a scheduler and two storage nodes. Calls
//! abandoned by a client deadline (the scheduler drops the handler when the `grpc-timeout`
//! passes), and an `InvokeStream` dropped with invocations in flight, must give back everything
//! they held in the scheduler's view. Before the reservation was owned by a guard, 600 calls with
//! a 2 ms deadline left every node at its admission limit for good, and the cluster refused every
//! invocation from then on. Needs no root.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::{Tenant, authed};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;

fn storage_agent(name: &str, scheduler: &Service) -> Service {
    scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--in-memory",
    ])
}

/// A CPU-bound invocation that runs for milliseconds: long enough to be abandoned mid-run.
fn slow_request() -> pb::InvokeRequest {
    pb::InvokeRequest {
        function: "hash-chain".into(),
        input: "absent 400000".into(),
        ..Default::default()
    }
}

/// Polls the cluster status (every 50 ms, at most 30 s: a bound on a broken run, not a timing
/// assertion) until no node holds any load, in the scheduler's view and by the node's own
/// report alike.
async fn wait_until_nothing_is_held(tenant: &mut Tenant) -> pb::ClusterStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = tenant.status().await;
        if status
            .nodes
            .iter()
            .all(|n| n.load == 0 && n.reported_running == 0)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the last abandoned call, nodes still hold load: {:?}",
            status
                .nodes
                .iter()
                .map(|n| (&n.name, n.load, n.reported_running))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_abandoned_by_their_clients_give_back_what_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let a = storage_agent("storage-0", &scheduler);
    let b = storage_agent("storage-1", &scheduler);
    a.wait_for_stdout("registered with the scheduler", 1);
    b.wait_for_stdout("registered with the scheduler", 1);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "leaver").await;
    tenant.deploy("hash-chain").await;
    tenant.deploy("echo").await;
    tenant.wait_alive("storage-0", true).await;
    tenant.wait_alive("storage-1", true).await;

    // 600 unary calls whose client gives up after 2 ms, 32 at a time.
    let mut abandoned = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let mut t = tenant.clone();
        abandoned.spawn(async move {
            let mut timed_out = 0u32;
            for _ in 0..600 / 32 + 1 {
                let mut request = authed(slow_request(), &t.token);
                request.set_timeout(Duration::from_millis(2));
                if t.client.invoke(request).await.is_err() {
                    timed_out += 1;
                }
            }
            timed_out
        });
    }
    let mut timed_out = 0;
    while let Some(n) = abandoned.join_next().await {
        timed_out += n.unwrap();
    }
    assert!(
        timed_out > 0,
        "the 2 ms client deadline abandoned some calls"
    );

    // A stream with invocations in flight, dropped before their answers.
    let (sender, requests) = tokio::sync::mpsc::channel(64);
    for tag in 0..16 {
        sender
            .send(pb::InvokeStreamRequest {
                tag,
                request: Some(slow_request()),
            })
            .await
            .unwrap();
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(requests);
    let mut answers = tenant
        .client
        .clone()
        .invoke_stream(authed(stream, &tenant.token))
        .await
        .unwrap()
        .into_inner();
    // Wait for one answer, so the others are surely placed, then hang up.
    answers.message().await.unwrap();
    drop(answers);
    drop(sender);

    let status = wait_until_nothing_is_held(&mut tenant).await;
    println!(
        "{timed_out} calls abandoned by their clients; afterwards: {:?}",
        status
            .nodes
            .iter()
            .map(|n| (&n.name, n.load))
            .collect::<Vec<_>>()
    );
    // And the cluster still serves.
    for i in 0..20 {
        let (out, _) = tenant
            .invoke("echo", &format!("after {i}"), pb::Tier::Unspecified)
            .await;
        assert_eq!(out, format!("after {i}"));
    }
}
