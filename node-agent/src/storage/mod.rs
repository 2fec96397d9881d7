//! The storage role: tenants' data in memory (durable with a data directory) and tenants'
//! functions running next to it in WebAssembly sandboxes.
//!
//! - [`store`]: the sharded, tenant-partitioned key-value store;
//! - [`wal`]: its write-ahead log, group commit, snapshots and recovery;
//! - [`crate::sandbox`]: Wasmtime, the host interface, deploy-time checks, per-invocation limits;
//! - [`workers`]: one worker thread per function core, each with a run queue, and the local bus
//!   that runs a chain's steps back to back on one core;
//! - [`handoff`]: what moves out of the node when the key ring changes;
//! - [`fair`]: which invocation a core runs next, by tenants' fair shares of it;
//! - [`service`]: the gRPC services (`NodeAgent`, `KeyValue`).
//!
//! [`StorageNode`] ties them together; [`run`] serves it until a shutdown signal.

pub mod fair;
pub mod handoff;
pub mod service;
pub mod store;
#[cfg(test)]
mod tests;
pub mod wal;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;
use tracing::{info, warn};

use self::store::{Allowance, DEFAULT_ALLOWANCE, Limits, Store};
use self::wal::{Recovery, WalOptions};
use self::workers::{QueueError, WorkerOptions, Workers};
use crate::in_flight::InFlight;
use crate::sandbox::{
    Compiled, DeployError, FunctionLimits, RunError, RunOutcome, Sandbox, SandboxConfig,
};
use crate::stats::{CostKind, CostMeter};

/// How a storage node runs (documented defaults; the CLI fills it from flags).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The node's name in statistics and records.
    pub name: String,
    /// Where the gRPC services listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Where data is made durable; `None` keeps it only in memory.
    pub data_dir: Option<PathBuf>,
    /// Worker threads running functions (default: the machine's cores).
    pub worker_cores: usize,
    /// Invocations each core's run queue holds before the node refuses more (1,024).
    pub queue_capacity: usize,
    /// Most invocations of one tenant running at once on the node; more wait unstarted
    /// (default 8). See [`WorkerOptions`].
    pub max_running_per_tenant: usize,
    /// Most invocations of one tenant waiting or running on the node, at most half of all
    /// the cores' queues; more are refused with RESOURCE_EXHAUSTED (default 1,024).
    pub max_queued_per_tenant: usize,
    /// What a tenant may store on this node until `SetTenantQuotas` names it
    /// ([`DEFAULT_ALLOWANCE`]: 256 MiB and 1,000,000 keys).
    pub tenant_allowance: Allowance,
    /// Size limits of the store.
    pub limits: Limits,
    /// Sandbox settings.
    pub sandbox: SandboxConfig,
    /// Log settings.
    pub wal: WalOptions,
    /// Default push interval of the stats stream (10 ms).
    pub stats_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            name: "storage-0".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            data_dir: None,
            worker_cores: std::thread::available_parallelism().map_or(1, usize::from),
            queue_capacity: 1024,
            max_running_per_tenant: WorkerOptions::default().max_running_per_tenant,
            max_queued_per_tenant: WorkerOptions::default().max_queued_per_tenant,
            tenant_allowance: DEFAULT_ALLOWANCE,
            limits: Limits::default(),
            sandbox: SandboxConfig::default(),
            wal: WalOptions::default(),
            stats_interval: Duration::from_millis(10),
        }
    }
}

