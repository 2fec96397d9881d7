//! Keep-alive tables, with the arithmetic in comments.

use super::*;

const MIN: u64 = 60_000_000;

fn ctx(id: u64, last_used_us: u64, first_idle_us: u64) -> IdleContext {
    IdleContext {
        id,
        app: AppId(1),
        node: NodeId(0),
        memory_mb: 256,
        last_used_us,
        first_idle_us,
    }
}

#[test]
fn fixed_ttl_counts_from_the_last_use() {
    let mut p = FixedTtl::new(10 * MIN);
    assert_eq!(p.name(), "fixed:10m");
    // Idle at minute 30, first idle at minute 5: keep until 30 + 10 = 40.
    assert_eq!(
        p.on_idle(&ctx(1, 30 * MIN, 5 * MIN), IdleReason::Finished, 30 * MIN),
        IdleAction::KeepUntil(40 * MIN)
    );
}

#[test]
fn fixed_lifetime_counts_from_the_first_idle() {
    let mut p = FixedTtl::lifetime(10 * MIN);
    assert_eq!(p.name(), "fixed-lifetime:10m");
    // First idle at 5, so the deadline is 15 whatever happens later.
    assert_eq!(
        p.on_idle(&ctx(1, 12 * MIN, 5 * MIN), IdleReason::Finished, 12 * MIN),
        IdleAction::KeepUntil(15 * MIN)
    );
    assert_eq!(
        p.on_idle(&ctx(1, 16 * MIN, 5 * MIN), IdleReason::Finished, 16 * MIN),
        IdleAction::Destroy
    );
}

#[test]
fn hybrid_keeps_an_unknown_app_for_the_whole_range() {
    let p = HybridHistogram::new(240 * MIN);
    assert_eq!(
        p.windows(AppId(3)),
        HybridWindows {
            prewarm_us: 0,
            keep_alive_us: 240 * MIN
        }
    );
}

#[test]
fn hybrid_reads_a_representative_histogram() {
    let mut p = HybridHistogram::new(240 * MIN);
    let (app, f) = (AppId(1), FunctionId(1));
    // A function invoked every ~10 minutes: each idle time 10 min 30 s falls in bin 10.
    let mut t = 0;
    for _ in 0..50 {
        let end = t + 1_000;
        p.on_finish(app, f, t, end);
        t = end + 10 * MIN + 30_000_000;
    }
    // 49 samples, all in bin 10: CV of the 240 bin counts is sqrt(239) ~ 15.5 >= 2.
    // Head = bin 10 -> pre-warm 10 x 60 s x 0.9 = 540 s; tail = bin 10 -> keep (10 + 1) x 66 s = 726 s.
    assert_eq!(
        p.windows(app),
        HybridWindows {
            prewarm_us: 540_000_000,
            keep_alive_us: 726_000_000
        }
    );
    assert_eq!(
        p.on_idle(&ctx(1, t, t), IdleReason::Finished, t),
        IdleAction::UnloadAndPrewarm {
            at_us: t + 540_000_000
        }
    );
    // Once pre-warmed it is kept for the keep-alive window.
    assert_eq!(
        p.on_idle(&ctx(1, t, t), IdleReason::Prewarmed, t),
        IdleAction::KeepUntil(t + 726_000_000)
    );
}

#[test]
fn hybrid_forecasts_when_idle_times_are_out_of_range() {
    let mut p = HybridHistogram::new(240 * MIN);
    let (app, f) = (AppId(1), FunctionId(1));
    p.on_finish(app, f, 0, 1_000);
    // Next arrival 5 hours later: out of the 4-hour range.
    p.on_finish(app, f, 1_000 + 300 * MIN, 2_000 + 300 * MIN);
    // Forecast 300 min: pre-warm at 85% = 255 min, keep 30% = 90 min.
    assert_eq!(
        p.windows(app),
        HybridWindows {
            prewarm_us: 255 * MIN,
            keep_alive_us: 90 * MIN
        }
    );
}

#[test]
fn greedy_dual_evicts_the_cheapest_to_lose() {
    let mut p = GreedyDual::new();
    let a = IdleContext {
        app: AppId(1),
        ..ctx(1, 0, 0)
    };
    let b = IdleContext {
        app: AppId(2),
        ..ctx(2, 0, 0)
    };
    // App 1 used 3 times, app 2 once: priorities 3 x 1000 / 256 = 11.7 and 1 x 1000 / 256 = 3.9.
    for _ in 0..3 {
        p.on_use(&a, 1_000.0);
    }
    p.on_use(&b, 1_000.0);
    assert_eq!(
        p.on_idle(&a, IdleReason::Finished, 5),
        IdleAction::KeepUntilEvicted
    );
    assert_eq!(p.victim(&[a, b]), Some(1));
    // The clock advanced to the victim's priority: a new use of app 1 now ranks above 3.9.
    p.on_destroy(&b);
    p.on_use(&a, 1_000.0);
    assert_eq!(p.victim(&[a]), Some(0));
}

#[test]
fn lru_is_the_default_victim() {
    let mut p = FixedTtl::new(MIN);
    assert_eq!(
        p.victim(&[ctx(1, 50, 0), ctx(2, 10, 0), ctx(3, 30, 0)]),
        Some(1)
    );
    assert_eq!(p.victim(&[]), None);
}

#[test]
fn durations_print_in_the_largest_whole_unit() {
    assert_eq!(format_duration(90_000_000), "90s");
    assert_eq!(format_duration(4 * 60 * MIN), "4h");
    assert_eq!(format_duration(1_500), "1500us");
}
