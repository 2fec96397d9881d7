//! `sandstorm scheduler` (run the scheduler) and the client commands that talk to any scheduler:
//! `sandstorm tenant create` and `update`, `sandstorm deploy`, `sandstorm invoke`, `sandstorm put`,
//! `sandstorm status`.
//!
//! Clients find the scheduler with `--scheduler ADDR` (or `SANDSTORM_SCHEDULER`, default
//! `127.0.0.1:7100`) and authenticate with `--token` (or `SANDSTORM_TOKEN`; `tenant` commands also
//! read `--admin-token-file`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use sandstorm_scheduler::service::{self, SchedulerConfig};
use tonic::transport::Channel;

/// The scheduler and the commands that talk to it.
#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    Scheduler(ServeArgs),
    /// Manage tenants (with the admin token).
    #[command(subcommand)]
    Tenant(TenantCommand),
    Deploy(DeployArgs),
    Invoke(InvokeArgs),
    Put(PutArgs),
    Status(StatusArgs),
    /// Cluster membership: join tokens for agents, credentials issued offline.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a join token (admin): an agent presents it once, with the cluster CA, to get its
    /// node certificate. Prints the token and the agent flags to use it with.
    JoinToken {
        /// How long the token can be used, seconds (default 24 hours; at most 30 days).
        #[arg(long, default_value_t = 0)]
        ttl_s: u32,
        #[command(flatten)]
        connection: Connection,
        /// Read the admin token from this file (the scheduler's `DATA_DIR/admin-token`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
    },
    /// Drain a storage node (admin): its key ranges are copied to the other storage nodes on
    /// the key ring, then it leaves the ring. Returns once the drain is recorded; `sandstorm
    /// status` shows `draining`, then `drained`.
    Drain {
        /// The storage node's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
        /// Read the admin token from this file (the scheduler's `DATA_DIR/admin-token`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
    },
    /// Issue credentials offline with the CA in a scheduler's data directory (whoever can read
    /// its `ca-key.pem`): for an agent run without a scheduler, or an operator's tool that calls
    /// agents directly (role `scheduler`). Writes `ca.pem`, `node.pem` and `node-key.pem`.
    Issue {
        /// The scheduler's data directory (holding `ca.pem` and `ca-key.pem`).
        #[arg(long)]
        data_dir: PathBuf,
        /// storage, compute or scheduler.
        #[arg(long)]
        role: String,
        /// The node name the certificate is bound to.
        #[arg(long)]
        name: String,
        /// The identity directory to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Run the scheduler: the client port (the client and admin APIs with bearer tokens, health
/// checking, server reflection) and the cluster port (agents join and register, mutual TLS with
/// the cluster CA).
///
/// On first start it creates the cluster CA (`DATA_DIR/ca.pem`) and the admin token in the data
/// directory and prints the token. Prints `cluster port on ADDR`, then `listening on ADDR` (the
/// client port) once both accept connections.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the client port (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Address of the cluster port agents join and register through.
    #[arg(long, default_value = "127.0.0.1:7102")]
    cluster_listen: SocketAddr,
    /// TLS on the client port: `auto` (whenever it does not listen on loopback) or `on`.
    #[arg(long, value_enum, default_value_t = ClientTlsArg::Auto)]
    client_tls: ClientTlsArg,
    /// A DNS name or IP address clients reach this scheduler by, for its certificate (loopback,
    /// the host name and the listen addresses are always in it); repeatable.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// Where tenants, tokens, functions and nodes are kept.
    #[arg(long, default_value = "sandstorm-data/scheduler")]
    data_dir: PathBuf,
    /// Declare a node dead after this many milliseconds without statistics.
    #[arg(long, default_value_t = 2000)]
    node_timeout_ms: u64,
    /// Placement policy (cost-aware, always-storage, always-compute, least-loaded, random,
    /// hash-home, data-affinity, first-fit).
    #[arg(long, default_value = "cost-aware")]
    policy: String,
    /// Where Prometheus scrapes `/metrics` (`127.0.0.1:0` picks a free port; printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics: SocketAddr,
    /// Re-provision (dedicated storage cores, warm containers, pool sizes) every this many
    /// milliseconds from the recent profiles; 0 turns it off.
    #[arg(long, default_value_t = 5000)]
    reprovision_ms: u64,
    /// Serve the operator dashboard (HTTP) here (`127.0.0.1:0` picks a free port; printed as
    /// `dashboard on http://ADDR/`).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<SocketAddr>,
    /// A `sandstorm sim --json` report, or a directory whose newest `.json` is one, for the
    /// dashboard to draw beside the live figures.
    #[arg(long, value_name = "FILE|DIR", requires = "dashboard")]
    sim_report: Option<PathBuf>,
    /// Keep-alive policy for the compute nodes' warm containers, run by the scheduler over the
    /// live profiles (the simulator's: fixed:DURATION, fixed-lifetime:DURATION, hybrid,
    /// hybrid:RANGE, greedy-dual). Default: each compute node's own fixed window
    /// (`sandstorm agent --keep-alive-secs`).
    #[arg(long, value_name = "POLICY")]
    keep_alive: Option<String>,
}

