//! The compute role: functions in Linux containers assembled in about a millisecond from parts
//! made ahead of time (FlashCube), by forking a template rather than booting anything (SOCK),
//! with a warm container per function whose template forks a process per invocation (SAND).
//!
//! - [`parts`]: network, IPC/UTS namespaces, root file systems (overlay in a pivoted mount
//!   namespace, held by PID 1 of its PID namespace), cgroups with limits, and forkers (a root
//!   file system and a cgroup paired, with a forker and its spare parked inside them);
//! - [`pool`]: background-refilled pools of them (the forker pool takes its root file systems
//!   and cgroups from theirs);
//! - [`zygote`]: the single-threaded processes that assemble and run containers;
//! - [`container`]: a container and the invocations running in it;
//! - [`link`]: a WebAssembly function's data calls, forwarded to the storage nodes;
//! - [`service`]: the gRPC service (`NodeAgent`), the same as the storage role's.
//!
//! [`ComputeNode`] ties them together: deployed functions (WebAssembly, compiled once and loaded
//! into the zygote, or native programs of the base root file system), one warm container per
//! function kept while it is used and reclaimed after `keep_alive` idle, or the window the
//! scheduler's keep-alive policy set for the function (its parts destroyed: a used writable
//! layer and cgroup are not worth cleaning for reuse), and per-invocation
//! records. A deadline ends everything: when an invocation passes its deadline (whatever its
//! container is doing, a start function still spinning included) every process of its
//! container is killed, its cgroup removed, and the container is never used again; keep-alive
//! expiry kills everything in a container the same way.

pub mod container;
pub mod link;
pub mod parts;
pub mod pool;
pub mod service;
pub mod zygote;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;

pub use self::container::{Container, Exit, Outcome, Provenance, Reports, RunResult, WasmRun};
use self::link::AgentLink;
pub use self::link::{StorageRoute, StorageRouter};
use self::parts::{Cgroup, ContainerLimits, Forker, IpcUts, NetNs, RootFs};
use self::pool::Pool;
use self::zygote::{FromZygote, ToForker, ToZygote, WasmFunction, seqpacket_pair};
use crate::in_flight::InFlight;
use crate::sandbox::{DeployError, FunctionLimits, RunError, Sandbox, SandboxConfig};
use crate::stats::{CostKind, CostMeter};

/// How long past an invocation's deadline the agent waits for its template to report the
/// kill before it kills the whole container itself (a template spinning in a start function
/// never reports).
pub const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// How a compute node runs.
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// Node name: names its cgroups (`sandstorm/<name>/...`).
    pub name: String,
    /// Where the base root file system is built (`<state_dir>/base`).
    pub state_dir: PathBuf,
    /// The `sandstorm` binary, run as `__zygote` and `__holder`.
    pub exe: PathBuf,
    /// Limits of every container.
    pub limits: ContainerLimits,
    /// Parts each pool keeps ready.
    pub pool_size: usize,
    /// The user functions run as (`nobody`).
    pub uid: u32,
    /// Their group (`nogroup`).
    pub gid: u32,
    /// How long an idle warm container is kept (10 minutes, the common keep-alive window).
    pub keep_alive: Duration,
    /// Storage nodes (name, `host:port`) that own the data functions read, in ring order.
    pub storage: Vec<(String, String)>,
    /// Where functions' data calls are routed. Shared with whoever keeps it current: the agent's
    /// registration replaces its routes with the scheduler's key ring. Seeded from `storage`
    /// when that is not empty.
    pub router: Arc<StorageRouter>,
}

impl ComputeConfig {
    /// Defaults for node `name`, running `exe` for its helper processes.
    pub fn new(name: &str, exe: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            state_dir: PathBuf::from("/run/sandstorm").join(name),
            exe,
            limits: ContainerLimits::default(),
            pool_size: 8,
            uid: 65534,
            gid: 65534,
            keep_alive: Duration::from_secs(600),
            storage: Vec::new(),
            router: Arc::default(),
        }
    }
}

/// What the compute role needs from the machine, checked before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// not root
    #[error("the compute role needs root (namespaces, cgroups and mounts); run it as root")]
    NotRoot,
    /// a cgroup controller is missing
    #[error(
        "the cgroup controller `{0}` is not available (looked in /sys/fs/cgroup); the compute role needs memory, cpu and pids"
    )]
    MissingController(&'static str),
    /// no overlayfs
    #[error(
        "the kernel has no overlay file system (/proc/filesystems); root file systems are overlays"
    )]
    NoOverlay,
    /// no static busybox for the base root file system
    #[error(
        "no static busybox at /bin/busybox to build the base root file system from; install Debian's busybox-static (scripts/setup.sh does)"
    )]
    NoBusybox,
}

/// Checks root, cgroup controllers, overlayfs and busybox.
pub fn preflight() -> Result<(), PreflightError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(PreflightError::NotRoot);
    }
    let v2 = cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode();
    let v2_controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    for controller in ["memory", "cpu", "pids"] {
        let present = if v2 {
            v2_controllers.split_whitespace().any(|c| c == controller)
        } else {
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("cgroup.procs")
                .exists()
        };
        if !present {
            return Err(PreflightError::MissingController(controller));
        }
    }
    if !std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        return Err(PreflightError::NoOverlay);
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err(PreflightError::NoBusybox);
    }
    Ok(())
}

