//! `sandstorm bench isolation`: what a noisy neighbour does to a quiet tenant's latency. It
//! starts a real scheduler and storage agent (child processes, mutual TLS, as `sandstorm dev`
//! does), creates a "quiet" tenant running `kv-sum` over its own two keys and a "noisy" tenant
//! running `spin` (burns CPU until its deadline stops it), and measures in one run, from one
//! client, the quiet tenant's storage-tier latency:
//!
//! - `isolation.quiet_alone`: `--calls` sequential `kv-sum` calls, Tier::Storage forced;
//! - `isolation.quiet_noisy`: the same calls while the noisy tenant keeps `--spinners` spinners
//!   in flight on the same node (each run to its `--spin-ms` deadline, a new one sent as one
//!   ends), measured only once the node holds them;
//! - `isolation.p99_ratio`: p99 with the neighbour over p99 alone (target < 2x), and each
//!   tenant's failures (the quiet tenant's: any error or wrong answer, target 0; the noisy
//!   tenant's: any ending but its deadline, refusals included).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::launch::{self, Process};
use crate::scheduler::authed;

use super::{BenchOutput, Better, CommonArgs, Figure, Peer, Row, Target, Unit};

/// Options of `sandstorm bench isolation`.
#[derive(Debug, Clone, Args)]
pub struct IsolationBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Spinners the noisy tenant keeps in flight (default: 4 x the storage node's cores).
    #[arg(long)]
    spinners: Option<usize>,
    /// Quiet-tenant calls measured in each phase (alone, then beside the spinners).
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Each spinner's deadline, ms: it spins until the node stops it there.
    #[arg(long, default_value_t = 2_000)]
    spin_ms: u32,
}

/// The target: p99 beside the spinners within this many times p99 alone.
const P99_RATIO_TARGET: f64 = 2.0;
const AGENT: &str = "isolation-storage";
const QUIET_INPUT: &[u8] = b"a b";
const QUIET_OUTPUT: &[u8] = b"42";

pub fn run(args: &IsolationBenchArgs) -> anyhow::Result<BenchOutput> {
    // The client stands for a tenant's, which runs on a machine of its own: here it shares the
    // node's cores with the spinners, so it gets the short slice the cluster's processes have
    // (in both phases alike), and what is measured is the cluster's isolation, not this host's.
    sandstorm_node_agent::scheduling::prefer_latency();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let spinners = args.spinners.unwrap_or(4 * cores);
    if args.calls == 0 || spinners == 0 {
        bail!("--calls and --spinners must be at least 1");
    }
    if args.spin_ms == 0 || args.spin_ms > sandstorm_scheduler::service::functions::MAX_DEADLINE_MS
    {
        bail!(
            "--spin-ms must be 1 to {} (a function's longest deadline)",
            sandstorm_scheduler::service::functions::MAX_DEADLINE_MS
        );
    }
    let dir = super::scratch_dir("isolation")?;
    let result = run_in(args, spinners, cores, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    args: &IsolationBenchArgs,
    spinners: usize,
    cores: usize,
    dir: &std::path::Path,
) -> anyhow::Result<BenchOutput> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (scheduler, agent) = start_cluster(dir, &runtime)?;
    let result = runtime.block_on(measure(args, spinners, cores, dir, &scheduler));
    drop(runtime);
    drop(agent);
    drop(scheduler);
    result
}

