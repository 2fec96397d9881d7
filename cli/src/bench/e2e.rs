//! `sandstorm bench e2e`: the running system end to end. It starts a real scheduler and a real
//! storage agent as child processes of this binary (in memory, a temporary data directory),
//! creates a tenant, deploys the `echo` example and measures, from a client in this process:
//!
//! - `e2e.direct`: `NodeAgent.Execute` of echo on the agent itself (no scheduler);
//! - `e2e.via_scheduler`: the same invocation through the scheduler's `Invoke` (authentication,
//!   placement with the placement core, the agent's Execute, record and profile), interleaved
//!   with `e2e.direct` so both see the same machine;
//! - `e2e.throughput`: invocations per second through the scheduler from concurrent clients
//!   keeping them in flight on `InvokeStream`; `e2e.throughput_unary`: the same with each
//!   invocation its own unary `Invoke`; and each process's CPU per invocation in both;
//! - `chain.local_hop` / `chain.global_hop`: the hand-off time of each hop of a chain of echo
//!   steps, as the records report it, on the node's local bus and (the same chain with
//!   `global_only`) through the scheduler; and their ratio beside SAND's published 2.9x.
//!
//! Client, scheduler and agent share this machine's cores: the figures include that contention.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::launch::{self, Process};

use super::{BenchOutput, Better, CommonArgs, Figure, Peer, Row, Target, Unit};

/// Options of `sandstorm bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Invocations measured for each latency figure (direct and via the scheduler).
    #[arg(long, default_value_t = 5_000)]
    iterations: usize,
    /// Invocations in each throughput run (unary, then streamed): enough for several seconds
    /// each, so the figure is a sustained rate.
    #[arg(long, default_value_t = 200_000)]
    throughput_invocations: usize,
    /// Concurrent clients in the throughput run (default: as many as the agent admits at once
    /// from one tenant). The scheduler admits at most 9 invocations per agent core at once (one
    /// running, 8 queued), one tenant all of those but one per core, and refuses more
    /// (UNAVAILABLE, or RESOURCE_EXHAUSTED past the tenant's share); refusals are counted, not
    /// retried.
    #[arg(long)]
    clients: Option<usize>,
    /// Connections the throughput clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Chains run on each path.
    #[arg(long, default_value_t = 500)]
    chains: usize,
    /// Echo steps per chain (hops per chain = steps - 1).
    #[arg(long, default_value_t = 8)]
    chain_steps: usize,
    /// Worker cores of the storage agent (default: the agent's own, every core of the machine).
    #[arg(long)]
    agent_cores: Option<usize>,
    /// Async worker threads of the scheduler and agent processes (their `TOKIO_WORKER_THREADS`;
    /// 0: tokio's default, one per core). With client, scheduler and agent sharing two cores,
    /// one thread each spares cross-thread wake-ups (measured before the execute streams:
    /// 11-13 k/s and 96-101 us over direct, against 6.5-8.9 k/s and 119-123 us with the
    /// default).
    #[arg(long, default_value_t = 1)]
    service_threads: usize,
}

/// The throughput run's clients, once `run` has resolved the default.
fn client_count(args: &E2eBenchArgs) -> usize {
    args.clients.unwrap_or(1)
}

/// The agent's worker cores, once `run` has resolved the default.
fn worker_cores(args: &E2eBenchArgs) -> usize {
    args.agent_cores.unwrap_or(1)
}

/// SAND (ATC'18): its local bus hands off 2.9x faster than its global bus.
const SAND_LOCAL_SPEEDUP: f64 = 2.9;
/// The scheduler may add this much to an invocation at p50.
const SCHEDULER_BUDGET_US: f64 = 100.0;
const THROUGHPUT_TARGET: f64 = 20_000.0;
const INPUT: &[u8] = b"ping";