/// Takes this host's lock on compute node name `name` for as long as the agent lives: its
/// cgroups are named by it, and an agent starting under a name removes (and kills) what a
/// previous agent of that name left, so a second live agent of one name must not start.
fn lock_name_on_host(name: &str) -> io::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = Path::new("/run/sandstorm");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("compute-{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // A killed predecessor's processes may hold it for a moment yet, until their parent-death
    // signal ends them.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, e)) => {
                return Err(io::Error::other(format!(
                    "another compute agent named {name:?} runs on this host (it holds {}: {e}); give each agent its own --name",
                    path.display()
                )));
            }
        }
    }
}

/// Where the read-only base root file system lives in a state directory.
fn base_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("base")
}

/// Builds (once) the read-only base root file system: a static busybox and its applets.
pub fn build_base(state_dir: &Path) -> io::Result<PathBuf> {
    let base = base_dir(state_dir);
    if base.join("bin/busybox").is_file() {
        return Ok(base);
    }
    let staging = state_dir.join("base.partial");
    let _ = std::fs::remove_dir_all(&staging);
    for dir in ["bin", "proc", "dev", "tmp", "etc", "data"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(staging.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy("/bin/busybox", staging.join("bin/busybox"))?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", staging.join("bin").join(applet))?;
        }
    }
    std::fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/tmp:/bin/sh\n",
    )?;
    std::fs::write(staging.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::rename(&staging, &base)?;
    Ok(base)
}

/// The next reply of the zygote or a forker on `sock`; `Failed` and hang-ups are errors that
/// say `what` was being done.
fn reply(sock: &OwnedFd, what: &str) -> io::Result<FromZygote> {
    match zygote::recv::<FromZygote>(sock.as_fd())? {
        Some((FromZygote::Failed { error }, _)) => {
            Err(io::Error::other(format!("{what}: {error}")))
        }
        Some((reply, _)) => Ok(reply),
        None => Err(io::Error::other(format!("{what}: the process is gone"))),
    }
}

/// Parks a forker of `zygote` in `rootfs`'s PID namespace and in `cgroup`.
fn park_forker(zygote: &Mutex<Zygote>, rootfs: RootFs, cgroup: Cgroup) -> io::Result<Forker> {
    Forker::park(rootfs, cgroup, |pid, procs| {
        let forker = zygote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .park(pid, procs)?;
        // It joins the cgroups on its own (the zygote is free meanwhile), forks its spare,
        // then reports with the spare's socket.
        match zygote::recv::<FromZygote>(forker.as_fd())? {
            Some((FromZygote::Ready, mut fds)) if fds.len() == 1 => Ok((forker, fds.remove(0))),
            Some((FromZygote::Failed { error }, _)) => {
                Err(io::Error::other(format!("parking a forker: {error}")))
            }
            other => Err(io::Error::other(format!(
                "parking a forker: unexpected {other:?}"
            ))),
        }
    })
}

/// The agent's side of the zygote.
#[derive(Debug)]
struct Zygote {
    sock: OwnedFd,
    child: std::process::Child,
}

impl Zygote {
    fn start(exe: &Path) -> io::Result<Self> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut command = std::process::Command::new(exe);
        command.arg("__zygote").stdin(std::process::Stdio::null());
        let raw = theirs.as_raw_fd();
        // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe, and the copy
        // on descriptor 3 has no close-on-exec flag.
        #[allow(unsafe_code)]
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear the flag instead.
                let moved = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        Ok(Self { sock: ours, child })
    }

    /// Sends one request and waits for its reply.
    fn request(&self, message: &ToZygote, fds: &[std::os::fd::RawFd]) -> io::Result<FromZygote> {
        zygote::send(self.sock.as_fd(), message, fds)?;
        reply(&self.sock, "the zygote")
    }

    /// Forks a forker into PID namespace `pid` that joins the cgroups of `procs`; returns its
    /// socket, on which it reports `Ready` once inside them.
    fn park(&self, pid: &OwnedFd, procs: &[OwnedFd]) -> io::Result<OwnedFd> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut fds = vec![theirs.as_raw_fd(), pid.as_raw_fd()];
        fds.extend(procs.iter().map(AsRawFd::as_raw_fd));
        self.request(&ToZygote::Park, &fds)?;
        Ok(ours)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Function names are unique within a tenant.
pub type FunctionKey = (TenantId, String);

/// What a deployed function runs.
#[derive(Debug)]
pub enum Code {
    /// A WebAssembly module, compiled by the agent and loaded into the zygote; `code` is a memfd
    /// of the serialized code, for forkers parked before it was loaded.
    Wasm {
        function: WasmFunction,
        code: OwnedFd,
    },
    /// A program of the base root file system, with its arguments: input on stdin, output on
    /// stdout.
    Native { argv: Vec<String> },
}

/// A deployed function.
#[derive(Debug)]
pub struct Function {
    pub tenant: TenantId,
    pub name: String,
    pub limits: FunctionLimits,
    pub code: Code,
    /// Changes with every deployment.
    pub version: u64,
    /// Compiling (and loading into the zygote) took this long.
    pub compile_time: Duration,
}

