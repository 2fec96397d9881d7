//! Starting `sandstorm` processes on this machine: the one mechanism `sandstorm dev`, the
//! benches and the end-to-end tests start schedulers and agents with.
//!
//! - One readiness rule: a child is ready once it printed `listening on ADDR` (it prints that
//!   only after its socket is bound), and then a line containing each of the phrases asked for
//!   (an agent's `registered with the scheduler`).
//! - Its stdout lines are kept, so a caller can read what it printed (`cluster port on ADDR`,
//!   a login URL) or wait for a later line; its stderr (the logs) goes to a file or is kept in
//!   memory.
//! - Agents join the scheduler the way any node of a real cluster does: a join token, the
//!   cluster CA, an identity directory ([`Joining`]).
//!
//! Runs in the process that starts the cluster (the `sandstorm` command, a test binary); it
//! depends on the proto and identity crates for the admin calls, never on the service crates.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

/// Where a child's stderr (its logs) goes.
#[derive(Debug, Clone)]
enum Logs {
    File(PathBuf),
    Kept,
}

/// What dropping a [`Process`] does to a child still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGTERM (a clean shutdown), then wait.
    Terminate,
    /// SIGKILL, then wait: what a test wants, so a failing one leaves nothing behind.
    Kill,
}

/// How to start one child: `Launch::new(exe, name).args(..)...start()`.
#[derive(Debug, Clone)]
pub struct Launch {
    exe: PathBuf,
    name: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    cwd: Option<PathBuf>,
    logs: Logs,
    ready_after: Vec<String>,
    on_drop: OnDrop,
}