pub fn run(args: &E2eBenchArgs) -> anyhow::Result<BenchOutput> {
    let agent_cores = args
        .agent_cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // Enough clients to hold the bench tenant's share of the node's admission places: the
    // most one tenant can keep in flight there.
    let admitted = sandstorm_scheduler::placement::admission_limit(
        &sandstorm_scheduler::placement::NodeView::new(
            sandstorm_naming::NodeId(0),
            sandstorm_naming::NodeRole::Storage,
            u32::try_from(agent_cores).unwrap_or(u32::MAX),
            0,
        ),
        sandstorm_scheduler::placement::PlacerConfig::default().max_queue_per_core,
    );
    let args = &E2eBenchArgs {
        agent_cores: Some(agent_cores),
        clients: Some(args.clients.unwrap_or(
            sandstorm_scheduler::service::holds::NodeShares::share(
                admitted,
                u32::try_from(agent_cores).unwrap_or(u32::MAX),
            ) as usize,
        )),
        ..args.clone()
    };
    if args.iterations == 0
        || args.throughput_invocations == 0
        || args.clients == Some(0)
        || args.connections == 0
        || args.chains == 0
        || args.agent_cores == Some(0)
    {
        bail!(
            "--iterations, --throughput-invocations, --clients, --connections, --chains and \
             --agent-cores must be at least 1"
        );
    }
    if !(2..=16).contains(&args.chain_steps) {
        bail!("--chain-steps must be 2 to 16 (a chain of at most 16 steps with at least one hop)");
    }
    // One thread: the clients' tasks never wake each other across threads, so the client
    // takes as little of the machine it shares with the scheduler and agent as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cluster = Cluster::start(agent_cores, args.service_threads, &runtime)?;
    let result = runtime.block_on(measure(args, &cluster));
    drop(runtime);
    drop(cluster);
    result
}

/// The scheduler and agent processes, and their scratch directory; stopped and removed on drop.
struct Cluster {
    dir: PathBuf,
    // Dropped in this order: the agent, then the scheduler.
    agent: Process,
    scheduler: Process,
    scheduler_addr: String,
    /// Scheduler-role credentials from the cluster CA: what the direct path dials the agent with,
    /// over the same mutual TLS as the scheduler's own link to it.
    operator: sandstorm_identity::Credentials,
}

/// The storage node's name.
const AGENT: &str = "bench-storage";

