//! The cost of running one invocation at one candidate placement.
//!
//! This crate owns the arithmetic of docs/design.md's cost model and nothing else: given what an
//! invocation will do ([`Workload`]: compute, data accesses, dependent rounds, bytes) and where it
//! might run ([`Candidate`]: storage node or compute node, how its execution context would be
//! obtained, how long it would queue), [`estimate`] returns a [`CostBreakdown`] with every term
//! visible, and [`Weights`] turn a breakdown into the single objective the `cost-aware` policy
//! minimises.
//!
//! It is pure: no clocks, no I/O, no randomness. The parameters ([`CostParams`]) start as the
//! documented defaults below and are calibrated from measurements fed to a [`Calibrator`].
//! It must not depend on any other Sandstorm crate, so the simulator, the scheduler and the
//! node agents can all use it.

mod calibrate;

pub use calibrate::{Calibrator, SampleError, SampleKind};
use serde::{Deserialize, Serialize};

/// Which tier a candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Inside a storage node, in a WebAssembly instance next to the data.
    Storage,
    /// On a compute node, in a container; every data access crosses the network.
    Compute,
}

/// How the execution context for the invocation would be obtained at a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartKind {
    /// An idle warm context of the function is reused: no start cost.
    Warm,
    /// Assembled from pre-created parts (a compute container from the pools, or a pooled Wasm
    /// instance on a storage node).
    Assembled,
    /// Built from nothing on the critical path.
    Cold,
}

/// Cost-model parameters. Every field is a documented default until a [`Calibrator`] replaces it
/// with measurements. Sources are docs/design.md's "Default parameters" table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostParams {
    /// CPU a storage node spends dispatching one request (parse, look up, reply), kernel TCP.
    /// Default 10 us: ~34 us of CPU per loopback TCP RPC was measured in this VM (an upper bound);
    /// kernel bypass would be 0.5 us (Splinter's ASFP pushback credit, `db/src/sched.rs`).
    pub dispatch_us: f64,
    /// One in-memory access inside a storage node. Default 0.1 us: a hash lookup and a few cache
    /// misses (assumption).
    pub local_access_us: f64,
    /// Network stack CPU per byte, per side. Default 0.25 ns/B: loopback TCP slope measured here.
    pub per_byte_ns: f64,
    /// One network round trip. Default 30 us, kernel TCP (common figure; Splinter reaches < 9 us
    /// with DPDK, OSDI'18).
    pub rtt_us: f64,
    /// Link bandwidth. Default 25 Gbit/s, a common cloud NIC.
    pub bandwidth_gbit_s: f64,
    /// Starting a pooled Wasm instance. Default 2.3 us: wasmtime pooling allocator measured here.
    pub wasm_start_us: f64,
    /// One host-call crossing out of the Wasm sandbox. Default 0.013 us, measured here.
    pub wasm_crossing_us: f64,
    /// How much slower code runs in the sandbox than natively. Default 1.2 (assumption).
    pub wasm_slowdown: f64,
    /// A process context switch. Default 2.4 us, measured here.
    pub context_switch_us: f64,
    /// Forking a small runtime template (zygote). Default 150 us, measured here.
    pub zygote_fork_us: f64,
    /// A container assembled from pre-created parts. Default 1,000 us: this project's goal
    /// (FlashCube, PLOS'21, reports < 10 ms).
    pub container_assembled_us: f64,
    /// A container built from nothing on the critical path. Default 50,000 us: runc p50 measured
    /// here (Docker: ~400 ms, FlashCube PLOS'21).
    pub container_cold_us: f64,
}

impl Default for CostParams {
    fn default() -> Self {
        Self {
            dispatch_us: 10.0,
            local_access_us: 0.1,
            per_byte_ns: 0.25,
            rtt_us: 30.0,
            bandwidth_gbit_s: 25.0,
            wasm_start_us: 2.3,
            wasm_crossing_us: 0.013,
            wasm_slowdown: 1.2,
            context_switch_us: 2.4,
            zygote_fork_us: 150.0,
            container_assembled_us: 1_000.0,
            container_cold_us: 50_000.0,
        }
    }
}

impl CostParams {
    /// Microseconds to push `bytes` through the link at [`CostParams::bandwidth_gbit_s`].
    pub fn wire_us(&self, bytes: f64) -> f64 {
        // 1 Gbit/s moves 125 bytes per microsecond.
        bytes / (self.bandwidth_gbit_s * 125.0)
    }

