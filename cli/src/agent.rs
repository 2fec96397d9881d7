//! `sandstorm agent`: one node agent process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sandstorm_node_agent::compute::{self, ComputeConfig};
use sandstorm_node_agent::storage::{self, StorageConfig};

/// Run a node agent: a storage node (data + WebAssembly functions next to it) or a compute node.
///
/// The node serves gRPC (`NodeAgent`: deploy, remove, execute, stats stream; `KeyValue` on storage
/// nodes; health) to cluster members only, over mutual TLS with the cluster CA, and prints
/// `listening on ADDR` once it accepts connections. Stop it with Ctrl-C or SIGTERM.
///
/// Its credentials live in its identity directory. The first time, it joins: `--scheduler ADDR
/// --join-token TOKEN --ca CA.pem` (the scheduler's cluster port, a token from `sandstorm cluster
/// join-token`, the scheduler's `DATA_DIR/ca.pem`). Standalone (no `--scheduler`) it needs
/// credentials issued with `sandstorm cluster issue`.
///
/// A compute node needs root, the memory, cpu and pids cgroup controllers, overlayfs and a static
/// busybox (`scripts/setup.sh` installs it); it says which is missing if one is.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Which role this node plays.
    #[arg(long, value_enum)]
    role: Role,
    /// Address to serve gRPC on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7101")]
    listen: SocketAddr,
    /// Name in statistics and records (default `storage-0` or `compute-0`).
    #[arg(long)]
    name: Option<String>,
    /// Directory that makes acknowledged writes durable (write-ahead log and snapshots).
    /// Default: `sandstorm-data/<name>` under the current directory.
    #[arg(long, conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Keep data only in memory: it is lost when the node stops.
    #[arg(long)]
    in_memory: bool,
    /// Storage role: if the write-ahead log has a corrupt record before its end (the node
    /// refuses to start, naming the segment and offset), cut the log there instead, DROPPING
    /// that record and every record after it, acknowledged ones included.
    #[arg(long, conflicts_with = "in_memory")]
    repair_log: bool,
    /// Worker cores that run functions (default: every core of the machine). Storage role.
    #[arg(long)]
    cores: Option<usize>,
    /// Compute role: a storage node functions read their data from, as `NAME=host:port` (its
    /// certificate must name NAME); repeat for several (keys are spread over them by consistent
    /// hashing, in the order given). With `--scheduler` not needed: the scheduler's storage
    /// nodes replace these once it knows any.
    #[arg(long = "storage", value_name = "NAME=ADDR")]
    storage: Vec<String>,
    /// Compute role: parts of each kind kept ready in the pools.
    #[arg(long, default_value_t = 8)]
    pool_size: usize,
    /// Compute role: seconds an idle warm container is kept before it is reclaimed, unless the
    /// scheduler's keep-alive policy (`sandstorm scheduler --keep-alive`) gave its function a window.
    #[arg(long, default_value_t = 600)]
    keep_alive_secs: u64,
    /// Compute role: where the base root file system is built (default /run/sandstorm/NAME).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where Prometheus scrapes `/metrics` (`127.0.0.1:0` picks a free port; printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics: SocketAddr,
    /// Register with the scheduler's cluster port at ADDR (`host:port`) and keep registering
    /// every second.
    #[arg(long)]
    scheduler: Option<String>,
    /// Where the node's certificate, key and the cluster CA are kept (default:
    /// `<data dir>/identity`, the data dir being `--data-dir` or `sandstorm-data/<name>`).
    #[arg(long)]
    identity_dir: Option<PathBuf>,
    /// A join token (from `sandstorm cluster join-token`) to get credentials with, the first
    /// time (default: `SANDSTORM_JOIN_TOKEN`).
    #[arg(long, env = "SANDSTORM_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The cluster CA's certificate (the scheduler's `DATA_DIR/ca.pem`), to trust the scheduler
    /// while joining.
    #[arg(long, value_name = "CA.pem")]
    ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Holds tenants' data and runs their functions next to it in Wasm sandboxes.
    Storage,
    /// Runs functions in containers assembled from pre-created parts.
    Compute,
}