/// Why a storage node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// the data directory could not be opened or recovered
    #[error("data directory: {0}")]
    Data(#[from] wal::OpenError),
    /// the WebAssembly engine could not be set up
    #[error("WebAssembly engine: {0}")]
    Engine(String),
    /// a thread or socket could not be created
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Why an invocation did not produce output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// no such function
    #[error("no function {name:?} is deployed for tenant {tenant}")]
    UnknownFunction { tenant: TenantId, name: String },
    /// the sandbox refused or stopped it
    #[error(transparent)]
    Run(#[from] RunError),
    /// it could not be queued
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// its writes could not be made durable
    #[error("the invocation's writes could not be made durable: {0}")]
    NotDurable(String),
}

/// A finished invocation with the node's measurements.
#[derive(Debug)]
pub struct Execution {
    /// What the sandbox produced (its `durable` ack already awaited).
    pub outcome: RunOutcome,
    /// The core it ran on.
    pub core: u16,
    /// Time in the run queue.
    pub queued: Duration,
    /// Time waiting for its writes to be durable.
    pub durable_wait: Duration,
}

/// One step of a chain run on the local bus, with the node's measurements.
#[derive(Debug)]
pub struct ChainStepExecution {
    /// What the sandbox produced (its output handed on to the next step: empty here).
    pub outcome: RunOutcome,
    /// The step's input size.
    pub input_bytes: usize,
    /// The local bus's hand-off into this step (zero for the first).
    pub handoff: Duration,
    /// Time waiting for the step's writes to be durable.
    pub durable_wait: Duration,
}

/// A chain run on the local bus.
#[derive(Debug)]
pub struct ChainExecution {
    /// The steps that succeeded, in order.
    pub steps: Vec<ChainStepExecution>,
    /// The last step's output (empty when a step failed).
    pub output: Vec<u8>,
    /// The step that failed (index in the request) and why.
    pub failure: Option<(usize, ExecuteError)>,
    /// The core the chain ran on.
    pub core: u16,
    /// Time the chain waited in the run queue.
    pub queued: Duration,
}

type FunctionKey = (TenantId, String);

/// A running storage node: store, sandbox, workers and deployed functions.
#[derive(Debug)]
pub struct StorageNode {
    config: StorageConfig,
    store: Arc<Store>,
    sandbox: Arc<Sandbox>,
    workers: Workers,
    functions: RwLock<HashMap<FunctionKey, Arc<Compiled>>>,
    meter: Arc<CostMeter>,
    recovery: Option<Recovery>,
    started: Instant,
    in_flight: Arc<InFlight>,
}

impl StorageNode {
    /// Opens the data directory (if any), recovers it and starts the workers.
    pub fn start(config: StorageConfig) -> Result<Arc<Self>, StartError> {
        let (store, recovery) = match &config.data_dir {
            Some(dir) => {
                let (store, recovery) = wal::open(dir, config.limits, config.wal)?;
                (store, Some(recovery))
            }
            None => {
                warn!(node = %config.name, "no data directory: data is held only in memory and is lost when the node stops");
                (Arc::new(Store::new(config.limits)), None)
            }
        };
        // Recovery counted every tenant's usage; from now on writes are checked against this.
        store.set_default_allowance(config.tenant_allowance);
        let sandbox = Arc::new(
            Sandbox::pooled(config.sandbox.clone())
                .map_err(|e| StartError::Engine(format!("{e:#}")))?,
        );
        let meter = Arc::new(CostMeter::default());
        let cores = config.worker_cores.max(1);
        let options = WorkerOptions {
            queue_capacity: config.queue_capacity,
            max_running_per_tenant: config.max_running_per_tenant,
            max_queued_per_tenant: config.max_queued_per_tenant,
            // Never more running than the sandbox has instance slots.
            max_running_per_core: (config.sandbox.max_instances as usize / cores).max(1),
            slice: config.sandbox.epoch_tick,
        };
        let workers =
            Workers::start(cores, options, &sandbox, &store, &meter).map_err(|source| {
                StartError::Io {
                    what: "starting worker threads",
                    source,
                }
            })?;
        Ok(Arc::new(Self {
            config,
            store,
            sandbox,
            workers,
            functions: RwLock::new(HashMap::new()),
            meter,
            recovery,
            started: Instant::now(),
            in_flight: Arc::default(),
        }))
    }

    /// The node's configuration.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The node's data.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The sandbox (for benchmarks that measure it directly).
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// What recovery found, if the node has a data directory.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Measured costs.
    pub fn meter(&self) -> &CostMeter {
        &self.meter
    }

    /// The invocations the node holds now (its stats' `running`).
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// Per-core counters.
    pub fn cores(&self) -> &[crate::stats::CoreCounters] {
        self.workers.cores()
    }

    /// Functions deployed.
    pub fn function_count(&self) -> usize {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// How long the node has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Compiles and installs a function; whether it replaced one. Blocking (compilation takes
    /// milliseconds): async callers run it on a blocking thread.
    pub fn deploy(
        &self,
        tenant: TenantId,
        name: &str,
        module: &[u8],
        limits: FunctionLimits,
    ) -> Result<(Arc<Compiled>, bool), DeployError> {
        crate::sandbox::check_function_name(name)?;
        let compiled = Arc::new(self.sandbox.compile(tenant, name, module, limits)?);
        let replaced = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant, name.to_owned()), compiled.clone())
            .is_some();
        info!(
            tenant = tenant.0,
            function = name,
            compile_us = compiled.compile_time.as_micros() as u64,
            replaced,
            "deployed"
        );
        Ok((compiled, replaced))
    }

    /// Removes a function; whether it existed. Invocations already queued still run.
    pub fn remove(&self, tenant: TenantId, name: &str) -> bool {
        let removed = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant, name.to_owned()))
            .is_some();
        if removed {
            info!(tenant = tenant.0, function = name, "removed");
        }
        removed
    }

    /// Applies the re-provisioner's dedicated cores (replacing the last assignment); returns
    /// what was not applied, in words.
    pub fn dedicate_cores(&self, plan: &[(TenantId, String, usize)]) -> Vec<String> {
        let mut skipped = Vec::new();
        let mut known = Vec::with_capacity(plan.len());
        for (tenant, name, cores) in plan {
            match self.lookup(*tenant, name) {
                Ok(f) => known.push(((f.tenant, f.name.clone()), *cores)),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        skipped.extend(self.workers.dedicate(&known));
        skipped
    }

    /// The function ("tenant/name") each worker core is dedicated to; empty when shared.
    pub fn core_assignment(&self) -> Vec<String> {
        self.workers
            .dedicated()
            .iter()
            .map(|d| {
                d.as_ref()
                    .map_or_else(String::new, |(t, n)| format!("{}/{n}", t.0))
            })
            .collect()
    }

    fn lookup(&self, tenant: TenantId, name: &str) -> Result<Arc<Compiled>, ExecuteError> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        // A borrowed lookup key would need a custom Borrow; the String is small and short-lived.
        functions
            .get(&(tenant, name.to_owned()))
            .cloned()
            .ok_or_else(|| ExecuteError::UnknownFunction {
                tenant,
                name: name.to_owned(),
            })
    }

    /// Runs one invocation on a worker core and waits for its result and its durability.
    pub async fn execute(
        &self,
        tenant: TenantId,
        name: &str,
        input: Vec<u8>,
    ) -> Result<Execution, ExecuteError> {
        let started = Instant::now();
        let result = self.execute_on_worker(tenant, name, input).await;
        let start = result.as_ref().ok().map(|_| "assembled");
        crate::telemetry::execution("storage", started, start);
        result
    }

    async fn execute_on_worker(
        &self,
        tenant: TenantId,
        name: &str,
        input: Vec<u8>,
    ) -> Result<Execution, ExecuteError> {
        let received = Instant::now();
        let function = self.lookup(tenant, name)?;
        let reply = self.workers.submit(function, input)?;
        let executed = reply.await.map_err(|_| QueueError::Stopped)?;
        let mut outcome = executed.outcome?;
        let durable_started = Instant::now();
        if let Some(ack) = outcome.durable.take() {
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ExecuteError::NotDurable(e)),
                Err(_) => return Err(ExecuteError::NotDurable("the log writer stopped".into())),
            }
        }
        let durable_wait = durable_started.elapsed();
        let handled = received
            .elapsed()
            .saturating_sub(executed.queued + outcome.start + outcome.exec + durable_wait);
        self.meter.record(CostKind::Dispatch, handled);
        Ok(Execution {
            outcome,
            core: executed.core,
            queued: executed.queued,
            durable_wait,
        })
    }
}

