//! Worker threads of a storage node: one per core the node gives to functions, each with its own
//! run queue, so an invocation runs start to finish on one core and per-core statistics mean what
//! they say. A new invocation goes to the core with the shortest queue.
//!
//! Each worker interleaves the invocations it holds: they run as futures that give the core back
//! at every epoch tick, and [`super::fair::FairQueue`] chooses which runs next, by the least
//! core time each tenant has had. Long or spinning functions therefore cannot hold a core
//! against other tenants: an invocation of a tenant that had nothing here runs at the next tick.
//! Two caps per tenant over the whole node (see [`WorkerOptions`]) keep one tenant from taking
//! every instance slot or every queue place: invocations past the running cap wait unstarted,
//! and one past the queued cap is refused with [`QueueError::TenantFull`]. A core's busy time
//! is counted slice by slice as it runs, so the stats show a core full of spinners as busy.
//! Workers run at a far lower CPU weight than the agent's own threads
//! ([`crate::scheduling::run_below_agent`]): a core full of spinners does not delay the
//! threads that carry other tenants' requests to it and their answers back.
//!
//! The node's local bus (SAND) lives here too: the consecutive steps of a chain are one job, run
//! back to back on one core, each step's output moved into the next step's input without leaving
//! the thread. [`ChainExecuted`] says how long each hand-off took.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use rustc_hash::FxHashMap;
use sandstorm_naming::TenantId;
use tokio::sync::oneshot;

use super::fair::{FairQueue, Next};
use super::store::Store;
use crate::sandbox::{Compiled, RunError, RunOutcome, Sandbox};
use crate::stats::{CoreCounters, CostKind, CostMeter};

/// A finished invocation and where it ran.
#[derive(Debug)]
pub struct Executed {
    /// What the sandbox produced.
    pub outcome: Result<RunOutcome, RunError>,
    /// The core it ran on.
    pub core: u16,
    /// Time in the run queue.
    pub queued: Duration,
}

/// One step of a chain that ran on the local bus.
#[derive(Debug)]
pub struct StepRun {
    /// What the sandbox produced; its `output` moved on to the next step (empty here).
    pub outcome: RunOutcome,
    /// The step's input size.
    pub input_bytes: usize,
    /// From the previous step's run returning to this step's run beginning (zero for the first).
    pub handoff: Duration,
}

/// A chain of steps run back to back on one core.
#[derive(Debug)]
pub struct ChainExecuted {
    /// The steps that succeeded, in order.
    pub steps: Vec<StepRun>,
    /// The last step's output (empty when a step failed).
    pub output: Vec<u8>,
    /// The step that failed (its index) and why; the steps after it did not run.
    pub failure: Option<(usize, RunError)>,
    /// The core it ran on.
    pub core: u16,
    /// Time the chain waited in the run queue.
    pub queued: Duration,
}

/// How the workers share cores between tenants (documented defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Invocations each core holds (waiting or running) before the node refuses more (1,024).
    pub queue_capacity: usize,
    /// Most invocations of one tenant running (started, not finished) at once on the node
    /// (default 8: enough to keep 4 cores busy twice over); the rest wait unstarted, so one
    /// tenant cannot take every instance slot.
    pub max_running_per_tenant: usize,
    /// Most invocations of one tenant held by the node at once, waiting or running (default
    /// 1,024: one core's queue; never more than half of all the cores' queues, so other
    /// tenants always find room); more are refused.
    pub max_queued_per_tenant: usize,
    /// Most invocations running at once on one core (default 250: the sandbox's 1,000
    /// instance slots over 4 cores); the node sets it from its slots and cores.
    pub max_running_per_core: usize,
    /// How often a running invocation gives its core back: the epoch tick (1 ms).
    pub slice: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_running_per_tenant: 8,
            max_queued_per_tenant: 1024,
            max_running_per_core: 250,
            slice: Duration::from_millis(1),
        }
    }
}

#[derive(Debug)]
enum Reply {
    One(oneshot::Sender<Executed>),
    Chain(oneshot::Sender<ChainExecuted>),
}

