//! The cost model's calibration, per node and per kind.
//!
//! Every node has its own [`Calibrator`], fed with the costs it measured itself (a compute
//! node's warm, assembled and cold starts; a storage node's Wasm starts, dispatch and local
//! accesses; the round trips a compute node's data calls waited). A candidate on a node is
//! costed with the cluster's parameters overlaid with that node's measured ones
//! ([`Placer::set_node_params`]), each weighed against the cluster's figure by its number of
//! samples ([`NODE_PRIOR_SAMPLES`]): a node's first few measurements (say, a restarted node's
//! cold caches) cannot on their own price it out of every decision, and so out of the
//! measurements that would correct them. The cluster's calibrator takes every node's measurements
//! together: it costs what a node has not measured itself (a compute node just joined costs
//! its starts as the other compute nodes measured theirs) and is what `ClusterStatus` shows
//! without a node name.
//!
//! Agents report, per kind, how many measurements they took since they started and their sum;
//! a sample here is one measurement, so only the difference from the node's previous report is
//! folded in: a stats message with nothing new (most of them, every 10 ms) is no sample.

use sandstorm_cost_model::{Calibrator, CostParams, SampleKind};
use sandstorm_naming::NodeId;
use sandstorm_proto::v1 as pb;

use crate::placement::Placer;

/// How many measurements the cluster's figure counts as when weighed against a node's own:
/// after this many of its own, a node's figure has half the say; after 100, 86%.
pub const NODE_PRIOR_SAMPLES: u32 = 16;

/// The wire kind of a cost sample, if it is one this scheduler calibrates.
pub fn sample_kind(kind: i32) -> Option<SampleKind> {
    use pb::cost_sample::Kind;
    match Kind::try_from(kind).ok()? {
        Kind::RoundTrip => Some(SampleKind::RoundTrip),
        Kind::Dispatch => Some(SampleKind::Dispatch),
        Kind::WasmStart => Some(SampleKind::WasmStart),
        Kind::ContainerAssembly => Some(SampleKind::ContainerAssembly),
        Kind::ContainerCold => Some(SampleKind::ContainerCold),
        Kind::LocalAccess => Some(SampleKind::LocalAccess),
        Kind::WarmStart => Some(SampleKind::WarmStart),
        Kind::Unspecified => None,
    }
}

/// The calibrated parameters, with the name `ClusterStatus` gives each.
pub const NAMED: [(&str, SampleKind); 7] = [
    ("rtt_us", SampleKind::RoundTrip),
    ("dispatch_us", SampleKind::Dispatch),
    ("wasm_start_us", SampleKind::WasmStart),
    ("warm_start_us", SampleKind::WarmStart),
    ("container_assembled_us", SampleKind::ContainerAssembly),
    ("container_cold_us", SampleKind::ContainerCold),
    ("local_access_us", SampleKind::LocalAccess),
];

/// One node's calibrator, and the running totals of its agent's last report.
#[derive(Debug, Clone)]
struct NodeCalibration {
    calibrator: Calibrator,
    /// Per kind: (count, total micros) as last reported.
    reported: [(u64, f64); SampleKind::ALL.len()],
}

/// The cluster's calibrator and every node's.
#[derive(Debug, Clone)]
pub struct Calibration {
    defaults: CostParams,
    cluster: Calibrator,
    /// By `NodeId.0`.
    nodes: Vec<NodeCalibration>,
}

/// A measured parameter as `ClusterStatus` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    /// `None`: the cluster's.
    pub node: Option<NodeId>,
    pub name: &'static str,
    pub micros: f64,
    pub samples: u32,
}

impl Calibration {
    /// Nothing measured yet: every parameter is its default.
    pub fn new(defaults: CostParams) -> Self {
        Self {
            defaults,
            cluster: Calibrator::new(defaults),
            nodes: Vec::new(),
        }
    }

    /// The cluster's calibrator (every node's measurements together).
    pub fn cluster(&self) -> &Calibrator {
        &self.cluster
    }

    fn node_mut(&mut self, node: NodeId) -> &mut NodeCalibration {
        let i = node.0 as usize;
        if self.nodes.len() <= i {
            let fresh = NodeCalibration {
                calibrator: Calibrator::new(self.defaults),
                reported: [(0, 0.0); SampleKind::ALL.len()],
            };
            self.nodes.resize(i + 1, fresh);
        }
        &mut self.nodes[i]
    }