/// A function's warm container slot: assembled by the first invocation that needs it, shared
/// by every concurrent one, reclaimed after `keep_alive` idle.
#[derive(Debug)]
struct WarmSlot {
    version: u64,
    container: tokio::sync::OnceCell<Arc<Container>>,
    last_used: Mutex<Instant>,
    /// Invocations running in its container now; `idle` is notified when it drops to 0.
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// How an invocation got its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Its function's warm container was there.
    Warm,
    /// A container was assembled from pooled parts.
    Assembled,
    /// Some part was built on the critical path.
    Cold,
}

/// One invocation, as the node measured it.
#[derive(Debug)]
pub struct Execution {
    pub output: Vec<u8>,
    pub start_kind: StartKind,
    /// Waiting for its function's container while another invocation was assembling it.
    pub queue: Duration,
    /// Getting a container (assembly, if one was assembled) plus instantiation inside it.
    pub start: Duration,
    /// The function's own run (WebAssembly: measured inside; native: the process's life).
    pub exec: Duration,
    pub data_calls: u64,
    pub keys_read: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The part of `exec` spent waiting for data calls (WebAssembly functions).
    pub data_wait: Duration,
}

/// One step of a chain run on this node.
#[derive(Debug)]
pub struct ChainStep {
    /// Its run (the output handed on to the next step: empty here).
    pub execution: Execution,
    pub input_bytes: usize,
    /// From the previous step's output being ready to this step starting (zero for the first).
    pub handoff: Duration,
}

/// A chain run on this node.
#[derive(Debug)]
pub struct ChainExecution {
    /// The steps that succeeded, in order.
    pub steps: Vec<ChainStep>,
    /// The last step's output (empty when a step failed).
    pub output: Vec<u8>,
    /// The step that failed (index in the request) and why.
    pub failure: Option<(usize, ExecuteError)>,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// no such function
    #[error("no function {name:?} of tenant {} is deployed on this node", tenant.0)]
    UnknownFunction { tenant: TenantId, name: String },
    /// the function failed
    #[error(transparent)]
    Run(#[from] RunError),
    /// no container could be made for it: nothing ran
    #[error("no container could be assembled: {0}")]
    Assembly(String),
    /// its container failed or stopped answering once handed the invocation
    #[error("the container failed: {0}")]
    Lost(String),
}

/// Node-wide counters for the stats stream.
#[derive(Debug, Default)]
pub struct Counters {
    pub invocations: AtomicU64,
    pub assemblies: AtomicU64,
    pub in_flight: AtomicU64,
}

/// A compute node: pools, the zygote, deployed functions and their warm containers.
#[derive(Debug)]
pub struct ComputeNode {
    config: ComputeConfig,
    /// Also held by the forker pool's factory; dropped (and the zygote killed) with the node.
    zygote: Arc<Mutex<Zygote>>,
    netns: Pool<NetNs>,
    ipc_uts: Pool<IpcUts>,
    /// These two feed the forker pool.
    rootfs: Arc<Pool<RootFs>>,
    cgroups: Arc<Pool<Cgroup>>,
    forkers: Pool<Forker>,
    next_cgroup: Arc<AtomicU64>,
    reports: Arc<Reports>,
    /// Compiles modules for the templates (same engine configuration as the zygote's).
    sandbox: Sandbox<AgentLink>,
    router: Arc<StorageRouter>,
    functions: RwLock<HashMap<FunctionKey, Arc<Function>>>,
    warm: Mutex<HashMap<FunctionKey, Arc<WarmSlot>>>,
    /// Functions the re-provisioner keeps warm whatever their idle time.
    keep_warm: Mutex<HashSet<FunctionKey>>,
    /// Idle windows the scheduler's keep-alive policy set, per function, in place of
    /// `config.keep_alive` (`None`: kept until told otherwise), with the order's number.
    windows: Mutex<HashMap<FunctionKey, (u64, Option<Duration>)>>,
    next_version: AtomicU64,
    meter: CostMeter,
    counters: Counters,
    in_flight: Arc<InFlight>,
    /// This host's lock on the node's name; last, so it goes after everything it guards.
    _host_lock: nix::fcntl::Flock<std::fs::File>,
}

impl ComputeNode {
    /// Checks the machine, clears what a killed predecessor left, builds the base root file
    /// system, starts the zygote and fills the pools in the background.
    pub fn start(config: ComputeConfig) -> io::Result<Self> {
        preflight().map_err(io::Error::other)?;
        // Before anything of a "previous" agent is removed: it must not be a live one.
        let host_lock = lock_name_on_host(&config.name)?;
        let stale = parts::remove_stale_cgroups(&config.name);
        if stale > 0 {
            tracing::warn!(node = %config.name, cgroups = stale, "removed cgroups a previous agent left behind");
        }
        std::fs::create_dir_all(&config.state_dir)?;
        let base = build_base(&config.state_dir)?;
        let router = config.router.clone();
        if !config.storage.is_empty() {
            router
                .replace_in_order(&config.storage)
                .map_err(io::Error::other)?;
        }
        let sandbox = Sandbox::for_templates(SandboxConfig::default()).map_err(io::Error::other)?;
        let zygote = Arc::new(Mutex::new(Zygote::start(&config.exe)?));
        let size = config.pool_size;
        let exe = config.exe.clone();
        let (node, limits) = (config.name.clone(), config.limits);
        let next_cgroup = Arc::new(AtomicU64::new(0));
        let counter = next_cgroup.clone();
        let rootfs = Arc::new(Pool::new("rootfs", size, move || {
            parts::create_rootfs(&exe, &base)
        }));
        let cgroups = Arc::new(Pool::new("cgroup", size, move || {
            let id = counter.fetch_add(1, Ordering::Relaxed);
            parts::create_cgroup(&node, &format!("c{id}"), limits)
        }));
        let forkers = {
            let (rootfs, cgroups, zygote) = (rootfs.clone(), cgroups.clone(), zygote.clone());
            Pool::new("forker", size, move || {
                park_forker(&zygote, rootfs.take_or_make()?.0, cgroups.take_or_make()?.0)
            })
        };
        Ok(Self {
            netns: Pool::new("netns", size, parts::create_netns),
            ipc_uts: Pool::new("ipc-uts", size, parts::create_ipc_uts),
            rootfs,
            cgroups,
            forkers,
            next_cgroup,
            zygote,
            config,
            reports: Arc::new(Reports::start()?),
            sandbox,
            router,
            functions: RwLock::default(),
            warm: Mutex::default(),
            keep_warm: Mutex::default(),
            windows: Mutex::default(),
            next_version: AtomicU64::new(1),
            meter: CostMeter::default(),
            counters: Counters::default(),
            in_flight: Arc::default(),
            _host_lock: host_lock,
        })
    }

