//! `sandstorm bench dashboard`: the dashboard under a flood of decisions.
//!
//! Serves the dashboard over a decision hub fed at `--rate` decisions per second for
//! `--seconds`, so a browser pointed at the printed address shows the page at that load (the
//! browser test in `tests/tests/dashboard.rs` measures its update times). The decisions are real
//! placement decisions: the scheduler's placement core (`Placer::place_recorded`, the same call
//! the service makes) on a view of `--storage-nodes` storage and `--compute-nodes` compute nodes
//! with the default cost model, turned into records by the service's own record code. They are
//! placed, not executed: the hub shows them as "not run" (no measured latency), and the cluster
//! view says the source is the bench.
//!
//! Figures: decisions published per second (target: the requested rate), and the cost of one
//! `Hub::publish` (what the invocation path pays per decision for the dashboard).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sandstorm_cost_model::Workload;
use sandstorm_naming::{AppId, FunctionId, InvocationId, NodeId, NodeRole, TenantId};
use sandstorm_proto::v1 as pb;
use sandstorm_scheduler::placement::{
    ClusterView, NodeView, PlacementRequest, Placer, PlacerConfig, Policy, Reservation,
};
use sandstorm_scheduler::service::dashboard::{self, Dashboard, Hub};
use sandstorm_scheduler::service::record;

use super::{BenchOutput, Better, CommonArgs, Figure, Row, Target, Unit};

#[derive(Debug, Args)]
pub struct DashboardBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Decisions per second to publish.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u32,
    /// How long to publish, seconds (the dashboard stops with it).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Where to serve the dashboard (printed as `dashboard on http://ADDR/`, then
    /// `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 4)]
    pub storage_nodes: u32,
    #[arg(long, default_value_t = 4)]
    pub compute_nodes: u32,
}

/// The bench's functions: (name, workload). Data-heavy ones stay next to their data, CPU-heavy
/// ones go to compute nodes, as the cost model decides.
const FUNCTIONS: [(&str, Workload); 5] = [
    (
        "kv-sum",
        Workload {
            compute_us: 5.0,
            accesses: 3.0,
            rounds: 1.0,
            bytes: 96.0,
        },
    ),
    (
        "graph-walk",
        Workload {
            compute_us: 20.0,
            accesses: 8.0,
            rounds: 8.0,
            bytes: 512.0,
        },
    ),
    (
        "hash-chain",
        Workload {
            compute_us: 2_000.0,
            accesses: 1.0,
            rounds: 1.0,
            bytes: 64.0,
        },
    ),
    (
        "counter",
        Workload {
            compute_us: 3.0,
            accesses: 2.0,
            rounds: 2.0,
            bytes: 16.0,
        },
    ),
    (
        "echo",
        Workload {
            compute_us: 1.0,
            accesses: 0.0,
            rounds: 0.0,
            bytes: 0.0,
        },
    ),
];

/// Invocations held on the view at once (completed oldest first), so queues are not empty.
const IN_FLIGHT: usize = 48;

pub fn run(args: &DashboardBenchArgs) -> anyhow::Result<BenchOutput> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(
        args.storage_nodes + args.compute_nodes > 0,
        "the view needs at least one node"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: &DashboardBenchArgs) -> anyhow::Result<BenchOutput> {
    let hub = Arc::new(Hub::new());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let board = Dashboard::new(hub.clone(), None, None);
    let server = tokio::spawn(dashboard::serve(listener, board, std::future::pending()));
    println!("dashboard on http://{addr}/");
    println!("listening on {addr}");
    println!(
        "publishing {} decisions/s for {} s (placement core, cost-aware, {} storage + {} compute nodes)",
        args.rate, args.seconds, args.storage_nodes, args.compute_nodes
    );

    let feeder = {
        let hub = hub.clone();
        let (rate, seconds) = (args.rate, args.seconds);
        let (storage, compute) = (args.storage_nodes, args.compute_nodes);
        tokio::task::spawn_blocking(move || feed(&hub, rate, seconds, storage, compute))
    };
    let (published, elapsed, publish_ns) = feeder.await.context("the feeder panicked")?;
    server.abort();

    let achieved = published as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(BenchOutput {
        bench: "dashboard",
        rows: vec![
            Row {
                figure: Figure::single(
                    "dashboard.decisions_per_s",
                    Unit::InvocationsPerSecond,
                    achieved,
                ),
                better: Better::Higher,
                target: Some(Target {
                    better: Better::Higher,
                    // The requested rate, within 5% (the pacing's tick granularity).
                    value: f64::from(args.rate) * 0.95,
                }),
                peer: None,
            },
            Row {
                figure: Figure::distribution("dashboard.publish", Unit::Nanoseconds, &publish_ns),
                better: Better::Lower,
                target: None,
                peer: None,
            },
        ],
        notes: vec![
            format!(
                "{published} real placement decisions (not executed) published in {:.1} s; \
                 the hub batches them every {} ms with a sample of at most {} each",
                elapsed.as_secs_f64(),
                dashboard::hub::BATCH_INTERVAL.as_millis(),
                dashboard::hub::SAMPLE_PER_BATCH
            ),
            "dashboard.publish: one Hub::publish call, what the invocation path pays per decision"
                .into(),
            "no peer: no other serverless dashboard's figures were measured here".into(),
        ],
    })
}

