//! The `sandstorm` command's help, through the real binary: the top level lists its commands,
//! `sim --help` documents the scenario flag and every placement policy, `bench --help` works.
//!
//! Being an integration test of the `cli` package, this also makes `cargo test --workspace` build
//! the `sandstorm` binary before the end-to-end tests of `sandstorm-tests` run.

use std::process::{Command, Output};

use sandstorm_scheduler::placement::Policy;

fn sandstorm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandstorm"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running sandstorm {args:?}: {e}"))
}

/// Runs `sandstorm ARGS`, asserts it succeeded, returns stdout.
#[track_caller]
fn help(args: &[&str]) -> String {
    let out = sandstorm(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sandstorm {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn top_level_help_lists_commands() {
    let text = help(&["--help"]);
    assert_mentions(
        &text,
        &[
            "Usage: sandstorm",
            "sim",
            "bench",
            "agent",
            "scheduler",
            "tenant",
            "deploy",
            "invoke",
            "status",
        ],
    );
}

#[test]
fn version_prints() {
    let text = help(&["--version"]);
    assert!(text.starts_with("sandstorm "), "{text}");
}

#[test]
fn sim_help_mentions_scenario_and_policies() {
    let text = help(&["sim", "--help"]);
    assert_mentions(
        &text,
        &[
            "--scenario <FILE>",
            "--policy <NAME>",
            "--seed",
            "--json",
            "--csv",
            "--html",
            "cost-aware",
            "least-loaded",
            "always-storage",
            "always-compute",
        ],
    );
}

#[test]
fn sim_help_lists_every_placement_policy() {
    let text = help(&["sim", "--help"]);
    let names = Policy::names();
    assert_mentions(&text, &names);
}

#[test]
fn bench_help_works_and_lists_sim() {
    let text = help(&["bench", "--help"]);
    assert_mentions(&text, &["Usage: sandstorm bench", "sim"]);
    let text = help(&["bench", "sim", "--help"]);
    assert_mentions(
        &text,
        &[
            "--json [<FILE>]",
            "--repeat",
            "--only",
            "keepalive",
            "day",
            "--scenario-dir",
            "DSLab",
        ],
    );
    assert!(
        !text.contains("figures-to-stdout"),
        "the child-process flag stays hidden:\n{text}"
    );
}

#[test]
fn bench_without_a_subcommand_is_a_usage_error() {
    let out = sandstorm(&["bench"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Usage"), "{stderr}");
}
