//! `sandstorm bench soak`: the whole cluster under churn for `--minutes`, then whether the
//! scheduler's view still is the agents' truth.
//!
//! It starts a scheduler, a storage agent and (where the machine allows containers) a compute
//! agent with a 1 s keep-alive, so containers churn, as child processes joined with mutual TLS
//! as `sandstorm dev` does. One tenant deploys `--functions` functions and `--clients` clients
//! call them without pause, any tier, every 7th call with a 1 ms client deadline (abandoned
//! mid-call); every half second an `InvokeStream` is opened, sent 8 calls and dropped after the
//! first answer. Half way through, one agent (the compute agent, else the storage agent) is
//! killed with SIGKILL and started again.
//!
//! It prints:
//! - `soak.minute_N`: latency of the right answers in each minute, p50 and p99;
//! - `soak.lost`: calls that failed or answered wrong outside the restart window (the kill to
//!   5 s after the agent registered again), `soak.hung`: calls with no answer at all within
//!   30 s, the abandoned ones included (target 0 each); the restart window's failures are a
//!   note, not a figure;
//! - `soak.drift_load`, `soak.drift_memory_mb`, `soak.drift_containers`: once the load stops
//!   and the cluster settles (at most 30 s), the sum over nodes of |view - report| for load,
//!   container memory and containers (target 0 each).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::launch::{self, Joining, Process};
use crate::scheduler::authed;

use super::{BenchOutput, Better, CommonArgs, Figure, Row, Target, Unit};

/// Options of `sandstorm bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long the load runs, minutes (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Functions deployed (each its own container on the compute node).
    #[arg(long, default_value_t = 12)]
    functions: usize,
    /// Clients calling at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Do not start a compute agent even if the machine allows one.
    #[arg(long)]
    no_compute: bool,
}

/// A call with no answer this long after it was sent is hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);
/// Failures this long after the killed agent registered again still count as the restart's.
const RESTART_GRACE: Duration = Duration::from_secs(5);
/// Longest wait for the view and the reports to agree once the load stops.
const SETTLE: Duration = Duration::from_secs(30);

