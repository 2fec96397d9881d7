//! Scenario files (the bundled ones, defaults, and every kind of mistake) and data profiles.

use sandstorm_sim::profile::{DataProfile, DataProfiles, DataSpec};
use sandstorm_sim::scenario::{Admission, KeepAliveSpec, Scenario, TraceSpec};

use super::*;

fn scenario(name: &str) -> Scenario {
    let path = repo(&format!("sim/scenarios/{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn bundled_scenarios_load() {
    let ka = scenario("keepalive-azure500");
    assert_eq!(ka.policies, ["first-fit"]);
    let names: Vec<String> = ka.keep_alive.iter().map(ToString::to_string).collect();
    // Printed as the scheduler names its policies: 60 min is `1h`.
    assert_eq!(
        names,
        [
            "fixed-lifetime:10m",
            "fixed-lifetime:20m",
            "fixed-lifetime:1h",
            "hybrid",
            "fixed:10m"
        ]
    );
    assert_eq!(
        ka.cluster.compute_cpu,
        sandstorm_sim::engine::CpuModel::Shared
    );
    assert_eq!(ka.cluster.admission, Admission::Unlimited);
    assert_eq!(
        (
            ka.cluster.compute_nodes,
            ka.cluster.compute_cores,
            ka.cluster.storage_nodes
        ),
        (20, 32, 0)
    );
    assert_eq!(ka.costs.container_cold_us, 1_000_000.0);
    assert_eq!(ka.costs.rtt_us, 30.0); // untouched fields keep the defaults
    assert_eq!(ka.peers.len(), 4);
    assert_eq!(
        ka.peers[3].keep_alive,
        KeepAliveSpec::Hybrid {
            range_us: 4 * 3_600_000_000
        }
    );
    assert!(
        ka.peers
            .iter()
            .all(|p| p.invocations == 3_037_902 && p.source == "DSLab FaaS")
    );
    let trace = ka.load_trace().expect("trace loads");
    assert_eq!(trace.total_invocations(), 3_037_902);

    let day = scenario("azure1000-day");
    assert!(matches!(
        &day.trace,
        TraceSpec::Azure2019 { minutes: None, .. }
    ));
    assert_eq!(
        (day.cluster.compute_nodes, day.cluster.compute_memory_mb),
        (400, 65_536)
    );

    let mix = scenario("locality-mix");
    assert_eq!(mix.policies.len(), 7);
    assert_eq!(mix.load_scales, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]);
    assert!(mix.bound);
    assert_eq!(mix.instances.pool_per_node, 64);
    let trace = mix.load_trace().expect("synthetic trace");
    let profiles = DataProfiles::build(&mix.data, &trace).expect("profiles");
    for (i, f) in trace.functions.iter().enumerate() {
        let p = profiles.get(FunctionId(i as u32));
        let want = if f.name.starts_with("scan") {
            "data-heavy"
        } else {
            "cpu-heavy"
        };
        assert_eq!(p.class.as_deref(), Some(want), "{}", f.name);
    }
    assert_eq!(
        profiles.class_counts(),
        [("cpu-heavy".to_owned(), 4), ("data-heavy".to_owned(), 4)]
    );
}

/// A valid scenario; tests swap one line to break it. Line numbers matter: see each test.
const GOOD: &str = r#"name = "t"
seed = 3
keep_alive = ["fixed:10m", "hybrid:2h"]
policies = ["cost-aware"]

[trace]
format = "synthetic"

[trace.synthetic]
duration_s = 5.0
functions = [
    { name = "a", rate_per_s = 10.0, duration_ms = 1.0, data = "heavy" },
    { name = "b", rate_per_s = 10.0, duration_ms = 1.0 },
]

[cluster]
storage_nodes = 1
storage_cores = 4
compute_nodes = 1
compute_cores = 4
compute_memory_mb = 1024

[data]
mode = "generated"
classes = [ { name = "heavy", share = 1.0, accesses = 8, rounds = 2, bytes = 100 } ]

[load]
scales = [0.5, 1.0]
"#;

/// Writes `text` as `bad.toml` in a temporary directory and loads it.
fn load_text(text: &str) -> Result<Scenario, sandstorm_sim::scenario::ScenarioError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    Scenario::load(&path)
}

#[test]
fn good_scenario_defaults() {
    let s = load_text(GOOD).expect("valid");
    assert_eq!((s.seed, s.description.as_str(), s.bound), (3, "", false));
    assert_eq!(s.instances.concurrency, 1);
    assert_eq!(s.cluster.admission, Admission::Limited);
    assert_eq!(s.slo.slowdown, 10.0);
    assert!(matches!(s.data, DataSpec::Generated { seed: 1, .. }));
}