#[derive(Debug)]
struct Job {
    function: Arc<Compiled>,
    /// Chains: the steps after `function` (empty, unallocated, for one invocation).
    rest: Vec<Arc<Compiled>>,
    input: Vec<u8>,
    enqueued: Instant,
    reply: Reply,
    /// Gives back the job's queue place and tenant allowance however it ends.
    admitted: Admitted,
}

/// A started invocation: runs until its next tick, or to its end (when it has replied).
struct Task {
    run: Pin<Box<dyn Future<Output = ()>>>,
    /// When it started, in [`Slices`]' clock.
    started_ns: u64,
}

/// What each tenant holds on the node: invocations admitted (waiting or running) and running.
#[derive(Debug, Default)]
struct Load {
    admitted: usize,
    running: usize,
}

/// The per-tenant caps of the whole node, shared by every core.
#[derive(Debug)]
struct TenantSlots {
    max_running: usize,
    max_queued: usize,
    load: Mutex<FxHashMap<TenantId, Load>>,
}

impl TenantSlots {
    fn with<R>(&self, tenant: TenantId, f: impl FnOnce(&mut Load) -> R) -> R {
        let mut load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        let entry = load.entry(tenant).or_default();
        let r = f(entry);
        if entry.admitted == 0 && entry.running == 0 {
            load.remove(&tenant);
        }
        r
    }

    fn admit(&self, tenant: TenantId) -> Result<(), QueueError> {
        self.with(tenant, |l| {
            if l.admitted >= self.max_queued {
                return Err(QueueError::TenantFull {
                    tenant,
                    limit: self.max_queued,
                });
            }
            l.admitted += 1;
            Ok(())
        })
    }

    fn try_start(&self, tenant: TenantId) -> bool {
        self.with(tenant, |l| {
            let ok = l.running < self.max_running;
            l.running += usize::from(ok);
            ok
        })
    }

    fn release(&self, tenant: TenantId, running: bool) {
        self.with(tenant, |l| {
            l.admitted = l.admitted.saturating_sub(1);
            if running {
                l.running = l.running.saturating_sub(1);
            }
        });
    }
}

/// When the invocation each core is running started (nanoseconds after `base`; 0: none), so
/// that a new job can cut a long-running invocation's slice short instead of waiting for the
/// tick.
#[derive(Debug)]
struct Slices {
    base: Instant,
    since_ns: Box<[AtomicU64]>,
}

/// An invocation running this long when a job arrives at its core is made to yield: a short
/// invocation finishes well within it, so arrivals behind short work interrupt nothing.
const KICK_AFTER: Duration = Duration::from_micros(50);

impl Slices {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn begin(&self, core: usize, started_ns: u64) {
        self.since_ns[core].store(started_ns, Ordering::Relaxed);
    }

    fn end(&self, core: usize) {
        self.since_ns[core].store(0, Ordering::Relaxed);
    }

    /// Whether `core` is running an invocation that started more than [`KICK_AFTER`] ago.
    fn long(&self, core: usize) -> bool {
        let since = self.since_ns[core].load(Ordering::Relaxed);
        since != 0 && self.now_ns().saturating_sub(since) > KICK_AFTER.as_nanos() as u64
    }
}

/// An admitted job's claim on its core's queue and its tenant's places (and, once started, its
/// running slot), given back on drop: before the job replies, so a caller that sees the reply
/// sees them free.
#[derive(Debug)]
struct Admitted {
    tenant: TenantId,
    /// Whether the job took one of its tenant's running slots.
    running: bool,
    core: usize,
    cores: Arc<[CoreCounters]>,
    slots: Arc<TenantSlots>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.cores[self.core]
            .queue_len
            .fetch_sub(1, Ordering::Relaxed);
        self.slots.release(self.tenant, self.running);
    }
}

/// What a worker needs to run jobs.
struct Worker {
    sandbox: Arc<Sandbox>,
    store: Arc<Store>,
    meter: Arc<CostMeter>,
    cores: Arc<[CoreCounters]>,
    core: usize,
}

impl Worker {
    fn me(&self) -> &CoreCounters {
        &self.cores[self.core]
    }