    /// Network stack CPU, in microseconds, for `bytes` on one side.
    pub fn stack_cpu_us(&self, bytes: f64) -> f64 {
        bytes * self.per_byte_ns / 1_000.0
    }

    /// Start cost of a compute-node container obtained in the given way.
    pub fn container_start_us(&self, start: StartKind) -> f64 {
        match start {
            StartKind::Warm => 0.0,
            StartKind::Assembled => self.container_assembled_us,
            StartKind::Cold => self.container_cold_us,
        }
    }
}

/// What one invocation of a function does, as the profiler expects it (means per invocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Native CPU time of the function's own code, microseconds.
    pub compute_us: f64,
    /// Data accesses (gets/puts) per invocation.
    pub accesses: f64,
    /// Dependent rounds: accesses that must wait for the previous answer (a graph walk of k hops
    /// has k rounds; a multi-get of n keys has 1).
    pub rounds: f64,
    /// Bytes read and written per invocation.
    pub bytes: f64,
}

/// One place the invocation could run, with the live facts that change its cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub tier: Tier,
    /// How the execution context would be obtained there.
    pub start: StartKind,
    /// Expected waiting for cores, from the nodes' pushed stats: at this node, plus at the
    /// storage node holding the data once per remote dependent round.
    pub queue_us: f64,
    /// Fraction of the invocation's data that lives on this node (1.0 for the storage node that
    /// owns every key; 0.0 for a compute node).
    pub local_fraction: f64,
}

/// The estimated cost of one candidate, term by term. Latency terms are microseconds on the
/// invocation's critical path; CPU terms are microseconds of CPU spent on each tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    pub queue_us: f64,
    /// Handing the request to the node (its dispatch CPU is on the critical path).
    pub dispatch_us: f64,
    /// Instance start or isolation switch (Wasm instance + host-call crossings, or container).
    pub start_us: f64,
    /// The function's own code, scaled by the sandbox slowdown on a storage node.
    pub compute_us: f64,
    /// Accesses served from this node's memory.
    pub local_access_us: f64,
    /// Round trips: the invocation's own plus one per dependent round of remote accesses.
    pub network_rtt_us: f64,
    /// Wire time and stack CPU for the bytes that cross the network.
    pub bytes_us: f64,
    /// CPU spent on storage nodes (the scarce resource every tenant's gets and puts share).
    pub storage_cpu_us: f64,
    /// CPU spent on compute nodes.
    pub compute_cpu_us: f64,
    /// Bytes that cross the network.
    pub bytes_moved: f64,
}

impl CostBreakdown {
    /// End-to-end latency estimate: the sum of the critical-path terms.
    pub fn latency_us(&self) -> f64 {
        self.queue_us
            + self.dispatch_us
            + self.start_us
            + self.compute_us
            + self.local_access_us
            + self.network_rtt_us
            + self.bytes_us
    }
}

/// Estimate the cost of running `work` at `candidate`.
///
/// Storage node: dispatch + Wasm start + one crossing per access + compute x slowdown + local
/// accesses. Compute node: dispatch + container start + compute. On both, the share of the data
/// that is not local (all of it, on a compute node) pays one round trip per dependent round, one
/// storage-node dispatch per access, and its bytes over the wire; remote rounds and accesses are
/// scaled by that share (an expectation, assuming keys are spread evenly over rounds).
pub fn estimate(params: &CostParams, work: &Workload, candidate: &Candidate) -> CostBreakdown {
    let local = candidate.local_fraction.clamp(0.0, 1.0);
    let remote = 1.0 - local;
    let remote_accesses = work.accesses * remote;
    let remote_rounds = work.rounds * remote;
    let remote_bytes = work.bytes * remote;
    let wire = params.wire_us(remote_bytes) + 2.0 * params.stack_cpu_us(remote_bytes);
    // The invocation's own request plus one storage-node dispatch per remote access, each on the
    // critical path.
    let dispatch_us = params.dispatch_us * (1.0 + remote_accesses);
    // Every remote access is served by a storage node: its dispatch plus the stack CPU for its bytes.
    let remote_storage_cpu =
        remote_accesses * params.dispatch_us + params.stack_cpu_us(remote_bytes);
    match candidate.tier {
        Tier::Storage => {
            let start_us = params.wasm_start_us + work.accesses * params.wasm_crossing_us;
            let compute_us = work.compute_us * params.wasm_slowdown;
            let local_access_us = work.accesses * local * params.local_access_us;
            CostBreakdown {
                queue_us: candidate.queue_us,
                dispatch_us,
                start_us,
                compute_us,
                local_access_us,
                network_rtt_us: params.rtt_us * (1.0 + remote_rounds),
                bytes_us: wire,
                // This node runs the function and, as a client, the stack for its remote bytes.
                storage_cpu_us: params.dispatch_us
                    + start_us
                    + compute_us
                    + local_access_us
                    + remote_storage_cpu
                    + params.stack_cpu_us(remote_bytes),
                compute_cpu_us: 0.0,
                bytes_moved: remote_bytes,
            }
        }
        Tier::Compute => {
            let start_us = params.container_start_us(candidate.start);
            CostBreakdown {
                queue_us: candidate.queue_us,
                dispatch_us,
                start_us,
                compute_us: work.compute_us,
                local_access_us: 0.0,
                network_rtt_us: params.rtt_us * (1.0 + remote_rounds),
                bytes_us: wire,
                storage_cpu_us: remote_storage_cpu,
                compute_cpu_us: params.dispatch_us
                    + start_us
                    + work.compute_us
                    + remote_accesses * params.dispatch_us
                    + params.stack_cpu_us(remote_bytes),
                bytes_moved: remote_bytes,
            }
        }
    }
}

