//! End-to-end tests that start the real `sandstorm` binary, and the helpers they share: locating
//! the binary and the fixtures, running it and checking how it exited, copying the tiny trace
//! fixture to a scratch directory to break it, and comparing reports with golden files.
//!
//! Tests here never sleep and never replay the big bundled traces: the fixtures under
//! `tests/fixtures/` replay in milliseconds.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Environment variable that makes [`assert_golden`] rewrite golden files instead of comparing.
pub const BLESS_ENV: &str = "SANDSTORM_BLESS";

/// The workspace root (where `Cargo.toml`, `data/` and `sim/scenarios/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `tests/fixtures/`: the tiny trace, its scenario and the golden report.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Path of the `sandstorm` binary that `cargo test --workspace` builds next to the test
/// executables (the `cli` package's integration tests make cargo build it first).
pub fn sandstorm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/sandstorm
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    dir.join(format!("sandstorm{}", std::env::consts::EXE_SUFFIX))
}

/// [`sandstorm_bin`], asserting it was built.
fn built_sandstorm_bin() -> PathBuf {
    let bin = sandstorm_bin();
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo test -p sandstorm-cli -p sandstorm-tests` (or \
         `cargo build -p sandstorm-cli` first)",
        bin.display()
    );
    bin
}

/// How one run of the binary ended.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sandstorm ARGS` in `cwd` (the workspace root when `None`) and waits for it.
///
/// Panics with a hint when the binary has not been built: `cargo test -p sandstorm-tests` alone
/// does not build it; `cargo test --workspace` or `-p sandstorm-cli -p sandstorm-tests` does.
pub fn sandstorm<I, S>(cwd: Option<&Path>, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = built_sandstorm_bin();
    let args: Vec<S> = args.into_iter().collect();
    let command = std::iter::once("sandstorm".to_owned())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new(&bin)
        .args(&args)
        .current_dir(cwd.map_or_else(workspace_root, Path::to_path_buf))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()));
    Run {
        command,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

impl Run {
    /// Asserts a zero exit status; returns `self` for chaining.
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.output.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the run failed cleanly: exit status 1 (an error `main` reported), not a panic
    /// (101) or a signal, and nothing in stderr says "panicked".
    #[track_caller]
    pub fn clean_failure(&self) -> &Self {
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "`{}` should fail with exit status 1:\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "`{}` panicked:\n{}",
            self.command,
            self.stderr
        );
        self
    }

    /// Asserts that stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_names(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "`{}`: stderr should contain {needle:?}:\n{}",
                self.command,
                self.stderr
            );
        }
        self
    }
}

/// A scratch copy of the tiny fixture (`tiny.toml` and `tiny-azure2019/`), to break or to run.
#[derive(Debug)]
pub struct TinyCopy {
    pub dir: tempfile::TempDir,
}

/// The tiny trace's three files, by what they hold.
pub const INVOCATIONS_CSV: &str = "invocations_per_function_md.anon.d01.csv";
pub const DURATIONS_CSV: &str = "function_durations_percentiles.anon.d01.csv";
pub const MEMORY_CSV: &str = "app_memory_percentiles.anon.d01.csv";

