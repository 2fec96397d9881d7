//! `sandstorm dev`: a whole cluster on this machine with one command and no configuration.
//!
//! Starts, as child processes of this binary, a scheduler, a storage node and (when the machine
//! allows containers: root, cgroup controllers, overlayfs, busybox) a compute node, all
//! registered with the scheduler; creates the `demo` tenant, deploys the example functions, loads
//! demo data, prints the addresses and a ready-to-paste invoke command, and keeps a gentle demo
//! load running until interrupted. Everything lives under `--data-dir` (children's logs in
//! `logs/`); a second run reuses it, including the demo tenant's token.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::scheduler::authed;

/// Run a scheduler, a storage node and a compute node on this machine, with the example
/// functions deployed, demo data loaded and a demo load running; Ctrl-C stops everything.
///
/// Prints the addresses, each on a line of its own (`grpc:`, `metrics:`, `dashboard:`), and an
/// invoke command to paste.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the cluster keeps its state and logs.
    #[arg(long, default_value = "sandstorm-dev")]
    data_dir: PathBuf,
    /// The scheduler's gRPC address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    grpc: SocketAddr,
    /// Invocations per second of the demo load (0: none).
    #[arg(long, default_value_t = 20)]
    demo_rate: u32,
    /// Do not start a compute node even if the machine allows one.
    #[arg(long)]
    no_compute: bool,
    /// The operator dashboard's address (HTTP).
    #[arg(long, default_value = "127.0.0.1:0")]
    dashboard: SocketAddr,
}

/// The example functions `sandstorm dev` deploys.
const EXAMPLES: [&str; 5] = ["echo", "kv-sum", "graph-walk", "hash-chain", "counter"];

/// A child `sandstorm` process, terminated (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
struct Process {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// Its `/metrics` URL, as it printed it.
    metrics: Option<String>,
    /// Its dashboard's URL, as it printed it (the scheduler only).
    dashboard: Option<String>,
}

impl Process {
    /// Starts `sandstorm ARGS` with its logs in `logs/NAME.log` and waits for its
    /// `listening on ADDR` line.
    fn start(name: &'static str, logs: &Path, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the sandstorm binary")?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        let mut dashboard = None;
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("metrics on ") {
                        metrics = Some(url.trim().to_owned());
                    }
                    if let Some(url) = line.strip_prefix("dashboard on ") {
                        dashboard = Some(url.trim().to_owned());
                    }
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse().context("the address it printed")?;
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    bail!(
                        "the {name} exited ({status:?}) before it was listening; the end of {}:\n{}",
                        log_path.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        };
        // Keep reading its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            name,
            child,
            addr,
            metrics,
            dashboard,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
        eprintln!("stopped the {}", self.name);
    }
}

pub fn run(args: &DevArgs) -> anyhow::Result<()> {
    let root = &args.data_dir;
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let scheduler_dir = root.join("scheduler");
    let s = |x: &str| x.to_owned();
    let path = |p: &Path| p.display().to_string();

    let scheduler = Process::start(
        "scheduler",
        &logs,
        &[
            s("scheduler"),
            s("--listen"),
            args.grpc.to_string(),
            s("--data-dir"),
            path(&scheduler_dir),
            s("--dashboard"),
            args.dashboard.to_string(),
        ],
    )?;
    let grpc = scheduler.addr.to_string();
    let storage = Process::start(
        "storage node",
        &logs,
        &[
            s("agent"),
            s("--role"),
            s("storage"),
            s("--name"),
            s("storage-0"),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--data-dir"),
            path(&root.join("storage-0")),
            s("--scheduler"),
            grpc.clone(),
        ],
    )?;
    let compute = if args.no_compute {
        None
    } else if let Err(why) = sandstorm_node_agent::compute::preflight() {
        println!("no compute node: {why}");
        None
    } else {
        Some(Process::start(
            "compute node",
            &logs,
            &[
                s("agent"),
                s("--role"),
                s("compute"),
                s("--name"),
                s("compute-0"),
                s("--listen"),
                s("127.0.0.1:0"),
                s("--storage"),
                storage.addr.to_string(),
                s("--state-dir"),
                path(&std::fs::canonicalize(root)?.join("compute-0")),
                s("--pool-size"),
                s("4"),
                s("--scheduler"),
                grpc.clone(),
            ],
        )?)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let channel = connect(&grpc).await?;
        let token = demo_tenant(&channel, &scheduler_dir, root).await?;
        let nodes = 1 + usize::from(compute.is_some());
        wait_for_nodes(&channel, &token, nodes).await?;
        let mut client = SchedulerClient::new(channel.clone());
        for name in EXAMPLES {
            let module = sandstorm_guest_examples::module(name)
                .with_context(|| format!("the {name} example"))?
                .to_vec();
            let request = pb::DeployFunctionRequest {
                name: name.to_owned(),
                module,
                limits: None,
                ..Default::default()
            };
            client
                .deploy_function(authed(request, &token)?)
                .await
                .with_context(|| format!("deploying {name}"))?;
        }
        for (key, value) in demo_data() {
            let request = pb::PutDataRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
            };
            client
                .put_data(authed(request, &token)?)
                .await
                .context("loading the demo data")?;
        }

        println!();
        println!("grpc: {grpc}");
        println!(
            "metrics: {}",
            scheduler.metrics.as_deref().unwrap_or("(not served)")
        );
        println!(
            "dashboard: {}",
            scheduler.dashboard.as_deref().unwrap_or("(not served)")
        );
        println!();
        let metrics = |p: &Process| p.metrics.clone().unwrap_or_default();
        println!(
            "storage node {} (metrics {}; logs in {})",
            storage.addr,
            metrics(&storage),
            path(&logs)
        );
        match &compute {
            Some(c) => println!("compute node {} (metrics {})", c.addr, metrics(c)),
            None => println!("compute node: none"),
        }
        println!(
            "deployed {} for tenant `demo`; demo data loaded; demo load {} invocations/s",
            EXAMPLES.join(", "),
            args.demo_rate
        );
        println!();
        println!("try:");
        println!(
            "  SANDSTORM_SCHEDULER={grpc} SANDSTORM_TOKEN={token} {} invoke kv-sum \"a b c\" --record",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "sandstorm".into())
        );
        println!("Ctrl-C stops the cluster.");

        let load = tokio::spawn(demo_load(client, token, args.demo_rate));
        crate::agent::shutdown_signal().await;
        load.abort();
        anyhow::Ok(())
    })?;
    // Agents first, then the scheduler.
    drop(compute);
    drop(storage);
    drop(scheduler);
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to the scheduler at {addr}"))
}