impl StorageNode {
    /// Runs `names` (functions of `tenant`) as a chain on one worker core, each step's output the
    /// next one's input, handed over in memory. Every function is looked up first, so an
    /// `Err` means nothing ran; a step that fails ends the chain and is named in `failure`.
    pub async fn execute_chain(
        &self,
        tenant: TenantId,
        names: &[String],
        input: Vec<u8>,
    ) -> Result<ChainExecution, ExecuteError> {
        let mut functions = names
            .iter()
            .map(|name| self.lookup(tenant, name))
            .collect::<Result<Vec<_>, _>>()?;
        if functions.is_empty() {
            return Ok(ChainExecution {
                steps: Vec::new(),
                output: input,
                failure: None,
                core: 0,
                queued: Duration::ZERO,
            });
        }
        let first = functions.remove(0);
        let reply = self.workers.submit_chain(first, functions, input)?;
        let ran = reply.await.map_err(|_| QueueError::Stopped)?;
        let mut failure = ran.failure.map(|(i, e)| (i, ExecuteError::from(e)));
        let mut steps = Vec::with_capacity(ran.steps.len());
        let mut output = ran.output;
        for (i, mut step) in ran.steps.into_iter().enumerate() {
            let durable_started = Instant::now();
            let durable = match step.outcome.durable.take() {
                None => Ok(()),
                Some(ack) => match ack.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("the log writer stopped".to_owned()),
                },
            };
            if let Err(e) = durable {
                // The step ran but its writes are not safe: it failed, and what followed is void.
                failure = Some((i, ExecuteError::NotDurable(e)));
                output = Vec::new();
                break;
            }
            steps.push(ChainStepExecution {
                outcome: step.outcome,
                input_bytes: step.input_bytes,
                handoff: step.handoff,
                durable_wait: durable_started.elapsed(),
            });
        }
        Ok(ChainExecution {
            steps,
            output,
            failure,
            core: ran.core,
            queued: ran.queued,
        })
    }
}

