//! Chains on SAND's hierarchical bus, with the real scheduler and a real storage agent as
//! separate processes: steps placed on one node hand off through its local bus (the records say
//! LOCAL_BUS, the outputs are right), the same chain asked to take the global path says GLOBAL,
//! and a failing middle step is named in the error, on either path, without stopping the
//! scheduler.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::path::Path;

use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use sandstorm_tests::Service;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A scheduler and one storage agent registered with it; the tenant's client and token.
async fn cluster(dir: &Path) -> (Service, Service, SchedulerClient<Channel>, String) {
    let data = dir.join("scheduler");
    let sched = Service::scheduler(&data, &[]);
    let node = sched.start_agent(&[
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
    node.wait_for_stdout("registered with the scheduler", 1);
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = AdminClient::connect(sched.endpoint())
        .await
        .unwrap()
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "chains".into(),
                ..Default::default()
            },
            admin.trim(),
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut client = SchedulerClient::connect(sched.endpoint()).await.unwrap();
    for name in ["echo", "kv-sum"] {
        let module = sandstorm_guest_examples::module(name).unwrap().to_vec();
        let request = pb::DeployFunctionRequest {
            name: name.into(),
            module,
            limits: None,
            ..Default::default()
        };
        client
            .deploy_function(authed(request, &token))
            .await
            .unwrap();
    }
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "39")] {
        let request = pb::PutDataRequest {
            key: key.into(),
            value: value.into(),
        };
        client.put_data(authed(request, &token)).await.unwrap();
    }
    (sched, node, client, token)
}

fn chain(steps: &[&str], input: &str, global_only: bool) -> pb::InvokeChainRequest {
    pb::InvokeChainRequest {
        steps: steps.iter().map(|s| (*s).to_owned()).collect(),
        input: input.into(),
        keys: vec![],
        retryable: false,
        global_only,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_on_one_node_hand_off_on_its_local_bus_and_failures_name_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let (sched, _node, mut client, token) = cluster(dir.path()).await;
    let steps = ["echo", "kv-sum", "echo", "echo"];

    // echo passes "a b c" on, kv-sum turns it into 1 + 2 + 39, two echoes pass "42" on.
    for global_only in [false, true] {
        let r = client
            .invoke_chain(authed(chain(&steps, "a b c", global_only), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.output, b"42", "global_only {global_only}");
        assert_eq!(r.records.len(), steps.len());
        let mut ids = std::collections::BTreeSet::new();
        for (i, (record, function)) in r.records.iter().zip(steps).enumerate() {
            assert_eq!(record.function, function);
            assert_eq!(record.node, "storage-0");
            assert_eq!(record.tier, pb::Tier::Storage as i32);
            assert!(record.invocation_id > 0 && ids.insert(record.invocation_id));
            let hop = record.hop.clone().unwrap();
            assert_eq!((hop.step, hop.to_node.as_str()), (i as u32, "storage-0"));
            // Bytes handed into each step: the input, then "a b c", "42", "42".
            let bytes = [5, 5, 2, 2][i];
            if i == 0 {
                assert_eq!(hop.path, pb::chain_hop::Path::Client as i32);
                assert_eq!((hop.from_node.as_str(), hop.bytes), ("", bytes));
                assert_eq!(hop.handoff_ns, 0);
            } else if global_only {
                assert_eq!(hop.path, pb::chain_hop::Path::Global as i32, "{hop:?}");
                assert_eq!((hop.from_node.as_str(), hop.bytes), ("storage-0", bytes));
                // Measured: a gRPC round trip is never free.
                assert!(hop.handoff_ns > 0, "{hop:?}");
            } else {
                assert_eq!(hop.path, pb::chain_hop::Path::LocalBus as i32, "{hop:?}");
                assert_eq!((hop.from_node.as_str(), hop.bytes), ("storage-0", bytes));
            }
        }
    }

    // A failing middle step: echo hands kv-sum an empty input, which it rejects; the error names
    // step 1 and kv-sum on either path, and nothing after it runs.
    for global_only in [false, true] {
        let e = client
            .invoke_chain(authed(chain(&steps, "", global_only), &token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert!(
            e.message().contains("chain step 1 (kv-sum)") && e.message().contains("usage"),
            "global_only {global_only}: {}",
            e.message()
        );
    }
    // The last step failing is named as such too.
    let e = client
        .invoke_chain(authed(
            chain(&["echo", "echo", "kv-sum"], "", false),
            &token,
        ))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("chain step 2 (kv-sum)"),
        "{}",
        e.message()
    );

    // The scheduler and the node keep serving.
    let r = client
        .invoke_chain(authed(chain(&["kv-sum", "echo"], "a b", false), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.output, b"3");
    let hop = r.records[1].hop.clone().unwrap();
    assert_eq!(hop.path, pb::chain_hop::Path::LocalBus as i32);
    assert!(
        !sched.stderr().contains("panicked"),
        "scheduler log:\n{}",
        sched.stderr()
    );
}