impl Cluster {
    fn start(
        agent_cores: usize,
        threads: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let dir = super::scratch_dir("e2e")?;
        let started = Self::start_in(&dir, agent_cores, threads, runtime);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(
        dir: &Path,
        agent_cores: usize,
        threads: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let env: Vec<(&str, String)> = if threads > 0 {
            vec![("TOKIO_WORKER_THREADS", threads.to_string())]
        } else {
            Vec::new()
        };
        let data_dir = dir.join("scheduler");
        let scheduler = launch::start(
            "scheduler",
            dir,
            &launch::scheduler_args::<&str>("127.0.0.1:0", &data_dir, &[]),
            &env,
            &[],
        )?;
        let channel = runtime.block_on(launch::connect_loopback(&scheduler.addr.to_string()))?;
        let joining = runtime.block_on(launch::Joining::new(
            &scheduler,
            &data_dir,
            &channel,
            dir.join("identity"),
            600,
        ))?;
        let agent_args: Vec<String> = [
            "agent",
            "--role",
            "storage",
            "--name",
            AGENT,
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            &agent_cores.to_string(),
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(joining.args(AGENT))
        .collect();
        let agent = launch::start(
            "agent",
            dir,
            &agent_args,
            &env,
            &["registered with the scheduler"],
        )?;
        let operator = sandstorm_identity::ClusterCa::load(&data_dir)?
            .issue_with_key(&sandstorm_identity::Peer::scheduler(), &[])?;
        Ok(Self {
            dir: dir.to_owned(),
            scheduler_addr: format!("http://{}", scheduler.addr),
            agent,
            scheduler,
            operator,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use sandstorm_launch::authed;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Connects, creates the tenant, deploys echo and waits until an invocation succeeds.
async fn set_up(cluster: &Cluster) -> anyhow::Result<(SchedulerClient<Channel>, String, u32)> {
    let admin = std::fs::read_to_string(cluster.dir.join("scheduler").join("admin-token"))
        .context("reading the scheduler's admin token")?;
    let admin = admin.trim();
    let channel = Channel::from_shared(cluster.scheduler_addr.clone())?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to the scheduler")?;
    let tenant = AdminClient::new(channel.clone())
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "bench".into(),
                ..Default::default()
            },
            admin,
        )?)
        .await
        .context("creating the tenant")?
        .into_inner();
    let mut client = SchedulerClient::new(channel);
    let module = sandstorm_guest_examples::module("echo")
        .context("the echo example is missing")?
        .to_vec();
    client
        .deploy_function(authed(
            pb::DeployFunctionRequest {
                name: "echo".into(),
                module,
                limits: None,
                ..Default::default()
            },
            &tenant.token,
        )?)
        .await
        .context("deploying echo")?;
    // The agent is registered; the scheduler places on it once its first statistics arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .invoke(authed(invoke_request(), &tenant.token)?)
            .await
        {
            Ok(r) if r.get_ref().output == INPUT => break,
            Ok(r) => bail!("echo answered {:?}", r.get_ref().output),
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context("the first invocation through the scheduler"),
        }
    }
    Ok((client, tenant.token, tenant.tenant_id))
}

fn invoke_request() -> pb::InvokeRequest {
    pb::InvokeRequest {
        function: "echo".into(),
        input: INPUT.to_vec(),
        ..Default::default()
    }
}

async fn measure(args: &E2eBenchArgs, cluster: &Cluster) -> anyhow::Result<BenchOutput> {
    let (mut client, token, tenant_id) = set_up(cluster).await?;
    let mut agent = NodeAgentClient::new(
        cluster
            .operator
            .endpoint(
                &sandstorm_identity::Peer::new(sandstorm_identity::Role::Storage, AGENT)?,
                &cluster.agent.addr.to_string(),
            )?
            .connect()
            .await
            .context("connecting to the agent")?,
    );
    let execute = || pb::ExecuteRequest {
        function: Some(pb::FunctionRef {
            tenant: tenant_id,
            name: "echo".into(),
        }),
        input: INPUT.to_vec(),
        invocation_id: 0,
    };
    let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {token}").parse()?;
    let invoke = |header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>| {
        let mut r = tonic::Request::new(invoke_request());
        r.metadata_mut().insert("authorization", header.clone());
        r
    };

    // Warm both paths (connections, instance pools, the profile), then interleave them.
    for _ in 0..args.iterations.min(1_000) {
        agent.execute(execute()).await?;
        client.invoke(invoke(&header)).await?;
    }
    let mut direct = Vec::with_capacity(args.iterations);
    let mut via = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let t = Instant::now();
        let r = agent.execute(execute()).await?.into_inner();
        direct.push(micros(t.elapsed()));
        anyhow::ensure!(r.output == INPUT, "echo answered {:?}", r.output);
        let t = Instant::now();
        let r = client.invoke(invoke(&header)).await?.into_inner();
        via.push(micros(t.elapsed()));
        anyhow::ensure!(r.output == INPUT, "echo answered {:?}", r.output);
    }

    let before = CpuTimes::of(cluster);
    let (unary, refused_unary) = throughput(args, cluster, &header).await?;
    let between = CpuTimes::of(cluster);
    let (streamed, refused_streamed) = throughput_streamed(args, cluster, &header).await?;
    let after = CpuTimes::of(cluster);
    let (local, global, chain_notes) = chains(args, &mut client, &header).await?;

    let direct = Figure::distribution("e2e.direct", Unit::Microseconds, &direct);
    let via = Figure::distribution("e2e.via_scheduler", Unit::Microseconds, &via);
    let local = Figure::distribution("chain.local_hop", Unit::Microseconds, &local);
    let global = Figure::distribution("chain.global_hop", Unit::Microseconds, &global);
    let direct_p50 = direct.p50.unwrap_or(f64::NAN);
    let via_p50 = via.p50.unwrap_or(f64::NAN);
    let local_p50 = local.p50.unwrap_or(f64::NAN);
    let global_p50 = global.p50.unwrap_or(f64::NAN);
    let speedup = global_p50 / local_p50;
    let mut notes = vec![
        format!(
            "scheduler overhead at p50: {:.1} us over direct (target < {SCHEDULER_BUDGET_US:.0} us); \
             the latency pairs are interleaved, {} of each, after {} warm-up pairs.",
            via_p50 - direct_p50,
            args.iterations,
            args.iterations.min(1_000)
        ),
        format!(
            "throughput: {} invocations each way by {} clients over {} connections; scheduler, \
             agent ({} worker core; {} async threads each) and client share this machine's {} \
             cores. e2e.throughput: the clients keep their invocations in flight on InvokeStream \
             (one stream per connection: a message each way per invocation); \
             e2e.throughput_unary: each invocation is its own unary Invoke. Refused by admission \
             control (not counted): {refused_streamed} streamed, {refused_unary} unary.",
            args.throughput_invocations,
            client_count(args),
            args.connections,
            worker_cores(args),
            match args.service_threads {
                0 => "default".to_owned(),
                n => n.to_string(),
            },
            std::thread::available_parallelism().map_or(1, usize::from)
        ),
        format!(
            "streamed: {}",
            after.since(&between, args.throughput_invocations)
        ),
        format!(
            "unary: {}",
            between.since(&before, args.throughput_invocations)
        ),
        format!(
            "chains: {} runs of {} echo steps per path; a hop's hand-off runs from the previous \
             step's output being ready to the next step's run beginning (local bus: timed at the \
             node; global path: the scheduler's turnaround plus the Execute round trip less the \
             node's own time), as each record's hop reports it.",
            args.chains, args.chain_steps
        ),
        "SAND (ATC'18) reports its local bus 2.9x faster than its global bus (published).".into(),
    ];
    notes.extend(chain_notes);
    Ok(BenchOutput {
        bench: "e2e",
        rows: vec![
            Row {
                figure: via,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: direct_p50 + SCHEDULER_BUDGET_US,
                }),
                peer: Some(Peer {
                    system: "direct Execute on the agent",
                    value: direct_p50,
                    as_published: None,
                    measured: true,
                }),
            },
            Row {
                figure: direct,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            throughput_row("e2e.throughput", streamed),
            throughput_row("e2e.throughput_unary", unary),
            Row {
                figure: local,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: global_p50 / SAND_LOCAL_SPEEDUP,
                }),
                peer: Some(Peer {
                    system: "global path, this run",
                    value: global_p50,
                    as_published: None,
                    measured: true,
                }),
            },
            Row {
                figure: global,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: Figure::single("chain.local_speedup", Unit::Ratio, speedup),
                better: Better::Higher,
                target: Some(Target {
                    better: Better::Higher,
                    value: SAND_LOCAL_SPEEDUP,
                }),
                peer: Some(Peer {
                    system: "SAND local vs global bus",
                    value: SAND_LOCAL_SPEEDUP,
                    as_published: None,
                    measured: false,
                }),
            },
        ],
        notes,
    })
}

