//! The outputs of `sandstorm sim` from one `SimReport`: JSON round trip and schema keys, CSV
//! shape, the terminal table, and the HTML page (self-contained, escaped).
//!
//! Set `SANDSTORM_REPORT_SAMPLE_DIR=/tmp` to also write the sample report in every format there
//! (`report.html`, `report.json`, `report.csv`, `report.txt`, and `report-single.html` for a
//! single load point) to look at.

use anyhow::{Context, Result, ensure};
use sandstorm_sim::report::{
    BoundComparison, CSV_COLUMNS, PeerComparison, Percentiles, ReportError, RunResult,
    SCHEMA_VERSION, SimReport, StartCounts, TierCounts, TraceSummary, from_json, render_table,
    to_csv, to_html, to_json,
};
use serde_json::Value;

/// Builds reports with plausible, deterministic figures: every number is a simple function of
/// the policy's and keep-alive's position and of the load, so tests can reason about them.
#[derive(Debug)]
struct ReportBuilder {
    report: SimReport,
}

impl ReportBuilder {
    fn new(scenario: &str) -> Self {
        Self {
            report: SimReport {
                schema_version: SCHEMA_VERSION,
                scenario: scenario.to_owned(),
                description: "Azure 2019 day 1 on 8 storage + 16 compute nodes; placement and \
                              keep-alive sweep."
                    .to_owned(),
                seed: 42,
                trace: TraceSummary {
                    format: "azure2019".to_owned(),
                    source: "../shared/traces/azure2019-500fn-8h".to_owned(),
                    functions: 500,
                    apps: 212,
                    invocations: 1_843_200,
                    span_s: 8.0 * 3_600.0,
                },
                runs: Vec::new(),
                peer: Vec::new(),
            },
        }
    }

    /// One run per (policy, keep-alive, load), policies outermost.
    fn runs(mut self, policies: &[&str], keep_alives: &[&str], loads: &[f64]) -> Self {
        for (pi, policy) in policies.iter().enumerate() {
            for (ki, keep_alive) in keep_alives.iter().enumerate() {
                for &load in loads {
                    self.report.runs.push(run(policy, pi, keep_alive, ki, load));
                }
            }
        }
        self
    }

    /// Adds the LP bound to every run at `load`.
    fn bound_at(mut self, load: f64) -> Self {
        for (i, r) in self
            .report
            .runs
            .iter_mut()
            .enumerate()
            .filter(|(_, r)| r.load == load)
        {
            let objective_bound = 900.0;
            let gap = 0.04 + 0.07 * (i % 4) as f64;
            r.bound = Some(BoundComparison {
                objective_bound,
                objective: objective_bound * (1.0 + gap),
                goodput_bound_per_s: r.offered_per_s * 0.995,
                gap,
            });
        }
        self
    }

    /// A peer figure for `keep_alive` over `invocations`: `peer` cold starts there, `ours` here.
    fn peer(mut self, keep_alive: &str, invocations: u64, peer: u64, ours: u64) -> Self {
        self.report.peer.push(PeerComparison {
            keep_alive: keep_alive.to_owned(),
            peer: "DSLab FaaS".to_owned(),
            peer_cold_starts: peer,
            peer_invocations: invocations,
            cold_starts: ours,
            invocations,
            difference: ours as f64 / peer as f64 - 1.0,
        });
        self
    }

    fn build(self) -> SimReport {
        self.report
    }
}