/// TLS on the scheduler's client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientTlsArg {
    Auto,
    On,
}

/// Where a client finds the scheduler and who it is.
#[derive(Debug, Args)]
pub struct Connection {
    /// The scheduler's client port (default: `SANDSTORM_SCHEDULER`, or 127.0.0.1:7100);
    /// `https://HOST:PORT` for TLS.
    #[arg(long)]
    scheduler: Option<String>,
    /// Bearer token (default: `SANDSTORM_TOKEN`).
    #[arg(long)]
    token: Option<String>,
    /// The cluster CA's certificate (the scheduler's `DATA_DIR/ca.pem`): talk TLS to the
    /// scheduler and trust only that CA (default: `SANDSTORM_CA`). Needed off loopback.
    #[arg(long, value_name = "CA.pem")]
    ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (admin); prints its token.
    Create {
        name: String,
        #[command(flatten)]
        connection: Connection,
        /// Read the admin token from this file (the scheduler's `DATA_DIR/admin-token`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Change a tenant's quotas (admin); prints the quotas in force.
    Update {
        name: String,
        #[command(flatten)]
        connection: Connection,
        /// Read the admin token from this file (the scheduler's `DATA_DIR/admin-token`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
}

/// A tenant's quotas; a flag left out keeps the current value (at creation: the default).
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Bytes (keys + values) the tenant may hold over the cluster (default 1 GiB).
    #[arg(long)]
    max_stored_bytes: Option<u64>,
    /// Keys the tenant may hold over the cluster (default 1,000,000).
    #[arg(long)]
    max_keys: Option<u64>,
    /// Data calls one invocation may make (default 10,000).
    #[arg(long)]
    max_data_calls: Option<u64>,
    /// Bytes one invocation's data calls may move (default 64 MiB).
    #[arg(long)]
    max_data_bytes: Option<u64>,
    /// Invocations of the tenant in flight at once (default 128).
    #[arg(long)]
    max_concurrent: Option<u32>,
}

impl QuotaArgs {
    fn to_pb(&self) -> pb::TenantQuotas {
        pb::TenantQuotas {
            max_stored_bytes: self.max_stored_bytes.unwrap_or(0),
            max_keys: self.max_keys.unwrap_or(0),
            max_data_calls: self.max_data_calls.unwrap_or(0),
            max_data_bytes: self.max_data_bytes.unwrap_or(0),
            max_concurrent: self.max_concurrent.unwrap_or(0),
        }
    }
}

fn print_quotas(q: &pb::TenantQuotas) {
    println!(
        "max_stored_bytes {} max_keys {} max_data_calls {} max_data_bytes {} max_concurrent {}",
        q.max_stored_bytes, q.max_keys, q.max_data_calls, q.max_data_bytes, q.max_concurrent
    );
}

/// Deploy a function: a `.wasm` file, one of the bundled examples, or a native command.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The function's name.
    name: String,
    /// The module to deploy.
    #[arg(long, conflicts_with_all = ["example", "command"])]
    wasm: Option<PathBuf>,
    /// A bundled example (echo, kv-sum, graph-walk, hash-chain, counter).
    #[arg(long, conflicts_with = "command")]
    example: Option<String>,
    /// A native program of the compute nodes' base root file system and its arguments, last
    /// on the line (`--command /bin/sh -c 'tr a-z A-Z'`). Each invocation's input is its stdin
    /// and its stdout the output; it runs in a container on compute nodes only.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROG ARGS")]
    command: Vec<String>,
    /// Deadline of one invocation, ms (default 1000).
    #[arg(long, default_value_t = 0)]
    deadline_ms: u32,
    /// Memory of one instance, MiB (default 16).
    #[arg(long, default_value_t = 0)]
    memory_mb: u32,
    #[command(flatten)]
    connection: Connection,
}

