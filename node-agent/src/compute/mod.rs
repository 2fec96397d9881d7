//! The compute role: functions in Linux containers assembled in about a millisecond from parts
//! made ahead of time (FlashCube), by forking a template rather than booting anything (SOCK),
//! with a warm container per function whose template forks a process per invocation (SAND).
//!
//! - [`parts`]: network, IPC/UTS namespaces, root file systems (overlay in a pivoted mount
//!   namespace, held by PID 1 of its PID namespace), cgroups with limits;
//! - [`pool`]: background-refilled pools of them;
//! - [`zygote`]: the single-threaded processes that assemble and run containers.
//!
//! Work in progress (the compute-node issue): native programs only (no Wasm template yet), no
//! gRPC service, no keep-alive of warm containers by policy, parts destroyed rather than recycled.

pub mod parts;
pub mod pool;
pub mod zygote;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use self::parts::{Cgroup, ContainerLimits, IpcUts, NetNs, RootFs};
use self::pool::Pool;
use self::zygote::{FromTemplate, FromZygote, ToForker, ToTemplate, ToZygote};

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

/// Builds (once) the read-only base root file system: a static busybox and its applets.
pub fn build_base(state_dir: &Path) -> io::Result<PathBuf> {
    let base = state_dir.join("base");
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

/// The agent's side of the zygote.
#[derive(Debug)]
struct Zygote {
    sock: OwnedFd,
    child: std::process::Child,
}

impl Zygote {
    fn start(exe: &Path) -> io::Result<Self> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let mut command = std::process::Command::new(exe);
        command.arg("__zygote").stdin(std::process::Stdio::null());
        let raw = theirs.as_raw_fd();
        // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe, and the copy
        // on descriptor 3 has no close-on-exec flag.
        #[allow(unsafe_code)]
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        Ok(Self { sock: ours, child })
    }
}

impl Zygote {
    /// Parks a forker in the cgroups of `procs` and waits until it has joined them.
    fn park(&self, procs: &[OwnedFd]) -> io::Result<OwnedFd> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let mut fds = vec![theirs.as_raw_fd()];
        fds.extend(procs.iter().map(AsRawFd::as_raw_fd));
        zygote::send(self.sock.as_fd(), &ToZygote::Park, &fds)?;
        match zygote::recv::<FromZygote>(self.sock.as_fd())? {
            Some((FromZygote::Parked { .. }, _)) => {}
            Some((FromZygote::Failed { error }, _)) => return Err(io::Error::other(error)),
            _ => return Err(io::Error::other("the zygote is gone")),
        }
        drop(theirs);
        // Joining the cgroups happens in the forker, without holding the zygote.
        Ok(ours)
    }
}

/// Waits for a parked forker's `Ready`.
fn wait_ready(forker: &OwnedFd) -> io::Result<()> {
    match zygote::recv::<FromZygote>(forker.as_fd())? {
        Some((FromZygote::Ready, _)) => Ok(()),
        Some((FromZygote::Failed { error }, _)) => {
            Err(io::Error::other(format!("parking a forker: {error}")))
        }
        _ => Err(io::Error::other("the parked forker is gone")),
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which parts came from pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Every part came ready from a pool.
    Pooled,
    /// Some part was made on the critical path.
    Built,
}

/// A container: its parts and the template that runs its invocations.
#[derive(Debug)]
pub struct Container {
    template: OwnedFd,
    net: NetNs,
    ipc_uts: IpcUts,
    rootfs: RootFs,
    cgroup: Cgroup,
    /// How it was assembled.
    pub provenance: Provenance,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed at its deadline.
    DeadlineExceeded,
    /// Killed by the memory limit.
    MemoryLimit,
    /// Killed by a signal (number).
    Signaled(i32),
}

/// One invocation's result.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Its standard output and error, as written.
    pub output: Vec<u8>,
    /// How it ended.
    pub outcome: Outcome,
    /// From the request to the first byte the program wrote (it is running), if it wrote any.
    pub first_byte: Option<Duration>,
    /// Whether the pids limit refused it a fork.
    pub hit_pids_limit: bool,
}

impl Container {
    /// Starts `argv` without waiting (empty stdin); its output is read from the returned file.
    /// Collect its exit with [`Container::wait_exits`].
    pub fn spawn(&self, argv: &[&str], deadline: Duration) -> io::Result<std::fs::File> {
        self.start(argv, b"", deadline)
    }

