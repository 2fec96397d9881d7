//! Which invocation a worker core runs next: fair shares between tenants.
//!
//! Invocations run as futures that give the core back at every epoch tick
//! ([`crate::sandbox::Sandbox::run_async`]), so a core holds many at once: some not started yet
//! (*waiting*), some started and paused at a tick (*running*). [`FairQueue`] keeps them per
//! tenant and picks the tenant that has had the least of this core so far (least attained
//! service, the rule of CFS and of Splinter's tenant scheduler), so a tenant running N spinners
//! gets one share of the core, not N, and a tenant with a short invocation gets the core at the
//! next tick instead of after everything queued before it.
//!
//! - A tenant's service is the core time its invocations ran here. A tenant that had nothing
//!   here starts at the least served active tenant's figure, less a credit of one slice (the
//!   wake-up credit of CFS's sleepers): it cannot bank service while idle, and its first slice
//!   comes before the busy tenants' next one.
//! - Within a tenant, waiting invocations start before running ones resume (as long as the
//!   caller lets them start: its caps on running invocations), then running ones take turns.
//!
//! Pure: time comes in as the durations the caller measured; no clocks, no threads.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;
use sandstorm_naming::TenantId;

/// What to run next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<J, T> {
    /// Start this waiting invocation.
    Start(J),
    /// Resume this running one.
    Resume(T),
}

#[derive(Debug)]
struct Tenant<J, T> {
    served_ns: u64,
    waiting: VecDeque<J>,
    running: VecDeque<T>,
    /// Running invocations handed out by [`FairQueue::next`] and not yet given back.
    out: usize,
}

impl<J, T> Tenant<J, T> {
    fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }
}

/// One core's invocations, per tenant: `J` a waiting invocation, `T` a running one.
#[derive(Debug)]
pub struct FairQueue<J, T> {
    tenants: FxHashMap<TenantId, Tenant<J, T>>,
    credit_ns: u64,
    /// The least service of the tenants present, never decreasing (CFS's `min_vruntime`):
    /// where arriving tenants are placed, so several arriving at once are placed alike.
    floor_ns: u64,
}

impl<J, T> FairQueue<J, T> {
    /// An empty queue; a tenant arriving at a busy core is credited `slice` (one tick).
    pub fn new(slice: Duration) -> Self {
        Self {
            tenants: FxHashMap::default(),
            credit_ns: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            floor_ns: 0,
        }
    }

    /// Whether nothing is waiting, running or handed out.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Core time `tenant` has had here (for tests and logs).
    pub fn served(&self, tenant: TenantId) -> Option<Duration> {
        self.tenants
            .get(&tenant)
            .map(|t| Duration::from_nanos(t.served_ns))
    }

    /// Queues a new invocation of `tenant`.
    pub fn push(&mut self, tenant: TenantId, job: J) {
        if !self.tenants.contains_key(&tenant) {
            if let Some(least) = self.tenants.values().map(|t| t.served_ns).min() {
                self.floor_ns = self.floor_ns.max(least);
            }
            let served_ns = self.floor_ns.saturating_sub(self.credit_ns);
            self.tenants.insert(
                tenant,
                Tenant {
                    served_ns,
                    waiting: VecDeque::new(),
                    running: VecDeque::new(),
                    out: 0,
                },
            );
        }
        if let Some(t) = self.tenants.get_mut(&tenant) {
            t.waiting.push_back(job);
        }
    }

    /// The next invocation to run: of the least served tenant that has one it may run.
    /// `may_start(tenant)` is asked before a waiting invocation is handed out to start (and
    /// takes whatever slot it grants); a tenant it refuses can still resume a running one.
    /// `None` if nothing may run. What is handed out comes back through
    /// [`FairQueue::paused`] or [`FairQueue::finished`].
    pub fn next(
        &mut self,
        mut may_start: impl FnMut(TenantId) -> bool,
    ) -> Option<(TenantId, Next<J, T>)> {
        let mut refused: Vec<TenantId> = Vec::new();
        loop {
            let (&tenant, _) = self
                .tenants
                .iter()
                .filter(|(id, t)| t.has_work() && !refused.contains(id))
                .min_by_key(|(id, t)| (t.served_ns, id.0))?;
            let t = self.tenants.get_mut(&tenant)?;
            if !t.waiting.is_empty() && may_start(tenant) {
                let job = t.waiting.pop_front()?;
                t.out += 1;
                return Some((tenant, Next::Start(job)));
            }
            if let Some(task) = t.running.pop_front() {
                t.out += 1;
                return Some((tenant, Next::Resume(task)));
            }
            refused.push(tenant);
        }
    }

    /// A running invocation of `tenant` paused after `ran` on the core: it takes its turn again
    /// after the tenant's others.
    pub fn paused(&mut self, tenant: TenantId, task: T, ran: Duration) {
        if let Some(t) = self.charge(tenant, ran) {
            t.out = t.out.saturating_sub(1);
            t.running.push_back(task);
        }
    }