pub fn run(args: &SoakBenchArgs) -> anyhow::Result<BenchOutput> {
    if !(args.minutes > 0.0 && args.minutes <= 7.0 * 24.0 * 60.0) {
        bail!("--minutes must be above 0 and at most a week");
    }
    if args.functions == 0 || args.functions > 1000 || args.clients == 0 || args.clients > 1000 {
        bail!("--functions and --clients must be 1 to 1000");
    }
    let dir = super::scratch_dir("soak")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(soak(args, &dir));
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// An agent of the soaked cluster: its process and how to start it again.
struct Agent {
    name: String,
    args: Vec<String>,
    process: Option<Process>,
}

impl Agent {
    fn start(name: String, args: Vec<String>, logs: &std::path::Path) -> anyhow::Result<Self> {
        let process = launch::start(&name, logs, &args, &[], &["registered with the scheduler"])?;
        Ok(Self {
            name,
            args,
            process: Some(process),
        })
    }
}

fn agent_args(name: &str, role: &str, extra: &[String], joining: &Joining) -> Vec<String> {
    [
        "agent",
        "--role",
        role,
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(extra.iter().cloned())
    .chain(joining.args(name))
    .collect()
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// (seconds since the start, latency us) of each right answer.
    answers: Mutex<Vec<(f64, f64)>>,
    lost: AtomicU64,
    hung: AtomicU64,
    abandoned: AtomicU64,
    restart_failures: AtomicU64,
    streams_dropped: AtomicU64,
    first_lost: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn lose(&self, why: String) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.first_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }
}

/// When the killed agent was down, in microseconds since the start (`u64::MAX`: not yet
/// killed / not yet back).
struct RestartWindow {
    killed_us: AtomicU64,
    back_us: AtomicU64,
}

impl RestartWindow {
    fn contains(&self, us: u64) -> bool {
        let killed = self.killed_us.load(Ordering::Relaxed);
        let back = self.back_us.load(Ordering::Relaxed);
        us >= killed && us <= back.saturating_add(RESTART_GRACE.as_micros() as u64)
    }
}

async fn soak(args: &SoakBenchArgs, dir: &std::path::Path) -> anyhow::Result<BenchOutput> {
    let data_dir = dir.join("scheduler");
    let scheduler = launch::start(
        "scheduler",
        dir,
        &launch::scheduler_args::<&str>("127.0.0.1:0", &data_dir, &[]),
        &[],
        &[],
    )?;
    let channel = launch::connect_loopback(&scheduler.addr.to_string()).await?;
    let joining = Joining::new(&scheduler, &data_dir, &channel, dir.join("identity"), 3600).await?;
    let storage = Agent::start(
        "storage-0".into(),
        agent_args("storage-0", "storage", &["--in-memory".into()], &joining),
        dir,
    )?;
    let compute = if args.no_compute {
        None
    } else if let Err(why) = sandstorm_node_agent::compute::preflight() {
        eprintln!("SKIPPED compute agent: the compute role cannot run here: {why}");
        None
    } else {
        // Named for this run: a compute agent holds its name on the host.
        let name = format!("soak-compute-{}", std::process::id());
        let state = dir.join(&name);
        let extra = [
            "--state-dir".to_owned(),
            state.display().to_string(),
            "--pool-size".into(),
            "2".into(),
            "--keep-alive-secs".into(),
            "1".into(),
        ];
        let args = agent_args(&name, "compute", &extra, &joining);
        Some(Agent::start(name, args, dir)?)
    };
    let mut agents: Vec<Agent> = std::iter::once(storage).chain(compute).collect();

    let admin = launch::admin_token(&data_dir)?;
    let token = AdminClient::new(channel.clone())
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "soak".into(),
                ..Default::default()
            },
            &admin,
        )?)
        .await
        .context("creating the soak tenant")?
        .into_inner()
        .token;
    let client = SchedulerClient::new(channel.clone());
    let module = sandstorm_guest_examples::module("echo").context("the echo example")?;
    for i in 0..args.functions {
        let request = pb::DeployFunctionRequest {
            name: format!("echo-{i}"),
            module: module.to_vec(),
            ..Default::default()
        };
        client
            .clone()
            .deploy_function(authed(request, &token)?)
            .await
            .with_context(|| format!("deploying echo-{i}"))?;
    }

    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let window = Arc::new(RestartWindow {
        killed_us: AtomicU64::new(u64::MAX),
        back_us: AtomicU64::new(u64::MAX),
    });
    let has_compute = agents.len() > 1;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let caller = Caller {
            client: client.clone(),
            token: token.clone(),
            functions: args.functions,
            compute: has_compute,
        };
        tasks.spawn(caller.run(c, started, stop.clone(), tally.clone(), window.clone()));
    }
    tasks.spawn(drop_streams(
        client.clone(),
        token.clone(),
        args.functions,
        stop.clone(),
        tally.clone(),
    ));

    // Half way: one agent killed outright and started again.
    tokio::time::sleep(duration / 2).await;
    let victim = agents.last_mut().context("no agent")?;
    let us = |t: Instant| u64::try_from(t.duration_since(started).as_micros()).unwrap_or(u64::MAX);
    window
        .killed_us
        .store(us(Instant::now()), Ordering::Relaxed);
    if let Some(mut p) = victim.process.take() {
        p.kill_hard();
    }
    let logs = dir.join("restarted");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let restarted = launch::start(
        &victim.name,
        &logs,
        &victim.args,
        &[],
        &["registered with the scheduler"],
    )?;
    victim.process = Some(restarted);
    window.back_us.store(us(Instant::now()), Ordering::Relaxed);
    let victim_name = victim.name.clone();

    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let load_ended = Instant::now();

    // Settle: the view and the reports agree, or the wait runs out.
    let mut status_client = client.clone();
    let (status, settled) = loop {
        let status = status_client
            .cluster_status(authed(pb::ClusterStatusRequest {}, &admin)?)
            .await
            .context("cluster status")?
            .into_inner();
        let agree = drift(&status) == (0, 0, 0);
        if agree || load_ended.elapsed() > SETTLE {
            break (status, agree);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let settle_time = load_ended.elapsed();
    Ok(report(
        args,
        &tally,
        &status,
        settled,
        settle_time,
        &victim_name,
        has_compute,
    )
    .await)
}

/// Sum over nodes of |view - report|: load, container memory (MiB), containers.
fn drift(status: &pb::ClusterStatusResponse) -> (u64, u64, u64) {
    let mut d = (0, 0, 0);
    for n in &status.nodes {
        d.0 += u64::from(n.load.abs_diff(n.reported_running));
        d.1 += n.memory_used_mb.abs_diff(n.reported_memory_mb);
        d.2 += u64::from(n.view_containers.abs_diff(n.containers));
    }
    d
}

/// One client of the soak.
struct Caller {
    client: SchedulerClient<Channel>,
    token: String,
    functions: usize,
    compute: bool,
}

impl Caller {
    async fn run(
        mut self,
        me: usize,
        started: Instant,
        stop: Arc<AtomicBool>,
        tally: Arc<Tally>,
        window: Arc<RestartWindow>,
    ) {
        let mut n: usize = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let function = format!("echo-{}", (me * 7 + n * 13) % self.functions);
            let input = format!("soak {me} {n}");
            let tier = match n % 3 {
                0 if self.compute => pb::Tier::Compute,
                1 => pb::Tier::Storage,
                _ => pb::Tier::Unspecified,
            };
            let abandon = n.is_multiple_of(7);
            let Ok(mut request) = authed(
                pb::InvokeRequest {
                    function: function.clone(),
                    input: input.clone().into_bytes(),
                    tier: tier.into(),
                    ..Default::default()
                },
                &self.token,
            ) else {
                return;
            };
            if abandon {
                request.set_timeout(Duration::from_millis(1));
            }
            let sent = Instant::now();
            let sent_us = u64::try_from(sent.duration_since(started).as_micros()).unwrap_or(0);
            match tokio::time::timeout(HUNG_AFTER, self.client.invoke(request)).await {
                Err(_) => {
                    tally.hung.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) if abandon => {
                    tally.abandoned.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(r)) if r.get_ref().output == input.as_bytes() => {
                    let at = sent.duration_since(started).as_secs_f64();
                    let us = sent.elapsed().as_secs_f64() * 1e6;
                    tally.answers.lock().await.push((at, us));
                }
                Ok(result) => {
                    let why = match result {
                        Ok(r) => format!(
                            "{function} answered {:?}",
                            String::from_utf8_lossy(&r.get_ref().output)
                        ),
                        Err(e) => format!("{function}: {:?}: {}", e.code(), e.message()),
                    };
                    if window.contains(sent_us) {
                        tally.restart_failures.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.lose(why);
                    }
                }
            }
        }
    }
}