/// A run whose figures grow with load; later policies are slower, later keep-alives keep more warm.
fn run(policy: &str, pi: usize, keep_alive: &str, ki: usize, load: f64) -> RunResult {
    let invocations = (1_843_200.0 * load) as u64;
    let cold_ratio = (0.16 - 0.05 * ki as f64) * (1.0 + 0.15 * load);
    let cold_starts = (invocations as f64 * cold_ratio) as u64;
    let assembled = cold_starts * (6 - pi as u64 % 4) / 8;
    let storage_share = [0.85, 0.0, 0.6, 0.45][pi % 4];
    let storage = (invocations as f64 * storage_share) as u64;
    let compute = invocations - storage;
    let slow = (1.0 + 0.35 * pi as f64) * (1.0 + 0.4 * load * load);
    let p50 = 380.0 * slow * (1.0 - 0.05 * ki as f64);
    let mut tail = 9.0 * load * (1.0 - 0.15 * ki as f64);
    if pi == 3 && load >= 2.0 {
        tail *= 40.0; // the last policy overloads a node at 2x: its tail is queueing
    }
    let offered_per_s = invocations as f64 / (8.0 * 3_600.0);
    RunResult {
        policy: policy.to_owned(),
        keep_alive: keep_alive.to_owned(),
        load,
        offered_per_s,
        invocations,
        completed: invocations,
        rejected: 0,
        queued: 0,
        queue_wait_us: Percentiles::default(),
        cold_starts,
        starts: StartCounts {
            cold: cold_starts - assembled,
            assembled,
            warm: invocations - cold_starts,
        },
        tiers: TierCounts { storage, compute },
        latency_us: Percentiles {
            p50,
            p99: p50 * tail,
            p999: p50 * tail * 4.5,
            mean: p50 * 1.6,
        },
        slowdown: Percentiles {
            p50: 1.1 * slow,
            p99: 3.0 * slow,
            p999: 9.0 * slow,
            mean: 1.4 * slow,
        },
        storage_cpu_s: storage as f64 * 0.0021,
        compute_cpu_s: compute as f64 * 0.0034,
        bytes_moved: compute * 48 * 1024 + storage * 512,
        goodput_per_s: offered_per_s * (0.99 - 0.05 * pi as f64 * load.min(1.5) - 0.04 * load),
        events: invocations * 7,
        wall_s: 0.8 * load + 0.1 * pi as f64,
        bound: None,
    }
}

const POLICIES: [&str; 4] = ["storage-first", "compute-only", "cost-aware", "round-robin"];

/// Four policies, two keep-alives, three load points, the bound at load 1, three peer figures
/// (the last one outside the tolerance).
fn fixture() -> SimReport {
    ReportBuilder::new("azure-day1-sweep")
        .runs(&POLICIES, &["fixed:10m", "hybrid"], &[0.5, 1.0, 2.0])
        .bound_at(1.0)
        .peer("fixed:10m", 1_843_200, 310_000, 316_500) // +2.1%
        .peer("hybrid", 1_843_200, 190_000, 186_200) // -2.0%
        .peer("greedy-dual", 1_843_200, 150_000, 171_000) // +14.0%
        .build()
}

/// Whether two JSON values are equal, floats within `rel` of each other.
///
/// serde_json parses floats "best effort" unless its `float_roundtrip` feature is on (it is not
/// in this workspace), so a float can come back one ULP away from what was written.
fn same_json(a: &Value, b: &Value, rel: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= rel * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y, rel))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w, rel)))
        }
        _ => a == b,
    }
}

#[test]
fn json_round_trips() -> Result<()> {
    let report = fixture();
    let text = to_json(&report);
    let back = from_json(&text)?;
    let (a, b) = (serde_json::to_value(&report)?, serde_json::to_value(&back)?);
    ensure!(same_json(&a, &b, 1e-15), "round trip changed the report");
    // Strings, counts and the structure come back exactly; so does every float written with few
    // digits (all of these are).
    ensure!(back.runs.len() == report.runs.len() && back.peer.len() == report.peer.len());
    for (x, y) in back.runs.iter().zip(&report.runs) {
        ensure!(x.policy == y.policy && x.keep_alive == y.keep_alive && x.load == y.load);
        ensure!(x.starts == y.starts && x.tiers == y.tiers && x.bytes_moved == y.bytes_moved);
        ensure!(x.bound.is_some() == y.bound.is_some());
    }
    // Writing what was read gives the same text, to the last digit of every short float.
    ensure!(same_json(
        &serde_json::from_str(&to_json(&back))?,
        &serde_json::from_str(&text)?,
        1e-15
    ));
    Ok(())
}

