#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use super::*;

/// A record as the invocation path makes it: two candidates, the storage one chosen.
pub(crate) fn record(
    id: u64,
    function: &str,
    tier: pb::Tier,
    start: pb::StartKind,
) -> pb::InvocationRecord {
    let cost = |queue_us: f64, rtt: f64| pb::CostBreakdown {
        queue_us,
        dispatch_us: 10.0,
        start_us: 2.0,
        compute_us: 100.0,
        network_rtt_us: rtt,
        objective: 112.0 + queue_us + rtt,
        ..Default::default()
    };
    pb::InvocationRecord {
        invocation_id: id,
        function: function.into(),
        node: "storage-0".into(),
        tier: tier.into(),
        start: start.into(),
        policy: "cost-aware".into(),
        total_us: 250,
        candidates: vec![
            pb::CandidateCost {
                node: "storage-0".into(),
                tier: pb::Tier::Storage.into(),
                start: pb::StartKind::Assembled.into(),
                cost: Some(cost(5.0, 0.0)),
                score: 117.0,
                verdict: pb::candidate_cost::Verdict::Chosen.into(),
                ..Default::default()
            },
            pb::CandidateCost {
                node: "compute-0".into(),
                node_id: 1,
                tier: pb::Tier::Compute.into(),
                start: pb::StartKind::Warm.into(),
                cost: Some(cost(0.0, 30.0)),
                score: 142.0,
                verdict: pb::candidate_cost::Verdict::Lost.into(),
                reason: "scored 142.00 against 117.00 for storage-0 (cost-aware: lower wins)"
                    .into(),
            },
        ],
        ..Default::default()
    }
}

#[test]
fn a_batch_counts_every_decision_and_samples_a_bounded_few() {
    let hub = Hub::new();
    let mut rx = hub.subscribe();
    // 1,000 decisions: 600 kv-sum in storage, 400 echo on compute (100 cold, 300 warm).
    for i in 0..1000u64 {
        let r = match i % 5 {
            0..=2 => record(i, "kv-sum", pb::Tier::Storage, pb::StartKind::Assembled),
            3 if i % 4 == 0 => record(i, "echo", pb::Tier::Compute, pb::StartKind::Cold),
            _ => record(i, "echo", pb::Tier::Compute, pb::StartKind::Warm),
        };
        hub.publish("demo", &r, true);
    }
    let batch = hub.flush();
    assert_eq!(batch.count, 1000);
    assert_eq!(batch.total, 1000);
    assert_eq!(batch.counts.iter().map(|r| r.n).sum::<u64>(), 1000);
    let n = |f: &str, start: &str| {
        batch
            .counts
            .iter()
            .filter(|r| r.function == f && r.start == start)
            .map(|r| r.n)
            .sum::<u64>()
    };
    assert_eq!(n("kv-sum", "assembled"), 600);
    assert_eq!(n("echo", "cold") + n("echo", "warm"), 400);
    assert_eq!(batch.sample.len(), SAMPLE_PER_BATCH);
    // The sample is in arrival order and holds details the page can open.
    assert!(batch.sample.windows(2).all(|w| w[0].id < w[1].id));
    for d in &batch.sample {
        let detail = hub.detail(d.id).unwrap();
        assert_eq!(detail.candidates.len(), 2);
        assert_eq!(detail.candidates[1].verdict, "lost");
        assert!(detail.candidates[1].reason.contains("lower wins"));
    }
    // The chosen candidate's estimate: 5 queue + 10 dispatch + 2 start + 100 compute.
    assert_eq!(batch.sample[0].estimated_us, 117.0);
    assert_eq!(batch.sample[0].measured_us, Some(250));
    assert_eq!(rx.try_recv().unwrap().seq, batch.seq);
    // The next batch starts empty.
    assert_eq!(hub.flush().count, 0);
}

#[test]
fn a_subscriber_that_never_reads_holds_a_bounded_backlog_and_learns_what_it_lost() {
    let hub = Hub::new();
    let mut slow = hub.subscribe();
    for b in 0..(BATCH_BACKLOG as u64 * 10) {
        for i in 0..100 {
            hub.publish(
                "demo",
                &record(b * 100 + i, "echo", pb::Tier::Storage, pb::StartKind::Warm),
                true,
            );
        }
        hub.flush();
        assert!(hub.backlog() <= BATCH_BACKLOG);
    }
    assert_eq!(hub.backlog(), BATCH_BACKLOG);
    // The ring of details is bounded too.
    assert!(hub.held_details() <= DETAIL_RING);
    match slow.try_recv() {
        Err(broadcast::error::TryRecvError::Lagged(n)) => {
            assert_eq!(n, BATCH_BACKLOG as u64 * 9)
        }
        other => panic!("expected a lag, got {other:?}"),
    }
    // What is left is the newest batches, in order.
    let next = slow.try_recv().unwrap();
    assert_eq!(next.seq, BATCH_BACKLOG as u64 * 9);
}

#[test]
fn unknown_decisions_are_not_found_and_old_ones_fall_out() {
    let hub = Hub::new();
    hub.publish(
        "demo",
        &record(7, "echo", pb::Tier::Storage, pb::StartKind::Warm),
        true,
    );
    assert!(hub.detail(7).is_none(), "not held before its batch is made");
    hub.flush();
    assert!(hub.detail(7).is_some());
    // One decision per batch, so every one is sampled and kept until the ring is full.
    for i in 100..(100 + DETAIL_RING as u64) {
        hub.publish(
            "demo",
            &record(i, "echo", pb::Tier::Storage, pb::StartKind::Warm),
            true,
        );
        hub.flush();
    }
    assert_eq!(hub.held_details(), DETAIL_RING);
    assert!(hub.detail(7).is_none(), "the oldest fell out");
    assert!(hub.detail(100).is_some());
    assert!(hub.detail(99 + DETAIL_RING as u64).is_some());
}

#[test]
fn the_series_counts_tiers_and_cold_starts() {
    let mut s = FunctionSeries::default();
    // (second, tier, start): two buckets of 5 s.
    let table = [
        (100, "storage", "assembled"),
        (101, "compute", "cold"),
        (104, "compute", "warm"),
        (105, "compute", "assembled"),
    ];
    for (at, tier, start) in table {
        s.add(at, tier, start);
    }
    assert_eq!(s.total, 4);
    // Cold starts: compute starts that were not warm (cold 101, assembled 105).
    assert_eq!(s.cold_starts, 2);
    assert_eq!(s.buckets.len(), 2);
    assert_eq!(
        (
            s.buckets[0].at_unix_s,
            s.buckets[0].storage,
            s.buckets[0].compute
        ),
        (100, 1, 2)
    );
    assert_eq!((s.buckets[1].at_unix_s, s.buckets[1].assembled), (105, 1));
    // Old buckets are dropped beyond SERIES_BUCKETS.
    for i in 0..(SERIES_BUCKETS as u64 * 2) {
        s.add(1000 + i * SERIES_BUCKET_S, "storage", "warm");
    }
    assert_eq!(s.buckets.len(), SERIES_BUCKETS);
}
