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
