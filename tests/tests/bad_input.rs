//! Bad input through the real `sandstorm sim`: each case breaks one thing in a scratch copy of the
//! tiny fixture and expects a clean failure (exit status 1, no panic) whose message names the
//! file, the line and the field, so a user can go straight to the mistake.
//!
//! The Azure files end lines with CRLF (the invocations and memory files; the fixture copies
//! them). The csv crate reports a CRLF file's rows one line early (BurntSushi/rust-csv#395), so
//! `sim/src/trace/input.rs` counts lines itself: `crlf_rows_report_their_true_line` pins the CRLF
//! files as shipped, and the other exact-line cases rewrite the broken file with LF ends first so
//! both kinds of line end are covered.

use std::path::Path;

use sandstorm_tests::{
    DURATIONS_CSV, INVOCATIONS_CSV, MEMORY_CSV, TinyCopy, edit_line, sandstorm, set_csv_cell,
};

// Lines of the tiny trace's invocations file: 1 is the header, 2..6 the five functions.

/// The 1-based line of `path` that starts with `prefix`.
fn line_starting(path: &Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).expect("reading the scenario copy");
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{} has no line starting with {prefix}", path.display()))
        + 1
}

#[test]
fn intact_copy_runs() {
    // The baseline the other cases break: the scratch copy itself is fine.
    TinyCopy::new().sim(&[]).success();
}

#[test]
fn malformed_trace_row_names_file_line_and_column() {
    let tiny = TinyCopy::new();
    tiny.use_lf(INVOCATIONS_CSV);
    set_csv_cell(&tiny.trace_file(INVOCATIONS_CSV), 3, "3", "x7");
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{INVOCATIONS_CSV}:3:"),
        "column \"3\"",
        "\"x7\"",
    ]);
}

#[test]
fn short_trace_row_names_file_and_line() {
    let tiny = TinyCopy::new();
    tiny.use_lf(INVOCATIONS_CSV);
    // Drop the last three minute columns of line 4: 1441 fields under a 1444-column header.
    edit_line(&tiny.trace_file(INVOCATIONS_CSV), 4, |row| {
        row.rsplitn(4, ',').last().unwrap_or_default().to_owned()
    });
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{INVOCATIONS_CSV}:4:"),
        "1441 fields",
        "1444",
    ]);
}

#[test]
fn missing_column_names_file_header_line_and_column() {
    let tiny = TinyCopy::new();
    edit_line(&tiny.trace_file(DURATIONS_CSV), 1, |header| {
        header.replace("percentile_Average_50", "percentile_Avg_50")
    });
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{DURATIONS_CSV}:1:"),
        "missing column",
        "percentile_Average_50",
    ]);
}

#[test]
fn negative_count_names_file_line_and_column() {
    let tiny = TinyCopy::new();
    tiny.use_lf(INVOCATIONS_CSV);
    set_csv_cell(&tiny.trace_file(INVOCATIONS_CSV), 2, "2", "-3");
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{INVOCATIONS_CSV}:2:"),
        "column \"2\"",
        "\"-3\"",
    ]);
}

#[test]
fn negative_memory_names_file_line_and_column() {
    let tiny = TinyCopy::new();
    tiny.use_lf(MEMORY_CSV);
    set_csv_cell(
        &tiny.trace_file(MEMORY_CSV),
        3,
        "AverageAllocatedMb_pct100",
        "-65",
    );
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{MEMORY_CSV}:3:"),
        "AverageAllocatedMb_pct100",
        "\"-65\"",
    ]);
}

#[test]
fn crlf_rows_report_their_true_line() {
    let tiny = TinyCopy::new();
    // Line 4 of the CRLF file as shipped.
    set_csv_cell(&tiny.trace_file(INVOCATIONS_CSV), 4, "3", "x7");
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{INVOCATIONS_CSV}:4:"),
        "column \"3\"",
        "\"x7\"",
    ]);
}

#[test]
fn unknown_policy_flag_names_the_flag_and_the_known_policies() {
    // A flag has no file or line: the message names the flag, the bad value and what is known.
    let tiny = TinyCopy::new();
    tiny.sim(&["--policy", "nearest-star"])
        .clean_failure()
        .stderr_names(&["--policy", "nearest-star", "cost-aware", "least-loaded"]);
}

#[test]
fn unknown_policy_in_scenario_names_file_line_and_field() {
    let tiny = TinyCopy::new();
    let line = line_starting(&tiny.scenario(), "policies");
    edit_line(&tiny.scenario(), line, |_| {
        r#"policies = ["cost-aware", "nearest-star"]"#.to_owned()
    });
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("tiny.toml:{line}: policies[1]:"),
        "nearest-star",
        "known policies",
        "first-fit",
    ]);
}

