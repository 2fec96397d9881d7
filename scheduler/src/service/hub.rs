//! The decision hub: where finished invocations' placement decisions meet the dashboard.
//!
//! The invocation path calls [`Hub::publish`] once per decision. That must stay cheap at any
//! rate and must never let a browser hold memory, so nothing is sent per decision: publish adds
//! the decision to the pending batch (exact counts per tenant, function, tier and start kind; a
//! uniform sample of at most [`SAMPLE_PER_BATCH`] decisions, reservoir-style) and to the
//! per-function tier-mix series. Every [`BATCH_INTERVAL`] the dashboard's ticker calls
//! [`Hub::flush`], which turns the pending batch into one [`Batch`] on a bounded broadcast
//! channel ([`BATCH_BACKLOG`] batches): a browser that reads too slowly falls behind, loses the
//! oldest batches and is told how many (tokio's `Lagged`), and the channel never grows.
//! Sampled decisions keep their full record (every candidate's cost) in a ring of
//! [`DETAIL_RING`] entries, for the page to show on click.
//!
//! It also keeps, per node, the latest statistics message (per-core busy fraction and run
//! queues, warm containers, part pools, keys and bytes).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng as _, SeedableRng as _};
use rand_pcg::Pcg64Mcg;
use sandstorm_proto::v1 as pb;
use serde::Serialize;
use tokio::sync::broadcast;

/// How often the pending decisions become a batch.
pub const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(150);
/// Most decisions sampled into one batch (the rest are counted, not kept).
pub const SAMPLE_PER_BATCH: usize = 64;
/// Batches a browser may fall behind before it loses the oldest.
pub const BATCH_BACKLOG: usize = 32;
/// Sampled decisions whose full record is kept for the detail view.
pub const DETAIL_RING: usize = 4096;
/// Distinct (tenant, function, tier, start) rows counted per batch; more are summed into one
/// `(other)` row so a flood of functions cannot grow a batch.
pub const MAX_COUNT_ROWS: usize = 256;
/// Width of one bucket of a function's tier-mix series, seconds.
pub const SERIES_BUCKET_S: u64 = 5;
/// Buckets kept per function (10 minutes).
pub const SERIES_BUCKETS: usize = 120;

/// Where a decision ran, as the page names it.
pub fn tier_name(tier: i32) -> &'static str {
    match pb::Tier::try_from(tier) {
        Ok(pb::Tier::Storage) => "storage",
        Ok(pb::Tier::Compute) => "compute",
        _ => "unknown",
    }
}

/// How its execution context was obtained, as the page names it.
pub fn start_name(start: i32) -> &'static str {
    match pb::StartKind::try_from(start) {
        Ok(pb::StartKind::Warm) => "warm",
        Ok(pb::StartKind::Assembled) => "assembled",
        Ok(pb::StartKind::Cold) => "cold",
        _ => "unknown",
    }
}

/// The cost model's end-to-end latency estimate: the sum of the critical-path terms (as
/// `sandstorm_cost_model::CostBreakdown::latency_us`).
pub fn estimated_latency_us(c: &pb::CostBreakdown) -> f64 {
    c.queue_us
        + c.dispatch_us
        + c.start_us
        + c.compute_us
        + c.local_access_us
        + c.network_rtt_us
        + c.bytes_us
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One placement decision, as a row of the live list.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: u64,
    pub at_unix_ms: u64,
    pub tenant: String,
    pub function: String,
    pub node: String,
    pub tier: &'static str,
    pub start: &'static str,
    pub policy: String,
    /// The chosen candidate's latency estimate, microseconds.
    pub estimated_us: f64,
    /// From the scheduler receiving the call to it having the answer, microseconds; `None`
    /// for a decision that was placed but not executed (`sandstorm bench dashboard`).
    pub measured_us: Option<u64>,
    /// Candidates scored or rejected.
    pub candidates: u32,
}

/// A decision with everything the detail view shows.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionDetail {
    #[serde(flatten)]
    pub decision: Decision,
    /// The node's own measurements (0 when not executed).
    pub queue_us: u64,
    pub start_us: u64,
    pub exec_us: u64,
    pub durable_us: u64,
    pub schedule_us: u64,
    pub data_calls: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_moved: u64,
    pub unscored: u32,
    pub candidates: Vec<CandidateView>,
    pub failed_attempts: Vec<FailedView>,
}