/// A scheduler and one storage agent (every core, in memory) joined to it.
fn start_cluster(
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(Process, Process)> {
    let data_dir = dir.join("scheduler");
    let scheduler = launch::start(
        "scheduler",
        dir,
        &launch::scheduler_args::<&str>("127.0.0.1:0", &data_dir, &[]),
        &[],
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
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(joining.args(AGENT))
    .collect();
    let agent = launch::start(
        "agent",
        dir,
        &agent_args,
        &[],
        &["registered with the scheduler"],
    )?;
    Ok((scheduler, agent))
}

/// A tenant's client and token.
#[derive(Clone)]
struct Tenant {
    client: SchedulerClient<Channel>,
    token: String,
}

impl Tenant {
    async fn create(channel: &Channel, admin: &str, name: &str) -> anyhow::Result<Self> {
        let token = AdminClient::new(channel.clone())
            .create_tenant(authed(
                pb::CreateTenantRequest {
                    name: name.into(),
                    ..Default::default()
                },
                admin,
            )?)
            .await
            .with_context(|| format!("creating tenant {name}"))?
            .into_inner()
            .token;
        Ok(Self {
            client: SchedulerClient::new(channel.clone()),
            token,
        })
    }

    async fn deploy(&mut self, example: &str, deadline_ms: u32) -> anyhow::Result<()> {
        let module = sandstorm_guest_examples::module(example)
            .with_context(|| format!("the {example} example is missing"))?;
        let request = pb::DeployFunctionRequest {
            name: example.into(),
            module: module.to_vec(),
            limits: Some(pb::Limits {
                deadline_ms,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client
            .deploy_function(authed(request, &self.token)?)
            .await
            .with_context(|| format!("deploying {example}"))?;
        Ok(())
    }

    async fn invoke(
        &mut self,
        function: &str,
        input: &[u8],
        keys: &[&[u8]],
    ) -> anyhow::Result<Result<pb::InvokeResponse, tonic::Status>> {
        let request = pb::InvokeRequest {
            function: function.into(),
            input: input.to_vec(),
            keys: keys.iter().map(|k| k.to_vec()).collect(),
            retryable: false,
            tier: pb::Tier::Storage.into(),
        };
        Ok(self
            .client
            .invoke(authed(request, &self.token)?)
            .await
            .map(tonic::Response::into_inner))
    }

    /// Invocations the storage node holds now, as the scheduler's view has it.
    async fn node_load(&mut self) -> anyhow::Result<u32> {
        let status = self
            .client
            .cluster_status(authed(pb::ClusterStatusRequest {}, &self.token)?)
            .await
            .context("cluster status")?
            .into_inner();
        Ok(status
            .nodes
            .iter()
            .find(|n| n.name == AGENT)
            .map_or(0, |n| n.load))
    }
}

/// One phase's quiet calls: latencies (us) of the ones that answered right, and the failures.
struct Phase {
    latencies: Vec<f64>,
    failures: usize,
    first_failure: Option<String>,
    /// The slowest right answer: its latency and its record (where its time went).
    slowest: Option<(f64, pb::InvocationRecord)>,
}

impl Phase {
    /// Where the slowest call's time went, by its record.
    fn slowest_note(&self, phase: &str) -> Option<String> {
        let (us, r) = self.slowest.as_ref()?;
        Some(format!(
            "slowest quiet call {phase}: {} at the client, {} at the scheduler (placement {}), \
             at the node: queue {}, instance start {}, run {}.",
            Unit::Microseconds.show(*us),
            Unit::Microseconds.show(r.total_us as f64),
            Unit::Microseconds.show(r.schedule_us as f64),
            Unit::Microseconds.show(r.queue_us as f64),
            Unit::Microseconds.show(r.start_us as f64),
            Unit::Microseconds.show(r.exec_us as f64),
        ))
    }
}

async fn quiet_phase(quiet: &mut Tenant, calls: usize) -> anyhow::Result<Phase> {
    let mut phase = Phase {
        latencies: Vec::with_capacity(calls),
        failures: 0,
        first_failure: None,
        slowest: None,
    };
    for _ in 0..calls {
        let started = Instant::now();
        let answer = quiet.invoke("kv-sum", QUIET_INPUT, &[b"a"]).await?;
        let took = started.elapsed();
        let failure = match answer {
            Ok(r) if r.output == QUIET_OUTPUT => {
                let us = took.as_secs_f64() * 1e6;
                phase.latencies.push(us);
                if phase.slowest.as_ref().is_none_or(|(worst, _)| us > *worst) {
                    phase.slowest = Some((us, r.record.unwrap_or_default()));
                }
                continue;
            }
            Ok(r) => format!("kv-sum answered {:?}", String::from_utf8_lossy(&r.output)),
            Err(e) => format!("{:?}: {}", e.code(), e.message()),
        };
        phase.failures += 1;
        phase.first_failure.get_or_insert(failure);
    }
    Ok(phase)
}

/// How the noisy tenant's spinners ended.
#[derive(Default)]
struct Noise {
    /// Stopped at their deadline: what a spinner is for.
    stopped: AtomicUsize,
    /// Refused or failed any other way.
    failures: AtomicUsize,
    first_failure: std::sync::Mutex<Option<String>>,
}

/// Keeps one spinner in flight until `stop`, a new one sent as each ends.
async fn spin_loop(mut noisy: Tenant, stop: Arc<AtomicBool>, noise: Arc<Noise>) {
    while !stop.load(Ordering::Relaxed) {
        match noisy.invoke("spin", b"", &[]).await {
            Ok(Err(e)) if e.code() == tonic::Code::DeadlineExceeded => {
                noise.stopped.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                noise.failures.fetch_add(1, Ordering::Relaxed);
                let text = match other {
                    Ok(Ok(r)) => format!("spin returned {:?}", r.output),
                    Ok(Err(e)) => format!("{:?}: {}", e.code(), e.message()),
                    Err(e) => format!("{e:#}"),
                };
                noise
                    .first_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(text);
                // Refused at once: do not turn the spinner into a flood of refusals.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn measure(
    args: &IsolationBenchArgs,
    spinners: usize,
    cores: usize,
    dir: &std::path::Path,
    scheduler: &Process,
) -> anyhow::Result<BenchOutput> {
    let admin = launch::admin_token(&dir.join("scheduler"))?;
    let channel = launch::connect_loopback(&scheduler.addr.to_string()).await?;
    let mut quiet = Tenant::create(&channel, &admin, "quiet").await?;
    let mut noisy = Tenant::create(&channel, &admin, "noisy").await?;
    quiet.deploy("kv-sum", 0).await?;
    noisy.deploy("spin", args.spin_ms).await?;
    for (key, value) in [("a", "40"), ("b", "2")] {
        quiet
            .client
            .put_data(authed(
                pb::PutDataRequest {
                    key: key.into(),
                    value: value.into(),
                },
                &quiet.token,
            )?)
            .await
            .context("loading the quiet tenant's data")?;
    }
    // The agent is registered; the scheduler places on it once its first statistics arrive.
    let ready = Instant::now() + Duration::from_secs(10);
    loop {
        match quiet.invoke("kv-sum", QUIET_INPUT, &[b"a"]).await? {
            Ok(r) if r.output == QUIET_OUTPUT => break,
            Ok(r) => bail!("kv-sum answered {:?}", r.output),
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < ready => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context("the first kv-sum through the scheduler"),
        }
    }
    // Warm-up, then the quiet tenant alone.
    quiet_phase(&mut quiet, args.calls.min(200)).await?;
    let alone = quiet_phase(&mut quiet, args.calls).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let noise = Arc::new(Noise::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spinners {
        tasks.spawn(spin_loop(noisy.clone(), stop.clone(), noise.clone()));
    }
    // Measure only once the node holds the spinners (or as many as the noisy tenant's share of
    // it admits: its excess is refused, and counted as its failures).
    let held_from = Instant::now() + Duration::from_secs(30);
    let mut held = 0;
    while Instant::now() < held_from {
        held = quiet.node_load().await?;
        if held as usize >= spinners || noise.failures.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let beside = quiet_phase(&mut quiet, args.calls).await?;
    let held_after = quiet.node_load().await?;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}

    let quiet_alone = Figure::distribution(
        "isolation.quiet_alone",
        Unit::Microseconds,
        &alone.latencies,
    );
    let quiet_noisy = Figure::distribution(
        "isolation.quiet_noisy",
        Unit::Microseconds,
        &beside.latencies,
    );
    let p99_alone = quiet_alone.p99.unwrap_or(f64::NAN);
    let p99_noisy = quiet_noisy.p99.unwrap_or(f64::NAN);
    let ratio = p99_noisy / p99_alone;
    let quiet_failures = alone.failures + beside.failures;
    let noisy_failures = noise.failures.load(Ordering::Relaxed);
    let stopped = noise.stopped.load(Ordering::Relaxed);
    let pass = ratio < P99_RATIO_TARGET && quiet_failures == 0 && noisy_failures == 0;
    let mut notes = vec![
        format!(
            "quiet tenant: {} sequential kv-sum calls per phase (Tier::Storage forced, one client, \
             the same function, input and node in both phases); noisy tenant: {spinners} spinners \
             in flight on the same node ({cores} cores), each stopped at its {} ms deadline; \
             the node held {held} invocations when the second phase began and {held_after} when \
             it ended. Client, scheduler and agent share this machine's cores.",
            args.calls, args.spin_ms
        ),
        format!(
            "p99: {} alone, {} beside the spinners: {ratio:.2}x (p50 {} / {}).",
            Unit::Microseconds.show(p99_alone),
            Unit::Microseconds.show(p99_noisy),
            Unit::Microseconds.show(quiet_alone.p50.unwrap_or(f64::NAN)),
            Unit::Microseconds.show(quiet_noisy.p50.unwrap_or(f64::NAN)),
        ),
        format!(
            "failures: quiet {quiet_failures} ({} alone, {} beside); noisy {noisy_failures} \
             (any ending but the deadline; {stopped} spinners stopped at it).",
            alone.failures, beside.failures
        ),
    ];
    notes.extend(alone.slowest_note("alone"));
    notes.extend(beside.slowest_note("beside the spinners"));
    for (who, first) in [
        ("quiet", alone.first_failure.or(beside.first_failure)),
        (
            "noisy",
            noise
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        ),
    ] {
        if let Some(first) = first {
            notes.push(format!("first {who} failure: {first}"));
        }
    }
    notes.push(format!(
        "target: p99 within {P99_RATIO_TARGET:.0}x of quiet, no failures: {}",
        if pass { "PASS" } else { "MISS" }
    ));
    let count = |name: &str, n: usize| Row {
        figure: Figure::single(name, Unit::Count, n as f64),
        better: Better::Lower,
        target: Some(Target {
            better: Better::Lower,
            value: 1.0,
        }),
        peer: None,
    };
    Ok(BenchOutput {
        bench: "isolation",
        rows: vec![
            Row {
                figure: quiet_noisy,
                better: Better::Lower,
                target: None,
                peer: Some(Peer {
                    system: "quiet tenant alone, this run",
                    value: quiet_alone.p50.unwrap_or(f64::NAN),
                    as_published: None,
                    measured: true,
                }),
            },
            Row {
                figure: quiet_alone,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: Figure::single("isolation.p99_ratio", Unit::Ratio, ratio),
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: P99_RATIO_TARGET,
                }),
                peer: None,
            },
            count("isolation.quiet_failures", quiet_failures),
            count("isolation.noisy_failures", noisy_failures),
        ],
        notes,
    })
}