/// A throughput figure beside the target.
fn throughput_row(name: &'static str, per_second: f64) -> Row {
    Row {
        figure: Figure::single(name, Unit::InvocationsPerSecond, per_second),
        better: Better::Higher,
        target: Some(Target {
            better: Better::Higher,
            value: THROUGHPUT_TARGET,
        }),
        peer: None,
    }
}

/// [`throughput`] over `Scheduler.InvokeStream`: one stream per connection, each keeping its
/// share of `--clients` invocations in flight, a new one sent as each answer arrives.
async fn throughput_streamed(
    args: &E2eBenchArgs,
    cluster: &Cluster,
    header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> anyhow::Result<(f64, usize)> {
    let streams = args.connections.min(client_count(args));
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams {
        clients.push(SchedulerClient::new(
            Channel::from_shared(cluster.scheduler_addr.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .context("connecting to the scheduler")?,
        ));
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for (i, mut client) in clients.into_iter().enumerate() {
        // Spread the clients and the invocations over the streams.
        let window = client_count(args) / streams + usize::from(i < client_count(args) % streams);
        let total = args.throughput_invocations / streams
            + usize::from(i < args.throughput_invocations % streams);
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let (requests, outgoing) = tokio::sync::mpsc::unbounded_channel();
            let send = |tag: usize| {
                requests.send(pb::InvokeStreamRequest {
                    tag: tag as u64,
                    request: Some(invoke_request()),
                })
            };
            for tag in 0..window.min(total) {
                send(tag).context("queueing a request")?;
            }
            let mut sent = window.min(total);
            let mut r = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
                outgoing,
            ));
            r.metadata_mut().insert("authorization", header);
            let mut answers = client.invoke_stream(r).await?.into_inner();
            let (mut done, mut refused) = (0usize, 0usize);
            while done + refused < total {
                let answer = answers
                    .message()
                    .await?
                    .context("the scheduler ended the stream early")?;
                match answer.result {
                    Some(pb::invoke_stream_response::Result::Response(r)) => {
                        anyhow::ensure!(r.output == INPUT, "echo answered {:?}", r.output);
                        done += 1;
                    }
                    Some(pb::invoke_stream_response::Result::Error(e))
                        if e.code == tonic::Code::Unavailable as i32
                            || e.code == tonic::Code::ResourceExhausted as i32 =>
                    {
                        refused += 1;
                    }
                    other => bail!("invocation {} failed: {other:?}", answer.tag),
                }
                if sent < total {
                    send(sent).context("queueing a request")?;
                    sent += 1;
                }
            }
            Ok::<_, anyhow::Error>((done, refused))
        }));
    }
    let (mut done, mut refused) = (0usize, 0usize);
    for t in tasks {
        let (d, r) = t.await.context("a throughput client panicked")??;
        done += d;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(done > 0, "every streamed invocation was refused");
    Ok((done as f64 / elapsed, refused))
}