    /// Runs one function; its core time is counted by the loop that polls it.
    async fn run(&self, function: &Compiled, input: Vec<u8>) -> Result<RunOutcome, RunError> {
        let outcome = self.sandbox.run_async(function, input, &self.store).await;
        self.me().finished(Duration::ZERO, true);
        if let Ok(o) = &outcome {
            self.meter.record(CostKind::WasmStart, o.start);
            if let Some(t) = o.local_access {
                self.meter.record(CostKind::LocalAccess, t);
            }
        }
        outcome
    }

    /// Runs a chain's steps back to back: the local bus is the move of one step's output into
    /// the next one's input.
    async fn run_chain(
        &self,
        first: &Arc<Compiled>,
        rest: &[Arc<Compiled>],
        mut input: Vec<u8>,
    ) -> (Vec<StepRun>, Vec<u8>, Option<(usize, RunError)>) {
        let mut steps = Vec::with_capacity(1 + rest.len());
        let mut previous_done: Option<Instant> = None;
        for (i, function) in std::iter::once(first).chain(rest).enumerate() {
            let handoff = previous_done.map_or(Duration::ZERO, |t| t.elapsed());
            let input_bytes = input.len();
            match self.run(function, input).await {
                Ok(mut outcome) => {
                    input = std::mem::take(&mut outcome.output);
                    previous_done = Some(Instant::now());
                    // The next step sees this one's writes, as the next invocation would: once
                    // they are durable (the wait is part of its hand-off). The last step's are
                    // awaited by the caller.
                    if i < rest.len()
                        && let Some(ack) = outcome.durable.take()
                    {
                        let durable = match ack.await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err("the log writer stopped".to_owned()),
                        };
                        if let Err(e) = durable {
                            return (
                                steps,
                                Vec::new(),
                                Some((
                                    i,
                                    RunError::Failed(format!(
                                        "its writes could not be made durable: {e}"
                                    )),
                                )),
                            );
                        }
                    }
                    steps.push(StepRun {
                        outcome,
                        input_bytes,
                        handoff,
                    });
                }
                Err(e) => return (steps, Vec::new(), Some((i, e))),
            }
        }
        (steps, input, None)
    }

    /// The job as a task: it runs the invocation (or chain) and replies.
    fn start(self: &Rc<Self>, job: Job, started_ns: u64) -> Task {
        let worker = self.clone();
        let core = u16::try_from(self.core).unwrap_or(u16::MAX);
        let queued = job.enqueued.elapsed();
        let run = Box::pin(async move {
            let Job {
                function,
                rest,
                input,
                reply,
                admitted,
                ..
            } = job;
            // A caller that gave up is not an error.
            match reply {
                Reply::One(reply) => {
                    let outcome = worker.run(&function, input).await;
                    drop(admitted);
                    let _ = reply.send(Executed {
                        outcome,
                        core,
                        queued,
                    });
                }
                Reply::Chain(reply) => {
                    let (steps, output, failure) = worker.run_chain(&function, &rest, input).await;
                    drop(admitted);
                    let _ = reply.send(ChainExecuted {
                        steps,
                        output,
                        failure,
                        core,
                        queued,
                    });
                }
            }
        });
        Task { run, started_ns }
    }

    /// The worker's loop: takes what arrived, runs the next slice the fair queue picks, and
    /// blocks only when nothing may run. Ends when the pool is dropped and its work is done.
    fn serve(
        self,
        jobs: &Receiver<Job>,
        slots: &TenantSlots,
        slices: &Slices,
        options: WorkerOptions,
    ) {
        let worker = Rc::new(self);
        let me = worker.me();
        let mut queue: FairQueue<Job, Task> = FairQueue::new(options.slice);
        let mut running_here = 0usize;
        let mut open = true;
        // Every task is always ready to go on (a paused one paused only to give the core
        // back), so wakers carry no information: the loop polls whatever the queue picks.
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            while open {
                match jobs.try_recv() {
                    Ok(job) => queue.push(job.function.tenant, job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            let next = queue.next(|tenant| {
                running_here < options.max_running_per_core && slots.try_start(tenant)
            });
            let Some((tenant, next)) = next else {
                if queue.is_empty() {
                    // Idle: block until a job arrives, or the pool is dropped.
                    match jobs.recv() {
                        Ok(job) => queue.push(job.function.tenant, job),
                        Err(_) => return,
                    }
                } else if open {
                    // Everything here waits on a cap another core holds: look again next tick.
                    match jobs.recv_timeout(options.slice) {
                        Ok(job) => queue.push(job.function.tenant, job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    }
                } else {
                    thread::sleep(options.slice);
                }
                continue;
            };
            let mut task = match next {
                Next::Start(mut job) => {
                    // `next` took the tenant's running slot for it.
                    job.admitted.running = true;
                    running_here += 1;
                    worker.start(job, slices.now_ns())
                }
                Next::Resume(task) => task,
            };
            let polled = Instant::now();
            slices.begin(worker.core, task.started_ns);
            let done = task.run.as_mut().poll(&mut cx).is_ready();
            slices.end(worker.core);
            let ran = polled.elapsed();
            me.ran(ran);
            if done {
                running_here -= 1;
                queue.finished(tenant, ran);
            } else {
                queue.paused(tenant, task, ran);
            }
        }
    }
}

/// Why an invocation could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// every run queue is full
    #[error("every run queue is full ({capacity} invocations per core); try again later")]
    Full { capacity: usize },
    /// the tenant holds as many invocations on the node as it may
    #[error(
        "{tenant} already has {limit} invocations waiting or running on this node, its \
         limit; try again later"
    )]
    TenantFull { tenant: TenantId, limit: usize },
    /// the node is shutting down
    #[error("the node is shutting down")]
    Stopped,
}

