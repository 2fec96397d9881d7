//! Placement policies: which roles each one considers and how it scores a candidate (lower wins).
//!
//! Every policy sees the same filtered, costed candidates; they differ only in [`Policy::allows`]
//! and [`Policy::score`], so comparing them in the simulator compares decisions, nothing else.

use std::fmt;
use std::str::FromStr;

use sandstorm_naming::NodeRole;
use serde::{Deserialize, Serialize};

use super::{NodeView, PlacementRequest, PlacerConfig, splitmix64};

/// A placement policy, selectable by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Minimise docs/design.md's weighted objective (latency, storage CPU priced by how busy the
    /// storage node is, compute CPU, bytes moved) over both tiers. The default.
    CostAware,
    /// Every invocation inside a storage node (the cheapest one by the objective: normally the
    /// one holding the data).
    AlwaysStorage,
    /// Every invocation on a compute node (the cheapest one by the objective: a warm one if any).
    AlwaysCompute,
    /// The node with the fewest invocations per core, preferring nodes with an idle warm context
    /// of the function, as OpenWhisk and Knative route to a warm container first.
    LeastLoaded,
    /// Any node that passes the filters, uniformly (seeded by the invocation id).
    Random,
    /// OpenWhisk's home invoker: compute nodes probed from `hash(tenant, function) mod n` in steps
    /// of a size co-prime with n; the first that passes the filters wins.
    HashHome,
    /// Cloudburst-style data affinity: the storage node holding most of the data, unless it is
    /// busier than `busy_threshold`; then the least-loaded compute node.
    DataAffinity,
    /// The first node, in id order, that passes the filters, preferring nodes with an idle warm
    /// context: the DSLab FaaS simulator's basic scheduler, which packs work onto few nodes.
    FirstFit,
}

/// What a policy scores a candidate on.
#[derive(Clone, Copy)]
pub(super) struct ScoreInput<'a, 'r> {
    pub config: &'a PlacerConfig,
    pub req: &'a PlacementRequest<'r>,
    pub node: &'a NodeView,
    /// An idle warm context of the app is on the node.
    pub warm: bool,
    /// Share of the invocation's data on the node.
    pub local_fraction: f64,
    /// The cost model's weighted objective (0 when the policy does not use it and the decision
    /// is not recorded).
    pub objective: f64,
    pub compute_nodes: u32,
}

/// A policy name that names no policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown placement policy `{}`; known policies: {}",
            self.0,
            Policy::names().join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}

impl Policy {
    pub const ALL: [Policy; 8] = [
        Policy::CostAware,
        Policy::AlwaysStorage,
        Policy::AlwaysCompute,
        Policy::LeastLoaded,
        Policy::Random,
        Policy::HashHome,
        Policy::DataAffinity,
        Policy::FirstFit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::CostAware => "cost-aware",
            Policy::AlwaysStorage => "always-storage",
            Policy::AlwaysCompute => "always-compute",
            Policy::LeastLoaded => "least-loaded",
            Policy::Random => "random",
            Policy::HashHome => "hash-home",
            Policy::DataAffinity => "data-affinity",
            Policy::FirstFit => "first-fit",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|p| p.name()).collect()
    }

    /// Whether the policy's score is the cost model's objective (otherwise the candidates need
    /// not be costed unless the decision is recorded).
    pub fn uses_objective(self) -> bool {
        matches!(
            self,
            Policy::CostAware | Policy::AlwaysStorage | Policy::AlwaysCompute
        )
    }

    /// Whether the policy may score a sample of the nodes (see `PlacerConfig::sample`). Policies
    /// defined by a fixed order over all nodes (a home, the first fit) must see every node.
    pub fn samples(self) -> bool {
        !matches!(self, Policy::HashHome | Policy::FirstFit)
    }

    /// Whether the policy places anything on nodes of `role`.
    pub fn allows(self, role: NodeRole) -> bool {
        match self {
            Policy::AlwaysStorage => role == NodeRole::Storage,
            Policy::AlwaysCompute | Policy::HashHome | Policy::FirstFit => {
                role == NodeRole::Compute
            }
            _ => true,
        }
    }

    /// The policy's score of a candidate that passed the filters; lower wins, infinite never
    /// wins.
    #[inline(always)]
    pub(super) fn score(self, c: &ScoreInput<'_, '_>) -> f64 {
        let ScoreInput {
            config,
            req,
            node,
            warm,
            local_fraction,
            objective,
            compute_nodes,
        } = *c;
        match self {
            Policy::CostAware | Policy::AlwaysStorage | Policy::AlwaysCompute => objective,
            Policy::LeastLoaded => node.utilisation() - if warm { 2.0 } else { 0.0 },
            // The tie-break hash alone decides: every candidate scores the same.
            Policy::Random => 0.0,
            Policy::HashHome => hash_home_probe(req, node, compute_nodes) as f64,
            Policy::FirstFit => f64::from(node.id.0) - if warm { f64::from(u32::MAX) } else { 0.0 },
            Policy::DataAffinity => match node.role {
                NodeRole::Storage if local_fraction > 0.0 => {
                    if node.utilisation() < config.busy_threshold {
                        -local_fraction
                    } else {
                        f64::INFINITY
                    }
                }
                NodeRole::Storage => f64::INFINITY,
                NodeRole::Compute => 1.0 + node.utilisation() - if warm { 1.0 } else { 0.0 },
            },
        }
    }
}

/// Position of `node` in the invocation's OpenWhisk probe sequence over the `n` compute nodes:
/// the home `h = hash(tenant, function) mod n`, then `h + s`, `h + 2s`, ... (mod n) with a step
/// `s` co-prime with n, chosen by the hash too. Solving `h + k*s = ordinal (mod n)` for k gives
/// the position without walking the sequence.
fn hash_home_probe(req: &PlacementRequest<'_>, node: &NodeView, n: u32) -> u64 {
    let n = u64::from(n.max(1));
    let key = splitmix64(u64::from(req.tenant.0) << 32 | u64::from(req.function.0));
    let home = key % n;
    let step = coprime_step(n, key >> 32);
    let delta = (u64::from(node.ordinal) % n + n - home) % n;
    let inverse = mod_inverse(step, n);
    ((u128::from(delta) * u128::from(inverse)) % u128::from(n)) as u64
}

/// A step in 1..n co-prime with n, picked by `pick` among the small primes that do not divide n
/// (1 if none does, or n <= 2).
fn coprime_step(n: u64, pick: u64) -> u64 {
    const PRIMES: [u64; 6] = [3, 5, 7, 11, 13, 17];
    let usable: [u64; 6] = PRIMES.map(|p| if p < n && !n.is_multiple_of(p) { p } else { 1 });
    usable[(pick % 6) as usize]
}

/// The inverse of `a` modulo `n` (a and n co-prime), by the extended Euclidean algorithm.
fn mod_inverse(a: u64, n: u64) -> u64 {
    let (mut old_r, mut r) = (i128::from(a), i128::from(n));
    let (mut old_s, mut s) = (1i128, 0i128);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    old_s.rem_euclid(i128::from(n)) as u64
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}