/// CPU time each process has used, from the kernel's scheduler statistics of its threads.
struct CpuTimes {
    scheduler: Duration,
    agent: Duration,
    client: Duration,
}

impl CpuTimes {
    fn of(cluster: &Cluster) -> Self {
        Self {
            scheduler: cpu_time(cluster.scheduler.pid()),
            agent: cpu_time(cluster.agent.pid()),
            client: cpu_time(std::process::id()),
        }
    }

    /// A note with each process's CPU per invocation since `before`.
    fn since(&self, before: &Self, invocations: usize) -> String {
        let per = |now: Duration, then: Duration| {
            micros(now.saturating_sub(then)) / invocations.max(1) as f64
        };
        let (s, a, c) = (
            per(self.scheduler, before.scheduler),
            per(self.agent, before.agent),
            per(self.client, before.client),
        );
        format!(
            "CPU per invocation: scheduler {s:.1} us, agent {a:.1} us, \
             client {c:.1} us; {:.1} us in all, so {} cores could run at most {:.1} k/s.",
            s + a + c,
            std::thread::available_parallelism().map_or(1, usize::from),
            std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64) * 1e3
                / (s + a + c)
        )
    }
}

/// The CPU time of process `pid` so far: the sum over its threads of the first field of
/// `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU); zero where it cannot be read.
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Invocations per second through the scheduler, `--clients` at once over `--connections`, and
/// how many the scheduler refused (admission control).
async fn throughput(
    args: &E2eBenchArgs,
    cluster: &Cluster,
    header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> anyhow::Result<(f64, usize)> {
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(cluster.scheduler_addr.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .context("connecting to the scheduler")?,
        );
    }
    let per_client = args.throughput_invocations.div_ceil(client_count(args));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let header = Arc::new(header.clone());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(client_count(args));
    for c in 0..client_count(args) {
        let mut client = SchedulerClient::new(channels[c % channels.len()].clone());
        let header = header.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..per_client {
                let mut r = tonic::Request::new(invoke_request());
                r.metadata_mut()
                    .insert("authorization", header.as_ref().clone());
                match client.invoke(r).await {
                    Ok(response) => {
                        let out = response.into_inner().output;
                        anyhow::ensure!(out == INPUT, "echo answered {out:?}");
                        done += 1;
                    }
                    // Admission control: the node, or the tenant's share of it, is full.
                    Err(e)
                        if matches!(
                            e.code(),
                            tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                        ) =>
                    {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut done = 0usize;
    for t in tasks {
        done += t.await.context("a throughput client panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        done > 0,
        "every invocation of the throughput run was refused"
    );
    Ok((
        done as f64 / elapsed,
        refused.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// Hand-off times (us) of every hop of `--chains` chains on the local bus and on the global
/// path, and notes on anything unexpected.
async fn chains(
    args: &E2eBenchArgs,
    client: &mut SchedulerClient<Channel>,
    header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<String>)> {
    let mut local = Vec::new();
    let mut global = Vec::new();
    let mut stray = 0usize;
    let warm_up = args.chains.min(50);
    for run in 0..warm_up + args.chains {
        for global_only in [false, true] {
            let mut r = tonic::Request::new(pb::InvokeChainRequest {
                steps: vec!["echo".to_owned(); args.chain_steps],
                input: INPUT.to_vec(),
                keys: Vec::new(),
                retryable: false,
                global_only,
            });
            r.metadata_mut().insert("authorization", header.clone());
            let response = client.invoke_chain(r).await?.into_inner();
            anyhow::ensure!(
                response.output == INPUT,
                "the chain answered {:?}",
                response.output
            );
            if run < warm_up {
                continue;
            }
            let want = if global_only {
                pb::chain_hop::Path::Global
            } else {
                pb::chain_hop::Path::LocalBus
            };
            for hop in response.records.iter().filter_map(|r| r.hop.as_ref()) {
                if hop.step == 0 {
                    continue;
                }
                let us = hop.handoff_ns as f64 / 1e3;
                match (hop.path == want as i32, global_only) {
                    (true, false) => local.push(us),
                    (true, true) => global.push(us),
                    (false, _) => stray += 1,
                }
            }
        }
    }
    let mut notes = Vec::new();
    if stray > 0 {
        notes.push(format!(
            "{stray} hops took the other path than asked (the placement core moved a step); \
             they are left out."
        ));
    }
    Ok((local, global, notes))
}
