//! Storage membership changes that move data: a storage node joining the key ring, or draining
//! out of it, has its key ranges handed over with their data before ownership switches.
//!
//! The ring ([`RingState`], behind [`Scheduler::ring`]) is always the ring of the nodes that own keys now; it changes only
//! here, and each change is one durable write of the [`RingRecord`] (members, drained nodes, the
//! move in progress) to the scheduler's store, so a restarted scheduler resumes a move it had
//! begun and never forgets one that switched. One move runs at a time, driven by
//! [`Scheduler::rebalance_loop`]: a registered storage node off the ring (and not drained)
//! joins, a node the admin drained (`Admin.DrainNode`) leaves.
//!
//! A move from the ring `before` to the ring `after`, for every source (each node that owns
//! keys before and loses some), over the storage nodes' `Handoff` service:
//!
//! 1. begin: the source remembers every write to a moving key that becomes visible;
//! 2. copy: pages of the moving keys, as they are, go to their new owners (`Import`, answered
//!    once durable there); then what changed meanwhile, until little is left;
//! 3. seal: the source refuses new writes to moving keys (the scheduler holds its own writes to
//!    them back until the switch); what changed since is copied until the source is settled
//!    (nothing changed, nothing in flight), and the seal is confirmed (a source that restarted
//!    forgot it, and the attempt starts again);
//! 4. switch: ring record and ring change together; compute nodes learn the new ring from
//!    their next registration answer (within a second);
//! 5. finish: sources refuse `KeyValue` reads of the keys they gave away too (and delete their
//!    copies, durably), so a stale route gets an
//!    error naming the move instead of an old value.
//!
//! Until the switch the old owners serve every read and write, so nothing is unreadable during
//! the copy. Every acknowledged write is durable in the log of the node that acknowledged it
//! and was either copied (the copy runs after it became visible) or refused. Copies are
//! idempotent, so an attempt that fails anywhere (a node killed, a call timed out) is simply
//! run again from the start under a new attempt id, which also unseals the sources.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sandstorm_naming::ring::KeyRing;
use sandstorm_naming::{NodeId, NodeRole};
use sandstorm_proto::v1 as pb;
use tracing::{info, warn};

use super::error::ApiError;
use super::state::Scheduler;
use super::store::{MoveRecord, RingRecord};

/// Pairs per export, changed and import page.
const PAGE: u32 = 1_000;
/// Copying what changed stops (and the move seals) once a round brings fewer than this.
const FEW_CHANGED: usize = 100;
/// How often the rebalancer looks for work when nothing woke it.
const IDLE: Duration = Duration::from_millis(500);
/// Pause after a failed attempt.
const RETRY: Duration = Duration::from_secs(1);

/// A move as the rebalancer runs it.
#[derive(Debug, Clone)]
struct Move {
    record: MoveRecord,
    /// This attempt's id at the storage nodes: new for every attempt.
    attempt: u64,
    vnodes: u32,
}

fn ring_of(vnodes: u32, ids: &[u32]) -> KeyRing {
    KeyRing::with_nodes(vnodes, ids.iter().map(|&n| NodeId(n)))
}

/// The key ring and its stored membership: changed only by this module, read by everything
/// that routes a key. Behind a lock of its own ([`Scheduler::ring`]).
#[derive(Debug)]
pub struct RingState {
    /// Who owns each key now: the ring of `record.members`. Shared, so a reader keeps a
    /// snapshot without holding the lock.
    owners: Arc<KeyRing>,
    /// The membership as stored: members, drained nodes, the move in progress.
    record: RingRecord,
    /// While a move is sealed (its sources refuse writes to moving keys until ownership
    /// switches): the rings before and after it.
    sealed_move: Option<(KeyRing, KeyRing)>,
}

impl RingState {
    /// The ring `record` describes, of `vnodes` virtual nodes per member.
    pub fn new(record: RingRecord, vnodes: u32) -> Self {
        Self {
            owners: Arc::new(ring_of(vnodes, &record.members)),
            record,
            sealed_move: None,
        }
    }

    /// Who owns each key now.
    pub fn owners(&self) -> Arc<KeyRing> {
        self.owners.clone()
    }

    pub fn vnodes_per_node(&self) -> u32 {
        self.owners.vnodes_per_node()
    }