#[test]
fn bad_scenarios_name_file_line_field() {
    // (what to replace, replacement, parts of the message)
    let cases: &[(&str, &str, &[&str])] = &[
        // unknown key in [cluster], line 22
        (
            "compute_memory_mb = 1024",
            "compute_memory_mb = 1024\ncompute_gpus = 2",
            &["bad.toml:22:", "compute_gpus"],
        ),
        // an admission rule that does not exist, line 22
        (
            "compute_memory_mb = 1024",
            "compute_memory_mb = 1024\nadmission = \"none\"",
            &["bad.toml:22:", "cluster.admission", "unlimited"],
        ),
        // unknown top-level key, line 1
        ("name = \"t\"", "nme = \"t\"", &["bad.toml:1:", "nme"]),
        // unknown key inside an embedded cost-model section, line 28
        (
            "[load]",
            "[costs]\nrtt_ms = 3\n[load]",
            &["bad.toml:28:", "rtt_ms"],
        ),
        // a keep-alive name that does not parse, line 3, element 1
        (
            "\"hybrid:2h\"]",
            "\"lru\"]",
            &[
                "bad.toml:3:",
                "keep_alive[1]",
                "unknown keep-alive policy \"lru\"",
            ],
        ),
        // a placement policy the scheduler does not know, line 4, element 0
        (
            "policies = [\"cost-aware\"]",
            "policies = [\"fastest\"]",
            &[
                "bad.toml:4:",
                "policies[0]",
                "unknown placement policy `fastest`",
                "first-fit", // the message lists the known policies
            ],
        ),
        // the second of two policies, on a line of its own: line 5, element 1
        (
            "policies = [\"cost-aware\"]",
            "policies = [\"first-fit\",\n  \"nearest-star\"]",
            &["bad.toml:5:", "policies[1]", "`nearest-star`"],
        ),
        // an empty policy name, line 4
        (
            "policies = [\"cost-aware\"]",
            "policies = [\" \"]",
            &["bad.toml:4:", "policies[0]: must not be empty"],
        ),
        // a synthetic function naming an unknown data class, line 12
        (
            "data = \"heavy\"",
            "data = \"io\"",
            &[
                "bad.toml:12:",
                "trace.synthetic.functions[0].data",
                "unknown data class \"io\"",
            ],
        ),
        // compute nodes without cores, line 20
        (
            "compute_cores = 4",
            "compute_cores = 0",
            &["bad.toml:20: cluster.compute_cores: must be > 0"],
        ),
        // a load point of zero, line 28, element 0
        (
            "scales = [0.5, 1.0]",
            "scales = [0.0, 1.0]",
            &["bad.toml:28:", "load.scales[0]", "> 0"],
        ),
        // a load point too large to expand, line 28, element 1
        (
            "scales = [0.5, 1.0]",
            "scales = [0.5, 1e308]",
            &["bad.toml:28:", "load.scales[1]", "at most 100"],
        ),
        // a negative rate, line 13
        (
            "{ name = \"b\", rate_per_s = 10.0",
            "{ name = \"b\", rate_per_s = -1.0",
            &["bad.toml:13:", "functions[1].rate_per_s"],
        ),
        // rounds > accesses, line 25
        (
            "rounds = 2",
            "rounds = 9",
            &["bad.toml:25:", "data.classes[0].rounds"],
        ),
        // more nodes than the simulator holds, line 16 (the [cluster] header)
        (
            "storage_nodes = 1",
            "storage_nodes = 4294967295",
            &["bad.toml:16: cluster: at most 100000 nodes"],
        ),
        // more cores than a node may have, line 20
        (
            "compute_cores = 4",
            "compute_cores = 100000",
            &["bad.toml:20: cluster.compute_cores: at most 4096"],
        ),
        // a cost so large the engine's clock would overflow, line 28
        (
            "[load]",
            "[costs]\ncontainer_cold_us = 1e300\n[load]",
            &["bad.toml:28: costs.container_cold_us: must be a number >= 0 and at most 1e9"],
        ),
        // a data class's compute time past the time limit, line 25
        (
            "bytes = 100 }",
            "bytes = 100, compute_us = 18446744073709551615 }",
            &["bad.toml:25:", "data.classes[0].compute_us", "at most"],
        ),
        // a synthetic trace too long, line 10
        (
            "duration_s = 5.0",
            "duration_s = 1e300",
            &["bad.toml:10: trace.synthetic.duration_s", "at most 1e9"],
        ),
        // rates that would make an endless trace, line 11 (the functions array)
        (
            "rate_per_s = 10.0, duration_ms = 1.0, data",
            "rate_per_s = 1e300, duration_ms = 1.0, data",
            &["bad.toml:11: trace.synthetic.functions:", "at most 1e10"],
        ),
        // a log-normal sigma with an unbounded tail, line 12
        (
            "duration_ms = 1.0, data",
            "duration_ms = 1.0, sigma = 1e300, data",
            &[
                "bad.toml:12: trace.synthetic.functions[0].sigma",
                "at most 10",
            ],
        ),
        // wrong type, line 2
        ("seed = 3", "seed = \"three\"", &["bad.toml:2:"]),
        // a path with a synthetic trace, line 7
        (
            "format = \"synthetic\"",
            "format = \"synthetic\"\npath = \"x\"",
            &["bad.toml:", "trace.path"],
        ),
    ];
    for (from, to, parts) in cases {
        assert!(GOOD.contains(from), "{from}");
        let err = load_text(&GOOD.replacen(from, to, 1)).expect_err(from);
        assert_names(&err, parts);
    }
    // With both storage and compute nodes gone, the message says so.
    let text = GOOD
        .replacen("storage_nodes = 1", "storage_nodes = 0", 1)
        .replacen("compute_nodes = 1", "compute_nodes = 0", 1);
    assert_names(
        &load_text(&text).expect_err("no nodes"),
        &["bad.toml:16: cluster: at least one"],
    );
    // Minutes out of order, on line 9.
    let text = GOOD.replacen(
        "format = \"synthetic\"",
        "format = \"azure2019\"\npath = \"x\"\nminutes = [10, 5]",
        1,
    );
    let (head, rest) = text
        .split_once("[trace.synthetic]")
        .expect("has the section");
    let text = format!(
        "{head}[cluster]{}",
        rest.split_once("[cluster]").expect("has cluster").1
    );
    assert_names(
        &load_text(&text).expect_err("bad window"),
        &["bad.toml:9: trace.minutes"],
    );
    // A missing file names itself.
    assert_names(
        &Scenario::load(Path::new("no/such.toml")).expect_err("missing"),
        &["no/such.toml"],
    );
}

