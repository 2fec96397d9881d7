//! The scenario file's schema as written: serde structs, every one `deny_unknown_fields`, with
//! their documented defaults. Validation (module `check`) turns them into a [`super::Scenario`].

use sandstorm_cost_model::{CostParams, Weights};
use serde::{Deserialize, Serialize};

use crate::profile::DataClass;
use crate::trace::{SyntheticSpec, TraceFormat};

/// A scenario file as written (before validation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default = "default_policies")]
    pub policies: Vec<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Vec<String>,
    #[serde(default)]
    pub bound: bool,
    pub trace: TraceSection,
    pub cluster: Cluster,
    #[serde(default)]
    pub costs: CostParams,
    #[serde(default)]
    pub weights: Weights,
    #[serde(default)]
    pub instances: Instances,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub load: LoadSection,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default)]
    pub peer: Vec<PeerSection>,
}

fn one() -> u64 {
    1
}
fn default_policies() -> Vec<String> {
    vec!["cost-aware".into()]
}
fn default_keep_alive() -> Vec<String> {
    vec!["fixed:10m".into()]
}

/// `[trace]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSection {
    pub format: TraceFormat,
    /// A directory (azure2019) or a file (azure2021), relative to the scenario's directory.
    pub path: Option<String>,
    /// azure2019 only; default `d01`.
    pub day: Option<String>,
    /// azure2019 only: 1-based minute columns `[start, end)`.
    pub minutes: Option<[u32; 2]>,
    /// synthetic only.
    pub synthetic: Option<SyntheticSpec>,
}

/// `[cluster]`: the simulated nodes. Memory 0 on storage nodes means "not modelled".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    pub storage_nodes: u32,
    pub storage_cores: u32,
    pub storage_memory_mb: u64,
    pub compute_nodes: u32,
    pub compute_cores: u32,
    pub compute_memory_mb: u64,
    /// How compute nodes share cores: `fifo` (at most one invocation per core, the rest wait;
    /// default) or `shared` (all run, cores shared fairly; the DSLab FaaS model).
    pub compute_cpu: crate::engine::CpuModel,
    /// How many invocations a node takes at once, and what happens to one no node can take:
    /// `limited` (default; the placement's admission limit, `cores x (1 + 8)` running plus
    /// waiting, sends the rest to other nodes; one no node takes is rejected), `unlimited` (a
    /// node takes whatever is placed on it, as DSLab FaaS's hosts do; still rejected when no node
    /// has memory) or `queue` (as `unlimited`, but one no node can take waits FIFO at a host
    /// until it can run, as DSLab FaaS's invokers queue it).
    pub admission: Admission,
}

/// `[cluster] admission`: whether a node turns invocations away when it is full of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// A node takes at most `cores x (1 + max_queue_per_core)` invocations at once (the
    /// placement core's admission limit, as the live scheduler applies it).
    #[default]
    Limited,
    /// No per-node limit: the placement policy alone decides, and an overloaded node with
    /// `compute_cpu = "shared"` just runs everything slower. DSLab FaaS's hosts admit every
    /// invocation their scheduler sends them, so reproducing its figures needs this.
    Unlimited,
    /// As [`Admission::Unlimited`], and an invocation that no node can take (no warm context
    /// with room, no memory for a new one) waits at a compute host, FIFO, until that host can
    /// run it, instead of being rejected (see the engine's `queue` module). DSLab FaaS's
    /// invokers do this.
    Queue,
}

/// The unit that shares warm execution contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceUnit {
    /// All functions of an app share its contexts (Azure's keep-alive unit).
    #[default]
    App,
    /// Each function has its own.
    Function,
}

/// `[instances]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Instances {
    pub per: InstanceUnit,
    /// Invocations one context runs at once (>= 1).
    pub concurrency: u32,
    /// Pre-created container parts per compute node; 0: every cold start builds from nothing.
    pub pool_per_node: u32,
    /// Time to refill one pool slot in the background, us.
    pub pool_refill_us: u64,
    /// Which idle context of an app a node reuses: `most-recent` (default) or `first-in-set`.
    pub reuse: crate::engine::ReuseOrder,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            per: InstanceUnit::App,
            concurrency: 1,
            pool_per_node: 0,
            pool_refill_us: 1_000,
            reuse: crate::engine::ReuseOrder::MostRecent,
        }
    }
}

/// How `[data]` profiles are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    #[default]
    None,
    Generated,
    File,
}

/// `[data]`; see [`crate::profile`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    #[serde(default)]
    pub mode: DataMode,
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default)]
    pub classes: Vec<DataClass>,
    pub file: Option<String>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            mode: DataMode::None,
            seed: 1,
            classes: Vec::new(),
            file: None,
        }
    }
}

/// `[load]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    #[serde(default = "default_scales")]
    pub scales: Vec<f64>,
}

fn default_scales() -> Vec<f64> {
    vec![1.0]
}

impl Default for LoadSection {
    fn default() -> Self {
        Self {
            scales: default_scales(),
        }
    }
}

/// `[slo]`: goodput counts completions within `max(latency_us, slowdown x unloaded time)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    pub latency_us: u64,
    pub slowdown: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            latency_us: 0,
            slowdown: 10.0,
        }
    }
}

/// `[[peer]]`: a reference figure printed beside ours.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub keep_alive: String,
    pub source: String,
    pub cold_starts: u64,
    pub invocations: u64,
}