/// The `demo` tenant's token: created on the first run and kept in `DATA_DIR/demo-token`.
async fn demo_tenant(
    channel: &Channel,
    scheduler_dir: &Path,
    root: &Path,
) -> anyhow::Result<String> {
    let saved = root.join("demo-token");
    if let Ok(token) = std::fs::read_to_string(&saved) {
        return Ok(token.trim().to_owned());
    }
    let admin_file = scheduler_dir.join(sandstorm_scheduler::service::ADMIN_TOKEN_FILE);
    let admin = std::fs::read_to_string(&admin_file)
        .with_context(|| format!("reading {}", admin_file.display()))?;
    let created = AdminClient::new(channel.clone())
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "demo".into(),
                ..Default::default()
            },
            admin.trim(),
        )?)
        .await
        .context("creating the demo tenant")?
        .into_inner();
    std::fs::write(&saved, &created.token)
        .with_context(|| format!("saving the demo token in {}", saved.display()))?;
    Ok(created.token)
}

/// Waits until `n` nodes are registered and alive.
async fn wait_for_nodes(channel: &Channel, token: &str, n: usize) -> anyhow::Result<()> {
    let mut client = SchedulerClient::new(channel.clone());
    for _ in 0..100 {
        let status = client
            .cluster_status(authed(pb::ClusterStatusRequest {}, token)?)
            .await?
            .into_inner();
        if status.nodes.iter().filter(|n| n.alive).count() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the agents did not register with the scheduler within 10 s")
}

/// Numbers for `kv-sum`, a small social graph for `graph-walk`, a seed for `hash-chain`.
fn demo_data() -> Vec<(String, String)> {
    let mut data = vec![
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "2".to_owned()),
        ("c".to_owned(), "39".to_owned()),
        ("seed".to_owned(), "sandstorm".to_owned()),
    ];
    for i in 0..100u32 {
        data.push((format!("n{i}"), i.to_string()));
        // Each person knows three others.
        let friends: Vec<String> = [1, 7, 31]
            .iter()
            .map(|d| ((i + d) % 100).to_string())
            .collect();
        data.push((format!("node:{i}"), friends.join(",")));
    }
    data
}

/// A mix of the examples at `rate` invocations per second, until aborted.
async fn demo_load(mut client: SchedulerClient<Channel>, token: String, rate: u32) {
    if rate == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for i in 0u64.. {
        tick.tick().await;
        // Each invocation names the keys it will read, as a client that knows its data does:
        // the scheduler places by where they live.
        let (function, input, keys) = match i % 5 {
            0 => {
                let keys = [i % 100, (i * 7) % 100, (i * 13) % 100].map(|n| format!("n{n}"));
                ("kv-sum", keys.join(" "), keys.to_vec())
            }
            1 => (
                "graph-walk",
                format!("{} 8", i % 100),
                vec![format!("node:{}", i % 100)],
            ),
            2 => (
                "hash-chain",
                format!("seed {}", 1000 + (i % 10) * 5000),
                vec!["seed".to_owned()],
            ),
            3 => ("counter", "visits".to_owned(), vec!["visits".to_owned()]),
            _ => ("echo", format!("hello {i}"), Vec::new()),
        };
        let Ok(request) = authed(
            pb::InvokeRequest {
                function: function.to_owned(),
                input: input.into_bytes(),
                keys: keys.into_iter().map(String::into_bytes).collect(),
                retryable: true,
                ..Default::default()
            },
            &token,
        ) else {
            return;
        };
        // Failures are the cluster's to report (records, logs); the load goes on.
        let _ = client.invoke(request).await;
    }
}