    /// The node's configuration.
    pub fn config(&self) -> &ComputeConfig {
        &self.config
    }

    /// Waits until every pool is full.
    pub fn wait_pools_full(&self, timeout: Duration) -> bool {
        self.netns.wait_full(timeout)
            && self.ipc_uts.wait_full(timeout)
            && self.rootfs.wait_full(timeout)
            && self.cgroups.wait_full(timeout)
            && self.forkers.wait_full(timeout)
    }

    /// Sets the size every part pool is refilled to (the re-provisioner's plan).
    pub fn set_pool_size(&self, size: usize) {
        self.netns.set_target(size);
        self.ipc_uts.set_target(size);
        self.rootfs.set_target(size);
        self.cgroups.set_target(size);
        self.forkers.set_target(size);
    }

    /// Keeps a warm container of each of `functions` whatever its idle time, replacing the
    /// previous list, and assembles the ones missing now. Returns what could not be kept warm,
    /// in words; the others fall back to the keep-alive window.
    pub async fn keep_warm(&self, functions: &[(TenantId, String)]) -> Vec<String> {
        let mut skipped = Vec::new();
        let mut known = Vec::with_capacity(functions.len());
        for (tenant, name) in functions {
            match self.function(*tenant, name) {
                Ok(f) => known.push(f),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        *self.keep_warm.lock().unwrap_or_else(|e| e.into_inner()) =
            known.iter().map(|f| (f.tenant, f.name.clone())).collect();
        for f in known {
            if let Err(e) = self.warm_container(&f).await {
                skipped.push(format!(
                    "{}/{}: assembling its container: {e}",
                    f.tenant, f.name
                ));
            }
        }
        skipped
    }

    /// Pool levels: (ready, target) for netns, ipc-uts, rootfs, cgroup, forker (a rootfs and a
    /// cgroup paired, with a process parked in them).
    pub fn pool_levels(&self) -> [(&'static str, usize, usize); 5] {
        [
            ("netns", self.netns.ready(), self.netns.target()),
            ("ipc-uts", self.ipc_uts.ready(), self.ipc_uts.target()),
            ("rootfs", self.rootfs.ready(), self.rootfs.target()),
            ("cgroup", self.cgroups.ready(), self.cgroups.target()),
            ("forker", self.forkers.ready(), self.forkers.target()),
        ]
    }

    /// Containers alive now (warm ones and any held by callers).
    pub fn live_containers(&self) -> u64 {
        self.reports.live() as u64
    }

    /// Cgroups created so far (pooled and on demand).
    pub fn cgroups_created(&self) -> u64 {
        self.next_cgroup.load(Ordering::Relaxed)
    }

    /// Measured costs.
    pub fn meter(&self) -> &CostMeter {
        &self.meter
    }

    /// Node-wide counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Functions deployed.
    pub fn function_count(&self) -> usize {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The invocations the node holds now (its stats' `running`).
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// Every container kept now: its function, memory limit (MiB) and running invocations.
    pub fn containers(&self) -> Vec<(TenantId, String, u32, u32)> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        warm.iter()
            .filter(|(_, slot)| slot.container.initialized())
            .map(|((tenant, name), slot)| {
                let memory_mb = functions
                    .get(&(*tenant, name.clone()))
                    .map_or(0, |f| f.limits.memory_bytes.div_ceil(1 << 20));
                let running = slot.running.load(Ordering::Relaxed);
                (
                    *tenant,
                    name.clone(),
                    u32::try_from(memory_mb).unwrap_or(u32::MAX),
                    u32::try_from(running).unwrap_or(u32::MAX),
                )
            })
            .collect()
    }

    /// Warm containers kept now.
    pub fn warm_containers(&self) -> usize {
        self.warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.container.initialized())
            .count()
    }

    /// The cgroup directories of `function`'s warm container, if it has one now (for tests
    /// that check a container leaves nothing behind).
    pub fn warm_cgroup_dirs(&self, tenant: TenantId, name: &str) -> Option<Vec<PathBuf>> {
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        let container = warm.get(&(tenant, name.to_owned()))?.container.get()?;
        Some(container.cgroup_dirs().to_vec())
    }

    /// The zygote's pid (for tests that check what container processes hold).
    pub fn zygote_pid(&self) -> u32 {
        self.zygote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child
            .id()
    }

    /// Assembles a native container from pooled parts (making any that is missing), or, with
    /// `from_scratch`, from parts made now on the caller's thread.
    pub fn assemble(&self, from_scratch: bool) -> io::Result<Container> {
        self.assemble_for(from_scratch, None)
    }

    /// Assembles a container for a deployed function (from pooled parts, or with
    /// `from_scratch` from parts made now), outside the warm set: what an invocation that finds
    /// no warm container waits for. For benchmarks and tests.
    pub fn assemble_function(
        &self,
        tenant: TenantId,
        name: &str,
        from_scratch: bool,
    ) -> Result<Container, ExecuteError> {
        let function = self.function(tenant, name)?;
        match &function.code {
            Code::Wasm { function, code } => {
                self.assemble_for(from_scratch, Some((function, code)))
            }
            Code::Native { .. } => self.assemble_for(from_scratch, None),
        }
        .map_err(|e| ExecuteError::Assembly(e.to_string()))
    }

    /// Where WebAssembly functions' data calls go.
    pub fn router(&self) -> &StorageRouter {
        &self.router
    }

    fn function(&self, tenant: TenantId, name: &str) -> Result<Arc<Function>, ExecuteError> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant, name.to_owned()))
            .cloned()
            .ok_or_else(|| ExecuteError::UnknownFunction {
                tenant,
                name: name.to_owned(),
            })
    }

