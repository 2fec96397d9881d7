//! Storage membership changes move data, with real processes: a scheduler and two storage
//! agents with durable data directories. 100,000 keys written to the first node stay readable,
//! through the scheduler, while a second node joins (its ranges copied to it before it owns
//! them) and the first drains (everything copied away before it leaves the ring), with writes
//! and reads going on throughout; and a joining node and a draining node each killed with
//! SIGKILL mid-move lose no acknowledged write. Needs no root.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Tenant, admin_token, authed};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::Service;

/// Requests in flight while loading and checking keys.
const CLIENTS: usize = 32;

/// A bound on a broken run (a move that never ends), not a timing assertion.
const MOVE_BOUND: Duration = Duration::from_secs(240);

fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// A durable storage agent `name` with its data in `dir`, registered.
fn storage(scheduler: &Service, name: &str, dir: &Path) -> Service {
    let dir = dir.join(name);
    let agent = scheduler.start_agent(&[
        "agent",
        "--role",
        "storage",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    agent.wait_for_stdout("registered with the scheduler", 1);
    agent
}

async fn try_put(tenant: &mut Tenant, key: &str, value: &str) -> Result<String, tonic::Status> {
    let request = pb::PutDataRequest {
        key: key.into(),
        value: value.into(),
    };
    tenant
        .client
        .put_data(authed(request, &tenant.token))
        .await
        .map(|r| r.into_inner().node)
}

async fn get(tenant: &mut Tenant, key: &str) -> pb::GetDataResponse {
    let request = pb::GetDataRequest { key: key.into() };
    tenant
        .client
        .get_data(authed(request, &tenant.token))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .into_inner()
}

/// Runs `f` over `keys` with [`CLIENTS`] requests in flight.
async fn each_key<F, Fut>(tenant: &Tenant, keys: Vec<String>, f: F)
where
    F: Fn(Tenant, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let keys = Arc::new(keys);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (tenant, keys, f) = (tenant.clone(), keys.clone(), f.clone());
            tokio::spawn(async move {
                for key in keys.iter().skip(c).step_by(CLIENTS) {
                    f(tenant.clone(), key.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn load(tenant: &Tenant, keys: &[String]) {
    each_key(tenant, keys.to_vec(), |mut t, key| async move {
        let value = value_of(&key);
        try_put(&mut t, &key, &value)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    })
    .await;
}

/// Every key reads back with its value, from `owner` when given.
async fn check_all(tenant: &Tenant, keys: &[String], owner: Option<&'static str>) {
    each_key(tenant, keys.to_vec(), move |mut t, key| async move {
        let got = get(&mut t, &key).await;
        assert!(got.found, "{key} not found (asked {})", got.node);
        assert_eq!(got.value, value_of(&key).into_bytes(), "{key}");
        if let Some(owner) = owner {
            assert_eq!(got.node, owner, "{key}");
        }
    })
    .await;
}

/// The membership of node `name` in the cluster status.
async fn membership(tenant: &mut Tenant, name: &str) -> String {
    tenant.node(name).await.membership
}

/// Polls until node `name` is `want` on the ring.
async fn wait_membership(tenant: &mut Tenant, name: &str, want: &str) {
    let deadline = Instant::now() + MOVE_BOUND;
    loop {
        let now = membership(tenant, name).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes and reads going on while the ring changes: each writer overwrites its own keys with
/// increasing versions and reads each back at once; every acknowledged write's value is kept,
/// and a read must never return an older one. Refused writes (moving keys held past the
/// deadline, a killed node) are allowed: they were not acknowledged.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<HashMap<String, u64>>>,
}

impl Traffic {
    fn start(tenant: &Tenant, writers: usize, keys_each: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let (mut t, stop) = (tenant.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut acked: HashMap<String, u64> = HashMap::new();
                    let mut version = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        version += 1;
                        let key = format!("live-{w}-{}", version as usize % keys_each);
                        if try_put(&mut t, &key, &version.to_string()).await.is_ok() {
                            acked.insert(key.clone(), version);
                        }
                        let request = pb::GetDataRequest {
                            key: key.clone().into(),
                        };
                        if let Ok(got) = t.client.get_data(authed(request, &t.token)).await {
                            let got = got.into_inner();
                            if let Some(&want) = acked.get(&key) {
                                assert!(
                                    got.found,
                                    "{key}: acknowledged v{want} not found on {}",
                                    got.node
                                );
                                let read: u64 =
                                    String::from_utf8(got.value).unwrap().parse().unwrap();
                                assert!(
                                    read >= want,
                                    "{key}: read v{read} after v{want} was acknowledged"
                                );
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    /// Stops it and checks every acknowledged write reads back.
    async fn stop_and_check(self, tenant: &mut Tenant) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut checked = 0;
        for task in self.tasks {
            for (key, version) in task.await.unwrap() {
                let got = get(tenant, &key).await;
                assert!(got.found, "{key}: acknowledged v{version} lost");
                // A later write that failed (its node killed) may still have landed.
                let read: u64 = String::from_utf8(got.value).unwrap().parse().unwrap();
                assert!(
                    read >= version,
                    "{key}: v{read} read, v{version} was acknowledged"
                );
                checked += 1;
            }
        }
        checked
    }
}

fn drain(scheduler: &Service, dir: &Path, name: &str) {
    let token_file = dir.join("admin-token");
    sandstorm_tests::sandstorm(
        None,
        [
            "cluster",
            "drain",
            name,
            "--scheduler",
            &scheduler.addr.to_string(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_stays_readable_while_a_node_joins_and_the_first_drains() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(&dir.path().join("scheduler"), &[]);
    let data = dir.path().join("agents");
    let _first = storage(&scheduler, "storage-0", &data);
    let admin = admin_token(&scheduler.data_dir());
    let mut tenant = Tenant::create(&scheduler, &admin, "acme").await;
    // Well within the default quotas (1,000,000 keys, 1 GiB).
    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i:06}")).collect();
    let started = Instant::now();
    load(&tenant, &keys).await;
    eprintln!("loaded {} keys in {:?}", keys.len(), started.elapsed());
    assert_eq!(membership(&mut tenant, "storage-0").await, "serving");

    let traffic = Traffic::start(&tenant, 4, 50);
    let started = Instant::now();
    let _second = storage(&scheduler, "storage-1", &data);
    // While it joins, every key is still read from where it is.
    check_all(&tenant, &keys[..20_000], None).await;
    wait_membership(&mut tenant, "storage-1", "serving").await;
    eprintln!("storage-1 joined in {:?}", started.elapsed());
    check_all(&tenant, &keys, None).await;
    let on_second = {
        let mut t = tenant.clone();
        let mut n = 0;
        for key in keys.iter().step_by(100) {
            n += usize::from(get(&mut t, key).await.node == "storage-1");
        }
        n
    };
    assert!(
        on_second > 0 && on_second < 1_000,
        "{on_second} of 1000 sampled keys are owned by storage-1 after it joined"
    );

    let started = Instant::now();
    drain(&scheduler, &scheduler.data_dir(), "storage-0");
    check_all(&tenant, &keys[..20_000], None).await;
    wait_membership(&mut tenant, "storage-0", "drained").await;
    eprintln!("storage-0 drained in {:?}", started.elapsed());
    let live = traffic.stop_and_check(&mut tenant).await;
    assert!(live > 0, "no write was acknowledged during the moves");
    // Everything is on storage-1 now, and read from it.
    check_all(&tenant, &keys, Some("storage-1")).await;

    // Draining the last node on the ring is refused: its data would have nowhere to go.
    let token_file = scheduler.data_dir().join("admin-token");
    sandstorm_tests::sandstorm(
        None,
        [
            "cluster",
            "drain",
            "storage-1",
            "--scheduler",
            &scheduler.addr.to_string(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .clean_failure()
    .stderr_names(&["last storage node on the key ring"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_either_side_of_a_move_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(&dir.path().join("scheduler"), &[]);
    let data = dir.path().join("agents");
    let mut first = storage(&scheduler, "storage-0", &data);
    let admin = admin_token(&scheduler.data_dir());
    let mut tenant = Tenant::create(&scheduler, &admin, "acme").await;
    let keys: Vec<String> = (0..30_000).map(|i| format!("key-{i:06}")).collect();
    load(&tenant, &keys).await;
    let traffic = Traffic::start(&tenant, 4, 50);

    // The joining node dies while it joins, and comes back with its data directory.
    let mut second = storage(&scheduler, "storage-1", &data);
    wait_membership(&mut tenant, "storage-1", "joining").await;
    second.kill();
    eprintln!(
        "storage-1 killed while {}",
        membership(&mut tenant, "storage-1").await
    );
    let _second = storage(&scheduler, "storage-1", &data);
    wait_membership(&mut tenant, "storage-1", "serving").await;
    check_all(&tenant, &keys, None).await;

    // The draining node dies while it drains, and comes back.
    drain(&scheduler, &scheduler.data_dir(), "storage-0");
    wait_membership(&mut tenant, "storage-0", "draining").await;
    first.kill();
    let _first = storage(&scheduler, "storage-0", &data);
    wait_membership(&mut tenant, "storage-0", "drained").await;

    let live = traffic.stop_and_check(&mut tenant).await;
    assert!(live > 0, "no write was acknowledged during the moves");
    check_all(&tenant, &keys, Some("storage-1")).await;
}