impl AgentArgs {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match self.role {
            Role::Storage => "storage-0".into(),
            Role::Compute => "compute-0".into(),
        })
    }

    fn peer(&self) -> anyhow::Result<sandstorm_identity::Peer> {
        let role = match self.role {
            Role::Storage => sandstorm_identity::Role::Storage,
            Role::Compute => sandstorm_identity::Role::Compute,
        };
        sandstorm_identity::Peer::new(role, &self.name()).context("--name")
    }

    /// The node's credentials, joining the cluster for them the first time.
    fn credentials(
        &self,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<sandstorm_identity::Credentials> {
        let bootstrap = crate::register::Bootstrap {
            dir: self.identity_dir.clone().unwrap_or_else(|| {
                crate::register::default_identity_dir(self.data_dir.as_deref(), &self.name())
            }),
            scheduler: self.scheduler.clone(),
            join_token: self.join_token.clone(),
            ca_file: self.ca.clone(),
        };
        runtime.block_on(crate::register::credentials(&self.peer()?, &bootstrap))
    }
}

/// `NAME=ADDR` pairs of `--storage`.
fn storage_seeds(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| {
            let (name, addr) = a.split_once('=').with_context(|| {
                format!("--storage {a:?}: give the storage node as NAME=host:port (its certificate names NAME)")
            })?;
            sandstorm_identity::check_node_name(name).with_context(|| format!("--storage {a:?}"))?;
            Ok((name.to_owned(), addr.to_owned()))
        })
        .collect()
}

pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    if args.role == Role::Compute {
        return run_compute(args);
    }
    let mut config = StorageConfig {
        name: args.name(),
        listen: args.listen,
        ..StorageConfig::default()
    };
    config.data_dir = if args.in_memory {
        None
    } else {
        Some(
            args.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("sandstorm-data").join(args.name())),
        )
    };
    config.wal.repair = args.repair_log;
    if let Some(cores) = args.cores {
        if cores == 0 {
            bail!("--cores must be at least 1");
        }
        config.worker_cores = cores;
    }
    // The agent's threads are latency-sensitive; its WebAssembly workers lower their own weight
    // (see `sandstorm_node_agent::scheduling`).
    sandstorm_node_agent::scheduling::prefer_latency();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let credentials = args.credentials(&runtime)?;
    let data_dir = config.data_dir.clone();
    let registration = args
        .scheduler
        .clone()
        .map(|scheduler| crate::register::Registration {
            scheduler,
            credentials: credentials.clone(),
            name: args.name(),
            role: sandstorm_proto::v1::Tier::Storage,
            listen: config.listen,
            cores: u32::try_from(config.worker_cores).unwrap_or(u32::MAX),
            keep_alive_ms: 0,
            router: None,
        });
    runtime.block_on(crate::telemetry::serve(args.metrics))?;
    runtime.block_on(storage::run(
        config,
        credentials,
        move |addr| {
            match &data_dir {
                Some(dir) => println!("data directory {}", dir.display()),
                None => println!("no data directory: data is held only in memory"),
            }
            println!("listening on {addr}");
            if let Some(r) = registration {
                crate::register::spawn(crate::register::Registration { listen: addr, ..r });
            }
        },
        shutdown_signal(),
    ))?;
    Ok(())
}

fn run_compute(args: &AgentArgs) -> anyhow::Result<()> {
    compute::preflight().context("the compute role cannot start on this machine")?;
    let exe = std::env::current_exe().context("finding the sandstorm binary")?;
    let mut config = ComputeConfig::new(&args.name(), exe);
    config.storage = storage_seeds(&args.storage)?;
    config.pool_size = args.pool_size;
    config.keep_alive = std::time::Duration::from_secs(args.keep_alive_secs);
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    if config.storage.is_empty() && args.scheduler.is_none() {
        eprintln!(
            "warning: no --storage node given: WebAssembly functions' data calls will fail with UNAVAILABLE"
        );
    }
    // Every thread of the agent (the runtime's, started below, inherit it) is scheduled as
    // latency-sensitive, as its containers' processes are.
    sandstorm_node_agent::scheduling::prefer_latency();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let credentials = args.credentials(&runtime)?;
    config
        .router
        .set_credentials(credentials.clone())
        .map_err(anyhow::Error::msg)?;
    let registration = args
        .scheduler
        .clone()
        .map(|scheduler| crate::register::Registration {
            scheduler,
            credentials: credentials.clone(),
            name: args.name(),
            role: sandstorm_proto::v1::Tier::Compute,
            listen: args.listen,
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            keep_alive_ms: u64::try_from(config.keep_alive.as_millis()).unwrap_or(u64::MAX),
            router: Some(config.router.clone()),
        });
    runtime.block_on(crate::telemetry::serve(args.metrics))?;
    runtime.block_on(compute::service::run(
        config,
        args.listen,
        credentials,
        |addr| {
            println!("listening on {addr}");
            if let Some(r) = registration {
                crate::register::spawn(crate::register::Registration { listen: addr, ..r });
            }
        },
        shutdown_signal(),
    ))?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
