//! The scheduler with a real storage agent, as separate processes: tenants, deploying the
//! example functions, loading data, invoking every example and a chain through the scheduler with
//! records, async invocations, streamed invocations, tenant isolation, every kind of bad input with its own status,
//! health and reflection, and a restart of the scheduler (and of the agent) losing nothing.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::path::Path;

use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use sandstorm_tests::Service;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The bundled examples, in name order (as `ListFunctions` answers).
const EXAMPLES: [&str; 5] = ["counter", "echo", "graph-walk", "hash-chain", "kv-sum"];

fn scheduler(data_dir: &Path, listen: &str) -> Service {
    scheduler_with_cluster_port(data_dir, listen, "127.0.0.1:0")
}

fn scheduler_with_cluster_port(data_dir: &Path, listen: &str, cluster: &str) -> Service {
    Service::start([
        "scheduler",
        "--cluster-listen",
        cluster,
        "--listen",
        listen,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

fn agent(data_dir: &Path, scheduler: &Service) -> Service {
    scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// A request with `token` as its bearer token.
fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A tenant's view of the scheduler.
struct Tenant {
    client: SchedulerClient<Channel>,
    token: String,
}

impl Tenant {
    async fn new(scheduler: &Service, token: &str) -> Self {
        Tenant {
            client: SchedulerClient::connect(scheduler.endpoint())
                .await
                .unwrap(),
            token: token.to_owned(),
        }
    }

    async fn deploy(&mut self, name: &str, example: &str) -> pb::DeployFunctionResponse {
        let module = sandstorm_guest_examples::module(example).unwrap().to_vec();
        let request = pb::DeployFunctionRequest {
            name: name.into(),
            module,
            limits: None,
            ..Default::default()
        };
        self.client
            .deploy_function(authed(request, &self.token))
            .await
            .unwrap()
            .into_inner()
    }

    async fn put(&mut self, key: &str, value: &str) {
        let request = pb::PutDataRequest {
            key: key.into(),
            value: value.into(),
        };
        self.client
            .put_data(authed(request, &self.token))
            .await
            .unwrap();
    }

    async fn try_invoke(
        &mut self,
        function: &str,
        input: &str,
    ) -> Result<pb::InvokeResponse, tonic::Status> {
        let request = pb::InvokeRequest {
            function: function.into(),
            input: input.into(),
            keys: input.split(' ').map(|k| k.as_bytes().to_vec()).collect(),
            retryable: false,
            ..Default::default()
        };
        self.client
            .invoke(authed(request, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn invoke(&mut self, function: &str, input: &str) -> (String, pb::InvocationRecord) {
        let r = self.try_invoke(function, input).await.unwrap();
        (String::from_utf8(r.output).unwrap(), r.record.unwrap())
    }

    async fn functions(&mut self) -> Vec<String> {
        let r = self
            .client
            .list_functions(authed(pb::ListFunctionsRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner();
        r.functions.into_iter().map(|f| f.name).collect()
    }
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn create_tenant(scheduler: &Service, admin: &str, name: &str) -> String {
    let mut client = AdminClient::connect(scheduler.endpoint()).await.unwrap();
    client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: name.into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

/// The example `hash-chain`'s arithmetic (FNV-1a 64, chained), to check its output.
fn hash_chain(value: &[u8], rounds: u32) -> String {
    let fnv = |seed: u64| {
        let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
        for &b in value {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let mut h = fnv(0);
    for _ in 0..rounds {
        h = fnv(h);
    }
    format!("{h:016x}")
}

/// Checks what every record must say about a run on the storage node.
fn check_record(record: &pb::InvocationRecord, function: &str) {
    assert_eq!(record.function, function);
    assert_eq!(record.node, "storage-0");
    assert_eq!(record.tier, pb::Tier::Storage as i32);
    assert_eq!(record.start, pb::StartKind::Assembled as i32);
    assert_eq!(record.policy, "cost-aware");
    assert!(record.invocation_id > 0);
    assert!(record.total_us >= record.exec_us, "{record:?}");
    assert_eq!(record.bytes_moved, 0, "data read in place");
    let chosen: Vec<_> = record
        .candidates
        .iter()
        .filter(|c| c.verdict == pb::candidate_cost::Verdict::Chosen as i32)
        .collect();
    assert_eq!(chosen.len(), 1, "{:?}", record.candidates);
    assert_eq!(chosen[0].node, "storage-0");
    let cost = chosen[0].cost.unwrap();
    assert!(
        cost.objective > 0.0 && cost.storage_cpu_us > 0.0,
        "{cost:?}"
    );
}

/// Loads the data the examples read.
async fn load_data(t: &mut Tenant) {
    for (key, value) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "39"),
        ("blob", "sandstorm"),
        ("node:1", "2,3"),
        ("node:2", "3,1"),
        ("node:3", "1,2"),
    ] {
        t.put(key, value).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_and_a_chain_run_through_the_scheduler_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let sched = scheduler(&dir.path().join("scheduler"), "127.0.0.1:0");
    let printed = sched.stdout_lines().join("\n");
    let admin = admin_token(&dir.path().join("scheduler"));
    assert!(
        printed.contains(&format!("admin token: {admin}")),
        "{printed}"
    );
    let node = agent(&dir.path().join("storage"), &sched);
    node.wait_for_stdout("registered with the scheduler", 1);

    let token = create_tenant(&sched, &admin, "acme").await;
    let mut t = Tenant::new(&sched, &token).await;
    for name in EXAMPLES {
        let r = t.deploy(name, name).await;
        assert_eq!(r.deployed_on, ["storage-0"]);
        assert!(!r.replaced);
    }
    assert_eq!(t.functions().await, EXAMPLES);
    load_data(&mut t).await;

    let (out, record) = t.invoke("echo", "hello").await;
    assert_eq!(out, "hello");
    check_record(&record, "echo");
    assert_eq!(record.data_calls, 0);

    let (out, record) = t.invoke("kv-sum", "a b c").await;
    assert_eq!(out, "42");
    check_record(&record, "kv-sum");
    assert_eq!((record.data_calls, record.keys_read), (1, 3));

    // 1 -> neighbours(1)[0] = 2 -> neighbours(2)[1] = 1 -> neighbours(1)[2 mod 2] = 2.
    let (out, record) = t.invoke("graph-walk", "1 3").await;
    assert_eq!(out, "1 2 1 2");
    check_record(&record, "graph-walk");
    assert_eq!(record.data_calls, 3, "one dependent read per hop");

    let (out, record) = t.invoke("hash-chain", "blob 100").await;
    assert_eq!(out, hash_chain(b"sandstorm", 100));
    check_record(&record, "hash-chain");

    for expected in ["1", "2"] {
        let (out, record) = t.invoke("counter", "visits").await;
        assert_eq!(out, expected);
        check_record(&record, "counter");
        assert!(record.bytes_written > 0);
    }
    let got = t
        .client
        .get_data(authed(
            pb::GetDataRequest {
                key: "visits".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.found, got.value.as_slice(), got.node.as_str()),
        (true, &b"2"[..], "storage-0")
    );

    // A chain: kv-sum's output is the first echo's input, whose output is the second's.
    let chain = pb::InvokeChainRequest {
        steps: vec!["kv-sum".into(), "echo".into(), "echo".into()],
        input: "a b c".into(),
        keys: vec![b"a".to_vec()],
        retryable: false,
        global_only: false,
    };
    let r = t
        .client
        .invoke_chain(authed(chain, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.output, b"42");
    assert_eq!(r.records.len(), 3);
    for (i, (record, function)) in r.records.iter().zip(["kv-sum", "echo", "echo"]).enumerate() {
        check_record(record, function);
        let hop = record.hop.clone().unwrap_or_default();
        assert_eq!(hop.step, i as u32);
        assert_eq!(hop.to_node, "storage-0");
        if i == 0 {
            assert_eq!(hop.path, pb::chain_hop::Path::Client as i32);
            assert_eq!((hop.from_node.as_str(), hop.bytes), ("", 5));
        } else {
            // One node: every hand-off stays on its local bus.
            assert_eq!(hop.path, pb::chain_hop::Path::LocalBus as i32);
            assert_eq!((hop.from_node.as_str(), hop.bytes), ("storage-0", 2));
        }
    }
    let ids: std::collections::BTreeSet<u64> = r.records.iter().map(|r| r.invocation_id).collect();
    assert_eq!(ids.len(), 3, "each step is its own invocation");

    // Async: an id at once, then the result.
    let request = pb::InvokeRequest {
        function: "kv-sum".into(),
        input: "a c".into(),
        keys: vec![],
        retryable: true,
        ..Default::default()
    };
    let id = t
        .client
        .invoke_async(authed(request, &token))
        .await
        .unwrap()
        .into_inner()
        .invocation_id;
    let waited = t
        .client
        .wait_result(authed(
            pb::WaitResultRequest {
                invocation_id: id,
                timeout_ms: 30_000,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(waited.done, "{waited:?}");
    let result = waited.result.unwrap();
    assert_eq!(result.output, b"40");
    assert_eq!(result.record.unwrap().invocation_id, id);
    let fetched = t
        .client
        .get_result(authed(pb::GetResultRequest { invocation_id: id }, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.done && fetched.error_code == 0);

    // Profiles were updated from the records.
    let functions = t
        .client
        .list_functions(authed(pb::ListFunctionsRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .functions;
    let kv_sum = functions.iter().find(|f| f.name == "kv-sum").unwrap();
    assert_eq!(kv_sum.invocations, 3);
    assert!(kv_sum.mean_accesses >= 2.0, "{kv_sum:?}");

    // The cluster as the scheduler sees it.
    let status = t
        .client
        .cluster_status(authed(pb::ClusterStatusRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.nodes.len(), 1);
    assert!(status.nodes[0].alive);
    assert_eq!(status.nodes[0].cores, 1);
    // A tenant's view: its own function count, no tenant count, no addresses.
    assert_eq!((status.tenants, status.functions), (0, 5));
    assert!(status.nodes[0].address.is_empty(), "{:?}", status.nodes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_generic_clients() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let sched = scheduler(dir.path(), "127.0.0.1:0");
    let channel = tonic::transport::Endpoint::from_shared(sched.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "sandstorm.v1.Scheduler", "sandstorm.v1.Cluster"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "sandstorm.v1.Scheduler",
        "sandstorm.v1.Admin",
        "sandstorm.v1.Cluster",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_never_sees_or_touches_anothers_functions_data_or_results() {
    let dir = tempfile::tempdir().unwrap();
    let sched = scheduler(&dir.path().join("scheduler"), "127.0.0.1:0");
    let node = agent(&dir.path().join("storage"), &sched);
    node.wait_for_stdout("registered with the scheduler", 1);
    let admin = admin_token(&dir.path().join("scheduler"));
    let mut acme = Tenant::new(&sched, &create_tenant(&sched, &admin, "acme").await).await;
    let mut globex = Tenant::new(&sched, &create_tenant(&sched, &admin, "globex").await).await;

    acme.deploy("sum", "kv-sum").await;
    acme.put("secret", "41").await;
    let id = acme
        .client
        .invoke_async(authed(
            pb::InvokeRequest {
                function: "sum".into(),
                input: "secret".into(),
                keys: vec![],
                retryable: false,
                ..Default::default()
            },
            &acme.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invocation_id;

    // globex sees none of it.
    assert!(globex.functions().await.is_empty());
    let e = globex.try_invoke("sum", "secret").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let got = globex
        .client
        .get_data(authed(
            pb::GetDataRequest {
                key: "secret".into(),
            },
            &globex.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!got.found);
    let scanned = globex
        .client
        .scan_data(authed(
            pb::ScanDataRequest {
                prefix: vec![],
                limit: 0,
            },
            &globex.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(scanned.pairs.is_empty());
    let e = globex
        .client
        .get_result(authed(
            pb::GetResultRequest { invocation_id: id },
            &globex.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let removed = globex
        .client
        .remove_function(authed(
            pb::RemoveFunctionRequest { name: "sum".into() },
            &globex.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!removed.existed);

    // globex's own function of the same name reads globex's own data.
    globex.deploy("sum", "kv-sum").await;
    globex.put("secret", "1").await;
    assert_eq!(globex.invoke("sum", "secret").await.0, "1");
    assert_eq!(acme.invoke("sum", "secret").await.0, "41");
    let acme_result = acme
        .client
        .wait_result(authed(
            pb::WaitResultRequest {
                invocation_id: id,
                timeout_ms: 30_000,
            },
            &acme.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acme_result.result.unwrap().output, b"41");
    // A tenant's token is no admin token, and the admin token acts as no tenant.
    let mut admin_client = AdminClient::connect(sched.endpoint()).await.unwrap();
    let e = admin_client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "evil".into(),
                ..Default::default()
            },
            &acme.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut as_admin = Tenant::new(&sched, &admin).await;
    let e = as_admin.try_invoke("sum", "secret").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

/// A scheduler and a storage agent (kept running while it lives) with one tenant, "acme", that
/// has `echo` deployed.
struct AcmeWithEcho {
    _dir: tempfile::TempDir,
    sched: Service,
    _node: Service,
    token: String,
    t: Tenant,
}

async fn acme_with_echo() -> AcmeWithEcho {
    let dir = tempfile::tempdir().unwrap();
    let sched = scheduler(&dir.path().join("scheduler"), "127.0.0.1:0");
    let node = agent(&dir.path().join("storage"), &sched);
    node.wait_for_stdout("registered with the scheduler", 1);
    let admin = admin_token(&dir.path().join("scheduler"));
    let token = create_tenant(&sched, &admin, "acme").await;
    let mut t = Tenant::new(&sched, &token).await;
    t.deploy("echo", "echo").await;
    AcmeWithEcho {
        _dir: dir,
        sched,
        _node: node,
        token,
        t,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_distinct_status_and_the_scheduler_keeps_serving() {
    let AcmeWithEcho {
        _dir,
        sched,
        _node,
        token,
        mut t,
    } = acme_with_echo().await;
    let tenant_id = token
        .split('.')
        .next()
        .unwrap()
        .trim_start_matches('t')
        .to_owned();
    let wrong_secret = format!("t{tenant_id}.{}", "0".repeat(64));

    let invoke = |function: &str, input: Vec<u8>| pb::InvokeRequest {
        function: function.into(),
        input,
        keys: vec![],
        retryable: false,
        ..Default::default()
    };
    let mut client = t.client.clone();
    // (what, status, words the message must contain)
    let mut seen = Vec::new();
    let cases: Vec<(&str, Request<pb::InvokeRequest>, Code, &str)> = vec![
        (
            "unknown tenant",
            authed(
                invoke("echo", b"x".to_vec()),
                &format!("t99.{}", "ab".repeat(32)),
            ),
            Code::PermissionDenied,
            "unknown tenant tenant-99",
        ),
        (
            "bad token",
            authed(invoke("echo", b"x".to_vec()), &wrong_secret),
            Code::Unauthenticated,
            "bad token",
        ),
        (
            "unknown function",
            authed(invoke("nope", b"x".to_vec()), &token),
            Code::NotFound,
            "unknown function \"nope\"",
        ),
        (
            "payload over the limit",
            authed(invoke("echo", vec![b'x'; (4 << 20) + 1]), &token),
            Code::ResourceExhausted,
            "over the limit of 4128768 bytes",
        ),
    ];
    // The largest input echoes back whole to a client with gRPC's default 4 MiB receive limit.
    let largest = vec![b'y'; sandstorm_proto::MAX_PAYLOAD_BYTES];
    let mut default_client = SchedulerClient::connect(sched.endpoint()).await.unwrap();
    let echoed = default_client
        .invoke(authed(invoke("echo", largest.clone()), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(echoed.output.len(), largest.len());
    for (what, request, code, says) in cases {
        let e = client.invoke(request).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(e.message().contains(says), "{what}: {}", e.message());
        seen.push(code);
    }
    let e = client
        .invoke(Request::new(invoke("echo", b"x".to_vec())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().contains("missing credentials"),
        "{}",
        e.message()
    );

    // Malformed chains: no steps, too many, a bad name, a step naming no function.
    let chain = |steps: Vec<&str>| {
        authed(
            pb::InvokeChainRequest {
                steps: steps.into_iter().map(String::from).collect(),
                input: b"x".to_vec(),
                keys: vec![],
                retryable: false,
                global_only: false,
            },
            &token,
        )
    };
    let chains = [
        (vec![], "it has no steps"),
        (vec!["echo"; 17], "17 steps; at most 16"),
        (vec!["echo", "bad name"], "step 1: invalid function name"),
        (vec!["echo", "nope"], "step 1 names function \"nope\""),
    ];
    for (steps, says) in chains {
        let e = client.invoke_chain(chain(steps)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{says}: {e:?}");
        assert!(
            e.message().contains("malformed chain") && e.message().contains(says),
            "{}",
            e.message()
        );
    }
    seen.push(Code::InvalidArgument);
    let distinct: std::collections::BTreeSet<i32> = seen.iter().map(|c| *c as i32).collect();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");

    // Bad deployments and registrations are refused with what was wrong.
    let bad_module = pb::DeployFunctionRequest {
        name: "junk".into(),
        module: b"\0asm\x01\0\0\0garbage".to_vec(),
        limits: None,
        ..Default::default()
    };
    let e = client
        .deploy_function(authed(bad_module, &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("rejected by storage-0"),
        "{}",
        e.message()
    );
    let not_wasm = pb::DeployFunctionRequest {
        name: "junk".into(),
        module: b"#!/bin/sh".to_vec(),
        limits: None,
        ..Default::default()
    };
    let e = client
        .deploy_function(authed(not_wasm, &token))
        .await
        .unwrap_err();
    assert!(e.message().contains("not WebAssembly"), "{}", e.message());
    // Nodes join and register on the cluster port, never on the client port (tests/membership.rs).
    let mut cluster = sandstorm_proto::v1::cluster_client::ClusterClient::connect(sched.endpoint())
        .await
        .unwrap();
    let e = cluster
        .register(pb::RegisterRequest {
            name: "x".into(),
            role: 1,
            address: "127.0.0.1:1".into(),
            cores: 1,
            incarnation: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");

    // And it keeps serving.
    assert_eq!(t.invoke("echo", "still here").await.0, "still here");
    assert!(!t.functions().await.contains(&"junk".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_stream_answers_every_request_by_tag_and_fails_bad_ones_alone() {
    let AcmeWithEcho {
        _dir,
        sched: _sched,
        _node,
        token,
        mut t,
    } = acme_with_echo().await;
    // The first invocation waits for the node's first statistics.
    assert_eq!(t.invoke("echo", "warm").await.0, "warm");

    let request = |tag: u64, function: &str, input: Vec<u8>| pb::InvokeStreamRequest {
        tag,
        request: Some(pb::InvokeRequest {
            function: function.into(),
            input,
            ..Default::default()
        }),
    };
    let mut sent = Vec::new();
    for tag in 0..200u64 {
        sent.push(request(tag, "echo", format!("n{tag}").into_bytes()));
    }
    // Bad requests in the middle of good ones: each fails alone, with Invoke's status.
    sent.insert(50, request(1000, "nope", b"x".to_vec()));
    sent.insert(
        100,
        pb::InvokeStreamRequest {
            tag: 1001,
            request: None,
        },
    );
    sent.insert(150, request(1002, "echo", vec![b'x'; (4 << 20) + 1]));
    // At most 8 in flight, as a client would keep them (the node admits 9 at once and refuses
    // more): the next request goes out as an answer comes back.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sent = sent.into_iter();
    for r in sent.by_ref().take(8) {
        tx.send(r).unwrap();
    }
    let mut stream = t
        .client
        .invoke_stream(authed(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut tx = Some(tx);
    let mut answers = Vec::new();
    // The client's side ends after the last request: the stream ends once all are answered.
    while let Some(answer) = stream.message().await.unwrap() {
        answers.push(answer);
        match sent.next() {
            Some(r) => tx.as_ref().unwrap().send(r).unwrap(),
            None => drop(tx.take()),
        }
    }
    assert_eq!(answers.len(), 203);
    let mut tags = std::collections::BTreeSet::new();
    for answer in answers {
        assert!(tags.insert(answer.tag), "tag {} answered twice", answer.tag);
        match (answer.tag, answer.result.unwrap()) {
            (tag @ 0..200, pb::invoke_stream_response::Result::Response(r)) => {
                assert_eq!(r.output, format!("n{tag}").into_bytes());
                check_record(r.record.as_ref().unwrap(), "echo");
            }
            (1000, pb::invoke_stream_response::Result::Error(e)) => {
                assert_eq!(e.code, Code::NotFound as i32, "{e:?}");
                assert!(e.message.contains("unknown function \"nope\""), "{e:?}");
            }
            (1001, pb::invoke_stream_response::Result::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}");
                assert!(e.message.contains("`request` is required"), "{e:?}");
            }
            (1002, pb::invoke_stream_response::Result::Error(e)) => {
                assert_eq!(e.code, Code::ResourceExhausted as i32, "{e:?}");
                assert!(e.message.contains("over the limit"), "{e:?}");
            }
            (tag, other) => panic!("tag {tag}: unexpected {other:?}"),
        }
    }

    // A stream without a token, or with another tenant's wrong secret, never opens.
    let e = t
        .client
        .invoke_stream(Request::new(tokio_stream::iter(vec![request(
            0,
            "echo",
            b"x".to_vec(),
        )])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // And the unary path is unaffected, its inputs over 64 KiB sent to the node by a unary
    // Execute of their own rather than on the node's stream.
    assert_eq!(t.invoke("echo", "still here").await.0, "still here");
    let big = "x".repeat(100_000);
    assert_eq!(t.invoke("echo", &big).await.0, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_loses_nothing_and_agents_get_their_functions_back() {
    let dir = tempfile::tempdir().unwrap();
    let sched_dir = dir.path().join("scheduler");
    let mut sched = scheduler(&sched_dir, "127.0.0.1:0");
    let addr = sched.addr.to_string();
    let cluster = sched.cluster_addr();
    let mut node = agent(&dir.path().join("storage"), &sched);
    node.wait_for_stdout("registered with the scheduler", 1);
    let admin = admin_token(&sched_dir);
    let token = create_tenant(&sched, &admin, "acme").await;
    {
        let mut t = Tenant::new(&sched, &token).await;
        for name in EXAMPLES {
            t.deploy(name, name).await;
        }
        load_data(&mut t).await;
        assert_eq!(t.invoke("counter", "visits").await.0, "1");
    }

    // The scheduler dies without warning and comes back on the same address.
    sched.kill();
    let sched = scheduler_with_cluster_port(&sched_dir, &addr, &cluster);
    let printed = sched.stdout_lines().join("\n");
    assert!(
        !printed.contains("admin token:"),
        "no new admin token: {printed}"
    );
    assert_eq!(admin_token(&sched_dir), admin);
    // The agent registers again by itself, and gets every function deployed.
    let line = node.wait_for_stdout("registered with the scheduler", 2);
    assert!(line.contains("node-0 (5 functions deployed)"), "{line}");

    let mut t = Tenant::new(&sched, &token).await;
    assert_eq!(
        t.functions().await,
        EXAMPLES,
        "the same token, the same functions"
    );
    assert_eq!(t.invoke("kv-sum", "a b c").await.0, "42");
    assert_eq!(t.invoke("counter", "visits").await.0, "2");
    let mut admin_client = AdminClient::connect(sched.endpoint()).await.unwrap();
    let tenants = admin_client
        .list_tenants(authed(pb::ListTenantsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(tenants.len(), 1);
    assert_eq!(
        (tenants[0].name.as_str(), tenants[0].functions),
        ("acme", 5)
    );

    // With its only node gone, an invocation fails at once with UNAVAILABLE naming the node.
    node.kill();
    let e = t.try_invoke("echo", "anyone?").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("storage-0"), "{}", e.message());

    // A restarted agent (a new process: it lost its deployments) gets them back too.
    let node = agent(&dir.path().join("storage"), &sched);
    let line = node.wait_for_stdout("registered with the scheduler", 1);
    assert!(
        line.contains("node-0 (5 functions deployed)"),
        "same node id: {line}"
    );
    assert_eq!(t.invoke("graph-walk", "1 3").await.0, "1 2 1 2");
    assert_eq!(t.invoke("counter", "visits").await.0, "3");
}