impl Launch {
    /// The binary `exe`, called `name` in messages; its logs kept in memory, stopped with
    /// SIGTERM when dropped.
    pub fn new(exe: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            exe: exe.into(),
            name: name.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            cwd: None,
            logs: Logs::Kept,
            ready_after: Vec::new(),
            on_drop: OnDrop::Terminate,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Run inside the network namespace `/run/netns/NETNS`, entered with `nsenter --net`
    /// (which switches only the network namespace: `ip netns exec` would also remount `/sys`,
    /// hiding the cgroup hierarchies a compute node needs). Needs root.
    pub fn netns(mut self, netns: Option<&str>) -> Self {
        self.netns = netns.map(str::to_owned);
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Its logs go to `path` instead of memory.
    pub fn log_file(mut self, path: PathBuf) -> Self {
        self.logs = Logs::File(path);
        self
    }

    /// Ready only once it also printed a line containing each of `phrases`.
    pub fn ready_after(mut self, phrases: &[&str]) -> Self {
        self.ready_after
            .extend(phrases.iter().map(|p| (*p).to_owned()));
        self
    }

    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// Starts it and waits until it is ready; an error (with the end of its logs) if it exits
    /// first.
    pub fn start(self) -> anyhow::Result<Process> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        command
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let kept = Arc::new(Mutex::new(String::new()));
        match &self.logs {
            Logs::File(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                command.stderr(file);
            }
            Logs::Kept => {
                command.stderr(Stdio::piped());
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {} ({})", self.name, self.exe.display()))?;
        let mut stderr_reader = None;
        if let Some(mut pipe) = child.stderr.take() {
            let sink = kept.clone();
            stderr_reader = Some(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        let stdout = child.stdout.take().context("the child's stdout")?;
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        {
            let sink = lines.clone();
            std::thread::spawn(move || {
                // Read to the end, so the child never blocks on a full pipe.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lock(&sink.0).push(line);
                    sink.1.notify_all();
                }
                // Its stdout closed: whoever waits for a line wakes and finds it gone.
                lock(&sink.0).push(String::from(STDOUT_CLOSED));
                sink.1.notify_all();
            });
        }
        let mut process = Process {
            name: self.name,
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            logs: self.logs,
            kept,
            stderr_reader,
            on_drop: self.on_drop,
        };
        let listening = match process.wait_line(|l| l.starts_with("listening on "), 1, None) {
            Ok(line) => line,
            Err(why) => return Err(process.died(&why)),
        };
        process.addr = listening["listening on ".len()..]
            .trim()
            .parse()
            .with_context(|| format!("the address the {} printed: {listening}", process.name))?;
        for phrase in &self.ready_after {
            if let Err(why) = process.wait_line(|l| l.contains(phrase.as_str()), 1, None) {
                return Err(process.died(&why));
            }
        }
        Ok(process)
    }
}

/// The marker the stdout reader appends when the child's stdout closes (never a real line:
/// it holds a NUL).
const STDOUT_CLOSED: &str = "\0stdout closed";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child `sandstorm` process; stopped as its [`OnDrop`] says when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    /// The address it printed in its `listening on ADDR` line.
    pub addr: SocketAddr,
    /// Every stdout line so far, and a signal for each new one.
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    logs: Logs,
    kept: Arc<Mutex<String>>,
    /// The thread copying a kept stderr into `kept`.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    on_drop: OnDrop,
}

impl Process {
    /// Waits (at most `timeout`, or for as long as it runs) until `count` stdout lines match;
    /// the last of them, or why not.
    fn wait_line(
        &self,
        matches: impl Fn(&str) -> bool,
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<String, String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (lines, signal) = &*self.lines;
        let mut guard = lock(lines);
        loop {
            let matching: Vec<&String> = guard.iter().filter(|l| matches(l)).collect();
            if matching.len() >= count.max(1) {
                return Ok(matching[count.max(1) - 1].clone());
            }
            if guard.last().is_some_and(|l| l == STDOUT_CLOSED) {
                return Err("it exited (its stdout closed)".into());
            }
            guard = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(format!("not printed within {timeout:?}"));
                    }
                    signal
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => signal.wait(guard).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// The error for a child that did not become ready: how it ended and the end of its logs.
    fn died(&mut self, why: &str) -> anyhow::Error {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Its last words may still be in the pipe: give the reader a moment to take them (a
        // grandchild holding the pipe open must not make this wait for ever).
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let logs = self.stderr();
        let tail: Vec<&str> = logs.lines().rev().take(20).collect();
        anyhow::anyhow!(
            "the {} was not ready ({why}; {status:?}); the end of its logs{}:\n{}",
            self.name,
            match &self.logs {
                Logs::File(path) => format!(" in {}", path.display()),
                Logs::Kept => String::new(),
            },
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Blocks until it has printed `count` stdout lines containing `needle` (at most `timeout`);
    /// the last of them, or an error naming what it printed and logged.
    pub fn wait_for_stdout(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.wait_line(|l| l.contains(needle), count, Some(timeout))
            .map_err(|why| {
                anyhow::anyhow!(
                    "the {}: no {count} lines with {needle:?} on stdout ({why}):\n{}\n--- its logs\n{}",
                    self.name,
                    self.stdout_lines().join("\n"),
                    self.stderr()
                )
            })
    }

    /// Every line it printed to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.lines.0)
            .iter()
            .filter(|l| *l != STDOUT_CLOSED)
            .cloned()
            .collect()
    }

    /// What followed `prefix` on the first stdout line that starts with it.
    pub fn printed(&self, prefix: &str) -> Option<String> {
        lock(&self.lines.0)
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|rest| rest.trim().to_owned()))
    }

    /// What it logged so far (read from its log file, if it has one).
    pub fn stderr(&self) -> String {
        match &self.logs {
            Logs::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            Logs::Kept => lock(&self.kept).clone(),
        }
    }

    /// Its `/metrics` URL, as it printed it.
    pub fn metrics(&self) -> String {
        self.printed("metrics on ")
            .unwrap_or_else(|| "(not served)".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGTERM (a clean shutdown), and wait for it to be gone.
    pub fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// Kills it outright (SIGKILL, as a crash or `kill -9` would) and waits for it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Terminate => self.terminate(),
            OnDrop::Kill => self.kill_hard(),
        }
    }
}

/// The arguments of `sandstorm scheduler` with its client port on `listen` and its cluster
/// port on a free loopback port, its state in `data_dir`, followed by `extra`.
pub fn scheduler_args<S: AsRef<str>>(listen: &str, data_dir: &Path, extra: &[S]) -> Vec<String> {
    let mut args: Vec<String> = [
        "scheduler",
        "--listen",
        listen,
        "--cluster-listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|e| e.as_ref().to_owned()));
    args
}

/// The admin token a scheduler keeps in its data directory.
pub fn admin_token(scheduler_dir: &Path) -> anyhow::Result<String> {
    let admin_file = scheduler_dir.join(sandstorm_identity::ADMIN_TOKEN_FILE);
    Ok(std::fs::read_to_string(&admin_file)
        .with_context(|| format!("reading {}", admin_file.display()))?
        .trim()
        .to_owned())
}

/// A request with the bearer token `token`.
pub fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    Ok(request)
}

/// What agents of a local cluster join its scheduler with.
#[derive(Debug, Clone)]
pub struct Joining {
    /// The scheduler's cluster port.
    pub cluster_port: String,
    pub token: String,
    pub ca_file: PathBuf,
    /// Each agent's identity directory is `identities/NAME`.
    pub identities: PathBuf,
}

impl Joining {
    /// A join token from the scheduler `scheduler` (its data in `scheduler_dir`), made through
    /// the admin API on `channel`, valid for `ttl_s`.
    pub async fn new(
        scheduler: &Process,
        scheduler_dir: &Path,
        channel: &Channel,
        identities: PathBuf,
        ttl_s: u32,
    ) -> anyhow::Result<Self> {
        let cluster_port = scheduler
            .printed("cluster port on ")
            .context("the scheduler printed no `cluster port on ADDR` line")?;
        let admin = admin_token(scheduler_dir)?;
        let token = AdminClient::new(channel.clone())
            .create_join_token(authed(pb::CreateJoinTokenRequest { ttl_s }, &admin)?)
            .await
            .context("creating a join token")?
            .into_inner()
            .token;
        Ok(Self {
            cluster_port,
            token,
            ca_file: scheduler_dir.join(sandstorm_identity::CA_FILE),
            identities,
        })
    }

    /// The flags agent `name` joins with.
    pub fn args(&self, name: &str) -> Vec<String> {
        vec![
            "--scheduler".into(),
            self.cluster_port.clone(),
            "--join-token".into(),
            self.token.clone(),
            "--ca".into(),
            self.ca_file.display().to_string(),
            "--identity-dir".into(),
            self.identities.join(name).display().to_string(),
        ]
    }
}

/// A plaintext channel to a scheduler's client port on loopback.
pub async fn connect_loopback(addr: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to the scheduler at {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell standing in for a child: what it prints is the point, not what it is.
    fn sh(script: &str) -> Launch {
        Launch::new("/bin/sh", "test child")
            .args(["-c", script])
            .on_drop(OnDrop::Kill)
    }

    #[test]
    fn a_child_is_ready_once_it_printed_its_address_and_the_phrases() {
        let p = sh(
            "echo 'cluster port on 127.0.0.1:9'; echo 'listening on 127.0.0.1:7'; \
                    echo logged >&2; sleep 0.1; echo 'registered with the scheduler'; sleep 30",
        )
        .ready_after(&["registered"])
        .start()
        .expect("ready");
        assert_eq!(p.addr, "127.0.0.1:7".parse().expect("an address"));
        assert_eq!(
            p.printed("cluster port on ").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(p.stdout_lines().len(), 3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.stderr().contains("logged") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.stderr(), "logged\n");
    }

    #[test]
    fn a_child_that_exits_before_it_is_ready_is_an_error_with_its_logs() {
        let e = sh("echo 'could not bind' >&2; exit 3")
            .start()
            .expect_err("it exited");
        let text = format!("{e:#}");
        assert!(text.contains("was not ready"), "{text}");
        assert!(text.contains("could not bind"), "{text}");
        // Listening, then gone before the phrase it must print.
        let e = sh("echo 'listening on 127.0.0.1:7'")
            .ready_after(&["registered"])
            .start()
            .expect_err("it exited");
        assert!(format!("{e:#}").contains("stdout closed"), "{e:#}");
    }

    #[test]
    fn later_lines_are_waited_for_and_a_missing_one_times_out_with_what_was_printed() {
        let p = sh("echo 'listening on 127.0.0.1:7'; sleep 0.05; echo tick; echo tick; sleep 30")
            .start()
            .expect("ready");
        let line = p
            .wait_for_stdout("tick", 2, Duration::from_secs(10))
            .expect("two ticks");
        assert_eq!(line, "tick");
        let e = p
            .wait_for_stdout("tock", 1, Duration::from_millis(50))
            .expect_err("never printed");
        assert!(format!("{e:#}").contains("tick"), "{e:#}");
    }

    #[test]
    fn logs_can_go_to_a_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("child.log");
        let p = sh("echo to-the-file >&2; echo 'listening on 127.0.0.1:7'; sleep 30")
            .log_file(path.clone())
            .start()
            .expect("ready");
        assert_eq!(
            std::fs::read_to_string(&path).expect("the log"),
            "to-the-file\n"
        );
        assert_eq!(p.stderr(), "to-the-file\n");
    }

    #[test]
    fn the_scheduler_args_put_its_state_and_extra_flags_last() {
        let args = scheduler_args("127.0.0.1:0", Path::new("/d"), &["--policy", "cost-aware"]);
        assert_eq!(
            args,
            [
                "scheduler",
                "--listen",
                "127.0.0.1:0",
                "--cluster-listen",
                "127.0.0.1:0",
                "--data-dir",
                "/d",
                "--policy",
                "cost-aware"
            ]
        );
    }
}