#[test]
fn unknown_scenario_key_names_file_line_and_key() {
    let tiny = TinyCopy::new();
    let scenario = tiny.scenario();
    // A misspelt key inside [cluster].
    let line = line_starting(&scenario, "compute_cores");
    edit_line(&scenario, line, |l| {
        l.replace("compute_cores", "compute_corez")
    });
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("tiny.toml:{line}:"),
        "cluster.compute_corez",
        "unknown field",
    ]);
}

#[test]
fn missing_scenario_file_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = sandstorm(
        Some(dir.path()),
        ["sim", "--scenario", "no-such.toml", "--quiet"],
    );
    run.clean_failure().stderr_names(&["no-such.toml"]);
}

// ------------------------------------------------------ broken files, missing files, bad outputs

/// Bytes that are neither UTF-8 nor CSV (a fixed pseudo-random sequence).
fn garbage() -> Vec<u8> {
    (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn missing_trace_file_names_it() {
    let tiny = TinyCopy::new();
    std::fs::remove_file(tiny.trace_file(MEMORY_CSV)).expect("removing the memory file");
    let run = tiny.sim(&[]);
    run.clean_failure()
        .stderr_names(&[MEMORY_CSV, "No such file"]);
    // The OS error is said once, not repeated by the error chain.
    assert_eq!(
        run.stderr.matches("No such file").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn empty_trace_file_names_file_and_line() {
    let tiny = TinyCopy::new();
    std::fs::write(tiny.trace_file(DURATIONS_CSV), "").expect("emptying the durations file");
    tiny.sim(&[]).clean_failure().stderr_names(&[
        &format!("{DURATIONS_CSV}:1: empty file"),
        "percentile_Average_0",
    ]);
}

#[test]
fn binary_garbage_fails_cleanly() {
    // As a trace file: no header the reader knows.
    let tiny = TinyCopy::new();
    std::fs::write(tiny.trace_file(INVOCATIONS_CSV), garbage()).expect("writing garbage");
    tiny.sim(&[])
        .clean_failure()
        .stderr_names(&[&format!("{INVOCATIONS_CSV}:1: missing column")]);
    // As the scenario: not text.
    std::fs::write(tiny.scenario(), garbage()).expect("writing garbage");
    tiny.sim(&[])
        .clean_failure()
        .stderr_names(&["tiny.toml", "UTF-8"]);
}

#[test]
fn empty_scenario_names_the_missing_field() {
    let tiny = TinyCopy::new();
    std::fs::write(tiny.scenario(), "").expect("emptying the scenario");
    tiny.sim(&[])
        .clean_failure()
        .stderr_names(&["tiny.toml:1:", "missing field `name`"]);
}

#[test]
fn zero_load_scale_names_file_line_and_field() {
    let tiny = TinyCopy::new();
    let line = line_starting(&tiny.scenario(), "scales");
    edit_line(&tiny.scenario(), line, |_| "scales = [0]".to_owned());
    tiny.sim(&[])
        .clean_failure()
        .stderr_names(&[&format!("tiny.toml:{line}: load.scales[0]:"), "> 0"]);
}

#[test]
fn azure2021_negative_duration_names_file_line_and_column() {
    let tiny = TinyCopy::new();
    std::fs::write(
        tiny.dir.path().join("t2021.csv"),
        "app,func,end_timestamp,duration\r\na,f,10.5,1.0\r\na,f,12.5,-0.5\r\n",
    )
    .expect("writing the 2021 trace");
    std::fs::write(
        tiny.scenario(),
        "name = \"t2021\"\n[trace]\nformat = \"azure2021\"\npath = \"t2021.csv\"\n\
         [cluster]\ncompute_nodes = 1\ncompute_cores = 2\ncompute_memory_mb = 1024\n",
    )
    .expect("writing the scenario");
    tiny.sim(&[]).clean_failure().stderr_names(&[
        "t2021.csv:3:",
        "column \"duration\"",
        "\"-0.5\"",
    ]);
}

#[test]
fn report_in_a_missing_directory_fails_before_the_run() {
    let tiny = TinyCopy::new();
    let run = tiny.sim(&["--html", "no-such-dir/report.html"]);
    run.clean_failure()
        .stderr_names(&["--html", "no-such-dir/report.html", "does not exist"]);
    // Checked before simulating: no table was printed.
    assert!(run.stdout.is_empty(), "the run went ahead:\n{}", run.stdout);
    // A directory is not a file.
    tiny.sim(&["--json", "."])
        .clean_failure()
        .stderr_names(&["--json", "is a directory"]);
}
