//! The offline LP bound is an upper bound: on every bundled scenario in `sim/scenarios/`, every
//! placement policy's goodput is at most the bound's, at every load point, with no slack.
//!
//! Each scenario is shortened so that the whole sweep runs in seconds in a test build: the first
//! 20 minutes of an Azure 2019 window, half a simulated second of synthetic load, the first
//! keep-alive policy. Nothing else changes: the cluster, costs, data profiles and load points are
//! the file's, and every placement policy the scheduler has is run.

use std::path::Path;

use sandstorm_placement::Policy;
use sandstorm_sim::driver::{Progress, SimOptions, run_scenario};
use sandstorm_sim::scenario::{Scenario, TraceSpec};

fn shortened(path: &Path) -> Scenario {
    let mut scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    scenario.bound = true;
    scenario.keep_alive.truncate(1);
    match &mut scenario.trace {
        TraceSpec::Azure2019 { minutes, .. } => {
            // The first 20 minutes with traffic: every bundled window starts where its
            // traffic does, or at minute 1.
            let start = minutes.map_or(1, |(start, _)| start);
            *minutes = Some((start, start + 20));
        }
        TraceSpec::Synthetic(spec) => spec.duration_s = spec.duration_s.min(0.5),
        TraceSpec::Azure2021 { .. } => {}
    }
    scenario
}

#[test]
fn no_policy_beats_the_bound_on_any_bundled_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("sim/scenarios")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "the bundled scenarios: {paths:?}");
    let options = SimOptions {
        policies: Policy::ALL.iter().map(|p| p.name().to_owned()).collect(),
        seed: Some(5),
        threads: 0,
    };
    let mut checked = 0;
    for path in &paths {
        let scenario = shortened(path);
        let report = run_scenario(&scenario, &options, &Progress::default())
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        for run in &report.runs {
            let bound = run.bound.expect("the bound is computed for every run");
            println!(
                "{} {} load {}: goodput {:.1}/s, bound {:.1}/s",
                scenario.name, run.policy, run.load, run.goodput_per_s, bound.goodput_bound_per_s
            );
            assert!(
                run.goodput_per_s <= bound.goodput_bound_per_s,
                "{} {} load {}: goodput {} above the bound {}",
                scenario.name,
                run.policy,
                run.load,
                run.goodput_per_s,
                bound.goodput_bound_per_s
            );
            checked += 1;
        }
    }
    assert!(checked >= paths.len() * Policy::ALL.len());
}
