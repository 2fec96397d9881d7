//! `admission = "queue"` on the bundled under-provisioned scenario (`sim/scenarios/
//! queue-azure500.toml`): invocations no host can take wait and then run, none is lost, each
//! queued one counts as a cold start, and the wait percentiles are ordered and bounded by the
//! run; the same cluster rejecting instead (`admission = "unlimited"`) loses exactly the
//! invocations that would have queued at the first refusal, and queues nothing.

use std::path::Path;

use sandstorm_sim::driver::{Progress, SimOptions, run_scenario};
use sandstorm_sim::report::SimReport;
use sandstorm_sim::scenario::{Admission, Scenario};

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/queue-azure500.toml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn run(scenario: &Scenario) -> SimReport {
    run_scenario(scenario, &SimOptions::default(), &Progress::default()).expect("runs")
}

#[test]
fn short_of_memory_invocations_queue_then_all_complete() {
    let scenario = scenario();
    assert_eq!(scenario.cluster.admission, Admission::Queue);
    let report = run(&scenario);
    assert!(!report.runs.is_empty());
    let span_us = report.trace.span_s * 1e6;
    for r in &report.runs {
        let w = r.queue_wait_us;
        println!(
            "{} {}: {} invocations, {} queued, {} cold, wait p50 {} p99 {} p999 {} mean {:.0} us",
            r.policy,
            r.keep_alive,
            r.invocations,
            r.queued,
            r.cold_starts,
            w.p50,
            w.p99,
            w.p999,
            w.mean
        );
        let what = format!("{} {}", r.policy, r.keep_alive);
        assert!(
            r.queued > 0,
            "{what}: memory runs out, so some invocations queue"
        );
        assert!(r.queued < r.invocations, "{what}: most run on arrival");
        assert_eq!(
            r.rejected, 0,
            "{what}: every app fits a host, so none is rejected"
        );
        assert_eq!(r.completed, r.invocations, "{what}: every queued one ran");
        assert!(
            r.cold_starts >= r.queued,
            "{what}: each queued one is a cold start"
        );
        assert!(
            0.0 < w.p50 && w.p50 <= w.p99 && w.p99 <= w.p999,
            "{what}: wait percentiles ordered and positive: {w:?}"
        );
        assert!(w.mean > 0.0, "{what}: mean wait {w:?}");
        // A queue drains as its host's invocations finish: no wait outlasts the replay.
        assert!(
            w.p999 <= span_us,
            "{what}: wait {w:?} over a {span_us} us replay"
        );
    }
}

#[test]
fn rejecting_instead_loses_invocations_and_queues_none() {
    let mut scenario = scenario();
    scenario.cluster.admission = Admission::Unlimited;
    let report = run(&scenario);
    for r in &report.runs {
        let what = format!("{} {}", r.policy, r.keep_alive);
        println!(
            "{what}: {} invocations, {} rejected, {} cold",
            r.invocations, r.rejected, r.cold_starts
        );
        assert_eq!(r.queued, 0, "{what}");
        assert_eq!(r.queue_wait_us.p50, 0.0, "{what}");
        assert!(
            r.rejected > 0,
            "{what}: short of memory, some are turned away"
        );
        assert_eq!(r.completed + r.rejected, r.invocations, "{what}");
    }
}