/// Invoke a function (or, with several `--then`, a chain) and print its output.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    function: String,
    /// The input (default empty).
    #[arg(default_value = "")]
    input: String,
    /// Functions to run after it, each on the previous one's output.
    #[arg(long = "then")]
    then: Vec<String>,
    /// A key the function will touch (placement hint); repeatable.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Safe to run again on another node if its node fails.
    #[arg(long)]
    retryable: bool,
    /// Run it only on nodes of this tier (default: wherever the policy places it).
    #[arg(long, value_enum)]
    tier: Option<TierArg>,
    /// Also print the invocation record (where it ran, times, every candidate's cost).
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    connection: Connection,
}

/// A tier an invocation can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    /// Inside a storage node, next to the data.
    Storage,
    /// On a compute node, in a container.
    Compute,
}

/// Store a value under a key of the calling tenant.
#[derive(Debug, Args)]
pub struct PutArgs {
    key: String,
    value: String,
    #[command(flatten)]
    connection: Connection,
}

/// Show the cluster as the scheduler sees it.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
}

pub fn run(command: SchedulerCommand) -> anyhow::Result<()> {
    if matches!(command, SchedulerCommand::Scheduler(_)) {
        // Every invocation passes through the scheduler's threads twice: like the agents'
        // (see `sandstorm_node_agent::scheduling`), they get the kernel's short slice, so
        // they are not held behind a busy core's running task.
        sandstorm_node_agent::scheduling::prefer_latency();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            SchedulerCommand::Scheduler(args) => serve(args).await,
            SchedulerCommand::Tenant(TenantCommand::Create {
                name,
                connection,
                admin_token_file,
                quotas,
            }) => {
                let token = admin_token(&connection, admin_token_file.as_deref())?;
                let channel = channel(&connection).await?;
                let mut admin = AdminClient::new(channel);
                let r = admin
                    .create_tenant(authed(
                        pb::CreateTenantRequest {
                            name,
                            quotas: Some(quotas.to_pb()),
                        },
                        &token,
                    )?)
                    .await?
                    .into_inner();
                println!("tenant {} created; token: {}", r.tenant_id, r.token);
                Ok(())
            }
            SchedulerCommand::Tenant(TenantCommand::Update {
                name,
                connection,
                admin_token_file,
                quotas,
            }) => {
                let token = admin_token(&connection, admin_token_file.as_deref())?;
                let mut admin = AdminClient::new(channel(&connection).await?);
                let r = admin
                    .update_tenant(authed(
                        pb::UpdateTenantRequest {
                            name,
                            quotas: Some(quotas.to_pb()),
                        },
                        &token,
                    )?)
                    .await?
                    .into_inner();
                print_quotas(&r.quotas.unwrap_or_default());
                Ok(())
            }
            SchedulerCommand::Deploy(args) => deploy(args).await,
            SchedulerCommand::Invoke(args) => invoke(args).await,
            SchedulerCommand::Put(args) => {
                let (mut client, token) = client(&args.connection).await?;
                let r = client
                    .put_data(authed(
                        pb::PutDataRequest {
                            key: args.key.into_bytes(),
                            value: args.value.into_bytes(),
                        },
                        &token,
                    )?)
                    .await?
                    .into_inner();
                println!("stored on {}", r.node);
                Ok(())
            }
            SchedulerCommand::Status(args) => status(args).await,
            SchedulerCommand::Cluster(command) => cluster(command).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let policy = args.policy.parse()?;
    let keep_alive = args
        .keep_alive
        .as_deref()
        .map(sandstorm_scheduler::keepalive::KeepAliveSpec::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--keep-alive: {e}"))?;
    crate::telemetry::serve(args.metrics).await?;
    let config = SchedulerConfig {
        listen: args.listen,
        cluster_listen: args.cluster_listen,
        client_tls: match args.client_tls {
            ClientTlsArg::Auto => service::ClientTls::Auto,
            ClientTlsArg::On => service::ClientTls::On,
        },
        tls_names: args.tls_names.clone(),
        data_dir: args.data_dir.clone(),
        node_timeout: Duration::from_millis(args.node_timeout_ms.max(1)),
        policy,
        reprovision_interval: Duration::from_millis(args.reprovision_ms),
        dashboard: args.dashboard,
        sim_report: args.sim_report.clone(),
        keep_alive,
        ..SchedulerConfig::default()
    };
    service::run(
        config,
        |ready| {
            println!("data directory {}", args.data_dir.display());
            match &ready.new_admin_token {
                Some(token) => {
                    println!("admin token: {token}");
                    println!("(saved in {})", ready.admin_token_file.display());
                }
                None => println!("admin token in {}", ready.admin_token_file.display()),
            }
            if let Some(addr) = ready.dashboard {
                println!("dashboard on http://{addr}/");
            }
            if let Some(url) = &ready.dashboard_login {
                println!("dashboard login URL (once, for 15 minutes): {url}");
            }
            println!("cluster CA {}", ready.ca_file.display());
            println!("cluster port on {}", ready.cluster_addr);
            println!(
                "client port {}",
                if ready.client_tls {
                    "speaks TLS"
                } else {
                    "is plaintext (loopback)"
                }
            );
            println!("listening on {}", ready.addr);
        },
        crate::agent::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// The admin token: `--token`, else the file, else `SANDSTORM_TOKEN`.
fn admin_token(connection: &Connection, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match (&connection.token, file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(file)) => Ok(std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim()
            .to_owned()),
        (None, None) => token(connection),
    }
}

async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::JoinToken {
            ttl_s,
            connection,
            admin_token_file,
        } => {
            let token = admin_token(&connection, admin_token_file.as_deref())?;
            let mut admin = AdminClient::new(channel(&connection).await?);
            let r = admin
                .create_join_token(authed(pb::CreateJoinTokenRequest { ttl_s }, &token)?)
                .await?
                .into_inner();
            println!("join token: {}", r.token);
            println!("expires at {} (Unix seconds)", r.expires_unix_s);
            println!(
                "on each agent host: sandstorm agent --role ROLE --name NAME --scheduler \
                 SCHEDULER-HOST:CLUSTER-PORT --join-token {} --ca ca.pem (copied from the \
                 scheduler's data directory)",
                r.token
            );
            Ok(())
        }
        ClusterCommand::Drain {
            name,
            connection,
            admin_token_file,
        } => {
            let token = admin_token(&connection, admin_token_file.as_deref())?;
            let mut admin = AdminClient::new(channel(&connection).await?);
            admin
                .drain_node(authed(pb::DrainNodeRequest { name: name.clone() }, &token)?)
                .await?;
            println!("drain of {name} recorded: its key ranges move to the other storage nodes");
            Ok(())
        }
        ClusterCommand::Issue {
            data_dir,
            role,
            name,
            out,
        } => {
            let ca = sandstorm_identity::ClusterCa::load(&data_dir)?;
            let peer = sandstorm_identity::Peer::new(role.parse()?, &name)?;
            let creds = ca.issue_with_key(&peer, &[])?;
            creds.save(&out)?;
            println!("credentials of the {peer} written to {}", out.display());
            Ok(())
        }
    }
}

fn token(connection: &Connection) -> anyhow::Result<String> {
    match &connection.token {
        Some(t) => Ok(t.clone()),
        None => std::env::var("SANDSTORM_TOKEN")
            .map_err(|_| anyhow::anyhow!("no token: pass --token or set SANDSTORM_TOKEN")),
    }
}

pub(crate) async fn channel(connection: &Connection) -> anyhow::Result<Channel> {
    let addr = connection
        .scheduler
        .clone()
        .or_else(|| std::env::var("SANDSTORM_SCHEDULER").ok())
        .unwrap_or_else(|| "127.0.0.1:7100".to_owned());
    let ca = connection
        .ca
        .clone()
        .or_else(|| std::env::var_os("SANDSTORM_CA").map(PathBuf::from));
    let endpoint = client_endpoint(&addr, ca.as_deref())?;
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .with_context(|| format!("connecting to the scheduler at {addr}"))
}

/// The endpoint of a scheduler's client port at `addr`: TLS trusting only the CA in `ca` when
/// one is given or the address says `https://`; plaintext only to loopback.
pub(crate) fn client_endpoint(
    addr: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let (tls, host) = match (addr.strip_prefix("https://"), addr.strip_prefix("http://")) {
        (Some(host), _) => (true, host),
        (None, Some(host)) => (ca.is_some(), host),
        (None, None) => (ca.is_some(), addr),
    };
    let scheme = if tls { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{host}"))
        .with_context(|| format!("the scheduler address {addr:?}"))?;
    if !tls {
        let loopback = host
            .parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| host.starts_with("localhost:"));
        if !loopback {
            bail!(
                "{addr} is not a loopback address: the scheduler's client port speaks TLS there; \
                 pass --ca (or set SANDSTORM_CA) to the cluster CA, the scheduler's DATA_DIR/ca.pem"
            );
        }
        return Ok(endpoint);
    }
    let Some(ca) = ca else {
        bail!("{addr}: TLS needs the cluster CA to trust: pass --ca or set SANDSTORM_CA");
    };
    let pem = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(endpoint.tls_config(sandstorm_identity::anonymous_client_tls(&pem, None))?)
}

async fn client(connection: &Connection) -> anyhow::Result<(SchedulerClient<Channel>, String)> {
    let token = token(connection)?;
    let max = 64 << 20;
    let client = SchedulerClient::new(channel(connection).await?)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    Ok((client, token))
}

pub(crate) use sandstorm_launch::authed;

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let module = match (&args.wasm, &args.example) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(name)) => sandstorm_guest_examples::module(name)
            .with_context(|| format!("no bundled example {name:?}"))?
            .to_vec(),
        (None, None) if !args.command.is_empty() => Vec::new(),
        (None, None) => bail!("pass --wasm FILE, --example NAME or --command PROG ARGS..."),
    };
    let (mut client, token) = client(&args.connection).await?;
    let request = pb::DeployFunctionRequest {
        name: args.name.clone(),
        module,
        command: args.command.clone(),
        limits: Some(pb::Limits {
            deadline_ms: args.deadline_ms,
            memory_mb: args.memory_mb,
            max_payload_bytes: 0,
        }),
    };
    let r = client
        .deploy_function(authed(request, &token)?)
        .await?
        .into_inner();
    println!(
        "{} {} on {} node(s){}",
        if r.replaced { "replaced" } else { "deployed" },
        args.name,
        r.deployed_on.len(),
        if r.deployed_on.is_empty() {
            String::new()
        } else {
            format!(": {}", r.deployed_on.join(", "))
        }
    );
    Ok(())
}

