//! `sandstorm agent`: one node agent process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sandstorm_node_agent::storage::{self, StorageConfig};

/// Run a node agent: a storage node (data + WebAssembly functions next to it) or a compute node.
///
/// The node serves gRPC (`NodeAgent`: deploy, remove, execute, stats stream; `KeyValue` on storage
/// nodes) and prints `listening on ADDR` once it accepts connections. Stop it with Ctrl-C or
/// SIGTERM. Standalone it needs no scheduler: tests and benchmarks drive it directly.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Which role this node plays.
    #[arg(long, value_enum)]
    role: Role,
    /// Address to serve gRPC on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7101")]
    listen: SocketAddr,
    /// Name in statistics and records.
    #[arg(long, default_value = "storage-0")]
    name: String,
    /// Directory that makes acknowledged writes durable (write-ahead log and snapshots).
    /// Default: `sandstorm-data/<name>` under the current directory.
    #[arg(long, conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Keep data only in memory: it is lost when the node stops.
    #[arg(long)]
    in_memory: bool,
    /// Worker cores that run functions (default: every core of the machine).
    #[arg(long)]
    cores: Option<usize>,
    /// Register with the scheduler at ADDR (`host:port`) and keep registering every second.
    #[arg(long)]
    scheduler: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Holds tenants' data and runs their functions next to it in Wasm sandboxes.
    Storage,
    /// Runs functions in containers assembled from pre-created parts.
    Compute,
}

pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    if args.role == Role::Compute {
        bail!(
            "the compute role is not built yet (it arrives with the compute-node work); use --role storage"
        );
    }
    let mut config = StorageConfig {
        name: args.name.clone(),
        listen: args.listen,
        ..StorageConfig::default()
    };
    config.data_dir = if args.in_memory {
        None
    } else {
        Some(
            args.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("sandstorm-data").join(&args.name)),
        )
    };
    if let Some(cores) = args.cores {
        if cores == 0 {
            bail!("--cores must be at least 1");
        }
        config.worker_cores = cores;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let data_dir = config.data_dir.clone();
    let registration = args
        .scheduler
        .clone()
        .map(|scheduler| crate::register::Registration {
            scheduler,
            name: args.name.clone(),
            role: sandstorm_proto::v1::Tier::Storage,
            listen: config.listen,
            cores: u32::try_from(config.worker_cores).unwrap_or(u32::MAX),
        });
    runtime.block_on(storage::run(
        config,
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
