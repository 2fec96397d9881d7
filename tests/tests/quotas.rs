//! Per-tenant quotas end to end, with real processes: the admin sets them at creation and
//! changes them with `UpdateTenant`; each one, exhausted, is refused with RESOURCE_EXHAUSTED
//! naming the quota and its value while another tenant keeps being served; raising it lets the
//! call through; they survive a restart of the scheduler (and of the storage node, which gets
//! its allowances pushed again). Storage quotas and data quotas on the storage tier need no
//! root; the compute-tier data call is skipped without the compute role.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::path::Path;

use common::{Tenant, authed, client_channel};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_tests::Service;
use tonic::Code;

const STORAGE: pb::Tier = pb::Tier::Storage;
const GRAPH: [(&str, &str); 3] = [("node:1", "2,3"), ("node:2", "3,1"), ("node:3", "1,2")];

fn storage_agent(scheduler: &Service, data_dir: &Path) -> Service {
    let agent = scheduler.start_agent(&[
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
    ]);
    agent.wait_for_stdout("registered with the scheduler", 1);
    agent
}

struct Admin {
    client: AdminClient<tonic::transport::Channel>,
    token: String,
}

impl Admin {
    async fn new(scheduler: &Service) -> Self {
        Admin {
            client: AdminClient::new(client_channel(scheduler).await),
            token: common::admin_token(&scheduler.data_dir()),
        }
    }

    async fn create(
        &mut self,
        scheduler: &Service,
        name: &str,
        quotas: pb::TenantQuotas,
    ) -> Result<Tenant, tonic::Status> {
        let token = self
            .client
            .create_tenant(authed(
                pb::CreateTenantRequest {
                    name: name.into(),
                    quotas: Some(quotas),
                },
                &self.token,
            ))
            .await?
            .into_inner()
            .token;
        Ok(Tenant {
            client: pb::scheduler_client::SchedulerClient::new(client_channel(scheduler).await),
            token,
        })
    }

    async fn update(
        &mut self,
        name: &str,
        quotas: pb::TenantQuotas,
    ) -> Result<pb::TenantQuotas, tonic::Status> {
        Ok(self
            .client
            .update_tenant(authed(
                pb::UpdateTenantRequest {
                    name: name.into(),
                    quotas: Some(quotas),
                },
                &self.token,
            ))
            .await?
            .into_inner()
            .quotas
            .unwrap())
    }