    /// An invocation of `tenant` finished after `ran` on the core (in its last turn).
    pub fn finished(&mut self, tenant: TenantId, ran: Duration) {
        let idle = self.charge(tenant, ran).is_some_and(|t| {
            t.out = t.out.saturating_sub(1);
            !t.has_work() && t.out == 0
        });
        if idle {
            self.tenants.remove(&tenant);
        }
    }

    fn charge(&mut self, tenant: TenantId, ran: Duration) -> Option<&mut Tenant<J, T>> {
        let t = self.tenants.get_mut(&tenant)?;
        t.served_ns = t
            .served_ns
            .saturating_add(u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX));
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TenantId = TenantId(1);
    const B: TenantId = TenantId(2);
    const C: TenantId = TenantId(3);
    const MS: Duration = Duration::from_millis(1);

    type Queue = FairQueue<&'static str, &'static str>;

    /// Runs the queue for `slices` turns of 1 ms; every task named `spin*` pauses, every other
    /// finishes in its first turn. Returns who ran, in order.
    fn simulate(q: &mut Queue, slices: usize, may_start: impl Fn(TenantId) -> bool) -> Vec<String> {
        let mut ran = Vec::new();
        for _ in 0..slices {
            let Some((tenant, next)) = q.next(&may_start) else {
                break;
            };
            let name = match next {
                Next::Start(n) | Next::Resume(n) => n,
            };
            ran.push(name.to_owned());
            if name.starts_with("spin") {
                q.paused(tenant, name, MS);
            } else {
                q.finished(tenant, MS);
            }
        }
        ran
    }

    #[test]
    fn spinners_of_one_tenant_get_one_share_not_one_each() {
        let mut q = Queue::new(MS);
        for spinner in ["spin1", "spin2", "spin3", "spin4"] {
            q.push(A, spinner);
        }
        // A has run its four spinners for 40 ms before B and C arrive.
        assert_eq!(simulate(&mut q, 40, |_| true).len(), 40);
        q.push(B, "b-short");
        q.push(C, "spin-c");
        // B arrives with A's service less one slice: it runs at once. Then C (placed the same
        // way) and A alternate, one slice each, whatever A's number of spinners.
        let ran = simulate(&mut q, 9, |_| true);
        assert_eq!(ran[0], "b-short");
        let c = ran.iter().filter(|n| *n == "spin-c").count();
        let a = ran
            .iter()
            .filter(|n| n.starts_with("spin") && *n != "spin-c")
            .count();
        assert_eq!((a, c), (4, 4), "{ran:?}");
        // B finished and left; the queue forgets it.
        assert_eq!(q.served(B), None);
    }

    #[test]
    fn a_tenant_that_was_idle_cannot_bank_service() {
        let mut q = Queue::new(MS);
        q.push(A, "spin-a");
        simulate(&mut q, 100, |_| true);
        // B was idle for those 100 ms; it does not get 100 ms of the core in a row now.
        q.push(B, "spin-b");
        let ran = simulate(&mut q, 6, |_| true);
        // B first (one slice of credit), then turns, ties to the lower tenant id.
        assert_eq!(
            ran,
            ["spin-b", "spin-a", "spin-b", "spin-a", "spin-b", "spin-a"]
        );
    }

    #[test]
    fn a_refused_start_lets_others_run_and_running_ones_resume() {
        let mut q = Queue::new(MS);
        q.push(A, "spin1");
        q.push(A, "spin2");
        q.push(B, "b1");
        // A may start only one invocation (its cap is reached); B may start anything.
        let mut started_a = 0;
        let mut ran = Vec::new();
        for _ in 0..5 {
            let (tenant, next) = q
                .next(|t| {
                    if t == A && started_a == 1 {
                        return false;
                    }
                    if t == A {
                        started_a += 1;
                    }
                    true
                })
                .unwrap();
            match next {
                Next::Start(n) | Next::Resume(n) => {
                    ran.push(n);
                    if n.starts_with("spin") {
                        q.paused(tenant, n, MS);
                    } else {
                        q.finished(tenant, MS);
                    }
                }
            }
        }
        // spin2 never starts: A resumes spin1 instead, B's job runs in between.
        assert_eq!(ran, ["spin1", "b1", "spin1", "spin1", "spin1"]);
        // Nothing may start and nothing is running: nothing to run.
        let mut q = Queue::new(MS);
        q.push(A, "a");
        assert_eq!(q.next(|_| false), None);
        assert!(!q.is_empty());
    }

    #[test]
    fn waiting_invocations_start_before_a_tenants_running_ones_resume() {
        let mut q = Queue::new(MS);
        q.push(A, "spin-a");
        simulate(&mut q, 3, |_| true);
        q.push(A, "a-short");
        // A's short invocation does not wait behind its own spinner.
        assert_eq!(simulate(&mut q, 2, |_| true), ["a-short", "spin-a"]);
    }
}
