//! The data directory in process: snapshots take over from log segments, and reopening after
//! them rebuilds exactly what was written.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::time::Duration;

use sandstorm_naming::TenantId;
use sandstorm_node_agent::storage::store::Limits;
use sandstorm_node_agent::storage::wal::{self, WalOptions};

fn files(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn snapshots_replace_old_segments_and_reopen_to_the_same_contents() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        snapshot_after_bytes: 8 << 10,
        ..WalOptions::default()
    };
    let t = TenantId(5);
    {
        let (store, recovery) = wal::open(dir.path(), Limits::default(), options).unwrap();
        assert_eq!(recovery.records_replayed, 0);
        for i in 0..2000u32 {
            let ack = store
                .put(
                    t,
                    format!("key{:05}", i % 700).as_bytes(),
                    format!("v{i}").as_bytes(),
                )
                .unwrap();
            ack.expect("durable store")
                .blocking_recv()
                .unwrap()
                .unwrap();
        }
        for i in 0..100u32 {
            let (existed, ack) = store.delete(t, format!("key{i:05}").as_bytes()).unwrap();
            assert!(existed);
            ack.expect("durable store")
                .blocking_recv()
                .unwrap()
                .unwrap();
        }
    }
    // A snapshot exists and the segments it covers are gone (the snapshot thread runs in the
    // background; wait for it to finish rather than sleeping a guessed time).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while files(dir.path(), ".snap").is_empty() || !files(dir.path(), ".tmp").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot: {:?}",
            files(dir.path(), "")
        );
        std::thread::yield_now();
    }
    let (store, recovery) = wal::open(dir.path(), Limits::default(), options).unwrap();
    assert!(recovery.snapshot.is_some());
    assert_eq!(recovery.tail_bytes_cut, 0);
    // 700 keys written, the first 100 deleted.
    assert_eq!(store.size().0, 600);
    assert_eq!(store.get(t, b"key00050").unwrap(), None);
    // Key 699's last write was i = 1399; key 100's was i = 1500.
    assert_eq!(
        store.get(t, b"key00699").unwrap().as_deref(),
        Some(&b"v1399"[..])
    );
    assert_eq!(
        store.get(t, b"key00100").unwrap().as_deref(),
        Some(&b"v1500"[..])
    );
}