async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let (mut client, token) = client(&args.connection).await?;
    let keys: Vec<Vec<u8>> = args.keys.iter().map(|k| k.clone().into_bytes()).collect();
    let (output, records) = if args.then.is_empty() {
        let request = pb::InvokeRequest {
            function: args.function.clone(),
            input: args.input.into_bytes(),
            keys,
            retryable: args.retryable,
            tier: match args.tier {
                Some(TierArg::Storage) => pb::Tier::Storage,
                Some(TierArg::Compute) => pb::Tier::Compute,
                None => pb::Tier::Unspecified,
            }
            .into(),
        };
        let r = client.invoke(authed(request, &token)?).await?.into_inner();
        (r.output, r.record.into_iter().collect::<Vec<_>>())
    } else {
        let steps = std::iter::once(args.function.clone())
            .chain(args.then.iter().cloned())
            .collect();
        let request = pb::InvokeChainRequest {
            steps,
            input: args.input.into_bytes(),
            keys,
            retryable: args.retryable,
            global_only: false,
        };
        let r = client
            .invoke_chain(authed(request, &token)?)
            .await?
            .into_inner();
        (r.output, r.records)
    };
    println!("{}", String::from_utf8_lossy(&output));
    if args.record {
        for r in &records {
            print_record(r);
        }
    }
    Ok(())
}