    /// The node joining the ring in the move in progress, if any.
    pub fn joining(&self) -> Option<NodeId> {
        self.record
            .moving
            .as_ref()
            .filter(|m| m.join)
            .map(|m| NodeId(m.node))
    }

    /// What a node is on the ring, for the cluster status: `serving`, `joining`, `draining`,
    /// `drained` or `waiting`; empty for compute nodes.
    pub fn membership(&self, node: NodeId, role: NodeRole) -> &'static str {
        if role != NodeRole::Storage {
            return "";
        }
        let r = &self.record;
        match &r.moving {
            Some(m) if m.node == node.0 && m.join => return "joining",
            Some(m) if m.node == node.0 => return "draining",
            _ => {}
        }
        if r.members.contains(&node.0) {
            "serving"
        } else if r.drained.contains(&node.0) {
            "drained"
        } else {
            "waiting"
        }
    }

    /// Whether a write to `key` of `tenant` must wait for the sealed move to switch.
    fn write_held(&self, tenant: sandstorm_naming::TenantId, key: &[u8]) -> bool {
        self.sealed_move
            .as_ref()
            .is_some_and(|(before, after)| before.owner(tenant, key) != after.owner(tenant, key))
    }
}

impl Scheduler {
    /// Replaces the stored ring record (and the ring, if its members changed) with `record`.
    fn set_ring_record(&self, ring: &mut RingState, record: RingRecord) -> Result<(), ApiError> {
        self.store.put_ring(&record)?;
        if record.members != ring.record.members {
            ring.owners = Arc::new(ring_of(ring.vnodes_per_node(), &record.members));
            self.ring_version.send_modify(|v| *v += 1);
        }
        ring.record = record;
        Ok(())
    }

    /// A storage node registered: on an empty ring, with no move in progress, it owns every
    /// key at once (there is no data to move).
    pub fn join_empty_ring(&self, node: NodeId) -> Result<(), ApiError> {
        let mut ring = self.ring();
        let r = &ring.record;
        if !r.members.is_empty() || r.moving.is_some() || r.drained.contains(&node.0) {
            return Ok(());
        }
        let mut record = r.clone();
        record.members = vec![node.0];
        info!(
            node_id = node.0,
            "the first storage node owns the whole key ring"
        );
        self.set_ring_record(&mut ring, record)
    }

    /// `Admin.DrainNode`: records that `name` is to leave the ring; the rebalancer moves its
    /// ranges away and then takes it off.
    pub fn drain_node(&self, name: &str) -> Result<(), ApiError> {
        let (id, role) = {
            let inner = self.lock();
            let spec = inner
                .catalog
                .node_by_name(name)
                .ok_or_else(|| ApiError::NoSuchNode(name.chars().take(80).collect()))?;
            (spec.id.0, spec.role)
        };
        if role != NodeRole::Storage {
            return Err(ApiError::InvalidArgument(format!(
                "node {name} is a {role} node: only storage nodes hold key ranges to drain"
            )));
        }
        let mut ring = self.ring();
        let mut record = ring.record.clone();
        if record.drained.contains(&id) {
            return Ok(());
        }
        let staying = record
            .members
            .iter()
            .filter(|m| **m != id && !record.drained.contains(m))
            .count();
        let joining = record
            .moving
            .as_ref()
            .is_some_and(|m| m.join && m.node != id);
        if record.members.contains(&id) && staying == 0 && !joining {
            return Err(ApiError::Precondition(format!(
                "node {name} is the last storage node on the key ring: its data would have \
                 nowhere to go (add a storage node first)"
            )));
        }
        record.drained.push(id);
        record.drained.sort_unstable();
        info!(node = %name, node_id = id, "drain requested");
        self.set_ring_record(&mut ring, record)?;
        drop(ring);
        self.rebalance_wake.notify_one();
        Ok(())
    }

