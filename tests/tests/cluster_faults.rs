//! A node agent killed with SIGKILL under a load of mixed invocations, with real processes: a
//! scheduler and two storage nodes, each able to run every (data-free) invocation. Every
//! invocation gets a result or a clear error within its deadline; invocations marked retryable,
//! and those that never started on the dead node, get a result from the other node; the dead
//! node is declared dead in the cluster status; later invocations go to the survivor; nothing
//! stays held in the view; a restarted agent registers again and serves again. Needs no root.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::time::{Duration, Instant};

use common::Tenant;
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;
use tonic::Code;

/// Node timeout given to the scheduler: a killed node is declared dead this long after its
/// last statistics.
const NODE_TIMEOUT_MS: u64 = 600;

/// Longest an invocation may take before the scheduler answers, whatever happens to its node:
/// up to 3 attempts, each bounded by the function's deadline (1 s default) plus the scheduler's
/// execute slack (2 s). A bound on a broken run (a hang), not a timing measurement.
const INVOCATION_BOUND: Duration = Duration::from_secs(3 * 3 + 3);

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

/// How one invocation of the load ended.
#[derive(Debug)]
enum Ended {
    Ok {
        node: String,
        failed_attempts: usize,
    },
    Failed {
        code: Code,
        message: String,
    },
}

