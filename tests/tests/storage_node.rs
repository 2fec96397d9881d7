//! The real storage node binary: acknowledged writes survive SIGKILL, a damaged log tail is cut
//! on restart, a corrupt record before the end refuses start-up until `--repair-log`, a full
//! disk makes the node read-only (and it says so), and functions deployed over gRPC run against
//! the recovered data.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sandstorm_identity::Role;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_tests::Service;

mod common;
use common::TestCa;

/// The standalone storage node `storage-0` with credentials from `ca`.
fn agent(ca: &TestCa, data_dir: &std::path::Path) -> Service {
    Service::start(agent_args(ca, data_dir))
}

fn agent_args(ca: &TestCa, data_dir: &std::path::Path) -> Vec<String> {
    let identity = ca.identity(Role::Storage, "storage-0");
    [
        "agent",
        "--role",
        "storage",
        "--name",
        "storage-0",
        "--identity-dir",
        identity.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The data directory's log segment.
fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a log segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_put_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let mut node = agent(&ca, dir.path());
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let progress = Arc::new(tokio::sync::Notify::new());

    // Four writers put as fast as the node acknowledges; each records a key only once acked.
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
        let acked = acked.clone();
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let (key, value) = (format!("w{w}:{i:06}"), format!("value {i} of writer {w}"));
                let put = pb::PutRequest {
                    tenant: 3,
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                };
                if kv.put(put).await.is_err() {
                    break; // The node was killed.
                }
                acked.lock().unwrap().insert(key, value);
                progress.notify_one();
            }
        }));
    }
    // Kill it in the middle of the stream, once a good number of writes were acknowledged.
    while acked.lock().unwrap().len() < 400 {
        progress.notified().await;
    }
    node.kill();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let node = agent(&ca, dir.path());
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    for (key, value) in &acked {
        let got = kv
            .get(pb::GetRequest {
                tenant: 3,
                key: key.clone().into_bytes(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            got.found,
            "acknowledged key {key} lost ({} acknowledged in all)",
            acked.len()
        );
        assert_eq!(got.value, value.as_bytes(), "{key}");
    }
    assert!(
        node.stderr().contains("data directory recovered"),
        "{}",
        node.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_tail_is_cut_and_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let mut node = agent(&ca, dir.path());
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    for i in 0..50 {
        kv.put(pb::PutRequest {
            tenant: 1,
            key: format!("k{i}").into_bytes(),
            value: format!("{i}").into_bytes(),
        })
        .await
        .unwrap();
    }
    node.kill();

    // A torn record: a header that promises 1,000 bytes, then 10 of garbage.
    let segment = segment(dir.path());
    let good_len = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 14]);
    std::fs::write(&segment, &bytes).unwrap();

    let node = agent(&ca, dir.path());
    let log = node.stderr();
    assert!(
        log.contains("the log ends in a torn record"),
        "the cut is logged:\n{log}"
    );
    assert!(
        log.contains("bytes_cut=18"),
        "how much was cut is logged:\n{log}"
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        good_len,
        "cut at the last good record"
    );
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    for i in 0..50 {
        let got = kv
            .get(pb::GetRequest {
                tenant: 1,
                key: format!("k{i}").into_bytes(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.value, format!("{i}").as_bytes());
    }
    // And it keeps accepting writes after the cut.
    kv.put(pb::PutRequest {
        tenant: 1,
        key: b"after".to_vec(),
        value: b"cut".to_vec(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_deployed_over_grpc_run_on_the_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let node = agent(&ca, dir.path());
    let mut agent_client = NodeAgentClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    let module = sandstorm_guest_examples::module("counter")
        .unwrap()
        .to_vec();
    let function = Some(pb::FunctionRef {
        tenant: 4,
        name: "counter".into(),
    });
    agent_client
        .deploy(pb::DeployRequest {
            function: function.clone(),
            module,
            limits: None,
            ..Default::default()
        })
        .await
        .unwrap();
    for expected in 1..=3 {
        let out = agent_client
            .execute(pb::ExecuteRequest {
                function: function.clone(),
                input: b"visits".to_vec(),
                invocation_id: expected,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.output, expected.to_string().as_bytes());
    }
    // The function's own writes are durable by the time it answers.
    let got = kv
        .get(pb::GetRequest {
            tenant: 4,
            key: b"visits".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_before_the_end_refuses_start_until_repair_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let mut node = agent(&ca, dir.path());
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    // Records of 8 + 9 + 2 + 1 = 20 bytes each.
    for i in 0..10 {
        kv.put(pb::PutRequest {
            tenant: 1,
            key: format!("k{i}").into_bytes(),
            value: format!("{i}").into_bytes(),
        })
        .await
        .unwrap();
    }
    node.kill();
    let segment = segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    assert_eq!(bytes.len(), 200);
    bytes[3 * 20 + 12] ^= 0x10; // inside the fourth record
    std::fs::write(&segment, &bytes).unwrap();

    let name = segment.to_str().unwrap();
    sandstorm_tests::sandstorm(None, agent_args(&ca, dir.path()))
        .clean_failure()
        .stderr_names(&[name, "corrupt record at byte 60", "--repair-log"]);
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "refusing cut nothing"
    );

    let mut args = agent_args(&ca, dir.path());
    args.push("--repair-log".into());
    let node = Service::start(args);
    let log = node.stderr();
    assert!(
        log.contains("--repair-log: the log has a corrupt record"),
        "{log}"
    );
    assert!(
        log.contains("offset=60") && log.contains("bytes_dropped=140"),
        "{log}"
    );
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    for i in 0..10 {
        let got = kv
            .get(pb::GetRequest {
                tenant: 1,
                key: format!("k{i}").into_bytes(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.found, i < 3, "k{i}");
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_node_read_only_and_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A real kernel failure of the log: a data directory on a 64 KiB tmpfs fills up.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&data)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("SKIPPED: cannot run mount: {e}");
            return;
        }
    }
    let _tmpfs = Tmpfs(data.clone());
    let ca = TestCa::new();
    let node = agent(&ca, &data);
    let mut kv = KeyValueClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    let put = |i: usize| pb::PutRequest {
        tenant: 1,
        key: format!("k{i:04}").into_bytes(),
        value: vec![b'x'; 4000],
    };
    // 64 KiB hold at most 16 of these: the write that does not fit fails.
    let mut acked = 0;
    let failed = loop {
        match kv.put(put(acked)).await {
            Ok(_) => acked += 1,
            Err(status) => break status,
        }
        assert!(acked <= 16, "a 64 KiB tmpfs took {acked} writes of 4 KB");
    };
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    assert!(
        failed.message().contains("write of the write-ahead log"),
        "{failed:?}"
    );
    // Every later write is refused naming the failure, even one that would fit.
    let refused = kv
        .put(pb::PutRequest {
            tenant: 1,
            key: b"small".to_vec(),
            value: b"1".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("read-only") && refused.message().contains("No space left"),
        "{refused:?}"
    );
    // Reads go on: every acknowledged write is there, the failed one is not.
    for i in 0..=acked {
        let got = kv
            .get(pb::GetRequest {
                tenant: 1,
                key: format!("k{i:04}").into_bytes(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.found, i < acked, "k{i:04} of {acked} acknowledged");
    }
    // The stats say so, and so does the log.
    let mut agent = NodeAgentClient::new(ca.dial(&node, Role::Storage, "storage-0").await);
    let stats = agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 20 })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(stats.read_only.contains("No space left"), "{stats:?}");
    // As does the metrics gauge (set once a second).
    let metrics = node
        .printed("metrics on ")
        .expect("the metrics address is printed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !http_get(&metrics).contains("\nsandstorm_store_read_only 1") {
        assert!(std::time::Instant::now() < deadline, "no read-only gauge");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        node.stderr().contains("the storage node is now read-only"),
        "{}",
        node.stderr()
    );
}

/// The body of `GET url` (`http://HOST:PORT/PATH`).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
