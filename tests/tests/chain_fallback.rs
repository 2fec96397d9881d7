//! A chain whose local-bus group ran nothing: the steps of that group take the global path with
//! placements of their own. The scheduler places a chain's steps greedily: while growing a group
//! on one node it places the step after it too, and keeps that placement for when that step
//! comes. When the node then refuses the whole group, the group's first step comes next, and
//! it must not be given the later step's placement (another function's record and reservation,
//! on another node). Needs root (the compute role): without it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{Tenant, authed};
use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;

const INPUT: &str = "1 8";
const WALKED: &str = "1 8 1 8 1 8 1 8 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_group_that_ran_nothing_each_step_is_placed_for_itself() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    // Two cores: the group's first step, reserved there while the next is placed, leaves a
    // core free for the second.
    let storage = scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "2",
        "--in-memory",
    ]);
    storage.wait_for_stdout("registered with the scheduler", 1);
    let compute = scheduler.start_compute("compute-0", state.path(), &[]);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "chains").await;
    tenant.deploy("graph-walk").await;
    // A native command: always placed on the compute node.
    let token = tenant.token.clone();
    tenant
        .client
        .deploy_function(authed(
            pb::DeployFunctionRequest {
                name: "bracket".into(),
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "printf '[%s]' \"$(cat)\"".into(),
                ],
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    // A graph of two nodes: a walk from 1 goes 1 8 1 8 ..., so a walk's output is the next
    // walk's input ("1 8 ..." walks 8 hops from 1 again).
    tenant.put("node:1", "8").await;
    tenant.put("node:8", "1").await;
    // The cost model learns that a walk makes 8 dependent reads: it stays with the data.
    for _ in 0..3 {
        tenant.invoke("graph-walk", INPUT, pb::Tier::Storage).await;
    }
    let steps = ["graph-walk", "graph-walk", "bracket"];
    let chain = pb::InvokeChainRequest {
        steps: steps.iter().map(|s| (*s).to_owned()).collect(),
        input: INPUT.into(),
        keys: vec![b"node:1".to_vec()],
        retryable: false,
        global_only: false,
    };
    let expected = format!("[{WALKED}]");
    let r = tenant
        .client
        .invoke_chain(authed(chain.clone(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8(r.output).unwrap(), expected);
    let nodes: Vec<&str> = r.records.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["storage-0", "storage-0", "compute-0"],
        "the two walks form a group on the storage node, bracket goes to the compute node: {:#?}",
        r.records
    );

    // The storage node loses graph-walk (as after a restart that lost a deploy): the group is
    // refused as a whole, nothing ran, and its steps take the global path.
    NodeAgentClient::new(
        common::agent_channel(
            &scheduler.data_dir(),
            storage.addr,
            Role::Storage,
            "storage-0",
        )
        .await,
    )
    .remove(pb::RemoveRequest {
        function: Some(pb::FunctionRef {
            tenant: 0,
            name: "graph-walk".into(),
        }),
    })
    .await
    .unwrap();
    let r = tenant
        .client
        .invoke_chain(authed(chain, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8(r.output).unwrap(), expected);
    assert_eq!(r.records.len(), 3);
    let mut ids = std::collections::BTreeSet::new();
    for (i, (record, function)) in r.records.iter().zip(steps).enumerate() {
        assert_eq!(record.function, function, "step {i}: {record:#?}");
        assert!(ids.insert(record.invocation_id), "step {i} has its own id");
        let chosen = record
            .candidates
            .iter()
            .find(|c| c.verdict == pb::candidate_cost::Verdict::Chosen as i32)
            .unwrap_or_else(|| panic!("step {i} has a chosen candidate: {record:#?}"));
        assert_eq!(chosen.node, record.node, "step {i}: {record:#?}");
    }
    // Each walk was placed for itself (on the storage node, which got it deployed again), not
    // on the compute node the placement made for bracket named.
    assert_eq!(r.records[0].node, "storage-0", "{:#?}", r.records[0]);
    assert_eq!(r.records[1].node, "storage-0", "{:#?}", r.records[1]);
    assert_eq!(r.records[2].node, "compute-0", "{:#?}", r.records[2]);
    for record in &r.records[..2] {
        let hop = record.hop.as_ref().unwrap();
        assert_ne!(hop.path, pb::chain_hop::Path::LocalBus as i32, "{hop:?}");
    }

    // Every reservation came back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = tenant.status().await;
        if status.nodes.iter().all(|n| n.load == 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loads stay raised: {:?}",
            status.nodes
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop((scheduler, storage, compute));
}