    /// Asks the template to run `argv`, writes `input` to its stdin and closes it; returns the
    /// read end of its stdout.
    fn start(&self, argv: &[&str], input: &[u8], deadline: Duration) -> io::Result<std::fs::File> {
        let (stdin_r, stdin_w) = nix::unistd::pipe()?;
        let (stdout_r, stdout_w) = nix::unistd::pipe()?;
        let argv = argv.iter().map(|a| (*a).to_owned()).collect();
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        zygote::send(
            self.template.as_fd(),
            &ToTemplate::Run { argv, deadline_ms },
            &[stdin_r.as_raw_fd(), stdout_w.as_raw_fd()],
        )?;
        drop((stdin_r, stdout_w));
        let mut stdin = std::fs::File::from(stdin_w);
        // A program that exits without reading its input is not an error. (Inputs beyond a
        // pipe's 64 KiB would need a writer thread; invocations here are small.)
        let _ = stdin.write_all(input);
        Ok(std::fs::File::from(stdout_r))
    }

    /// Waits for `n` exits of spawned processes.
    pub fn wait_exits(&self, n: usize) -> io::Result<()> {
        let mut seen = 0;
        while seen < n {
            match zygote::recv::<FromTemplate>(self.template.as_fd())? {
                None => return Err(io::Error::other("the container's template is gone")),
                Some((FromTemplate::Failed { error }, _)) => return Err(io::Error::other(error)),
                Some((FromTemplate::Exited { .. }, _)) => seen += 1,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Memory the container's cgroup charges now, bytes.
    pub fn memory_usage(&self) -> u64 {
        self.cgroup.memory_usage()
    }

    /// Runs `argv` in the container with `input` on stdin; waits until it ends.
    pub fn run(&self, argv: &[&str], input: &[u8], deadline: Duration) -> io::Result<RunResult> {
        let started = Instant::now();
        let memory_hits = self.cgroup.memory_limit_hits();
        let pids_hits = self.cgroup.pids_limit_hits();
        let mut stdout = self.start(argv, input, deadline)?;
        let mut output = Vec::new();
        let mut first_byte = None;
        let mut buf = [0u8; 8192];
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(|| started.elapsed());
            output.extend_from_slice(&buf[..n]);
        }
        let outcome = loop {
            match zygote::recv::<FromTemplate>(self.template.as_fd())? {
                None => return Err(io::Error::other("the container's template is gone")),
                Some((FromTemplate::Failed { error }, _)) => return Err(io::Error::other(error)),
                Some((FromTemplate::Started { .. }, _)) => {}
                Some((
                    FromTemplate::Exited {
                        code,
                        signal,
                        deadline,
                        ..
                    },
                    _,
                )) => {
                    break if deadline {
                        Outcome::DeadlineExceeded
                    } else if let Some(code) = code {
                        Outcome::Exited(code)
                    } else if self.cgroup.memory_limit_hits() > memory_hits {
                        Outcome::MemoryLimit
                    } else {
                        Outcome::Signaled(signal.unwrap_or(0))
                    };
                }
            }
        };
        Ok(RunResult {
            output,
            outcome,
            first_byte,
            hit_pids_limit: self.cgroup.pids_limit_hits() > pids_hits,
        })
    }
}

/// Parts alive now, by kind, for leak checks.
#[derive(Debug, Default)]
pub struct PartCounts {
    containers: AtomicU64,
}

/// A compute node: pools, the zygote, and containers assembled from them.
#[derive(Debug)]
pub struct ComputeNode {
    config: ComputeConfig,
    /// Also held by the cgroup pool's factory; dropped (and the zygote killed) with the node.
    _zygote: std::sync::Arc<Mutex<Zygote>>,
    netns: Pool<NetNs>,
    ipc_uts: Pool<IpcUts>,
    rootfs: Pool<RootFs>,
    cgroups: Pool<Cgroup>,
    next_cgroup: std::sync::Arc<AtomicU64>,
    live: PartCounts,
}

impl ComputeNode {
    /// Checks the machine, clears what a killed predecessor left, builds the base root file
    /// system, starts the zygote and fills the pools in the background.
    pub fn start(config: ComputeConfig) -> io::Result<Self> {
        preflight().map_err(io::Error::other)?;
        let stale = parts::remove_stale_cgroups(&config.name);
        if stale > 0 {
            tracing::warn!(node = %config.name, cgroups = stale, "removed cgroups a previous agent left behind");
        }
        std::fs::create_dir_all(&config.state_dir)?;
        let base = build_base(&config.state_dir)?;
        let zygote = std::sync::Arc::new(Mutex::new(Zygote::start(&config.exe)?));
        let parker = zygote.clone();
        let size = config.pool_size;
        let exe = config.exe.clone();
        let (node, limits) = (config.name.clone(), config.limits);
        let next_cgroup = std::sync::Arc::new(AtomicU64::new(0));
        let counter = next_cgroup.clone();
        Ok(Self {
            netns: Pool::new("netns", size, parts::create_netns),
            ipc_uts: Pool::new("ipc-uts", size, parts::create_ipc_uts),
            rootfs: Pool::new("rootfs", size, move || parts::create_rootfs(&exe, &base)),
            cgroups: Pool::new("cgroup", size, move || {
                let id = counter.fetch_add(1, Ordering::Relaxed);
                let park = |procs: &[OwnedFd]| -> io::Result<OwnedFd> {
                    let forker = parker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .park(procs)?;
                    wait_ready(&forker)?;
                    Ok(forker)
                };
                parts::create_cgroup(&node, &format!("c{id}"), limits, park)
            }),
            next_cgroup,
            _zygote: zygote,
            config,
            live: PartCounts::default(),
        })
    }

    /// Waits until every pool is full.
    pub fn wait_pools_full(&self, timeout: Duration) -> bool {
        self.netns.wait_full(timeout)
            && self.ipc_uts.wait_full(timeout)
            && self.rootfs.wait_full(timeout)
            && self.cgroups.wait_full(timeout)
    }

    /// Pool levels: (ready, target) for netns, ipc-uts, rootfs, cgroup.
    pub fn pool_levels(&self) -> [(&'static str, usize, usize); 4] {
        [
            ("netns", self.netns.ready(), self.netns.target()),
            ("ipc-uts", self.ipc_uts.ready(), self.ipc_uts.target()),
            ("rootfs", self.rootfs.ready(), self.rootfs.target()),
            ("cgroup", self.cgroups.ready(), self.cgroups.target()),
        ]
    }

    /// Containers alive now.
    pub fn live_containers(&self) -> u64 {
        self.live.containers.load(Ordering::Relaxed)
    }

    /// Assembles a container from pooled parts (making any that is missing), or, with
    /// `from_scratch`, from parts made now on the caller's thread.
    pub fn assemble(&self, from_scratch: bool) -> io::Result<Container> {
        let take = |pooled: bool| -> io::Result<(NetNs, IpcUts, RootFs, Cgroup, bool)> {
            if !pooled {
                return Ok((
                    self.netns.make()?,
                    self.ipc_uts.make()?,
                    self.rootfs.make()?,
                    self.cgroups.make()?,
                    false,
                ));
            }
            let (net, a) = self.netns.take_or_make()?;
            let (ipc_uts, b) = self.ipc_uts.take_or_make()?;
            let (rootfs, c) = self.rootfs.take_or_make()?;
            let (cgroup, d) = self.cgroups.take_or_make()?;
            Ok((net, ipc_uts, rootfs, cgroup, a && b && c && d))
        };
        let (net, ipc_uts, rootfs, cgroup, all_pooled) = take(!from_scratch)?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let fds = [
            net.0.as_raw_fd(),
            ipc_uts.ipc.as_raw_fd(),
            ipc_uts.uts.as_raw_fd(),
            rootfs.mnt.as_raw_fd(),
            rootfs.pid.as_raw_fd(),
            theirs.as_raw_fd(),
        ];
        // The forker parked in the cgroup does the work; the zygote is not involved.
        let forker = cgroup.forker.as_fd();
        zygote::send(
            forker,
            &ToForker::Assemble {
                uid: self.config.uid,
                gid: self.config.gid,
            },
            &fds,
        )?;
        let reply = zygote::recv::<FromZygote>(forker)?;
        drop(theirs);
        match reply {
            Some((FromZygote::Assembled { .. }, _)) => {}
            Some((FromZygote::Failed { error }, _)) => {
                return Err(io::Error::other(format!("assembly failed: {error}")));
            }
            _ => return Err(io::Error::other("the parked forker is gone")),
        }
        self.live.containers.fetch_add(1, Ordering::Relaxed);
        Ok(Container {
            template: ours,
            net,
            ipc_uts,
            rootfs,
            cgroup,
            provenance: if all_pooled {
                Provenance::Pooled
            } else {
                Provenance::Built
            },
        })
    }

    /// Tears a container down: its template and processes, then its parts.
    pub fn destroy(&self, container: Container) {
        let Container {
            template,
            net,
            ipc_uts,
            rootfs,
            cgroup,
            ..
        } = container;
        drop(template); // The template kills its processes when the agent hangs up.
        cgroup.destroy();
        rootfs.destroy();
        drop((net, ipc_uts));
        self.live.containers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Cgroups created so far (pooled and on demand).
    pub fn cgroups_created(&self) -> u64 {
        self.next_cgroup.load(Ordering::Relaxed)
    }
}

// Dropping the node drops its pools, whose parts release themselves: cgroups are removed,
// root file system holders killed, namespace descriptors closed, the zygote killed.