#[test]
fn json_has_the_documented_keys() -> Result<()> {
    let report = fixture();
    let value: Value = serde_json::from_str(&to_json(&report))?;
    for key in [
        "schema_version",
        "scenario",
        "description",
        "seed",
        "trace",
        "runs",
        "peer",
    ] {
        ensure!(value.get(key).is_some(), "top-level key {key} missing");
    }
    let runs = value["runs"].as_array().context("runs is not an array")?;
    ensure!(runs.len() == report.runs.len());
    for (run, want) in runs.iter().zip(&report.runs) {
        for key in [
            "policy",
            "keep_alive",
            "load",
            "offered_per_s",
            "invocations",
            "completed",
            "rejected",
            "cold_starts",
            "starts",
            "tiers",
            "latency_us",
            "slowdown",
            "storage_cpu_s",
            "compute_cpu_s",
            "bytes_moved",
            "goodput_per_s",
            "events",
            "wall_s",
        ] {
            ensure!(run.get(key).is_some(), "run key {key} missing");
        }
        for key in ["p50", "p99", "p999", "mean"] {
            ensure!(
                run["latency_us"][key].is_f64(),
                "latency_us.{key} is not a number"
            );
        }
        for key in ["cold", "assembled", "warm"] {
            ensure!(run["starts"][key].is_u64(), "starts.{key} is not a count");
        }
        // `bound` is there exactly where it was computed.
        ensure!(
            run.get("bound").is_some() == want.bound.is_some(),
            "bound at load {}",
            want.load
        );
        if want.bound.is_some() {
            for key in ["objective_bound", "objective", "goodput_bound_per_s", "gap"] {
                ensure!(run["bound"][key].is_f64(), "bound.{key} missing");
            }
        }
    }
    let peer = value["peer"].as_array().context("peer is not an array")?;
    ensure!(peer.len() == 3 && peer[0]["difference"].is_f64());
    // Without peer figures the key is left out.
    let mut without = fixture();
    without.peer.clear();
    let value: Value = serde_json::from_str(&to_json(&without))?;
    ensure!(value.get("peer").is_none(), "an empty peer list is written");
    ensure!(from_json(&to_json(&without))?.peer.is_empty());
    Ok(())
}

#[test]
fn json_keeps_undefined_figures_as_null() -> Result<()> {
    let mut report = fixture();
    report.runs[0].latency_us.p999 = f64::NAN;
    let text = to_json(&report);
    ensure!(
        text.contains("\"p999\": null"),
        "NaN is not written as null"
    );
    let back = from_json(&text)?;
    ensure!(back.runs[0].latency_us.p999.is_nan());
    let (p50, want) = (back.runs[0].latency_us.p50, report.runs[0].latency_us.p50);
    ensure!((p50 - want).abs() <= 1e-12 * want, "p50 {p50} != {want}");
    Ok(())
}

#[test]
fn json_rejects_newer_schemas_and_garbage() -> Result<()> {
    let mut value: Value = serde_json::from_str(&to_json(&fixture()))?;
    value["schema_version"] = Value::from(SCHEMA_VERSION + 1);
    match from_json(&value.to_string()) {
        Err(ReportError::UnsupportedVersion { found, supported }) => {
            ensure!(found == u64::from(SCHEMA_VERSION + 1) && supported == SCHEMA_VERSION);
        }
        other => anyhow::bail!("expected UnsupportedVersion, got {other:?}"),
    }
    ensure!(matches!(
        from_json("{\"runs\": []}"),
        Err(ReportError::Json(_))
    ));
    ensure!(matches!(from_json("not json"), Err(ReportError::Json(_))));
    Ok(())
}

