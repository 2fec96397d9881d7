//! The dashboard's HTTP server, in process on `127.0.0.1:0`, over a hub without a scheduler.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::hub::tests::record;
use super::*;

async fn start(sim_report: Option<PathBuf>) -> (SocketAddr, Arc<Hub>) {
    let hub = Arc::new(Hub::new());
    let board = Dashboard::new(hub.clone(), None, sim_report);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, board, std::future::pending()));
    (addr, hub)
}

/// `GET path` with `Connection: close`: (status, content type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let (addr, _) = start(None).await;
    let (status, ty, body) = get(addr, "/").await;
    assert_eq!((status, ty.as_str()), (200, "text/html; charset=utf-8"));
    assert!(body.contains("app.js") && body.contains("style.css"));
    // Nothing is fetched from elsewhere.
    for path in ["/", "/app.js", "/style.css"] {
        let (status, _, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains("https://"), "an external URL in {path}");
    }
    let (status, ty, _) = get(addr, "/app.js").await;
    assert_eq!(
        (status, ty.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (addr, _) = start(None).await;
    // (path, status, what the error says)
    let table = [
        ("/nope", 404, "no page /nope"),
        (
            "/api/decisions/abc",
            400,
            "bad path: decision id \"abc\" is not a number",
        ),
        (
            "/api/decisions/12345",
            404,
            "decision 12345 is not held: the dashboard keeps the last 4096 sampled decisions",
        ),
        (
            "/api/decisions/1?x=1",
            400,
            "bad query: unknown parameter \"x\"; this endpoint takes none",
        ),
        (
            "/api/stream?tier=gpu",
            400,
            "bad query: tier \"gpu\" is not one of storage, compute",
        ),
        (
            "/api/cluster?verbose=1",
            400,
            "unknown parameter \"verbose\"",
        ),
        ("/api/sim-report", 404, "no simulator report"),
    ];
    for (path, status, says) in table {
        let (got, ty, body) = get(addr, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(ty, "application/json", "{path}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_decision_is_served_with_every_candidates_cost() {
    let (addr, hub) = start(None).await;
    hub.publish(
        "demo",
        &record(77, "kv-sum", pb::Tier::Storage, pb::StartKind::Assembled),
        true,
    );
    // Held once its batch is made (the ticker does it every 150 ms; here at once).
    hub.flush();
    let (status, _, body) = get(addr, "/api/decisions/77").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["function"], "kv-sum");
    assert_eq!(v["tenant"], "demo");
    assert_eq!(v["candidates"][0]["verdict"], "chosen");
    assert_eq!(v["candidates"][1]["network_rtt_us"], 30.0);
    assert!(
        v["candidates"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("lower wins")
    );
    // Without a scheduler the cluster says where decisions come from.
    let (_, _, body) = get(addr, "/api/cluster").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["source"], "bench");
    assert_eq!(v["decisions_total"], 1);
    let (_, _, body) = get(addr, "/api/functions").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["functions"][0]["name"], "kv-sum");
    assert_eq!(v["functions"][0]["decisions"], 1);
    assert!(v["functions"][0]["plan"].is_null());
}

#[tokio::test]
async fn the_newest_report_of_a_directory_is_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("old.json"),
        "{\"schema_version\":1,\"n\":1}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("new.json"),
        "{\"schema_version\":1,\"n\":2}",
    )
    .unwrap();
    // Newest by modification time, set here rather than waited for.
    let old_time = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("old.json"))
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a report").unwrap();
    let (addr, _) = start(Some(dir.path().to_path_buf())).await;
    let (status, ty, body) = get(addr, "/api/sim-report").await;
    assert_eq!((status, ty.as_str()), (200, "application/json"));
    assert!(body.contains("\"n\":2"), "{body}");

    let empty = tempfile::tempdir().unwrap();
    let (addr, _) = start(Some(empty.path().to_path_buf())).await;
    let (status, _, body) = get(addr, "/api/sim-report").await;
    assert_eq!(status, 422);
    assert!(body.contains("holds no .json report"), "{body}");
}

/// Reads from `s` until `needle` has been seen; returns what followed it on its line.
async fn read_until(s: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let text = String::from_utf8_lossy(seen);
        if let Some(at) = text.find(needle) {
            let rest = &text[at + needle.len()..];
            let line = rest.split('\n').next().unwrap_or_default().to_owned();
            if rest.contains('\n') {
                let cut = at + needle.len() + line.len();
                seen.drain(..cut);
                return line;
            }
        }
        // Keep only a tail so a long stream does not grow the test's own memory.
        if seen.len() > 1 << 20 {
            seen.drain(..seen.len() - 4096);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the stream went quiet")
            .unwrap();
        assert!(n > 0, "the stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_loses_batches_not_memory() {
    let (addr, hub) = start(None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut s, &mut seen, "event: cluster").await;
    // The client now stops reading while 40 MB of batches are produced (far more than the
    // socket buffers hold): 2,500 batches of 64 sampled decisions each.
    let batches = 2_500u64;
    for b in 0..batches {
        for i in 0..(hub::SAMPLE_PER_BATCH as u64) {
            let id = 1_000 + b * 1_000 + i;
            hub.publish(
                "demo",
                &record(id, "kv-sum", pb::Tier::Storage, pb::StartKind::Assembled),
                true,
            );
        }
        hub.flush();
        // The only queue between the hub and the stalled browser is the bounded channel.
        assert!(hub.backlog() <= hub::BATCH_BACKLOG);
        if b % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Reading again: the connection is told how many batches it lost.
    let mut dropped = 0u64;
    for _ in 0..batches {
        let line = read_until(&mut s, &mut seen, "\"dropped_batches\":").await;
        dropped = line
            .trim_end_matches(['}', '\r'])
            .parse()
            .unwrap_or_else(|_| panic!("{line}"));
        if dropped > 0 {
            break;
        }
    }
    println!(
        "a stalled browser lost {dropped} of {batches} batches; backlog held {}",
        hub.backlog()
    );
    assert!(
        dropped > 0,
        "a stalled browser was never told it lost batches"
    );
}