    /// The move to run now, recorded durably if it is new: the one in progress, else a
    /// registered storage node off the ring joins, else a drained node on it leaves.
    fn next_move(&self) -> Result<Option<Move>, ApiError> {
        // The registered, live storage nodes, read before the ring: the cluster lock is
        // never taken under a leaf lock.
        let live_storage: Vec<u32> = {
            let inner = self.lock();
            inner
                .catalog
                .nodes()
                .iter()
                .filter(|n| {
                    n.role == NodeRole::Storage
                        && inner
                            .nodes
                            .get(n.id.0 as usize)
                            .is_some_and(|e| e.session != 0)
                        && inner.view.node(n.id).is_some_and(|v| v.alive)
                })
                .map(|n| n.id.0)
                .collect()
        };
        let mut ring = self.ring();
        let vnodes = ring.vnodes_per_node();
        let attempt = self.next_invocation_id();
        if let Some(record) = ring.record.moving.clone() {
            return Ok(Some(Move {
                record,
                attempt,
                vnodes,
            }));
        }
        let r = ring.record.clone();
        let joiner = live_storage
            .iter()
            .find(|n| !r.members.contains(n) && !r.drained.contains(n));
        let leaver = r.members.iter().find(|m| r.drained.contains(m));
        let record = match (joiner, leaver) {
            (Some(&n), _) => {
                let mut after = r.members.clone();
                after.push(n);
                after.sort_unstable();
                MoveRecord {
                    node: n,
                    join: true,
                    before: r.members.clone(),
                    after,
                }
            }
            (None, Some(&m)) if r.members.len() > 1 => MoveRecord {
                node: m,
                join: false,
                before: r.members.clone(),
                after: r.members.iter().copied().filter(|&n| n != m).collect(),
            },
            _ => return Ok(None),
        };
        let mut next = r;
        next.moving = Some(record.clone());
        self.set_ring_record(&mut ring, next)?;
        info!(node_id = record.node, join = record.join, before = ?record.before, after = ?record.after, "key-ring move recorded");
        Ok(Some(Move {
            record,
            attempt,
            vnodes,
        }))
    }