/// One candidate of a decision: its cost term by term, its score, and why it lost.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateView {
    pub node: String,
    pub tier: &'static str,
    pub start: &'static str,
    pub verdict: &'static str,
    pub reason: String,
    pub score: f64,
    pub objective: f64,
    pub estimated_us: f64,
    pub queue_us: f64,
    pub dispatch_us: f64,
    pub start_us: f64,
    pub compute_us: f64,
    pub local_access_us: f64,
    pub network_rtt_us: f64,
    pub bytes_us: f64,
    pub storage_cpu_us: f64,
    pub compute_cpu_us: f64,
    pub bytes_moved: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedView {
    pub node: String,
    pub error: String,
}

fn candidate_view(c: &pb::CandidateCost) -> CandidateView {
    let cost = c.cost.unwrap_or_default();
    CandidateView {
        node: c.node.clone(),
        tier: tier_name(c.tier),
        start: start_name(c.start),
        verdict: match pb::candidate_cost::Verdict::try_from(c.verdict) {
            Ok(pb::candidate_cost::Verdict::Chosen) => "chosen",
            Ok(pb::candidate_cost::Verdict::Lost) => "lost",
            Ok(pb::candidate_cost::Verdict::Rejected) => "rejected",
            _ => "unknown",
        },
        reason: c.reason.clone(),
        score: c.score,
        objective: cost.objective,
        estimated_us: estimated_latency_us(&cost),
        queue_us: cost.queue_us,
        dispatch_us: cost.dispatch_us,
        start_us: cost.start_us,
        compute_us: cost.compute_us,
        local_access_us: cost.local_access_us,
        network_rtt_us: cost.network_rtt_us,
        bytes_us: cost.bytes_us,
        storage_cpu_us: cost.storage_cpu_us,
        compute_cpu_us: cost.compute_cpu_us,
        bytes_moved: cost.bytes_moved,
    }
}

/// Exact count of one (tenant, function, tier, start) combination in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountRow {
    pub tenant: String,
    pub function: String,
    pub tier: &'static str,
    pub start: &'static str,
    pub n: u64,
}

/// What was decided during one batch interval.
#[derive(Debug, Clone)]
pub struct Batch {
    pub seq: u64,
    pub at_unix_ms: u64,
    /// The interval the batch covers, milliseconds.
    pub interval_ms: f64,
    /// Decisions in the interval (all of them, sampled or not).
    pub count: u64,
    pub counts: Vec<CountRow>,
    /// A uniform sample of the interval's decisions, in arrival order.
    pub sample: Vec<Arc<Decision>>,
    /// Decisions since the hub was made.
    pub total: u64,
}

#[derive(Debug)]
struct Pending {
    since: Instant,
    count: u64,
    counts: Vec<CountRow>,
    /// (arrival index, decision, its record) so the sample can be put back in arrival order
    /// and the details of the decisions finally kept made at the flush.
    sample: Vec<(u64, Arc<Decision>, pb::InvocationRecord)>,
    rng: Pcg64Mcg,
}

impl Pending {
    fn count(&mut self, d: &Decision) {
        let same = |r: &CountRow| {
            r.tier == d.tier
                && r.start == d.start
                && r.function == d.function
                && r.tenant == d.tenant
        };
        if let Some(r) = self.counts.iter_mut().find(|r| same(r)) {
            r.n += 1;
        } else if self.counts.len() < MAX_COUNT_ROWS - 1 {
            self.counts.push(CountRow {
                tenant: d.tenant.clone(),
                function: d.function.clone(),
                tier: d.tier,
                start: d.start,
                n: 1,
            });
        } else if let Some(r) = self.counts.iter_mut().find(|r| r.function == "(other)") {
            r.n += 1;
        } else {
            self.counts.push(CountRow {
                tenant: "(other)".into(),
                function: "(other)".into(),
                tier: "unknown",
                start: "unknown",
                n: 1,
            });
        }
    }

    /// Algorithm R: keeps each of the `count` decisions seen with probability
    /// `SAMPLE_PER_BATCH / count`.
    fn sample(&mut self, d: &Arc<Decision>, record: &pb::InvocationRecord) {
        let index = self.count - 1;
        if self.sample.len() < SAMPLE_PER_BATCH {
            self.sample.push((index, d.clone(), record.clone()));
            return;
        }
        let slot = self.rng.random_range(0..self.count);
        if let Some(kept) = self.sample.get_mut(slot as usize) {
            *kept = (index, d.clone(), record.clone());
        }
    }
}