/// A function as the workers know it: tenant and name.
pub type FunctionKey = (TenantId, Arc<str>);

/// The worker pool.
#[derive(Debug)]
pub struct Workers {
    queues: Vec<Sender<Job>>,
    cores: Arc<[CoreCounters]>,
    capacity: usize,
    slots: Arc<TenantSlots>,
    slices: Arc<Slices>,
    /// Its engine's epoch is what a running invocation yields at.
    sandbox: Arc<Sandbox>,
    threads: Vec<JoinHandle<()>>,
    /// Per core, the function the re-provisioner dedicated it to (`None`: shared by all).
    dedicated: RwLock<Arc<[Option<FunctionKey>]>>,
}

impl Workers {
    /// Starts `cores` workers (at least one).
    pub fn start(
        cores: usize,
        options: WorkerOptions,
        sandbox: &Arc<Sandbox>,
        store: &Arc<Store>,
        meter: &Arc<CostMeter>,
    ) -> std::io::Result<Self> {
        let cores = cores.max(1);
        let counters: Arc<[CoreCounters]> = (0..cores).map(|_| CoreCounters::default()).collect();
        let slots = Arc::new(TenantSlots {
            max_running: options.max_running_per_tenant.max(1),
            max_queued: options
                .max_queued_per_tenant
                .min(cores * options.queue_capacity / 2)
                .max(1),
            load: Mutex::new(FxHashMap::default()),
        });
        let options = WorkerOptions {
            max_running_per_core: options.max_running_per_core.max(1),
            ..options
        };
        let slices = Arc::new(Slices {
            base: Instant::now(),
            since_ns: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        });
        let mut queues = Vec::with_capacity(cores);
        let mut threads = Vec::with_capacity(cores);
        for core in 0..cores {
            // Unbounded: the queue's capacity is counted in `queue_len` when a job is admitted.
            let (tx, rx) = channel::unbounded::<Job>();
            queues.push(tx);
            let worker = Worker {
                sandbox: sandbox.clone(),
                store: store.clone(),
                meter: meter.clone(),
                cores: counters.clone(),
                core,
            };
            let slots = slots.clone();
            let slices = slices.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("wasm-worker-{core}"))
                    .spawn(move || {
                        crate::scheduling::run_below_agent();
                        worker.serve(&rx, &slots, &slices, options)
                    })?,
            );
        }
        Ok(Self {
            queues,
            cores: counters,
            capacity: options.queue_capacity,
            slots,
            slices,
            sandbox: sandbox.clone(),
            threads,
            dedicated: RwLock::new(vec![None; cores].into()),
        })
    }

    /// Gives each function in `plan` that many cores of its own, replacing the previous
    /// assignment; every other function shares the remaining cores, of which at least one is
    /// always left. Returns what could not be applied, in words.
    pub fn dedicate(&self, plan: &[(FunctionKey, usize)]) -> Vec<String> {
        let mut assignment: Vec<Option<FunctionKey>> = vec![None; self.queues.len()];
        let mut skipped = Vec::new();
        // The highest cores are given away first; core 0 always stays shared.
        let mut free = (1..self.queues.len()).rev();
        for ((tenant, name), wanted) in plan {
            let mut given = 0;
            for core in free.by_ref().take(*wanted) {
                assignment[core] = Some((*tenant, name.clone()));
                given += 1;
            }
            if given < *wanted {
                skipped.push(format!(
                    "{tenant}/{name}: {wanted} dedicated cores asked, {given} given (the node \
                     has {} cores and keeps one shared)",
                    self.queues.len()
                ));
            }
        }
        *self.dedicated.write().unwrap_or_else(|e| e.into_inner()) = assignment.into();
        skipped
    }

    /// The function each core is dedicated to (`None`: shared).
    pub fn dedicated(&self) -> Arc<[Option<FunctionKey>]> {
        self.dedicated
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Invocations of `tenant` the node holds (waiting or running) and runs.
    pub fn tenant_load(&self, tenant: TenantId) -> (usize, usize) {
        let load = self.slots.load.lock().unwrap_or_else(|e| e.into_inner());
        load.get(&tenant)
            .map_or((0, 0), |l| (l.admitted, l.running))
    }

    /// The per-core counters.
    pub fn cores(&self) -> &[CoreCounters] {
        &self.cores
    }

    /// Queues an invocation on the least-loaded core; the receiver yields its result.
    pub fn submit(
        &self,
        function: Arc<Compiled>,
        input: Vec<u8>,
    ) -> Result<oneshot::Receiver<Executed>, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(function, Vec::new(), input, Reply::One(reply))?;
        Ok(rx)
    }

    /// Queues a chain (`first`, then `rest` in order) as one job on the least-loaded core: its
    /// steps run back to back there, handing off in memory.
    pub fn submit_chain(
        &self,
        first: Arc<Compiled>,
        rest: Vec<Arc<Compiled>>,
        input: Vec<u8>,
    ) -> Result<oneshot::Receiver<ChainExecuted>, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(first, rest, input, Reply::Chain(reply))?;
        Ok(rx)
    }

    fn enqueue(
        &self,
        function: Arc<Compiled>,
        rest: Vec<Arc<Compiled>>,
        input: Vec<u8>,
        reply: Reply,
    ) -> Result<(), QueueError> {
        let core = {
            let dedicated = self.dedicated.read().unwrap_or_else(|e| e.into_inner());
            let own = |c: &usize| {
                dedicated[*c]
                    .as_ref()
                    .is_some_and(|(t, n)| *t == function.tenant && **n == *function.name)
            };
            // The function's own cores if it has any, else the shared ones.
            let mine = (0..self.queues.len()).any(|c| own(&c));
            (0..self.queues.len())
                .filter(|c| {
                    if mine {
                        own(c)
                    } else {
                        dedicated[*c].is_none()
                    }
                })
                .min_by_key(|&c| self.cores[c].queue_len.load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        let held = self.cores[core].queue_len.fetch_add(1, Ordering::Relaxed);
        if held as usize >= self.capacity {
            self.cores[core].queue_len.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueError::Full {
                capacity: self.capacity,
            });
        }
        if let Err(e) = self.slots.admit(function.tenant) {
            self.cores[core].queue_len.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        // From here the claim gives itself back, whatever becomes of the job.
        let admitted = Admitted {
            tenant: function.tenant,
            running: false,
            core,
            cores: self.cores.clone(),
            slots: self.slots.clone(),
        };
        let job = Job {
            function,
            rest,
            input,
            enqueued: Instant::now(),
            reply,
            admitted,
        };
        self.queues[core]
            .send(job)
            .map_err(|_| QueueError::Stopped)?;
        // The core runs a long invocation: advance the epoch so it yields now and the fair
        // queue sees the new job, rather than at the next tick. Every running invocation
        // yields once for it; each rechecks its deadline and goes on.
        if self.slices.long(core) {
            self.sandbox.engine().increment_epoch();
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
