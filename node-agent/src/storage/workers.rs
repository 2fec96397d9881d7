//! Worker threads of a storage node: one per core the node gives to functions, each with its own
//! run queue, so an invocation runs start to finish on one core and per-core statistics mean what
//! they say. A new invocation goes to the core with the shortest queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender, TrySendError};
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

#[derive(Debug)]
struct Job {
    function: Arc<Compiled>,
    input: Vec<u8>,
    enqueued: Instant,
    reply: oneshot::Sender<Executed>,
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

/// The worker pool.
#[derive(Debug)]
pub struct Workers {
    queues: Vec<Sender<Job>>,
    cores: Arc<[CoreCounters]>,
    capacity: usize,
    threads: Vec<JoinHandle<()>>,
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
            let sandbox = sandbox.clone();
            let store = store.clone();
            let counters = counters.clone();
            let meter = meter.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("wasm-worker-{core}"))
                    .spawn(move || {
                        let me = &counters[core];
                        for job in rx {
                            let started = Instant::now();
                            let queued = started - job.enqueued;
                            let outcome = sandbox.run(&job.function, job.input, &store);
                            me.queue_len.fetch_sub(1, Ordering::Relaxed);
                            me.finished(started.elapsed(), true);
                            if let Ok(o) = &outcome {
                                meter.record(CostKind::InstanceStart, o.start);
                                if let Some(t) = o.local_access {
                                    meter.record(CostKind::LocalAccess, t);
                                }
                            }
                            let core = u16::try_from(core).unwrap_or(u16::MAX);
                            // A caller that gave up is not an error.
                            let _ = job.reply.send(Executed {
                                outcome,
                                core,
                                queued,
                            });
                        }
                    })?,
            );
        }
        Ok(Self {
            queues,
            cores: counters,
            capacity,
            threads,
        })
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
        let core = (0..self.queues.len())
            .min_by_key(|&c| self.cores[c].queue_len.load(Ordering::Relaxed))
            .unwrap_or(0);
        let (reply, rx) = oneshot::channel();
        self.cores[core].queue_len.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            function,
            input,
            enqueued: Instant::now(),
            reply,
        };
        match self.queues[core].try_send(job) {
            Ok(()) => Ok(rx),
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