#[test]
fn csv_has_one_header_and_one_row_per_run() -> Result<()> {
    let mut report = fixture();
    report.runs[0].policy = "odd, \"quoted\" name".to_owned();
    let text = to_csv(&report);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    ensure!(header == CSV_COLUMNS, "header: {header:?}");
    for column in [
        "latency_p50_us",
        "latency_p99_us",
        "latency_p999_us",
        "bound_gap",
        "queued",
        "queue_wait_p99_us",
    ] {
        ensure!(header.iter().any(|h| h == column), "no column {column}");
    }
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    ensure!(
        rows.len() == report.runs.len(),
        "{} rows for {} runs",
        rows.len(),
        report.runs.len()
    );
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .context(name.to_owned())
    };
    let (policy, gap, p99) = (col("policy")?, col("bound_gap")?, col("latency_p99_us")?);
    ensure!(
        &rows[0][policy] == "odd, \"quoted\" name",
        "quoting lost: {}",
        &rows[0][policy]
    );
    for (row, run) in rows.iter().zip(&report.runs) {
        ensure!(row.len() == CSV_COLUMNS.len());
        ensure!(
            row[p99].parse::<f64>()? == run.latency_us.p99,
            "p99 changed in CSV"
        );
        match run.bound {
            Some(b) => ensure!(row[gap].parse::<f64>()? == b.gap),
            None => ensure!(
                row[gap].is_empty(),
                "bound_gap without a bound: {}",
                &row[gap]
            ),
        }
    }
    Ok(())
}

#[test]
fn table_names_every_policy_and_the_peer_verdicts() -> Result<()> {
    let report = fixture();
    let table = render_table(&report);
    for policy in POLICIES {
        ensure!(table.contains(policy), "no {policy} in\n{table}");
    }
    for unit in [" us", " ms", " GiB", "%"] {
        ensure!(table.contains(unit), "no {unit:?} in\n{table}");
    }
    ensure!(table.contains("Keep-alive vs peer"));
    ensure!(
        table.matches("within 5%").count() == 2,
        "want two agreeing peers in\n{table}"
    );
    ensure!(
        table.matches("outside 5%").count() == 1,
        "want one disagreeing peer in\n{table}"
    );
    ensure!(table.contains("+14.0%"));
    ensure!(table.contains("bound gap"));
    for line in table.lines() {
        ensure!(
            line.chars().count() < 160,
            "line of {} chars: {line}",
            line.chars().count()
        );
    }
    // 24 runs of all these columns do not fit in one line: split into two tables keyed alike.
    ensure!(table.contains("Runs: starts and latency") && table.contains("Runs: resources"));
    ensure!(
        table
            .lines()
            .filter(|l| l.starts_with("storage-first "))
            .count()
            == 12
    );
    Ok(())
}

#[test]
fn long_names_are_cut_to_keep_lines_short() -> Result<()> {
    let policy = format!("cost-aware-with-{}", "x".repeat(60));
    let keep_alive = format!("fixed:{}", "9".repeat(40));
    let report = ReportBuilder::new("long")
        .runs(&[&policy, "short"], &[&keep_alive], &[0.5, 1.0])
        .peer(&keep_alive, 100, 10, 10)
        .build();
    let table = render_table(&report);
    for line in table.lines().filter(|l| !l.starts_with("Trace:")) {
        ensure!(
            line.chars().count() < 160,
            "line of {} chars: {line}",
            line.chars().count()
        );
    }
    ensure!(table.contains("cost-aware-with-xx") && table.contains('~'));
    ensure!(table.contains("short "));
    Ok(())
}

#[test]
fn peerless_reports_have_no_peer_table() {
    let mut report = ReportBuilder::new("tiny")
        .runs(&["a"], &["k"], &[1.0])
        .build();
    report.runs[0] = RunResult {
        invocations: 10,
        cold_starts: 1,
        ..report.runs[0].clone()
    };
    let table = render_table(&report);
    assert!(!table.contains("peer"), "{table}");
    assert!(!table.contains("bound gap"), "{table}");
    assert!(table.contains("10.0%"), "{table}"); // 1 cold start in 10
}