/// One client: invokes a mix (a short `echo`, a CPU-bound `hash-chain` on an absent key, every
/// other one retryable) until `stop`, bounding each call by [`INVOCATION_BOUND`].
async fn client(
    mut tenant: Tenant,
    id: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(bool, Ended)> {
    let mut ended = Vec::new();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let retryable = (i + id).is_multiple_of(2);
        let (function, input) = if i.is_multiple_of(3) {
            ("hash-chain", format!("absent-{id}-{i} 20000"))
        } else {
            ("echo", format!("hello {id} {i}"))
        };
        let call = tenant.try_invoke(function, &input, pb::Tier::Unspecified, retryable);
        let result = tokio::time::timeout(INVOCATION_BOUND, call)
            .await
            .unwrap_or_else(|_| {
                panic!("{function} {input:?} got no answer within {INVOCATION_BOUND:?}")
            });
        ended.push((
            retryable,
            match result {
                Ok(r) => {
                    let record = r.record.unwrap();
                    Ended::Ok {
                        node: record.node,
                        failed_attempts: record.failed_attempts.len(),
                    }
                }
                Err(status) => Ended::Failed {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
            },
        ));
        i += 1;
    }
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_fails_nothing_silently_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = NODE_TIMEOUT_MS.to_string();
    let scheduler = Service::scheduler(dir.path(), &["--node-timeout-ms", &timeout]);
    let _survivor = storage_agent("storage-0", &scheduler);
    let mut victim = storage_agent("storage-1", &scheduler);
    _survivor.wait_for_stdout("registered with the scheduler", 1);
    victim.wait_for_stdout("registered with the scheduler", 1);

    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "faults").await;
    tenant.deploy("echo").await;
    tenant.deploy("hash-chain").await;
    tenant.wait_alive("storage-0", true).await;
    tenant.wait_alive("storage-1", true).await;

    // Both nodes serve before the fault (ties between two idle nodes are broken by a hash of
    // the invocation id, so a few invocations reach both).
    let mut served = std::collections::HashSet::new();
    for i in 0..40 {
        let (out, record) = tenant
            .invoke("echo", &format!("warm-up {i}"), pb::Tier::Unspecified)
            .await;
        assert_eq!(out, format!("warm-up {i}"));
        served.insert(record.node);
        if served.len() == 2 {
            break;
        }
    }
    assert_eq!(served.len(), 2, "both nodes serve before the fault");

    // The load: 4 clients; the victim is killed while they run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|id| tokio::spawn(client(tenant.clone(), id, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await; // Let the load reach both nodes.
    let killed_at = Instant::now();
    victim.kill();
    let dead = tenant.wait_alive("storage-1", false).await;
    let declared_after = killed_at.elapsed();
    assert!(dead.silent_ms >= NODE_TIMEOUT_MS / 2, "{dead:?}");
    // Keep the load on for a while after the node was declared dead.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ended = Vec::new();
    for c in clients {
        ended.extend(c.await.unwrap());
    }
    let count = |pred: &dyn Fn(&(bool, Ended)) -> bool| ended.iter().filter(|e| pred(e)).count();
    let retried =
        count(&|e| matches!(e.1, Ended::Ok { failed_attempts, .. } if failed_attempts > 0));
    let failed = count(&|e| matches!(e.1, Ended::Failed { .. }));
    println!(
        "load: {} invocations, {retried} succeeded on another node after a failed attempt, \
         {failed} failed with a clear error; storage-1 declared dead {} ms after the kill",
        ended.len(),
        declared_after.as_millis()
    );
    assert!(ended.len() >= 8, "the load ran: {ended:?}");
    for (retryable, e) in &ended {
        match e {
            Ended::Ok { node, .. } => assert!(node == "storage-0" || node == "storage-1"),
            // Only an invocation that may have run on the killed node, and was not marked
            // retryable, may fail; the error names the node and says why it was not retried.
            Ended::Failed { code, message } => {
                assert!(
                    !retryable,
                    "a retryable invocation failed: {code:?} {message}"
                );
                assert!(
                    matches!(code, Code::Unavailable | Code::DeadlineExceeded),
                    "{code:?} {message}"
                );
                assert!(message.contains("storage-1"), "{message}");
                if *code == Code::Unavailable {
                    assert!(message.contains("not retried"), "{message}");
                }
            }
        }
    }

    // Later invocations go to the survivor; the record says why the dead node was not used.
    for i in 0..6 {
        let (out, record) = tenant
            .invoke("echo", &format!("after {i}"), pb::Tier::Unspecified)
            .await;
        assert_eq!(out, format!("after {i}"));
        assert_eq!(record.node, "storage-0");
        assert!(record.failed_attempts.is_empty(), "{record:?}");
        let dead = common::candidate(&record, "storage-1");
        assert_eq!(
            dead.verdict,
            pb::candidate_cost::Verdict::Rejected as i32,
            "{dead:?}"
        );
        assert!(dead.reason.contains("declared dead"), "{}", dead.reason);
    }
    // Nothing is held for the invocations that were in flight on the killed node.
    let status = tenant.status().await;
    for node in &status.nodes {
        assert_eq!(node.load, 0, "in-flight state released: {node:?}");
    }

    // A restarted agent (a new process, a new port) registers again and serves again.
    let restarted = storage_agent("storage-1", &scheduler);
    restarted.wait_for_stdout("registered with the scheduler", 1);
    let back = tenant.wait_alive("storage-1", true).await;
    assert!(
        back.address.is_empty(),
        "a tenant learns no node addresses: {back:?}"
    );
    let mut operator = Tenant {
        client: tenant.client.clone(),
        token: admin.clone(),
    };
    assert_eq!(
        operator.node("storage-1").await.address,
        format!("https://{}", restarted.addr)
    );
    // Calls 8 at a time, so that storage-0 queues: the cost model, which now knows each node's
    // own measured costs, then finds the restarted node cheaper for some. (One call at a time
    // would always go to whichever node measures cheaper, which may be either.)
    let mut on_restarted = 0;
    for round in 0..20 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..8 {
            let mut t = tenant.clone();
            calls.spawn(async move {
                let input = format!("again {round} {i}");
                let (out, record) = t.invoke("echo", &input, pb::Tier::Unspecified).await;
                assert_eq!(out, input);
                record.node
            });
        }
        while let Some(node) = calls.join_next().await {
            on_restarted += usize::from(node.unwrap() == "storage-1");
        }
        if on_restarted >= 3 {
            break;
        }
    }
    assert!(
        on_restarted >= 3,
        "the restarted node serves invocations again: {on_restarted} of up to 160 ran there"
    );
}