fn print_record(r: &pb::InvocationRecord) {
    let tier = pb::Tier::try_from(r.tier).map_or("?", |t| t.as_str_name());
    let start = pb::StartKind::try_from(r.start).map_or("?", |s| s.as_str_name());
    println!(
        "inv-{} {} on {} ({tier}, {start}): queue {} us, start {} us, exec {} us, durable {} us, \
         schedule {} us, total {} us; {} data calls, {} keys, {} B read, {} B written, {} B moved",
        r.invocation_id,
        r.function,
        r.node,
        r.queue_us,
        r.start_us,
        r.exec_us,
        r.durable_us,
        r.schedule_us,
        r.total_us,
        r.data_calls,
        r.keys_read,
        r.bytes_read,
        r.bytes_written,
        r.bytes_moved
    );
    if let Some(hop) = &r.hop {
        let path = pb::chain_hop::Path::try_from(hop.path).map_or("?", |p| p.as_str_name());
        println!(
            "  hop {}: {} -> {} via {path} ({} B)",
            hop.step, hop.from_node, hop.to_node, hop.bytes
        );
    }
    for c in &r.candidates {
        let objective = c.cost.map_or(0.0, |c| c.objective);
        let verdict =
            pb::candidate_cost::Verdict::try_from(c.verdict).map_or("?", |v| v.as_str_name());
        println!(
            "  {} {verdict} objective {objective:.2} score {:.2} {}",
            c.node, c.score, c.reason
        );
    }
    for a in &r.failed_attempts {
        println!("  failed on {}: {}", a.node, a.error);
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (mut client, token) = client(&args.connection).await?;
    let s = client
        .cluster_status(authed(pb::ClusterStatusRequest {}, &token)?)
        .await?
        .into_inner();
    println!(
        "policy {}; {} tenants, {} functions",
        s.policy, s.tenants, s.functions
    );
    // load: the scheduler's view (the node's report plus placements it does not show yet);
    // running: the node's own report. Likewise memory (view/report) for compute nodes.
    println!(
        "{:<16} {:<8} {:<6} {:>5} {:>6} {:>7} {:>6} {:>6} {:>13} {:>10} {:>10} {:<8}  address",
        "node",
        "role",
        "alive",
        "cores",
        "load",
        "running",
        "busy",
        "queue",
        "memory_mb",
        "containers",
        "silent_ms",
        "ring"
    );
    for n in &s.nodes {
        let role = match pb::Tier::try_from(n.role) {
            Ok(pb::Tier::Storage) => "storage",
            Ok(pb::Tier::Compute) => "compute",
            _ => "?",
        };
        let memory = format!("{}/{}", n.memory_used_mb, n.reported_memory_mb);
        let containers = format!("{} ({} idle)", n.containers, n.idle_containers);
        println!(
            "{:<16} {:<8} {:<6} {:>5} {:>6} {:>7} {:>6.2} {:>6} {:>13} {:>10} {:>10} {:<8}  {}",
            n.name,
            role,
            n.alive,
            n.cores,
            n.load,
            n.reported_running,
            n.busy,
            n.queue_len,
            memory,
            containers,
            n.silent_ms,
            if n.membership.is_empty() {
                "-"
            } else {
                &n.membership
            },
            n.address
        );
    }
    for p in &s.params {
        let of = if p.node.is_empty() {
            String::new()
        } else {
            format!("{}: ", p.node)
        };
        println!(
            "  {of}{} = {:.3} us ({} samples{})",
            p.name,
            p.micros,
            p.samples,
            if p.samples == 0 { ", default" } else { "" }
        );
    }
    print_plan(&s.plan.unwrap_or_default());
    Ok(())
}

fn print_plan(plan: &pb::ProvisionPlan) {
    if plan.round == 0 {
        println!("re-provisioner: no round yet");
        return;
    }
    println!(
        "re-provisioner: round {} solved {} ms ago in {} us; objective {:.0} us/s",
        plan.round, plan.age_ms, plan.solve_us, plan.objective
    );
    for f in &plan.functions {
        let dedicated: Vec<String> = f
            .dedicated
            .iter()
            .map(|d| format!("{} core(s) on {}", d.cores, d.node))
            .collect();
        println!(
            "  t{}/{:<14} {:>9.1}/s  storage {:>5.1}%  dedicated [{}]  warm on [{}]",
            f.tenant,
            f.function,
            f.rate_per_s,
            f.storage_share * 100.0,
            dedicated.join(", "),
            f.warm_on.join(", ")
        );
    }
    for p in &plan.pools {
        println!("  pool size {} on {}", p.size, p.node);
    }
    for n in &plan.overloaded {
        println!("  overloaded: {n}");
    }
    for p in &plan.problems {
        println!("  problem: {p}");
    }
}
