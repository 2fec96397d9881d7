//! Starting `sandstorm` child processes on this machine, as `sandstorm dev` and `sandstorm bench
//! e2e` do: one readiness rule (a child is ready once it printed `listening on ADDR`, which it
//! prints only after its socket is bound), its logs in a file, and agents joining the scheduler
//! the way any node of a real cluster does (a join token, the cluster CA, an identity directory).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::scheduler::authed;

/// A child `sandstorm` process, stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    /// The address it printed in its `listening on ADDR` line.
    pub addr: SocketAddr,
    /// Every line it printed up to and including the last one waited for.
    printed: Vec<String>,
}

impl Process {
    /// Starts `sandstorm ARGS` with its logs in `LOGS/NAME.log` (and `env` added to its
    /// environment), and waits for its `listening on ADDR` line and then for a line containing
    /// each of `then`.
    pub fn start(
        name: &str,
        logs: &Path,
        args: &[String],
        env: &[(&str, String)],
        then: &[&str],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the sandstorm binary")?;
        let log_path = logs.join(format!("{}.log", name.replace(' ', "-")));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let mut addr = None;
        let mut waiting: Vec<&str> = then.to_vec();
        while addr.is_none() || !waiting.is_empty() {
            match lines.next() {
                Some(Ok(line)) => {
                    if addr.is_none()
                        && let Some(a) = line.strip_prefix("listening on ")
                    {
                        addr = Some(a.trim().parse().context("the address it printed")?);
                    }
                    waiting.retain(|w| !line.contains(w));
                    printed.push(line);
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    bail!(
                        "the {name} exited ({status:?}) before it was ready; the end of {}:\n{}",
                        log_path.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        // Keep reading its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Ok(Self {
            name: name.to_owned(),
            child,
            addr: addr.context("no address")?,
            printed,
        })
    }

    /// What followed `prefix` on the first line it printed that starts with it.
    pub fn printed(&self, prefix: &str) -> Option<&str> {
        self.printed
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    }

    /// Its `/metrics` URL, as it printed it.
    pub fn metrics(&self) -> &str {
        self.printed("metrics on ").unwrap_or("(not served)")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills it outright (SIGKILL, as a crash or `kill -9` would) and waits for it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

/// The arguments of `sandstorm scheduler` on loopback with ephemeral ports, its state in
/// `data_dir`, followed by `extra`.
pub fn scheduler_args(listen: &str, data_dir: &Path, extra: &[String]) -> Vec<String> {
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
    args.extend_from_slice(extra);
    args
}

/// The admin token a scheduler keeps in its data directory.
pub fn admin_token(scheduler_dir: &Path) -> anyhow::Result<String> {
    let admin_file = scheduler_dir.join(sandstorm_scheduler::service::ADMIN_TOKEN_FILE);
    Ok(std::fs::read_to_string(&admin_file)
        .with_context(|| format!("reading {}", admin_file.display()))?
        .trim()
        .to_owned())
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
    /// A join token from the scheduler `scheduler` (started with [`scheduler_args`], its data in
    /// `scheduler_dir`), made through the admin API on `channel`, valid for `ttl_s`.
    pub async fn new(
        scheduler: &Process,
        scheduler_dir: &Path,
        channel: &Channel,
        identities: PathBuf,
        ttl_s: u32,
    ) -> anyhow::Result<Self> {
        let cluster_port = scheduler
            .printed("cluster port on ")
            .context("the scheduler printed no `cluster port on ADDR` line")?
            .to_owned();
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
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to the scheduler at {addr}"))
}
