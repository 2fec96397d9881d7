//! Worker threads of a storage node: one per core the node gives to functions, each with its own
//! run queue, so an invocation runs start to finish on one core and per-core statistics mean what
//! they say. A new invocation goes to the core with the shortest queue.
//!
//! The node's local bus (SAND) lives here too: the consecutive steps of a chain are one job, run
//! back to back on one core, each step's output moved into the next step's input without leaving
//! the thread. [`ChainExecuted`] says how long each hand-off took.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender, TrySendError};
use sandstorm_naming::TenantId;
use tokio::sync::oneshot;

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
}

/// What a worker needs to run jobs.
struct Worker {
    sandbox: Arc<Sandbox>,
    store: Arc<Store>,
    meter: Arc<CostMeter>,
}

impl Worker {
    /// Runs one function, accounting it to `me`.
    fn run(
        &self,
        me: &CoreCounters,
        function: &Compiled,
        input: Vec<u8>,
    ) -> Result<RunOutcome, RunError> {
        let started = Instant::now();
        let outcome = self.sandbox.run(function, input, &self.store);
        me.finished(started.elapsed(), true);
        if let Ok(o) = &outcome {
            self.meter.record(CostKind::InstanceStart, o.start);
            if let Some(t) = o.local_access {
                self.meter.record(CostKind::LocalAccess, t);
            }
        }
        outcome
    }

    /// Runs a chain's steps back to back: the local bus is the move of one step's output into
    /// the next one's input.
    fn run_chain(
        &self,
        me: &CoreCounters,
        first: &Arc<Compiled>,
        rest: &[Arc<Compiled>],
        mut input: Vec<u8>,
    ) -> (Vec<StepRun>, Vec<u8>, Option<(usize, RunError)>) {
        let mut steps = Vec::with_capacity(1 + rest.len());
        let mut previous_done: Option<Instant> = None;
        for (i, function) in std::iter::once(first).chain(rest).enumerate() {
            let handoff = previous_done.map_or(Duration::ZERO, |t| t.elapsed());
            let input_bytes = input.len();
            match self.run(me, function, input) {
                Ok(mut outcome) => {
                    input = std::mem::take(&mut outcome.output);
                    previous_done = Some(Instant::now());
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
}

/// Why an invocation could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// every run queue is full
    #[error("every run queue is full ({capacity} invocations per core); try again later")]
    Full { capacity: usize },
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
    threads: Vec<JoinHandle<()>>,
    /// Per core, the function the re-provisioner dedicated it to (`None`: shared by all).
    dedicated: RwLock<Arc<[Option<FunctionKey>]>>,
}

impl Workers {
    /// Starts `cores` workers (at least one) with `capacity` queued invocations each.
    pub fn start(
        cores: usize,
        capacity: usize,
        sandbox: &Arc<Sandbox>,
        store: &Arc<Store>,
        meter: &Arc<CostMeter>,
    ) -> std::io::Result<Self> {
        let cores = cores.max(1);
        let counters: Arc<[CoreCounters]> = (0..cores).map(|_| CoreCounters::default()).collect();
        let mut queues = Vec::with_capacity(cores);
        let mut threads = Vec::with_capacity(cores);
        for core in 0..cores {
            let (tx, rx) = channel::bounded::<Job>(capacity);
            queues.push(tx);
            let worker = Worker {
                sandbox: sandbox.clone(),
                store: store.clone(),
                meter: meter.clone(),
            };
            let counters = counters.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("wasm-worker-{core}"))
                    .spawn(move || {
                        let me = &counters[core];
                        let core = u16::try_from(core).unwrap_or(u16::MAX);
                        for job in rx {
                            let queued = job.enqueued.elapsed();
                            // A caller that gave up is not an error.
                            match job.reply {
                                Reply::One(reply) => {
                                    let outcome = worker.run(me, &job.function, job.input);
                                    me.queue_len.fetch_sub(1, Ordering::Relaxed);
                                    let _ = reply.send(Executed {
                                        outcome,
                                        core,
                                        queued,
                                    });
                                }
                                Reply::Chain(reply) => {
                                    let (steps, output, failure) =
                                        worker.run_chain(me, &job.function, &job.rest, job.input);
                                    me.queue_len.fetch_sub(1, Ordering::Relaxed);
                                    let _ = reply.send(ChainExecuted {
                                        steps,
                                        output,
                                        failure,
                                        core,
                                        queued,
                                    });
                                }
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            queues,
            cores: counters,
            capacity,
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
        self.cores[core].queue_len.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            function,
            rest,
            input,
            enqueued: Instant::now(),
            reply,
        };
        match self.queues[core].try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.cores[core].queue_len.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => QueueError::Full {
                        capacity: self.capacity,
                    },
                    TrySendError::Disconnected(_) => QueueError::Stopped,
                })
            }
        }
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