/// Tier and start-kind counts of one function over time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bucket {
    /// Seconds since the Unix epoch at the bucket's start.
    pub at_unix_s: u64,
    pub storage: u64,
    pub compute: u64,
    pub warm: u64,
    pub assembled: u64,
    pub cold: u64,
    /// Compute-node starts that were not warm.
    pub cold_starts: u64,
}

/// The tier-mix series of one function, and its counts since the hub was made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FunctionSeries {
    pub buckets: VecDeque<Bucket>,
    pub total: u64,
    /// Compute-node starts that were not warm (cold or assembled): what keep-alive studies call
    /// cold starts, as the simulator counts them.
    pub cold_starts: u64,
}

impl FunctionSeries {
    fn add(&mut self, at_unix_s: u64, tier: &str, start: &str) {
        let bucket_start = at_unix_s - at_unix_s % SERIES_BUCKET_S;
        if self
            .buckets
            .back()
            .is_none_or(|b| b.at_unix_s < bucket_start)
        {
            self.buckets.push_back(Bucket {
                at_unix_s: bucket_start,
                ..Bucket::default()
            });
            while self.buckets.len() > SERIES_BUCKETS {
                self.buckets.pop_front();
            }
        }
        // A clock stepping back lands in the newest bucket.
        if let Some(b) = self.buckets.back_mut() {
            match tier {
                "storage" => b.storage += 1,
                "compute" => b.compute += 1,
                _ => {}
            }
            match start {
                "warm" => b.warm += 1,
                "assembled" => b.assembled += 1,
                "cold" => b.cold += 1,
                _ => {}
            }
            if tier == "compute" && start != "warm" {
                b.cold_starts += 1;
            }
        }
        self.total += 1;
        if tier == "compute" && start != "warm" {
            self.cold_starts += 1;
        }
    }
}

/// The latest statistics of one node, as it pushed them.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub stats: pb::NodeStats,
    pub at: Instant,
}

/// What the re-provisioner's latest round decided for one function (read from the scheduler
/// when the functions view is built); the dashboard shows "no plan yet" until one is made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionPlan {
    /// When the plan was made, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Storage-node cores dedicated to the function, by node.
    pub dedicated_storage_cores: Vec<(String, u32)>,
    /// Warm containers to keep, by compute node.
    pub warm_containers: Vec<(String, u32)>,
    /// Part-pool sizes of the compute nodes it may run on, by node.
    pub pool_sizes: Vec<(String, u32)>,
    /// In words: why (the solver's objective, what bound it).
    pub note: String,
}

/// The decision hub. Cheap to publish to from any thread; see the module doc.
#[derive(Debug)]
pub struct Hub {
    pending: Mutex<Pending>,
    details: Mutex<VecDeque<Arc<DecisionDetail>>>,
    series: Mutex<HashMap<(String, String), FunctionSeries>>,
    nodes: Mutex<HashMap<u32, NodeSnapshot>>,
    batches: broadcast::Sender<Arc<Batch>>,
    seq: AtomicU64,
    total: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (batches, _) = broadcast::channel(BATCH_BACKLOG);
        Self {
            pending: Mutex::new(Pending {
                since: Instant::now(),
                count: 0,
                counts: Vec::new(),
                sample: Vec::with_capacity(SAMPLE_PER_BATCH),
                rng: Pcg64Mcg::seed_from_u64(0x5a4d_5707),
            }),
            details: Mutex::new(VecDeque::with_capacity(DETAIL_RING)),
            series: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            batches,
            seq: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Records one decision: `record` is the invocation's record, `executed` whether its
    /// timings were measured (false for a placement that was not run).
    pub fn publish(&self, tenant: &str, record: &pb::InvocationRecord, executed: bool) {
        let chosen = record
            .candidates
            .iter()
            .find(|c| c.verdict == pb::candidate_cost::Verdict::Chosen as i32);
        let decision = Arc::new(Decision {
            id: record.invocation_id,
            at_unix_ms: unix_ms(),
            tenant: tenant.to_owned(),
            function: record.function.clone(),
            node: record.node.clone(),
            tier: tier_name(record.tier),
            start: start_name(record.start),
            policy: record.policy.clone(),
            estimated_us: chosen
                .and_then(|c| c.cost.as_ref())
                .map_or(0.0, estimated_latency_us),
            measured_us: executed.then_some(record.total_us),
            candidates: u32::try_from(record.candidates.len()).unwrap_or(u32::MAX),
        });
        self.total.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = lock(&self.pending);
            p.count += 1;
            p.count(&decision);
            p.sample(&decision, record);
        }
        lock(&self.series)
            .entry((decision.tenant.clone(), decision.function.clone()))
            .or_default()
            .add(decision.at_unix_ms / 1000, decision.tier, decision.start);
    }