    async fn quotas(&mut self, name: &str) -> pb::TenantQuotas {
        self.client
            .list_tenants(authed(pb::ListTenantsRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner()
            .tenants
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tenant {name} listed"))
            .quotas
            .unwrap()
    }
}

async fn try_put(t: &mut Tenant, key: &str, value: &str) -> Result<(), tonic::Status> {
    t.client
        .put_data(authed(
            pb::PutDataRequest {
                key: key.into(),
                value: value.into(),
            },
            &t.token,
        ))
        .await
        .map(|_| ())
}

async fn get(t: &mut Tenant, key: &str) -> Option<String> {
    let r = t
        .client
        .get_data(authed(pb::GetDataRequest { key: key.into() }, &t.token))
        .await
        .unwrap()
        .into_inner();
    r.found.then(|| String::from_utf8(r.value).unwrap())
}

/// `result` is RESOURCE_EXHAUSTED and its message names every one of `needles`.
fn assert_exhausted<T: std::fmt::Debug>(result: Result<T, tonic::Status>, needles: &[&str]) {
    let e = result.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for needle in needles {
        assert!(e.message().contains(needle), "no {needle:?} in {e:?}");
    }
}

/// The graph loaded and graph-walk deployed for `t`.
async fn graph(t: &mut Tenant) {
    for (k, v) in GRAPH {
        t.put(k, v).await;
    }
    t.deploy("graph-walk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_quota_is_refused_by_name_raised_by_an_update_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sched_dir = dir.path().join("scheduler");
    let storage_dir = dir.path().join("storage");
    let mut scheduler = Service::scheduler(&sched_dir, &[]);
    let (listen, cluster) = (scheduler.addr.to_string(), scheduler.cluster_addr());
    let mut storage = storage_agent(&scheduler, &storage_dir);
    let mut admin = Admin::new(&scheduler).await;

    // Absurd values are refused naming the field; nothing is created.
    let e = admin
        .create(
            &scheduler,
            "greedy",
            pb::TenantQuotas {
                max_concurrent: u32::MAX,
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("quotas.max_concurrent"), "{e:?}");

    let small_quotas = pb::TenantQuotas {
        max_stored_bytes: 200,
        max_keys: 3,
        max_data_calls: 3,
        ..Default::default()
    };
    let mut small = admin
        .create(&scheduler, "small", small_quotas)
        .await
        .unwrap();
    let mut other = admin
        .create(&scheduler, "other", pb::TenantQuotas::default())
        .await
        .unwrap();
    // Listed with the defaults filled in.
    assert_eq!(
        admin.quotas("small").await,
        pb::TenantQuotas {
            max_data_bytes: 64 << 20,
            max_concurrent: 128,
            ..small_quotas
        }
    );
    assert_eq!(
        admin.quotas("other").await,
        pb::TenantQuotas {
            max_stored_bytes: 1 << 30,
            max_keys: 1_000_000,
            max_data_calls: 10_000,
            max_data_bytes: 64 << 20,
            max_concurrent: 128,
        }
    );
    graph(&mut small).await;
    graph(&mut other).await;

    // Stored keys and bytes, refused by the storage node with the cluster figure.
    assert_exhausted(try_put(&mut small, "extra", "1").await, &["max_keys", "3"]);
    assert_exhausted(
        try_put(&mut small, "node:1", &"x".repeat(300)).await,
        &["max_stored_bytes", "200"],
    );
    // Data calls of one invocation: a walk of 6 hops makes 6 gets.
    assert_exhausted(
        small.try_invoke("graph-walk", "1 6", STORAGE, false).await,
        &["max_data_calls", "3"],
    );
    // The other tenant is served, its data intact.
    for i in 0..10 {
        other.put(&format!("k{i}"), "v").await;
    }
    assert_eq!(get(&mut other, "node:1").await.as_deref(), Some("2,3"));
    let (walk, _) = other.invoke("graph-walk", "1 6", STORAGE).await;
    assert_eq!(walk, "1 2 1 2 1 2 1");

    // A tenant cannot change quotas, and an unknown tenant is NOT_FOUND.
    let e = AdminClient::new(client_channel(&scheduler).await)
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                name: "small".into(),
                quotas: Some(pb::TenantQuotas {
                    max_keys: 1_000,
                    ..Default::default()
                }),
            },
            &small.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = admin
        .update(
            "nobody",
            pb::TenantQuotas {
                max_keys: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nobody"), "{e:?}");

    // Raised, each call goes through; fields left 0 keep their value.
    let now = admin
        .update(
            "small",
            pb::TenantQuotas {
                max_keys: 5,
                max_stored_bytes: 10_000,
                max_data_calls: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (now.max_keys, now.max_stored_bytes, now.max_data_calls),
        (5, 10_000, 100)
    );
    assert_eq!(now.max_data_bytes, 64 << 20);
    try_put(&mut small, "extra", "1").await.unwrap();
    try_put(&mut small, "extra2", "1").await.unwrap();
    assert_exhausted(try_put(&mut small, "extra3", "1").await, &["max_keys", "5"]);
    let (walk, _) = small.invoke("graph-walk", "1 6", STORAGE).await;
    assert_eq!(walk, "1 2 1 2 1 2 1");

    // Bytes moved by one invocation: each get moves 9 (a 6-byte key, a 3-byte list).
    admin
        .update(
            "small",
            pb::TenantQuotas {
                max_data_bytes: 30,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_exhausted(
        small.try_invoke("graph-walk", "1 6", STORAGE, false).await,
        &["max_data_bytes", "30"],
    );
    assert_eq!(
        other.invoke("graph-walk", "1 6", STORAGE).await.0,
        "1 2 1 2 1 2 1"
    );
    admin
        .update(
            "small",
            pb::TenantQuotas {
                max_data_bytes: 1_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        small.invoke("graph-walk", "1 6", STORAGE).await.0,
        "1 2 1 2 1 2 1"
    );

    // Both the scheduler and the storage node restart: the stored quotas come back and are
    // pushed to the node (which on its own would allow 1,000,000 keys).
    let before = admin.quotas("small").await;
    scheduler.kill();
    storage.kill();
    let scheduler = Service::start([
        "scheduler",
        "--cluster-listen",
        &cluster,
        "--listen",
        &listen,
        "--data-dir",
        sched_dir.to_str().unwrap(),
    ]);
    let _storage = storage_agent(&scheduler, &storage_dir);
    let mut admin = Admin::new(&scheduler).await;
    assert_eq!(admin.quotas("small").await, before);
    let mut small = Tenant {
        client: pb::scheduler_client::SchedulerClient::new(client_channel(&scheduler).await),
        token: small.token,
    };
    assert_exhausted(try_put(&mut small, "extra3", "1").await, &["max_keys", "5"]);
    assert_eq!(get(&mut small, "extra2").await.as_deref(), Some("1"));
    assert_eq!(
        small.invoke("graph-walk", "1 6", STORAGE).await.0,
        "1 2 1 2 1 2 1"
    );
}

/// Eight hash-chain calls of `t` sent at once, their results.
async fn burst(t: &Tenant) -> Vec<Result<pb::InvokeResponse, tonic::Status>> {
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut t = t.clone();
            tokio::spawn(async move {
                t.try_invoke("hash-chain", "blob 200000", STORAGE, false)
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_refuses_calls_past_it_and_an_update_lets_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let _storage = storage_agent(&scheduler, &dir.path().join("storage"));
    let mut admin = Admin::new(&scheduler).await;
    let one = pb::TenantQuotas {
        max_concurrent: 1,
        ..Default::default()
    };
    let mut single = admin.create(&scheduler, "single", one).await.unwrap();
    let mut other = admin
        .create(&scheduler, "other", pb::TenantQuotas::default())
        .await
        .unwrap();
    for t in [&mut single, &mut other] {
        t.put("blob", "sandstorm").await;
        t.deploy("hash-chain").await;
    }
    // Eight calls sent at once: whichever is in flight holds the only place. Calls that happen
    // not to overlap prove nothing, so the burst is sent again until one is refused.
    let mut refused = None;
    for _ in 0..50 {
        if let Some(e) = burst(&single).await.into_iter().find_map(Result::err) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("50 bursts of 8 calls never overlapped");
    assert_exhausted(Err::<(), _>(refused), &["max_concurrent 1"]);
    // The other tenant's burst is all served meanwhile.
    assert!(burst(&other).await.iter().all(Result::is_ok));

    // With room for the whole burst, none is refused.
    let raised = admin
        .update(
            "single",
            pb::TenantQuotas {
                max_concurrent: 8,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(raised.max_concurrent, 8);
    for r in burst(&single).await {
        r.unwrap();
    }

    // The same through the command line.
    let connection = [
        "--scheduler".to_owned(),
        scheduler.addr.to_string(),
        "--admin-token-file".to_owned(),
        scheduler
            .data_dir()
            .join("admin-token")
            .display()
            .to_string(),
    ];
    let cli = |args: &[&str]| {
        let all: Vec<String> = args
            .iter()
            .map(|a| (*a).to_owned())
            .chain(connection.iter().cloned())
            .collect();
        sandstorm_tests::sandstorm(None, all)
    };
    let created = cli(&["tenant", "create", "cli", "--max-keys", "7"]);
    assert!(
        created.success().stdout.contains("token: t"),
        "{}",
        created.stdout
    );
    let updated = cli(&["tenant", "update", "cli", "--max-concurrent", "3"]);
    assert!(
        updated
            .success()
            .stdout
            .contains("max_keys 7 max_data_calls 10000 max_data_bytes 67108864 max_concurrent 3"),
        "{}",
        updated.stdout
    );
    let refused = cli(&["tenant", "update", "cli", "--max-data-calls", "99999999999"]);
    refused
        .clean_failure()
        .stderr_names(&["quotas.max_data_calls", "99999999999"]);
    assert_eq!(admin.quotas("cli").await.max_concurrent, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_containers_data_call_past_its_quota_is_resource_exhausted() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let _storage = storage_agent(&scheduler, &dir.path().join("storage"));
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
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    compute.wait_for_stdout("storage nodes:", 1);
    let mut admin = Admin::new(&scheduler).await;
    let quotas = pb::TenantQuotas {
        max_data_calls: 3,
        max_keys: 3,
        ..Default::default()
    };
    let mut small = admin.create(&scheduler, "small", quotas).await.unwrap();
    let mut other = admin
        .create(&scheduler, "other", pb::TenantQuotas::default())
        .await
        .unwrap();
    graph(&mut small).await;
    graph(&mut other).await;
    small.deploy("counter").await;
    small.wait_alive("compute-0", true).await;
    let compute_tier = pb::Tier::Compute;

    assert_exhausted(
        small
            .try_invoke("graph-walk", "1 6", compute_tier, false)
            .await,
        &["max_data_calls", "3"],
    );
    let (walk, record) = other.invoke("graph-walk", "1 6", compute_tier).await;
    assert_eq!(
        (walk.as_str(), record.node.as_str()),
        ("1 2 1 2 1 2 1", "compute-0")
    );

    // A write from the container refused by the storage node's allowance (the graph holds
    // the 3 keys allowed).
    assert_exhausted(
        small
            .try_invoke("counter", "visits", compute_tier, false)
            .await,
        &["max_keys", "3"],
    );

    admin
        .update(
            "small",
            pb::TenantQuotas {
                max_data_calls: 100,
                max_keys: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (count, record) = small.invoke("counter", "visits", compute_tier).await;
    assert_eq!((count.as_str(), record.node.as_str()), ("1", "compute-0"));
    let (walk, record) = small.invoke("graph-walk", "1 6", compute_tier).await;
    assert_eq!(
        (walk.as_str(), record.node.as_str()),
        ("1 2 1 2 1 2 1", "compute-0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_quota_is_shared_over_the_storage_nodes_and_named_whole() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let _first = storage_agent(&scheduler, &dir.path().join("storage-0"));
    let mut admin = Admin::new(&scheduler).await;
    let four = pb::TenantQuotas {
        max_keys: 4,
        ..Default::default()
    };
    let mut small = admin.create(&scheduler, "small", four).await.unwrap();
    let mut other = admin
        .create(&scheduler, "other", pb::TenantQuotas::default())
        .await
        .unwrap();
    // A second storage node joins after the tenant was created: both get a share of 2 keys.
    let second = scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-1",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--in-memory",
    ]);
    second.wait_for_stdout("registered with the scheduler", 1);
    // It owns keys (and its share) once its join moved its ranges to it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while small.node("storage-1").await.membership != "serving" {
        assert!(
            std::time::Instant::now() < deadline,
            "storage-1 never joined the ring"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut stored = 0;
    let mut refusals = Vec::new();
    for i in 0..10 {
        match try_put(&mut small, &format!("key-{i}"), "v").await {
            Ok(()) => stored += 1,
            Err(e) => refusals.push(e),
        }
        other.put(&format!("key-{i}"), "w").await;
    }
    assert!(stored <= 4, "{stored} keys stored past a quota of 4");
    assert!(!refusals.is_empty());
    for e in refusals {
        assert_exhausted(
            Err::<(), _>(e),
            &["max_keys quota of 4", "allowance here is 2"],
        );
    }
    // The other tenant holds all ten.
    for i in 0..10 {
        assert_eq!(
            get(&mut other, &format!("key-{i}")).await.as_deref(),
            Some("w")
        );
    }
}