fn view(storage: u32, compute: u32) -> (ClusterView, Vec<String>) {
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for i in 0..storage + compute {
        let (role, name) = if i < storage {
            (NodeRole::Storage, format!("bench-storage-{i}"))
        } else {
            (NodeRole::Compute, format!("bench-compute-{}", i - storage))
        };
        nodes.push(NodeView::new(NodeId(i), role, 8, 32 * 1024));
        names.push(name);
    }
    (ClusterView::new(nodes), names)
}

/// Publishes `rate` decisions per second for `seconds`, paced in 10 ms steps. Returns the
/// decisions published, the time taken and a sample of publish costs (ns).
fn feed(
    hub: &Hub,
    rate: u32,
    seconds: u64,
    storage: u32,
    compute: u32,
) -> (u64, Duration, Vec<f64>) {
    let placer = Placer::new(Policy::CostAware, PlacerConfig::default());
    let (mut view, names) = view(storage, compute);
    let mut held: VecDeque<Reservation> = VecDeque::with_capacity(IN_FLIGHT + 1);
    let mut publish_ns = Vec::new();
    let start = Instant::now();
    let end = Duration::from_secs(seconds);
    let step = Duration::from_millis(10);
    let mut published = 0u64;
    let mut next = start;
    while start.elapsed() < end {
        // Decisions due by now at `rate`.
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while published < due {
            let i = published;
            let (name, workload) = FUNCTIONS[(i % FUNCTIONS.len() as u64) as usize];
            let data = [(NodeId((i % u64::from(storage.max(1))) as u32), 1.0)];
            let request = PlacementRequest {
                invocation: InvocationId(i),
                tenant: TenantId(0),
                function: FunctionId((i % FUNCTIONS.len() as u64) as u32),
                app: AppId((i % FUNCTIONS.len() as u64) as u32),
                workload,
                memory_mb: 128,
                data: if storage > 0 && workload.accesses > 0.0 {
                    &data
                } else {
                    &[]
                },
                warm: &[],
            };
            let placed = Instant::now();
            let decision = placer.place_recorded(&mut view, &request);
            let schedule_us = u64::try_from(placed.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Some(r) = decision.chosen.and_then(|c| c.reservation) {
                held.push_back(r);
            }
            while held.len() > IN_FLIGHT {
                if let Some(r) = held.pop_front() {
                    view.complete(r.node, r.work_us);
                }
            }
            let node_name = |id: u32| {
                names
                    .get(id as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("node-{id}"))
            };
            let chosen = decision.chosen;
            let rec = pb::InvocationRecord {
                invocation_id: i,
                function: name.to_owned(),
                node: chosen.map(|c| node_name(c.node.0)).unwrap_or_default(),
                tier: chosen.map_or(0, |c| record::tier(c.tier).into()),
                start: chosen.map_or(0, |c| record::start(c.start).into()),
                policy: decision.policy.name().into(),
                candidates: record::candidates(&decision, node_name),
                unscored: decision.unscored,
                schedule_us,
                ..Default::default()
            };
            let t = Instant::now();
            hub.publish("bench", &rec, false);
            if i.is_multiple_of(64) {
                publish_ns.push(t.elapsed().as_nanos() as f64);
            }
            published += 1;
        }
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (published, start.elapsed(), publish_ns)
}