    /// Assembles a container; a WebAssembly one when given the function and its code's memfd.
    fn assemble_for(
        &self,
        from_scratch: bool,
        wasm: Option<(&WasmFunction, &OwnedFd)>,
    ) -> io::Result<Container> {
        let (forker, net, ipc_uts, all_pooled) = if from_scratch {
            let forker = park_forker(&self.zygote, self.rootfs.make()?, self.cgroups.make()?)?;
            (forker, self.netns.make()?, self.ipc_uts.make()?, false)
        } else {
            let (forker, a) = self.forkers.take_or_make()?;
            let (net, b) = self.netns.take_or_make()?;
            let (ipc_uts, c) = self.ipc_uts.take_or_make()?;
            (forker, net, ipc_uts, a && b && c)
        };
        let provenance = if all_pooled {
            Provenance::Pooled
        } else {
            Provenance::Built
        };
        let assemble = ToForker::Assemble {
            uid: self.config.uid,
            gid: self.config.gid,
            wasm: wasm.map(|(f, _)| f.clone()),
        };
        let code = wasm.map(|(_, code)| code.try_clone()).transpose()?;
        Container::assemble(
            forker,
            net,
            ipc_uts,
            assemble,
            code,
            provenance,
            self.reports.clone(),
        )
    }

    /// Tears a container down (what dropping it does).
    pub fn destroy(&self, container: Container) {
        drop(container);
    }

    /// Deploys a WebAssembly function: compiles it, loads it into the zygote (forkers parked
    /// from now on hold it) and replaces any earlier version. Blocking.
    pub fn deploy_wasm(
        &self,
        tenant: TenantId,
        name: &str,
        module: &[u8],
        limits: FunctionLimits,
    ) -> Result<(Arc<Function>, bool), DeployError> {
        crate::sandbox::check_function_name(name)?;
        let started = Instant::now();
        let compiled = self.sandbox.compile(tenant, name, module, limits)?;
        let bytes = compiled.serialize()?;
        let memfd = nix::sys::memfd::memfd_create(
            c"sandstorm-function",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| DeployError::Invalid(format!("creating a memfd for the code: {e}")))?;
        std::fs::File::from(memfd.try_clone().map_err(|e| io_deploy(&e))?)
            .write_all(&bytes)
            .map_err(|e| io_deploy(&e))?;
        let function = WasmFunction {
            tenant: tenant.0,
            name: name.to_owned(),
            version: self.next_version.fetch_add(1, Ordering::Relaxed),
            limits,
        };
        self.zygote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(&ToZygote::Load(function.clone()), &[memfd.as_raw_fd()])
            .map_err(|e| io_deploy(&e))?;
        let version = function.version;
        Ok(self.install(Function {
            tenant,
            name: name.to_owned(),
            limits,
            code: Code::Wasm {
                function,
                code: memfd,
            },
            version,
            compile_time: started.elapsed(),
        }))
    }

    /// Deploys a native function: `argv[0]` is a program of the base root file system.
    pub fn deploy_native(
        &self,
        tenant: TenantId,
        name: &str,
        argv: Vec<String>,
        limits: FunctionLimits,
    ) -> Result<(Arc<Function>, bool), DeployError> {
        crate::sandbox::check_function_name(name)?;
        let Some(program) = argv.first() else {
            return Err(DeployError::BadCommand("the command is empty".into()));
        };
        if !program.starts_with('/') || argv.iter().any(|a| a.contains('\0')) {
            return Err(DeployError::BadCommand(format!(
                "the command's program must be an absolute path in the base root file system (such as /bin/sh), without NUL bytes; got {program:?}"
            )));
        }
        // Looked up without following a last symbolic link, so only the base's own names
        // answer (busybox's applets are relative links to it).
        let in_base = base_dir(&self.config.state_dir).join(program.trim_start_matches('/'));
        if program.split('/').any(|c| c == "..") || std::fs::symlink_metadata(&in_base).is_err() {
            return Err(DeployError::BadCommand(format!(
                "the base root file system has no program {program:?} (it holds busybox and its applets under /bin)"
            )));
        }
        Ok(self.install(Function {
            tenant,
            name: name.to_owned(),
            limits,
            code: Code::Native { argv },
            version: self.next_version.fetch_add(1, Ordering::Relaxed),
            compile_time: Duration::ZERO,
        }))
    }