    /// Keeps the full record of a decision the batch sampled.
    fn keep_detail(&self, decision: &Decision, record: &pb::InvocationRecord) {
        let detail = Arc::new(DecisionDetail {
            decision: decision.clone(),
            queue_us: record.queue_us,
            start_us: record.start_us,
            exec_us: record.exec_us,
            durable_us: record.durable_us,
            schedule_us: record.schedule_us,
            data_calls: record.data_calls,
            bytes_read: record.bytes_read,
            bytes_written: record.bytes_written,
            bytes_moved: record.bytes_moved,
            unscored: record.unscored,
            candidates: record.candidates.iter().map(candidate_view).collect(),
            failed_attempts: record
                .failed_attempts
                .iter()
                .map(|f| FailedView {
                    node: f.node.clone(),
                    error: f.error.clone(),
                })
                .collect(),
        });
        let mut details = lock(&self.details);
        if details.len() >= DETAIL_RING {
            details.pop_front();
        }
        details.push_back(detail);
    }

    /// Turns the pending decisions into a batch and sends it to every subscriber (none is
    /// fine: the batch is dropped). Returns it.
    pub fn flush(&self) -> Arc<Batch> {
        let (since, count, counts, mut sample) = {
            let mut p = lock(&self.pending);
            let since = std::mem::replace(&mut p.since, Instant::now());
            let count = std::mem::take(&mut p.count);
            let counts = std::mem::take(&mut p.counts);
            let sample = std::mem::replace(&mut p.sample, Vec::with_capacity(SAMPLE_PER_BATCH));
            (since, count, counts, sample)
        };
        sample.sort_by_key(|(i, _, _)| *i);
        for (_, d, record) in &sample {
            self.keep_detail(d, record);
        }
        let batch = Arc::new(Batch {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at_unix_ms: unix_ms(),
            interval_ms: since.elapsed().as_secs_f64() * 1e3,
            count,
            counts,
            sample: sample.into_iter().map(|(_, d, _)| d).collect(),
            total: self.total.load(Ordering::Relaxed),
        });
        // An error only means nobody listens.
        let _ = self.batches.send(batch.clone());
        batch
    }

    /// A new subscriber to the batches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.batches.subscribe()
    }

    /// Batches held for the slowest subscriber (at most [`BATCH_BACKLOG`]).
    pub fn backlog(&self) -> usize {
        self.batches.len()
    }

    /// Decisions published since the hub was made.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The full record of a recently sampled decision.
    pub fn detail(&self, id: u64) -> Option<Arc<DecisionDetail>> {
        lock(&self.details)
            .iter()
            .rev()
            .find(|d| d.decision.id == id)
            .cloned()
    }

    /// Ids of the sampled decisions whose detail is held, oldest first.
    pub fn held_details(&self) -> usize {
        lock(&self.details).len()
    }

    /// The tier-mix series of `function` of `tenant`.
    pub fn series(&self, tenant: &str, function: &str) -> Option<FunctionSeries> {
        lock(&self.series)
            .get(&(tenant.to_owned(), function.to_owned()))
            .cloned()
    }

    /// Every function with a series, as (tenant, function).
    pub fn series_keys(&self) -> Vec<(String, String)> {
        lock(&self.series).keys().cloned().collect()
    }

    /// Forgets a removed function's series.
    pub fn forget_function(&self, tenant: &str, function: &str) {
        let key = (tenant.to_owned(), function.to_owned());
        lock(&self.series).remove(&key);
    }

    /// Keeps a node's latest statistics.
    pub fn node_stats(&self, node: u32, stats: &pb::NodeStats) {
        lock(&self.nodes).insert(
            node,
            NodeSnapshot {
                stats: stats.clone(),
                at: Instant::now(),
            },
        );
    }

    /// The latest statistics of `node`.
    pub fn node_snapshot(&self, node: u32) -> Option<NodeSnapshot> {
        lock(&self.nodes).get(&node).cloned()
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
pub(crate) mod tests;