impl TinyCopy {
    /// Copies the fixture into a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let src = fixtures_dir();
        let trace = dir.path().join("tiny-azure2019");
        std::fs::create_dir(&trace).expect("creating the trace directory");
        for name in [INVOCATIONS_CSV, DURATIONS_CSV, MEMORY_CSV] {
            std::fs::copy(src.join("tiny-azure2019").join(name), trace.join(name))
                .unwrap_or_else(|e| panic!("copying fixture {name}: {e}"));
        }
        std::fs::copy(src.join("tiny.toml"), dir.path().join("tiny.toml"))
            .expect("copying tiny.toml");
        Self { dir }
    }

    /// The scenario file.
    pub fn scenario(&self) -> PathBuf {
        self.dir.path().join("tiny.toml")
    }

    /// One of the trace's files ([`INVOCATIONS_CSV`], ...).
    pub fn trace_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("tiny-azure2019").join(name)
    }

    /// Rewrites one of the trace's files with LF line ends instead of the Azure files' CRLF.
    pub fn use_lf(&self, name: &str) -> &Self {
        let path = self.trace_file(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        std::fs::write(&path, text.replace("\r\n", "\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    /// `sandstorm sim --scenario <copy>/tiny.toml --quiet ARGS`, run in the copy's directory.
    pub fn sim(&self, extra: &[&str]) -> Run {
        let mut args = vec!["sim", "--scenario", "tiny.toml", "--quiet"];
        args.extend_from_slice(extra);
        sandstorm(Some(self.dir.path()), args)
    }
}

impl Default for TinyCopy {
    fn default() -> Self {
        Self::new()
    }
}

/// Rewrites line `line` (1-based) of `path` with `edit`, keeping the file's line endings (the
/// Azure files end lines with CRLF).
pub fn edit_line(path: &Path, line: usize, edit: impl FnOnce(&str) -> String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.split(eol).map(str::to_owned).collect();
    let slot = lines
        .get_mut(line - 1)
        .unwrap_or_else(|| panic!("{} has no line {line}", path.display()));
    *slot = edit(slot);
    std::fs::write(path, lines.join(eol))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Sets the cell of column `column` (by header name) on line `line` (1-based, the header is
/// line 1) of the CSV file `path` to `value`.
pub fn set_csv_cell(path: &Path, line: usize, column: &str, value: &str) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let header = text.lines().next().unwrap_or_default().trim_end();
    let col = header
        .split(',')
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("{} has no column {column}", path.display()));
    edit_line(path, line, |row| {
        let mut cells: Vec<&str> = row.split(',').collect();
        cells[col] = value;
        cells.join(",")
    });
}

/// A `sandstorm sim` JSON report with what is not reproducible blanked: every run's `wall_s`
/// (wall-clock seconds) becomes `null`.
pub fn normalise_report(text: &str) -> Result<Value, String> {
    let mut report: Value =
        serde_json::from_str(text).map_err(|e| format!("report is not JSON: {e}"))?;
    let runs = report
        .get_mut("runs")
        .and_then(Value::as_array_mut)
        .ok_or("report has no `runs` array")?;
    for run in runs {
        let run = run.as_object_mut().ok_or("a run is not an object")?;
        if run.insert("wall_s".to_owned(), Value::Null).is_none() {
            return Err("a run has no `wall_s`".to_owned());
        }
    }
    Ok(report)
}

/// Where two JSON values differ, as `path: expected -> actual` lines (at most `limit`).
pub fn json_diff(expected: &Value, actual: &Value, limit: usize) -> Vec<String> {
    fn walk(path: &str, e: &Value, a: &Value, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit {
            return;
        }
        match (e, a) {
            (Value::Object(eo), Value::Object(ao)) => {
                for (k, ev) in eo {
                    let p = format!("{path}.{k}");
                    match ao.get(k) {
                        Some(av) => walk(&p, ev, av, out, limit),
                        None => out.push(format!("{p}: {ev} -> (missing)")),
                    }
                }
                for (k, av) in ao {
                    if !eo.contains_key(k) && out.len() < limit {
                        out.push(format!("{path}.{k}: (missing) -> {av}"));
                    }
                }
            }
            (Value::Array(ea), Value::Array(aa)) => {
                if ea.len() != aa.len() {
                    out.push(format!("{path}: {} items -> {} items", ea.len(), aa.len()));
                }
                for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                    walk(&format!("{path}[{i}]"), ev, av, out, limit);
                }
            }
            _ if e != a => out.push(format!("{path}: {e} -> {a}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("$", expected, actual, &mut out, limit);
    out
}

/// Compares `actual` with the golden JSON file at `golden`. With `SANDSTORM_BLESS=1` in the
/// environment it (re)writes the file instead. On a mismatch it panics with the differing paths,
/// writes the actual value next to the test's scratch directory, and says how to bless it.
#[track_caller]
pub fn assert_golden(golden: &Path, actual: &Value, scratch: &Path) {
    let pretty = serde_json::to_string_pretty(actual).expect("a JSON value serializes") + "\n";
    if std::env::var_os(BLESS_ENV).is_some_and(|v| v != "0" && !v.is_empty()) {
        std::fs::write(golden, &pretty)
            .unwrap_or_else(|e| panic!("writing {}: {e}", golden.display()));
        eprintln!("blessed {}", golden.display());
        return;
    }
    let bless_hint = format!(
        "if the change is intended, regenerate it with `{BLESS_ENV}=1 cargo test -p \
         sandstorm-tests` and commit the diff"
    );
    let text = std::fs::read_to_string(golden).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable ({e}); {bless_hint}",
            golden.display()
        )
    });
    let expected: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("golden file {} is not JSON ({e})", golden.display()));
    if &expected == actual {
        return;
    }
    let name = golden
        .file_name()
        .map_or_else(|| "golden".into(), |n| n.to_string_lossy().into_owned());
    let actual_path = scratch.join(name.replace(".golden.", ".actual."));
    let _ = std::fs::create_dir_all(scratch);
    let _ = std::fs::write(&actual_path, &pretty);
    let mut message = format!(
        "report differs from {} (expected -> actual):\n",
        golden.display()
    );
    for line in json_diff(&expected, actual, 25) {
        let _ = writeln!(message, "  {line}");
    }
    let _ = write!(
        message,
        "actual report written to {}\n`diff {} {}` shows it all; {bless_hint}",
        actual_path.display(),
        golden.display(),
        actual_path.display()
    );
    panic!("{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normaliser_blanks_wall_time_only() {
        let text = r#"{"seed": 3, "runs": [{"events": 5, "wall_s": 0.25}, {"wall_s": 1.5}]}"#;
        let v = normalise_report(text).expect("normalises");
        assert_eq!(
            v,
            serde_json::json!({"seed": 3, "runs": [{"events": 5, "wall_s": null}, {"wall_s": null}]})
        );
        assert!(normalise_report(r#"{"runs": [{"events": 1}]}"#).is_err());
        assert!(normalise_report(r#"{"seed": 1}"#).is_err());
    }

    #[test]
    fn diff_names_the_paths() {
        let e = serde_json::json!({"a": [1, 2], "b": {"c": 1}, "gone": true});
        let a = serde_json::json!({"a": [1, 3], "b": {"c": 1}, "new": 0});
        assert_eq!(
            json_diff(&e, &a, 10),
            vec![
                "$.a[1]: 2 -> 3",
                "$.gone: true -> (missing)",
                "$.new: (missing) -> 0"
            ]
        );
        assert!(json_diff(&e, &e, 10).is_empty());
    }
}

/// A long-running `sandstorm` process (an agent, a scheduler) started by a test, through the
/// same mechanism as `sandstorm dev` ([`sandstorm_launch`]): ready once it printed `listening on
/// ADDR`, its logs kept in memory (printed if the test fails), killed with SIGKILL when
/// dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Service {
    process: sandstorm_launch::Process,
    /// The address it printed in its `listening on ADDR` line.
    pub addr: std::net::SocketAddr,
}

impl Service {
    /// Starts `sandstorm ARGS` and waits for its `listening on ADDR` line on stdout (the real
    /// readiness signal: the socket is bound before it is printed).
    pub fn start<I, S>(args: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_in(None, args)
    }

    /// `sandstorm scheduler` on loopback with free client and cluster ports, its state in
    /// `data_dir`, and `extra` flags.
    pub fn scheduler(data_dir: &Path, extra: &[&str]) -> Service {
        Service::start(sandstorm_launch::scheduler_args(
            "127.0.0.1:0",
            data_dir,
            extra,
        ))
    }

    /// [`Service::start`] inside the network namespace `netns` (one `ip netns add` made, under
    /// `/run/netns/`; see [`sandstorm_launch::Launch::netns`]). Needs root.
    pub fn start_in_netns<I, S>(netns: &str, args: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_in(Some(netns), args)
    }

    fn start_in<I, S>(netns: Option<&str>, args: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let process = sandstorm_launch::Launch::new(built_sandstorm_bin(), "sandstorm")
            .args(args)
            .env("RUST_LOG", "info")
            .netns(netns)
            .cwd(&workspace_root())
            .on_drop(sandstorm_launch::OnDrop::Kill)
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"));
        Service {
            addr: process.addr,
            process,
        }
    }

    /// Every line the process printed to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout_lines()
    }

    /// Blocks until the process has printed `count` stdout lines containing `needle`, and returns
    /// the last of them. Panics (with its logs) if that has not happened after 60 s: a bound on a
    /// broken run, not a timing assertion.
    pub fn wait_for_stdout(&self, needle: &str, count: usize) -> String {
        self.process
            .wait_for_stdout(needle, count, std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// What followed `prefix` on the first stdout line that starts with it.
    pub fn printed(&self, prefix: &str) -> Option<String> {
        self.process.printed(prefix)
    }

    /// A scheduler's cluster port, from its `cluster port on ADDR` line.
    pub fn cluster_addr(&self) -> String {
        self.printed("cluster port on ").unwrap_or_else(|| {
            panic!(
                "no `cluster port on` line:\n{}",
                self.stdout_lines().join("\n")
            )
        })
    }

    /// A scheduler's data directory, from its `data directory PATH` line.
    pub fn data_dir(&self) -> PathBuf {
        let dir = PathBuf::from(
            self.printed("data directory ")
                .expect("a scheduler prints its data directory"),
        );
        if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        }
    }

    /// Whether a scheduler's client port speaks TLS (its `client port ...` line).
    pub fn client_tls(&self) -> bool {
        self.printed("client port ").as_deref() == Some("speaks TLS")
    }

    /// A scheduler's cluster CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("ca.pem")
    }

    /// `sandstorm agent ARGS` joined to this scheduler (see [`Service::join_args`]), keeping its
    /// credentials under the scheduler's data directory by the `--name` in `args`, so a
    /// restarted agent of that name registers with the certificate it got the first time.
    pub fn start_agent(&self, args: &[&str]) -> Service {
        self.start_agent_in(None, args)
    }

    /// A storage agent `name` on a free loopback port with one core, data in memory, `extra`
    /// flags after those; returned once it has registered.
    pub fn start_storage(&self, name: &str, extra: &[&str]) -> Service {
        let mut args = vec![
            "agent",
            "--role",
            "storage",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--in-memory",
        ];
        args.extend_from_slice(extra);
        let agent = self.start_agent(&args);
        agent.wait_for_stdout("registered with the scheduler", 1);
        agent
    }

    /// A compute agent `name` on a free loopback port with pools of one part each and its
    /// state in `state_dir`, `extra` flags after those; returned once it has registered.
    pub fn start_compute(&self, name: &str, state_dir: &Path, extra: &[&str]) -> Service {
        let state_dir = state_dir.display().to_string();
        let mut args = vec![
            "agent",
            "--role",
            "compute",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--pool-size",
            "1",
            "--state-dir",
            &state_dir,
        ];
        args.extend_from_slice(extra);
        let agent = self.start_agent(&args);
        agent.wait_for_stdout("registered with the scheduler", 1);
        agent
    }

    /// [`Service::start_agent`] in the network namespace `netns` (see [`Service::start_in_netns`]).
    pub fn start_agent_in(&self, netns: Option<&str>, args: &[&str]) -> Service {
        let name = args
            .iter()
            .position(|a| *a == "--name")
            .and_then(|i| args.get(i + 1))
            .expect("an agent started by a test has a --name");
        let identity = self.data_dir().join("test-identities").join(name);
        let all: Vec<String> = args
            .iter()
            .map(|a| (*a).to_owned())
            .chain(self.join_args(&identity))
            .collect();
        Service::start_in(netns, all)
    }

    /// The flags an agent joins this scheduler with: the cluster port, a new join token (from
    /// `sandstorm cluster join-token`, as an operator gets one), the CA, and `identity_dir` to
    /// keep the agent's credentials in.
    pub fn join_args(&self, identity_dir: &Path) -> Vec<String> {
        let data_dir = self.data_dir();
        let admin_token_file = data_dir.join("admin-token");
        let ca_file = self.ca_file();
        let mut args = vec![
            "cluster".to_owned(),
            "join-token".to_owned(),
            "--scheduler".to_owned(),
            self.addr.to_string(),
            "--admin-token-file".to_owned(),
            admin_token_file.display().to_string(),
        ];
        if self.client_tls() {
            args.extend(["--ca".to_owned(), ca_file.display().to_string()]);
        }
        let run = sandstorm(None, args);
        run.success();
        let token = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("join token: "))
            .unwrap_or_else(|| panic!("no join token printed:\n{}", run.stdout))
            .trim()
            .to_owned();
        vec![
            "--scheduler".into(),
            self.cluster_addr(),
            "--join-token".into(),
            token,
            "--ca".into(),
            ca_file.display().to_string(),
            "--identity-dir".into(),
            identity_dir.display().to_string(),
        ]
    }

    /// `http://ADDR` for a gRPC client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the process wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// SIGTERM (a clean shutdown), and wait for the process to be gone.
    pub fn terminate(&mut self) {
        self.process.terminate();
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill_hard();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test: what the process logged explains it.
            eprintln!(
                "--- stderr of `sandstorm` on {}:\n{}",
                self.addr,
                self.stderr()
            );
        }
    }
}