#[test]
fn html_is_self_contained_and_well_formed() -> Result<()> {
    let html = to_html(&fixture());
    ensure!(html.starts_with("<!DOCTYPE html>"));
    ensure!(html.trim_end().ends_with("</html>"));
    ensure!(html.contains("<svg"), "no chart");
    ensure!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference"
    );
    ensure!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));
    for tag in [
        "svg", "figure", "table", "section", "header", "main", "text", "title",
    ] {
        let open =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        let close = html.matches(&format!("</{tag}>")).count();
        ensure!(open == close, "<{tag}>: {open} opened, {close} closed");
    }
    // Charts (a)-(e): two latency panels, goodput with the bound, breakdown, CPU, peer.
    for title in [
        "Latency against load",
        "Goodput against load",
        "Cold-start breakdown",
        "CPU by tier",
        "ours vs DSLab FaaS",
    ] {
        ensure!(html.contains(title), "no chart {title}");
    }
    ensure!(html.contains("LP bound"));
    for policy in POLICIES {
        ensure!(html.contains(policy));
    }
    Ok(())
}

#[test]
fn html_escapes_every_report_string() -> Result<()> {
    let mut report = ReportBuilder::new("<b>scenario</b> & co")
        .runs(&["<script>", "plain"], &["fixed:10m"], &[1.0])
        .peer("<i>ka</i>", 100, 10, 10)
        .build();
    report.description = "say \"hi\" & 'bye'".to_owned();
    report.trace.source = "<img src=x>".to_owned();
    let html = to_html(&report);
    ensure!(!html.contains("<script>"), "policy name not escaped");
    ensure!(html.contains("&lt;script&gt;"));
    ensure!(!html.contains("<b>scenario") && html.contains("&lt;b&gt;scenario&lt;/b&gt; &amp; co"));
    ensure!(!html.contains("<i>ka") && !html.contains("<img"));
    ensure!(html.contains("say &quot;hi&quot; &amp; &#39;bye&#39;"));
    // A single load point draws grouped bars rather than lines.
    ensure!(html.contains("Latency at load 1x"));
    Ok(())
}

#[test]
fn empty_reports_render() -> Result<()> {
    let report = ReportBuilder::new("empty").build();
    ensure!(render_table(&report).contains("No runs."));
    ensure!(to_html(&report).contains("no runs"));
    ensure!(to_csv(&report).lines().count() == 1);
    ensure!(from_json(&to_json(&report))? == report);
    Ok(())
}

#[test]
fn writes_sample_when_asked() -> Result<()> {
    let Some(dir) = std::env::var_os("SANDSTORM_REPORT_SAMPLE_DIR") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    let report = fixture();
    // One load point, one keep-alive: bars instead of lines, no peer figures.
    let single = ReportBuilder::new("single-point")
        .runs(
            &["storage-first", "compute-only", "cost-aware"],
            &["hybrid"],
            &[1.0],
        )
        .bound_at(1.0)
        .build();
    for (name, text) in [
        ("report.html", to_html(&report)),
        ("report.json", to_json(&report)),
        ("report.csv", to_csv(&report)),
        ("report.txt", render_table(&report)),
        ("report-single.html", to_html(&single)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[test]
fn the_schema_doc_example_reads_back() -> Result<()> {
    let doc = include_str!("../REPORT.md");
    let start = doc
        .find("```json\n")
        .context("no JSON example in REPORT.md")?
        + "```json\n".len();
    let end = start
        + doc[start..]
            .find("```")
            .context("unterminated JSON example")?;
    let report = from_json(&doc[start..end])?;
    ensure!(report.runs.len() == 1 && report.peer.len() == 1);
    ensure!(report.runs[0].bound.is_some_and(|b| b.gap == 0.04));
    // Every field the doc's tables name is in the example, and the other way round.
    let value: Value = serde_json::from_str(&doc[start..end])?;
    for key in value["runs"][0]
        .as_object()
        .context("run is not an object")?
        .keys()
    {
        ensure!(
            doc.contains(&format!("| `{key}` |")),
            "REPORT.md does not document {key}"
        );
    }
    Ok(())
}