    fn install(&self, function: Function) -> (Arc<Function>, bool) {
        let key = (function.tenant, function.name.clone());
        let function = Arc::new(function);
        let replaced = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), function.clone())
            .is_some();
        // An older version's warm container goes; running invocations finish in it first.
        let old = self
            .warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        drop(old);
        tracing::info!(tenant = key.0.0, function = %key.1, replaced, "deployed");
        (function, replaced)
    }

    /// Removes a function and its warm container; whether it existed. Blocking.
    pub fn remove(&self, tenant: TenantId, name: &str) -> bool {
        let key = (tenant, name.to_owned());
        let removed = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let warm = self
            .warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        drop(warm);
        self.keep_warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(f) = &removed
            && matches!(f.code, Code::Wasm { .. })
        {
            let unload = ToZygote::Unload {
                tenant: tenant.0,
                name: name.to_owned(),
            };
            if let Err(e) = self
                .zygote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .request(&unload, &[])
            {
                tracing::warn!(error = %e, "unloading a function from the zygote");
            }
        }
        removed.is_some()
    }

    /// Reclaims warm containers idle longer than the keep-alive window; how many. Blocking
    /// (teardown waits for processes to die).
    pub fn reclaim_idle(&self) -> usize {
        let now = Instant::now();
        let kept = self
            .keep_warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let idle: Vec<Arc<WarmSlot>> = {
            let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            let expired: Vec<FunctionKey> = warm
                .iter()
                .filter(|(key, _)| !kept.contains(*key))
                .filter(|(key, slot)| {
                    let window = windows
                        .get(*key)
                        .map_or(Some(self.config.keep_alive), |(_, w)| *w);
                    let Some(window) = window else {
                        return false;
                    };
                    let last = *slot.last_used.lock().unwrap_or_else(|e| e.into_inner());
                    let busy = slot.container.get().is_some_and(|c| c.running() > 0);
                    !busy && now.duration_since(last) >= window
                })
                .map(|(k, _)| k.clone())
                .collect();
            expired.iter().filter_map(|k| warm.remove(k)).collect()
        };
        let n = idle.iter().filter(|s| s.container.initialized()).count();
        // Everything in each goes now, even a process an earlier invocation left running (a
        // child that left its group); the rest of each is torn down when its last holder lets
        // go.
        for slot in &idle {
            if let Some(container) = slot.container.get() {
                container.kill("its keep-alive window passed");
            }
        }
        drop(idle);
        n
    }

    /// Keeps `name`'s (of `tenant`) idle warm container for `window` since its last use
    /// (`None`: until told otherwise) instead of the node's keep-alive, as the scheduler's
    /// policy says; with `prewarm`, assembles one first if it has none. Reclaims it now if it is
    /// idle past the new window; returns how many containers that reclaimed. An order `seq`
    /// older than the last one applied for the function is ignored.
    pub async fn set_keep_alive(
        &self,
        tenant: TenantId,
        name: &str,
        window: Option<Duration>,
        prewarm: bool,
        seq: u64,
    ) -> Result<usize, ExecuteError> {
        let function = self.function(tenant, name)?;
        {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let slot = windows
                .entry((tenant, function.name.clone()))
                .or_insert((0, window));
            if seq < slot.0 {
                return Ok(0);
            }
            *slot = (seq, window);
        }
        if prewarm {
            let (_, slot, _) = self.warm_container(&function).await?;
            *slot.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        Ok(tokio::task::block_in_place(|| self.reclaim_idle()))
    }

    /// Runs one invocation in its function's warm container, assembling one if there is none.
    pub async fn execute(
        &self,
        tenant: TenantId,
        name: &str,
        input: Vec<u8>,
    ) -> Result<Execution, ExecuteError> {
        let function = self.function(tenant, name)?;
        let max_payload = self.sandbox.config().max_payload_bytes;
        if input.len() > max_payload {
            return Err(RunError::InputTooLarge {
                len: input.len(),
                limit: max_payload,
            }
            .into());
        }
        self.counters.invocations.fetch_add(1, Ordering::Relaxed);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.execute_in_container(&function, input).await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let start = result.as_ref().ok().map(|e| match e.start_kind {
            StartKind::Warm => "warm",
            StartKind::Assembled => "assembled",
            StartKind::Cold => "cold",
        });
        crate::telemetry::execution("compute", started, start);
        result
    }

    /// Runs `names` (functions of `tenant`) in sequence on this node (the local bus), each
    /// step's output handed to the next in memory. Every function is looked up first, so an
    /// `Err` means nothing ran; a step that fails ends the chain and is named in `failure`.
    pub async fn execute_chain(
        &self,
        tenant: TenantId,
        names: &[String],
        input: Vec<u8>,
    ) -> Result<ChainExecution, ExecuteError> {
        for name in names {
            self.function(tenant, name)?;
        }
        let mut steps = Vec::with_capacity(names.len());
        let mut input = input;
        let mut previous_done: Option<Instant> = None;
        for (i, name) in names.iter().enumerate() {
            let handoff = previous_done.map_or(Duration::ZERO, |t| t.elapsed());
            let input_bytes = input.len();
            match self.execute(tenant, name, input).await {
                Ok(mut execution) => {
                    input = std::mem::take(&mut execution.output);
                    previous_done = Some(Instant::now());
                    steps.push(ChainStep {
                        execution,
                        input_bytes,
                        handoff,
                    });
                }
                Err(e) => {
                    return Ok(ChainExecution {
                        steps,
                        output: Vec::new(),
                        failure: Some((i, e)),
                    });
                }
            }
        }
        Ok(ChainExecution {
            steps,
            output: input,
            failure: None,
        })
    }

    /// `function`'s warm container, assembled now if it has none (how it was obtained, its
    /// slot and the container).
    async fn warm_container(
        &self,
        function: &Arc<Function>,
    ) -> Result<(StartKind, Arc<WarmSlot>, Arc<Container>), ExecuteError> {
        let slot = {
            let key = (function.tenant, function.name.clone());
            let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            let slot = warm.entry(key).or_insert_with(|| {
                Arc::new(WarmSlot {
                    version: function.version,
                    container: tokio::sync::OnceCell::new(),
                    last_used: Mutex::new(Instant::now()),
                    running: AtomicUsize::new(0),
                    idle: tokio::sync::Notify::new(),
                })
            });
            if slot.version != function.version {
                *slot = Arc::new(WarmSlot {
                    version: function.version,
                    container: tokio::sync::OnceCell::new(),
                    last_used: Mutex::new(Instant::now()),
                    running: AtomicUsize::new(0),
                    idle: tokio::sync::Notify::new(),
                });
            }
            slot.clone()
        };
        let mut start_kind = StartKind::Warm;
        let container = slot
            .container
            .get_or_try_init(|| async {
                let (kind, container) = self.assemble_async(function).await?;
                start_kind = kind;
                Ok::<_, ExecuteError>(Arc::new(container))
            })
            .await?
            .clone();
        Ok((start_kind, slot, container))
    }

    /// Runs one invocation in `function`'s warm container under its deadline, counted from
    /// when the container is handed the invocation (as the template counts it; assembling a
    /// container is not the function's time). When the template reports it killed the
    /// invocation at its deadline, or [`DEADLINE_GRACE`] after the deadline whatever the
    /// container is doing (running the invocation, or its template or spare still in the
    /// function's start function), the whole container is killed (every process in its PID
    /// namespace and cgroup: children that left the invocation's process group too), its
    /// cgroup removed, and it leaves the warm set: it is never used again. The caller gets
    /// `DeadlineExceeded`.
    async fn execute_in_container(
        &self,
        function: &Arc<Function>,
        input: Vec<u8>,
    ) -> Result<Execution, ExecuteError> {
        let started = Instant::now();
        let deadline = function.limits.deadline;
        let (start_kind, slot, container) = self.warm_container(function).await?;
        let handed = Instant::now();
        // Finding the container warm, it waited only for it (being assembled by another
        // invocation of the function, say): its queueing. Its start begins now.
        let (queued, start_from) = if start_kind == StartKind::Warm {
            (handed.saturating_duration_since(started), handed)
        } else {
            (Duration::ZERO, started)
        };
        *slot.last_used.lock().unwrap_or_else(|e| e.into_inner()) = handed;
        slot.running.fetch_add(1, Ordering::SeqCst);
        let run = self.run_in_container(function, start_kind, &container, start_from, input);
        let (mut result, reported) = tokio::select! {
            result = run => (result, true),
            () = tokio::time::sleep_until((handed + deadline + DEADLINE_GRACE).into()) => {
                (Err(RunError::DeadlineExceeded { deadline }.into()), false)
            }
        };
        if let Ok(execution) = &mut result {
            execution.queue = queued;
        }
        if slot.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            slot.idle.notify_waiters();
        }
        if matches!(
            result,
            Err(ExecuteError::Run(RunError::DeadlineExceeded { .. }))
        ) {
            // When the template stopped it at its deadline, the others running beside it get
            // up to the grace to end (at their own deadlines, say) before the container goes;
            // past the grace already, it goes now.
            let grace = if reported {
                DEADLINE_GRACE
            } else {
                Duration::ZERO
            };
            self.reclaim(function, &slot, container, grace).await;
        }
        result
    }

    /// Takes a container whose invocation passed its deadline out of the warm set, lets the
    /// other invocations running in it end for up to `grace`, and kills everything in it (see
    /// [`Container::kill`]), before the caller hears of it.
    async fn reclaim(
        &self,
        function: &Function,
        slot: &Arc<WarmSlot>,
        container: Arc<Container>,
        grace: Duration,
    ) {
        {
            let key = (function.tenant, function.name.clone());
            let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            if warm.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                warm.remove(&key);
            }
        }
        let others_ended = async {
            loop {
                let idle = slot.idle.notified();
                if slot.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, others_ended).await;
        let why = format!(
            "an invocation passed its deadline of {:?}",
            function.limits.deadline
        );
        let killed = tokio::task::spawn_blocking(move || container.kill(&why)).await;
        if let Err(e) = killed {
            tracing::error!(error = %e, "killing a container past its deadline");
        }
    }

    /// The invocation itself, in `container` (obtained since `started`, as `start_kind`).
    async fn run_in_container(
        &self,
        function: &Arc<Function>,
        start_kind: StartKind,
        container: &Arc<Container>,
        started: Instant,
        input: Vec<u8>,
    ) -> Result<Execution, ExecuteError> {
        let ready = started.elapsed();
        let deadline = function.limits.deadline;
        let execution = match &function.code {
            Code::Wasm { .. } => {
                let run = container
                    .run_wasm(function.tenant, &input, deadline, &self.router)
                    .await
                    .map_err(|e| ExecuteError::Lost(e.to_string()))?;
                let output = run.result?;
                let link = run.link.ok_or_else(|| {
                    ExecuteError::Lost("the function succeeded without a report".into())
                })?;
                if let Some(running) = link.stats.running_at {
                    self.record_start(start_kind, running.saturating_duration_since(started));
                }
                Execution {
                    output,
                    start_kind,
                    start: ready + link.start,
                    exec: link.exec,
                    data_calls: link.stats.data_calls,
                    keys_read: link.stats.keys_read,
                    bytes_read: link.stats.bytes_read,
                    bytes_written: link.stats.bytes_written,
                    data_wait: link.stats.data_wait,
                    queue: Duration::ZERO,
                }
            }
            Code::Native { argv } => {
                let argv = argv.clone();
                let c = container.clone();
                let ran = Instant::now();
                let result = tokio::task::spawn_blocking(move || {
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    c.run(&argv, &input, deadline)
                })
                .await
                .map_err(|e| ExecuteError::Lost(e.to_string()))?
                .map_err(|e| ExecuteError::Lost(e.to_string()))?;
                let exec = ran.elapsed();
                if let Some(first_byte) = result.first_byte {
                    self.record_start(start_kind, ready + first_byte);
                }
                let output = match result.outcome {
                    Outcome::Exited(0) => result.output,
                    Outcome::Exited(code) => {
                        return Err(RunError::Failed(format!(
                            "exited with code {code}: {}",
                            String::from_utf8_lossy(&result.output)
                        ))
                        .into());
                    }
                    Outcome::DeadlineExceeded => {
                        return Err(RunError::DeadlineExceeded { deadline }.into());
                    }
                    Outcome::MemoryLimit => {
                        return Err(RunError::MemoryLimit {
                            wanted: 0,
                            limit: usize::try_from(self.config.limits.memory_bytes)
                                .unwrap_or(usize::MAX),
                        }
                        .into());
                    }
                    Outcome::Signaled(signal) => {
                        return Err(RunError::Trap(format!("killed by signal {signal}")).into());
                    }
                    Outcome::Refused(why) => return Err(RunError::NoSlot(why).into()),
                };
                Execution {
                    output,
                    start_kind,
                    start: ready,
                    exec,
                    data_calls: 0,
                    keys_read: 0,
                    bytes_read: 0,
                    bytes_written: 0,
                    data_wait: Duration::ZERO,
                    queue: Duration::ZERO,
                }
            }
        };
        Ok(execution)
    }

    /// Records an invocation's start, as the kind of start it was: from its request (a warm
    /// one: from its container being there) until its function ran, instantiation inside the
    /// container included, which is what the cost model charges a start on this node.
    /// (Assembly returns before the container's processes have joined it: the first invocation
    /// waits for that, so its start is where the cost shows.)
    fn record_start(&self, start_kind: StartKind, cost: Duration) {
        let kind = match start_kind {
            StartKind::Warm => CostKind::WarmStart,
            StartKind::Assembled => CostKind::ContainerAssembly,
            StartKind::Cold => CostKind::ContainerCold,
        };
        self.meter.record(kind, cost);
    }

    /// Assembles a container for `function` on a blocking thread.
    async fn assemble_async(
        &self,
        function: &Function,
    ) -> Result<(StartKind, Container), ExecuteError> {
        let container = tokio::task::block_in_place(|| {
            self.assemble_function(function.tenant, &function.name, false)
        })?;
        self.counters.assemblies.fetch_add(1, Ordering::Relaxed);
        let kind = match container.provenance {
            Provenance::Pooled => StartKind::Assembled,
            Provenance::Built => StartKind::Cold,
        };
        Ok((kind, container))
    }
}

fn io_deploy(e: &io::Error) -> DeployError {
    DeployError::Invalid(format!("installing the compiled code: {e}"))
}

// Dropping the node drops its warm containers and pools, whose parts release themselves:
// cgroups are removed, root file system holders killed, namespace descriptors closed, the
// zygote killed.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_live_agent_of_one_name_does_not_start() {
        let name = format!("lock-test-{}", std::process::id());
        let first = match lock_name_on_host(&name) {
            Ok(lock) => lock,
            Err(e) => {
                println!("SKIPPED: cannot write /run/sandstorm here: {e}");
                return;
            }
        };
        let refused = lock_name_on_host(&name).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("another compute agent named {name:?}")),
            "{refused}"
        );
        drop(first);
        assert!(
            lock_name_on_host(&name).is_ok(),
            "free again once it is gone"
        );
        let _ =
            std::fs::remove_file(Path::new("/run/sandstorm").join(format!("compute-{name}.lock")));
    }
}