// ---------------------------------------------------------------- data profiles

#[test]
fn profiles_from_file() {
    let trace = tiny();
    let spec = DataSpec::File {
        path: fixture("profiles.csv"),
    };
    let profiles = DataProfiles::build(&spec, &trace).expect("valid file");
    let f1 = DataProfile {
        accesses: 16,
        rounds: 2,
        bytes: 16_384,
        compute_us: Some(20),
        class: None,
    };
    let f2 = DataProfile {
        accesses: 1,
        rounds: 1,
        bytes: 1_024,
        compute_us: None,
        class: None,
    };
    assert_eq!(profiles.get(FunctionId(0)), &f1);
    assert_eq!(profiles.get(FunctionId(1)), &f2); // empty compute_us: the trace's duration
    assert_eq!(profiles.get(FunctionId(2)), &DataProfile::default()); // not in the file
    assert_eq!(profiles.unprofiled(), 1);
    assert_eq!(profiles.get(FunctionId(99)), &DataProfile::default());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("profiles.csv");
    let cases: &[(&str, &[&str])] = &[
        (
            "function,accesses,rounds,bytes\nf1,1,1,0\nnope,1,1,0\n",
            &["profiles.csv:3: column \"function\": unknown function \"nope\""],
        ),
        (
            "function,accesses,rounds,bytes\nf1,1,3,0\n",
            &["profiles.csv:2: column \"rounds\""],
        ),
        (
            "function,accesses,rounds,bytes\nf1,x,1,0\n",
            &["profiles.csv:2: column \"accesses\": \"x\""],
        ),
        (
            "function,accesses,bytes\nf1,1,0\n",
            &["profiles.csv:1: missing column \"rounds\""],
        ),
        (
            "function,accesses,rounds,bytes\nf1,1,1,0\nf1,2,1,0\n",
            &["profiles.csv:3:", "line 2"],
        ),
    ];
    for (text, parts) in cases {
        std::fs::write(&path, text).expect("write");
        assert_names(
            &DataProfiles::build(&DataSpec::File { path: path.clone() }, &trace).expect_err(text),
            parts,
        );
    }
}

#[test]
fn generated_profiles_follow_shares() {
    let trace = Trace::load_azure2019(
        &repo("data/traces/azure2019-1000fn-24h"),
        "d01",
        Some((1, 2)),
    )
    .expect("loads");
    let text = GOOD.replacen(
        "classes = [ { name = \"heavy\", share = 1.0, accesses = 8, rounds = 2, bytes = 100 } ]",
        "seed = 7\nclasses = [ { name = \"heavy\", share = 1.0, accesses = 8, rounds = 2, bytes = 100 },\n  { name = \"light\", share = 3.0, accesses = 1, rounds = 1, bytes = 10, compute_us = 5 } ]",
        1,
    );
    let spec = load_text(&text).expect("valid").data;
    let a = DataProfiles::build(&spec, &trace).expect("profiles");
    let b = DataProfiles::build(&spec, &trace).expect("profiles");
    let classes = |p: &DataProfiles| {
        (0..1000)
            .map(|i| p.get(FunctionId(i)).class.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(classes(&a), classes(&b)); // deterministic
    // 1,000 functions, share 1:3 -> 250 heavy expected, sd sqrt(1000 x 0.25 x 0.75) = 13.7.
    let counts = a.class_counts();
    assert_eq!(counts[0].0, "heavy");
    assert!((counts[0].1 as f64 - 250.0).abs() < 70.0, "{counts:?}");
    assert_eq!(counts[0].1 + counts[1].1, 1000);
    let light = (0..1000)
        .map(|i| a.get(FunctionId(i)))
        .find(|p| p.class.as_deref() == Some("light"));
    assert_eq!(light.and_then(|p| p.compute_us), Some(5));
}