/// Starts a storage node and serves it on `config.listen` until `shutdown` completes. Calls
/// `ready` with the bound address once the socket accepts connections.
pub async fn run(
    config: StorageConfig,
    credentials: sandstorm_identity::Credentials,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let start_config = config.clone();
    let node = tokio::task::spawn_blocking(move || StorageNode::start(start_config))
        .await
        .map_err(|e| StartError::Io {
            what: "starting the node",
            source: std::io::Error::other(e),
        })??;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Io {
            what: "binding the gRPC address",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Io {
        what: "reading the bound address",
        source,
    })?;
    info!(node = %config.name, %addr, durable = node.store().is_durable(), cores = config.worker_cores, "storage node serving");
    let gauges = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (keys, bytes) = node.store().size();
                crate::telemetry::gauge("sandstorm_store_keys", keys as f64);
                crate::telemetry::gauge("sandstorm_store_bytes", bytes as f64);
                crate::telemetry::gauge("sandstorm_functions", node.function_count() as f64);
                let read_only = node.store().read_only().is_some();
                crate::telemetry::gauge(
                    "sandstorm_store_read_only",
                    f64::from(u8::from(read_only)),
                );
            }
        })
    };
    ready(addr);
    let served = service::serve(node, listener, &credentials, shutdown).await;
    gauges.abort();
    served.map_err(|e| StartError::Io {
        what: "serving gRPC",
        source: std::io::Error::other(e),
    })
}
