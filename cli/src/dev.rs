//! `sandstorm dev`: a whole cluster on this machine with one command and no configuration.
//!
//! Starts, as child processes of this binary, a scheduler, a storage node and (when the machine
//! allows containers: root, cgroup controllers, overlayfs, busybox) a compute node, all
//! registered with the scheduler; creates the `demo` tenant, deploys the example functions, loads
//! demo data, prints the addresses and a ready-to-paste invoke command, and keeps a gentle demo
//! load running until interrupted. Everything lives under `--data-dir` (children's logs in
//! `logs/`); a second run reuses it, including the demo tenant's token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::launch::{self, Joining};
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

pub fn run(args: &DevArgs) -> anyhow::Result<()> {
    let root = &args.data_dir;
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let scheduler_dir = root.join("scheduler");
    let identities = root.join("identity");
    let s = |x: &str| x.to_owned();
    let path = |p: &Path| p.display().to_string();
    let ca_file = scheduler_dir.join(sandstorm_identity::CA_FILE);
    if !ca_file.exists() {
        // A new cluster CA is about to be made: certificates from an older one are worthless.
        let _ = std::fs::remove_dir_all(&identities);
    }

    let scheduler = launch::start(
        "scheduler",
        &logs,
        &launch::scheduler_args(
            &args.grpc.to_string(),
            &scheduler_dir,
            &[s("--dashboard"), args.dashboard.to_string()],
        ),
        &[],
        &[],
    )?;
    let grpc = scheduler.addr.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let channel = runtime.block_on(launch::connect_loopback(&grpc))?;
    // Agents join as any node of a real cluster does: with a join token and the CA to trust.
    let joining = runtime.block_on(Joining::new(
        &scheduler,
        &scheduler_dir,
        &channel,
        identities.clone(),
        600,
    ))?;
    let admin = launch::admin_token(&scheduler_dir)?;
    let storage = launch::start(
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
        ]
        .into_iter()
        .chain(joining.args("storage-0"))
        .collect::<Vec<_>>(),
        &[],
        &[],
    )?;
    let compute = if args.no_compute {
        None
    } else if let Err(why) = sandstorm_node_agent::compute::preflight() {
        println!("no compute node: {why}");
        None
    } else {
        Some(launch::start(
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
                format!("storage-0={}", storage.addr),
                s("--state-dir"),
                path(&std::fs::canonicalize(root)?.join("compute-0")),
                s("--pool-size"),
                s("4"),
            ]
            .into_iter()
            .chain(joining.args("compute-0"))
            .collect::<Vec<_>>(),
            &[],
            &[],
        )?)
    };

    runtime.block_on(async {
        let token = demo_tenant(&channel, &admin, root).await?;
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
        println!("metrics: {}", scheduler.metrics());
        // The one-time login URL: opening it logs the browser in (the dashboard is the operator's).
        println!(
            "dashboard: {}",
            scheduler
                .printed("dashboard login URL (once, for 15 minutes): ")
                .unwrap_or_else(|| "(not served)".into())
        );
        println!();
        println!(
            "cluster port {} (mutual TLS; CA {})",
            joining.cluster_port,
            path(&joining.ca_file)
        );
        println!(
            "storage node {} (metrics {}; logs in {})",
            storage.addr,
            storage.metrics(),
            path(&logs)
        );
        match &compute {
            Some(c) => println!("compute node {} (metrics {})", c.addr, c.metrics()),
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
    for process in compute.into_iter().chain([storage, scheduler]) {
        let name = process.name().to_owned();
        drop(process);
        eprintln!("stopped the {name}");
    }
    Ok(())
}

/// The `demo` tenant's token: created on the first run and kept in `DATA_DIR/demo-token`.
async fn demo_tenant(channel: &Channel, admin: &str, root: &Path) -> anyhow::Result<String> {
    let saved = root.join("demo-token");
    if let Ok(token) = std::fs::read_to_string(&saved) {
        return Ok(token.trim().to_owned());
    }
    let created = AdminClient::new(channel.clone())
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "demo".into(),
                ..Default::default()
            },
            admin,
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