/// Weights of the `cost-aware` objective. Latency is the unit: the other weights say how many
/// microseconds of latency one unit of each resource is worth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Per microsecond of end-to-end latency.
    pub latency: f64,
    /// Per microsecond of storage-node CPU on an idle storage node; scaled up as it fills
    /// (see [`Weights::storage_cpu_price`]).
    pub storage_cpu: f64,
    /// Per microsecond of compute-node CPU.
    pub compute_cpu: f64,
    /// Per kilobyte moved over the network.
    pub network_kb: f64,
}

impl Default for Weights {
    fn default() -> Self {
        // Storage CPU is worth as much as latency on an idle storage node (and up to 20x on a busy
        // one): every tenant's gets and puts share it, so spending it on one function's compute
        // delays everyone's data. Lower weights let CPU-heavy work spill into a storage node that
        // data-heavy work needs, which collapses goodput under overload (sim/scenarios/
        // locality-mix.toml: weight 0.1 served 26k/s at 1.5x load, 1.0 serves the 135k/s bound).
        Self {
            latency: 1.0,
            storage_cpu: 1.0,
            compute_cpu: 0.05,
            network_kb: 0.01,
        }
    }
}

impl Weights {
    /// Price of one microsecond of storage CPU when the storage node's cores are `utilisation`
    /// busy (0..1). It grows like the M/M/1 queueing factor 1/(1-u), capped at 20x, so a busy
    /// storage node pushes CPU-heavy functions out while cheap, data-heavy ones stay.
    pub fn storage_cpu_price(&self, utilisation: f64) -> f64 {
        self.storage_cpu / (1.0 - utilisation.clamp(0.0, 0.95))
    }

    /// The single number `cost-aware` minimises.
    pub fn objective(&self, cost: &CostBreakdown, storage_utilisation: f64) -> f64 {
        self.objective_at_price(cost, self.storage_cpu_price(storage_utilisation))
    }

    /// [`Weights::objective`] with the storage CPU price already computed.
    pub fn objective_at_price(&self, cost: &CostBreakdown, storage_cpu_price: f64) -> f64 {
        self.latency * cost.latency_us()
            + storage_cpu_price * cost.storage_cpu_us
            + self.compute_cpu * cost.compute_cpu_us
            + self.network_kb * cost.bytes_moved / 1_000.0
    }
}

/// docs/design.md's crossover: the native compute time (us) below which running `work` inside the
/// storage node costs less latency than running it on a warm compute container, with everything
/// else idle. `c* = [n(d - a) + B*beta + r*rtt - x*k] / (alpha - 1)`: n accesses saving a
/// dispatch d each but paying a local access a, B bytes that no longer cross the wire, the
/// round trips of r dependent rounds, minus the isolation crossings x*k, over the extra sandbox
/// slowdown. Returns infinity when the sandbox is no slower than native.
pub fn storage_crossover_us(params: &CostParams, work: &Workload) -> f64 {
    let saved = work.accesses * (params.dispatch_us - params.local_access_us)
        + params.wire_us(work.bytes)
        + 2.0 * params.stack_cpu_us(work.bytes)
        + work.rounds * params.rtt_us
        - work.accesses * params.wasm_crossing_us
        - params.wasm_start_us;
    let extra_per_us = params.wasm_slowdown - 1.0;
    if extra_per_us <= 0.0 {
        f64::INFINITY
    } else {
        saved / extra_per_us
    }
}

#[cfg(test)]
mod tests;