    /// Folds the measurements in `samples` (a stats message of `node`) that are new since its
    /// previous message into its calibrator and the cluster's, and gives `placer` the new
    /// parameters. A report whose count went down is of a restarted agent: all of it is new.
    /// Returns how many measurements were new; a malformed sample (a total that is not a
    /// non-negative number) is skipped and named in the error list.
    pub fn fold_samples(
        &mut self,
        node: NodeId,
        samples: &[pb::CostSample],
        placer: &mut Placer,
    ) -> (u64, Vec<String>) {
        let mut new = 0u64;
        let mut errors = Vec::new();
        for sample in samples {
            let Some(kind) = sample_kind(sample.kind) else {
                continue;
            };
            let entry = self.node_mut(node);
            let (last_count, last_total) = entry.reported[kind as usize];
            let (count, total) = if sample.count < last_count {
                (sample.count, sample.total_micros)
            } else {
                (sample.count - last_count, sample.total_micros - last_total)
            };
            if count == 0 {
                continue;
            }
            let n = u32::try_from(count).unwrap_or(u32::MAX);
            let mean = total / count as f64;
            match entry.calibrator.observe_many(kind, mean, n) {
                Ok(()) => {
                    entry.reported[kind as usize] = (sample.count, sample.total_micros);
                    // Valid for the node: valid for the cluster.
                    let _ = self.cluster.observe_many(kind, mean, n);
                    new += count;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.apply(node, placer);
        (new, errors)
    }

    /// One measurement of `kind` taken at `node` by the scheduler itself (a compute run's
    /// round trips).
    pub fn observe(&mut self, node: NodeId, kind: SampleKind, micros: f64, placer: &mut Placer) {
        if self.node_mut(node).calibrator.observe(kind, micros).is_ok() {
            let _ = self.cluster.observe(kind, micros);
            self.apply(node, placer);
        }
    }

    /// The parameters `node` is costed with: the cluster's, overlaid with its own measured ones
    /// (weighed by their number against the cluster's).
    pub fn params_of(&self, node: NodeId) -> CostParams {
        self.nodes
            .get(node.0 as usize)
            .map_or(*self.cluster.params(), |n| {
                n.calibrator
                    .overlay(self.cluster.params(), NODE_PRIOR_SAMPLES)
            })
    }

    /// Gives `placer` the cluster's parameters and `node`'s. (Other nodes' overlays take a change
    /// of the cluster's parameters at their own next report.)
    fn apply(&self, node: NodeId, placer: &mut Placer) {
        placer.set_params(*self.cluster.params());
        placer.set_node_params(node, Some(self.params_of(node)));
    }

    /// Every measured parameter: the cluster's (all of them, measured or still the default),
    /// then each node's that it measured itself.
    pub fn entries(&self) -> Vec<Calibrated> {
        let cluster = NAMED.iter().map(|&(name, kind)| Calibrated {
            node: None,
            name,
            micros: kind.of(self.cluster.params()),
            samples: self.cluster.samples(kind),
        });
        let nodes = self.nodes.iter().enumerate().flat_map(|(i, n)| {
            NAMED.iter().filter_map(move |&(name, kind)| {
                let samples = n.calibrator.samples(kind);
                (samples > 0).then(|| Calibrated {
                    node: Some(NodeId(i as u32)),
                    name,
                    micros: kind.of(n.calibrator.params()),
                    samples,
                })
            })
        });
        cluster.chain(nodes).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{Placer, PlacerConfig, Policy};

    fn sample(kind: pb::cost_sample::Kind, count: u64, total_micros: f64) -> pb::CostSample {
        pb::CostSample {
            kind: kind.into(),
            micros: 0.0,
            count,
            total_micros,
        }
    }

    #[test]
    fn samples_count_measurements_not_messages() {
        use pb::cost_sample::Kind;
        let mut cal = Calibration::new(CostParams::default());
        let mut placer = Placer::new(Policy::CostAware, PlacerConfig::default());
        let node = NodeId(1);
        // Three cold starts of 9 ms in all, reported by 50 messages in a row.
        for _ in 0..50 {
            cal.fold_samples(
                node,
                &[sample(Kind::ContainerCold, 3, 27_000.0)],
                &mut placer,
            );
        }
        let samples = |cal: &Calibration| cal.cluster().samples(SampleKind::ContainerCold);
        assert_eq!(samples(&cal), 3);
        assert_eq!(placer.params_of(node).container_cold_us, 9_000.0);
        // One more, of 13 ms: the fourth sample.
        let (new, errors) = cal.fold_samples(
            node,
            &[sample(Kind::ContainerCold, 4, 40_000.0)],
            &mut placer,
        );
        assert_eq!((new, errors.len(), samples(&cal)), (1, 0, 4));
        assert_eq!(placer.params_of(node).container_cold_us, 10_000.0);
        // The agent restarted: its counts begin again, and are new.
        let (new, _) = cal.fold_samples(
            node,
            &[sample(Kind::ContainerCold, 1, 10_000.0)],
            &mut placer,
        );
        assert_eq!((new, samples(&cal)), (1, 5));
    }

    #[test]
    fn each_node_is_costed_with_its_own_measurements_and_each_kind_is_its_own() {
        use pb::cost_sample::Kind;
        let defaults = CostParams::default();
        let mut cal = Calibration::new(defaults);
        let mut placer = Placer::new(Policy::CostAware, PlacerConfig::default());
        let (storage, compute, other) = (NodeId(0), NodeId(1), NodeId(2));
        cal.fold_samples(storage, &[sample(Kind::WasmStart, 2, 10.0)], &mut placer);
        cal.fold_samples(
            compute,
            &[
                sample(Kind::WarmStart, 4, 800.0),
                sample(Kind::ContainerAssembly, 1, 3_000.0),
            ],
            &mut placer,
        );
        let s = placer.params_of(storage);
        let c = placer.params_of(compute);
        assert_eq!(s.wasm_start_us, 5.0);
        // A compute node's starts are not the storage node's Wasm start, nor the other way.
        assert_eq!(
            c.wasm_start_us, 5.0,
            "the cluster's, not measured at the node"
        );
        assert_eq!(
            (c.zygote_fork_us, c.container_assembled_us),
            (200.0, 3_000.0)
        );
        assert_eq!(s.zygote_fork_us, defaults.zygote_fork_us);
        assert_eq!(s.container_assembled_us, defaults.container_assembled_us);
        // A node that measured nothing is costed with the cluster's figures.
        assert_eq!(*placer.params_of(other), placer.config().params);
        assert_eq!(placer.config().params.container_assembled_us, 3_000.0);
        // The round trip a compute run measured is that node's.
        cal.observe(compute, SampleKind::RoundTrip, 90.0, &mut placer);
        assert_eq!(placer.params_of(compute).rtt_us, 90.0);
        let names: Vec<_> = cal
            .entries()
            .into_iter()
            .filter(|e| e.node == Some(compute))
            .map(|e| (e.name, e.samples))
            .collect();
        assert_eq!(
            names,
            [
                ("rtt_us", 1),
                ("warm_start_us", 4),
                ("container_assembled_us", 1)
            ]
        );
    }

    #[test]
    fn a_nodes_first_slow_measurements_do_not_price_it_out() {
        use pb::cost_sample::Kind;
        let mut cal = Calibration::new(CostParams::default());
        let mut placer = Placer::new(Policy::CostAware, PlacerConfig::default());
        let (steady, restarted) = (NodeId(0), NodeId(1));
        cal.fold_samples(
            steady,
            &[sample(Kind::WasmStart, 200, 1_000.0)],
            &mut placer,
        );
        // Two starts of 50 us each, with cold caches.
        cal.fold_samples(restarted, &[sample(Kind::WasmStart, 2, 100.0)], &mut placer);
        let cluster = cal.cluster().params().wasm_start_us;
        let own = placer.params_of(restarted).wasm_start_us;
        let weighed = (2.0 * 50.0 + f64::from(NODE_PRIOR_SAMPLES) * cluster)
            / f64::from(2 + NODE_PRIOR_SAMPLES);
        assert!((own - weighed).abs() < 1e-9, "{own} vs {weighed}");
        assert!(own < 15.0, "two slow starts weigh little: {own} us");
        // Its own figure takes over as its measurements accumulate.
        cal.fold_samples(
            restarted,
            &[sample(Kind::WasmStart, 402, 20_100.0)],
            &mut placer,
        );
        assert!(placer.params_of(restarted).wasm_start_us > 40.0);
    }

    #[test]
    fn a_malformed_sample_is_named_and_skipped() {
        use pb::cost_sample::Kind;
        let mut cal = Calibration::new(CostParams::default());
        let mut placer = Placer::new(Policy::CostAware, PlacerConfig::default());
        let (new, errors) = cal.fold_samples(
            NodeId(0),
            &[
                sample(Kind::Dispatch, 2, -5.0),
                sample(Kind::LocalAccess, 1, 0.5),
            ],
            &mut placer,
        );
        assert_eq!(new, 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("Dispatch"), "{}", errors[0]);
        assert_eq!(cal.cluster().samples(SampleKind::Dispatch), 0);
        assert_eq!(sample_kind(99), None);
        assert_eq!(
            sample_kind(Kind::ContainerCold as i32),
            Some(SampleKind::ContainerCold)
        );
    }
}