/// Every half second: a stream sent 8 calls and dropped after the first answer.
async fn drop_streams(
    client: SchedulerClient<Channel>,
    token: String,
    functions: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (sender, requests) = tokio::sync::mpsc::channel(8);
        for tag in 0..8u64 {
            let request = pb::InvokeRequest {
                function: format!("echo-{}", (round + tag as usize) % functions),
                input: b"dropped".to_vec(),
                ..Default::default()
            };
            let _ = sender
                .send(pb::InvokeStreamRequest {
                    tag,
                    request: Some(request),
                })
                .await;
        }
        let stream = tokio_stream::wrappers::ReceiverStream::new(requests);
        if let Ok(request) = authed(stream, &token) {
            let mut client = client.clone();
            match tokio::time::timeout(HUNG_AFTER, client.invoke_stream(request)).await {
                Ok(Ok(answers)) => {
                    let mut answers = answers.into_inner();
                    if tokio::time::timeout(HUNG_AFTER, answers.message())
                        .await
                        .is_err()
                    {
                        tally.hung.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.streams_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tally.hung.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(sender);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report(
    args: &SoakBenchArgs,
    tally: &Tally,
    status: &pb::ClusterStatusResponse,
    settled: bool,
    settle_time: Duration,
    victim: &str,
    compute: bool,
) -> BenchOutput {
    let answers = tally.answers.lock().await;
    let minutes = args.minutes.ceil().max(1.0) as usize;
    let mut rows = Vec::new();
    for m in 0..minutes {
        let (from, to) = (m as f64 * 60.0, (m + 1) as f64 * 60.0);
        let latencies: Vec<f64> = answers
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|&(_, us)| us)
            .collect();
        rows.push(Row {
            figure: Figure::distribution(
                &format!("soak.minute_{}", m + 1),
                Unit::Microseconds,
                &latencies,
            ),
            better: Better::Lower,
            target: None,
            peer: None,
        });
    }
    let (load, memory, containers) = drift(status);
    let zero = |name: &str, value: u64, unit: Unit| Row {
        figure: Figure::single(name, unit, value as f64),
        better: Better::Lower,
        target: Some(Target {
            better: Better::Lower,
            value: 1.0,
        }),
        peer: None,
    };
    rows.push(zero(
        "soak.lost",
        tally.lost.load(Ordering::Relaxed),
        Unit::Count,
    ));
    rows.push(zero(
        "soak.hung",
        tally.hung.load(Ordering::Relaxed),
        Unit::Count,
    ));
    rows.push(zero("soak.drift_load", load, Unit::Count));
    rows.push(zero("soak.drift_memory_mb", memory, Unit::Count));
    rows.push(zero("soak.drift_containers", containers, Unit::Count));
    let mut notes = vec![
        format!(
            "{} functions, {} clients for {} min ({} right answers), every 7th call abandoned by \
             a 1 ms client deadline ({}), {} streams dropped after their first answer; {} killed \
             (SIGKILL) half way and started again: {} calls failed in its restart window (not \
             counted as lost).",
            args.functions,
            args.clients,
            args.minutes,
            answers.len(),
            tally.abandoned.load(Ordering::Relaxed),
            tally.streams_dropped.load(Ordering::Relaxed),
            victim,
            tally.restart_failures.load(Ordering::Relaxed),
        ),
        if compute {
            "nodes: storage-0 and a compute agent (keep-alive 1 s: containers churn).".to_owned()
        } else {
            "nodes: storage-0 only (no compute agent on this machine).".to_owned()
        },
        format!(
            "after the load: the view and the reports {} within {} of its end.",
            if settled { "agreed" } else { "still differed" },
            Unit::Microseconds.show(settle_time.as_secs_f64() * 1e6)
        ),
    ];
    for n in &status.nodes {
        notes.push(format!(
            "{}: load {} (reported {}), container memory {} MiB (reported {}), containers {} \
             (reported {}).",
            n.name,
            n.load,
            n.reported_running,
            n.memory_used_mb,
            n.reported_memory_mb,
            n.view_containers,
            n.containers
        ));
    }
    if let Some(why) = tally
        .first_lost
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        notes.push(format!("first lost call: {why}"));
    }
    BenchOutput {
        bench: "soak",
        rows,
        notes,
    }
}
