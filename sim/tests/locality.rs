//! The locality claim on a short version of `sim/scenarios/locality-mix.toml`: `cost-aware` is
//! never worse than the better of `always-storage` and `always-compute` at any load point, and
//! beats both on the mix; and it stays within a few percent of the offline LP bound.

use std::path::Path;

use sandstorm_sim::driver::{Progress, SimOptions, run_scenario};
use sandstorm_sim::report::RunResult;
use sandstorm_sim::scenario::Scenario;

fn short_locality_mix() -> Scenario {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/locality-mix.toml"),
    )
    .expect("the bundled scenario");
    // One simulated second and three load points keep the test to a few seconds.
    let text = text
        .replace("duration_s = 10.0", "duration_s = 1.0")
        .replace(
            "scales = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]",
            "scales = [0.25, 1.0, 1.5]",
        );
    assert!(text.contains("duration_s = 1.0") && text.contains("scales = [0.25, 1.0, 1.5]"));
    Scenario::parse(
        &text,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/locality-mix.toml"),
    )
    .expect("valid scenario")
}

fn goodput(runs: &[RunResult], policy: &str, load: f64) -> f64 {
    runs.iter()
        .find(|r| r.policy == policy && r.load == load)
        .map(|r| r.goodput_per_s)
        .unwrap_or_else(|| panic!("no run of {policy} at load {load}"))
}

#[test]
fn cost_aware_is_never_worse_than_either_tier_alone_and_beats_both() {
    let scenario = short_locality_mix();
    let options = SimOptions {
        policies: vec![
            "cost-aware".into(),
            "always-storage".into(),
            "always-compute".into(),
        ],
        seed: Some(11),
        threads: 0,
    };
    let report = run_scenario(&scenario, &options, &Progress::default()).expect("runs");
    let mut beat_both = false;
    for load in [0.25, 1.0, 1.5] {
        let ours = goodput(&report.runs, "cost-aware", load);
        let storage = goodput(&report.runs, "always-storage", load);
        let compute = goodput(&report.runs, "always-compute", load);
        println!(
            "load {load}: cost-aware {ours:.0}/s, always-storage {storage:.0}/s, always-compute {compute:.0}/s"
        );
        // Never worse than the better single tier (1% slack for the last few invocations of a
        // short run that have not completed at the same instant).
        assert!(
            ours >= storage.max(compute) * 0.99,
            "load {load}: {ours} < max({storage}, {compute})"
        );
        beat_both |= ours > storage.max(compute) * 1.1;
        let run = report
            .runs
            .iter()
            .find(|r| r.policy == "cost-aware" && r.load == load)
            .expect("run");
        let bound = run.bound.expect("the scenario computes the bound");
        // Goodput can never exceed the bound; cost-aware stays close to it.
        assert!(
            ours <= bound.goodput_bound_per_s * 1.01,
            "above the bound: {ours} > {}",
            bound.goodput_bound_per_s
        );
        assert!(
            ours >= bound.goodput_bound_per_s * 0.9,
            "far from the bound: {ours} vs {}",
            bound.goodput_bound_per_s
        );
    }
    assert!(
        beat_both,
        "cost-aware should beat both single-tier policies by 10% at some load"
    );
}