    /// Runs the key-ring moves, one at a time, for as long as the scheduler runs.
    pub async fn rebalance_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.rebalance_wake.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
            let mv = match self.next_move() {
                Ok(Some(mv)) => mv,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "could not record a key-ring move");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // Each storage node's share of the tenants' quotas changes with their number:
            // a joining node counts from the start of its move, a draining one until its end.
            self.tenants().allowances_changed();
            self.push_allowances(None).await;
            if mv.record.before.is_empty() {
                // Nothing is stored anywhere yet: the ring simply changes.
                if let Err(e) = self.switch(&mv) {
                    warn!(error = %e, "could not switch the key ring");
                }
                continue;
            }
            match self.run_move(&mv).await {
                Ok(moved) => {
                    info!(
                        node_id = mv.record.node,
                        join = mv.record.join,
                        pairs_copied = moved,
                        "key-ring move done: ownership switched"
                    );
                    self.tenants().allowances_changed();
                    self.push_allowances(None).await;
                }
                Err(e) => {
                    self.ring().sealed_move = None;
                    warn!(node_id = mv.record.node, join = mv.record.join, error = %e, "key-ring move attempt failed; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// The storage nodes keys move out of.
    fn sources(mv: &Move) -> Vec<u32> {
        if mv.record.join {
            mv.record.before.clone()
        } else {
            vec![mv.record.node]
        }
    }

    /// One attempt at a move; the pairs it copied.
    async fn run_move(&self, mv: &Move) -> Result<u64, ApiError> {
        let sources = Self::sources(mv);
        let mut copied = 0;
        for &s in &sources {
            self.begin(mv, s, false, false).await?;
            copied += self.copy_all(mv, s).await?;
            copied += self.copy_changed(mv, s, false).await?;
        }
        // The scheduler holds its own writes to moving keys back before the sources refuse
        // them, so none of its writes meets a refusal.
        self.ring().sealed_move = Some((
            ring_of(mv.vnodes, &mv.record.before),
            ring_of(mv.vnodes, &mv.record.after),
        ));
        for &s in &sources {
            self.begin(mv, s, true, false).await?;
        }
        for &s in &sources {
            copied += self.copy_changed(mv, s, true).await?;
            // A source that restarted since it was sealed forgot the seal (and what was
            // written to it since): this fails, and the attempt starts again.
            if !self.begin(mv, s, true, false).await? {
                return Err(ApiError::Precondition(format!(
                    "storage node {} restarted during the move",
                    self.lock().node_name(s)
                )));
            }
        }
        self.switch(mv)?;
        for &s in &sources {
            if let Err(e) = self.begin(mv, s, true, true).await {
                warn!(node_id = s, error = %e, "could not tell a source its move finished");
            }
        }
        Ok(copied)
    }

    /// Ownership switches: the ring becomes `after`, durably, with the move done.
    fn switch(&self, mv: &Move) -> Result<(), ApiError> {
        let mut ring = self.ring();
        let mut record = ring.record.clone();
        record.members = mv.record.after.clone();
        record.moving = None;
        self.set_ring_record(&mut ring, record)?;
        ring.sealed_move = None;
        Ok(())
    }

    /// The node `id`'s name and handoff channel.
    fn handoff_client(
        &self,
        id: u32,
    ) -> Result<
        (
            String,
            pb::handoff_client::HandoffClient<tonic::transport::Channel>,
        ),
        ApiError,
    > {
        let inner = self.lock();
        let entry = inner
            .nodes
            .get(id as usize)
            .ok_or_else(|| ApiError::NoSuchNode(format!("node-{id}")))?;
        Ok((inner.node_name(id), entry.handoff.clone()))
    }

    /// Begins (seals, finishes) the move at source `s`; whether `s` knew it already.
    async fn begin(&self, mv: &Move, s: u32, seal: bool, finish: bool) -> Result<bool, ApiError> {
        let (name, mut client) = self.handoff_client(s)?;
        let call = client.begin(pb::HandoffRequest {
            move_id: mv.attempt,
            node_id: s,
            before: mv.record.before.clone(),
            after: mv.record.after.clone(),
            vnodes: mv.vnodes,
            seal,
            finish,
        });
        Ok(self.on_node(&name, call).await?.known)
    }

    /// Copies every moving key of source `s` as it is now; how many.
    async fn copy_all(&self, mv: &Move, s: u32) -> Result<u64, ApiError> {
        let (name, mut client) = self.handoff_client(s)?;
        let mut cursor = None;
        let mut copied = 0;
        loop {
            let call = client.export(pb::ExportRequest {
                move_id: mv.attempt,
                cursor,
                limit: PAGE,
            });
            let page = self.on_node(&name, call).await?;
            copied += page.pairs.len() as u64;
            self.import(page.pairs).await?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(copied),
            }
        }
    }

    /// Copies what changed at source `s`: until a round brings few, or (`settle`, the move
    /// sealed) until the source is settled. How many pairs.
    async fn copy_changed(&self, mv: &Move, s: u32, settle: bool) -> Result<u64, ApiError> {
        let (name, mut client) = self.handoff_client(s)?;
        let mut copied = 0;
        loop {
            let call = client.changed(pb::ChangedRequest {
                move_id: mv.attempt,
                limit: PAGE,
            });
            let page = self.on_node(&name, call).await?;
            let n = page.pairs.len();
            copied += n as u64;
            self.import(page.pairs).await?;
            if settle {
                if page.settled {
                    return Ok(copied);
                }
                if n == 0 {
                    // Writes accepted before the seal are still on their way to the disk.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } else if n < FEW_CHANGED {
                return Ok(copied);
            }
        }
    }

    /// Stores copied pairs at their new owners, durably.
    async fn import(&self, pairs: Vec<pb::MovedPair>) -> Result<(), ApiError> {
        let mut by_owner: BTreeMap<u32, Vec<pb::MovedPair>> = BTreeMap::new();
        for p in pairs {
            by_owner.entry(p.to).or_default().push(p);
        }
        for (to, pairs) in by_owner {
            let (name, mut client) = self.handoff_client(to)?;
            let call = client.import(pb::ImportRequest { pairs });
            self.on_node(&name, call).await?;
        }
        Ok(())
    }

    /// Waits while a sealed move holds writes to `key` back (until its switch, at most the
    /// RPC deadline); UNAVAILABLE naming the move if it does not switch by then.
    pub async fn await_write_turn(
        &self,
        tenant: sandstorm_naming::TenantId,
        key: &[u8],
    ) -> Result<(), ApiError> {
        let mut version = self.ring_version.subscribe();
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout;
        while self.ring().write_held(tenant, key) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::NoNode(
                    "the key is moving between storage nodes and the move did not switch \
                     ownership in time; try again"
                        .into(),
                ));
            }
            // The switch bumps the version; an abandoned attempt just unseals.
            tokio::select! {
                _ = version.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        Ok(())
    }

    /// Whether a write to `key` is held back now, or the ring switched since `version`: a
    /// call that failed then is routed again.
    pub fn route_changed(
        &self,
        tenant: sandstorm_naming::TenantId,
        key: &[u8],
        version: u64,
    ) -> bool {
        *self.ring_version.borrow() != version || self.ring().write_held(tenant, key)
    }
}
