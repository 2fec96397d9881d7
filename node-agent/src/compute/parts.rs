//! The parts a container is assembled from, each created ahead of time off the critical path:
//!
//! - [`NetNs`]: a network namespace with only `lo`, up;
//! - [`IpcUts`]: an IPC and a UTS namespace (hostname `sandbox`);
//! - [`RootFs`]: a mount namespace whose root is an overlay of the read-only base root file system
//!   and a per-instance writable tmpfs layer, already pivoted into, with `/proc` of its own PID
//!   namespace and a minimal `/dev`; held by a small process that is PID 1 of that namespace;
//! - [`Cgroup`]: a control group with memory, CPU and pids limits set, its `cgroup.procs` files
//!   open so a process joins it with one write;
//! - [`Forker`]: a root file system and a cgroup paired, with a process of the zygote's parked
//!   inside both (in the cgroup and in the PID namespace), waiting to become a container's
//!   template. The two parts a process must be born into or moved into are joined here, off
//!   the critical path: entering a PID namespace takes a fork, and moving into a cgroup on
//!   cgroup v1 waits for an RCU grace period (10-20 ms).
//!
//! Namespaces are held by file descriptors (or by the holder process), never by mounts on the
//! host, so when the agent dies they die with it: nothing is left behind but cgroup directories,
//! which [`remove_stale_cgroups`] clears at start.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::{MaxValue, hierarchies};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::sethostname;

/// Limits every container gets (per function later; one size for now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerLimits {
    /// Memory limit, bytes (default 128 MiB).
    pub memory_bytes: i64,
    /// Most processes at once (default 64).
    pub pids: i64,
    /// CPU quota per period, microseconds (default 100,000 of 100,000: one core).
    pub cpu_quota_us: i64,
    /// CPU period, microseconds.
    pub cpu_period_us: u64,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            pids: 64,
            cpu_quota_us: 100_000,
            cpu_period_us: 100_000,
        }
    }
}

/// A network namespace with only `lo`.
#[derive(Debug)]
pub struct NetNs(pub OwnedFd);

/// An IPC and a UTS namespace.
#[derive(Debug)]
pub struct IpcUts {
    pub ipc: OwnedFd,
    pub uts: OwnedFd,
}

/// Runs `f` on a fresh thread that may unshare its own namespaces without touching the rest of
/// the agent; the namespaces outlive the thread through the descriptors `f` opens.
fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("ns-maker".into())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Creates a network namespace and brings its loopback up.
pub fn create_netns() -> io::Result<NetNs> {
    on_own_thread(|| {
        unshare(CloneFlags::CLONE_NEWNET)?;
        // A process forked from this thread starts in its network namespace.
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "`ip link set lo up` failed: {status}"
            )));
        }
        Ok(NetNs(File::open("/proc/thread-self/ns/net")?.into()))
    })
}

/// Creates an IPC and a UTS namespace (hostname `sandbox`).
pub fn create_ipc_uts() -> io::Result<IpcUts> {
    on_own_thread(|| {
        unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)?;
        sethostname("sandbox")?;
        Ok(IpcUts {
            ipc: File::open("/proc/thread-self/ns/ipc")?.into(),
            uts: File::open("/proc/thread-self/ns/uts")?.into(),
        })
    })
}

/// A root file system in its own mount namespace, with the PID namespace it belongs to.
#[derive(Debug)]
pub struct RootFs {
    holder: Child,
    /// The mount namespace (root already pivoted into the overlay).
    pub mnt: OwnedFd,
    /// The PID namespace whose PID 1 holds it.
    pub pid: OwnedFd,
}

impl RootFs {
    /// Kills every process of its PID namespace: its holder dies, so PID 1 (its child, which
    /// dies with it) does, and the kernel kills everything else in the namespace with it. Does
    /// not wait. (The holder is reaped only when this is dropped, so its pid is not reused
    /// before.)
    pub fn kill(&self) {
        if let Ok(pid) = i32::try_from(self.holder.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for RootFs {
    fn drop(&mut self) {
        // SIGKILL cannot be caught: the wait is short, and leaves no zombie.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Starts a holder (`exe __holder BASE`) in a new mount namespace whose children start a new PID
/// namespace; it mounts the overlay and `/proc`, pivots, and reports ready.
pub fn create_rootfs(exe: &Path, base: &Path) -> io::Result<RootFs> {
    let mut command = Command::new(exe);
    command
        .arg("__holder")
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (unshare, prctl), which are async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    let mut holder = command.spawn()?;
    let stdout = holder
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("holder has no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let pid: u32 = match line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
    {
        Some(pid) => pid,
        None => {
            let _ = holder.kill();
            let status = holder.wait()?;
            return Err(io::Error::other(format!(
                "root file system holder failed ({status}): {line:?}"
            )));
        }
    };
    Ok(RootFs {
        holder,
        mnt: File::open(format!("/proc/{pid}/ns/mnt"))?.into(),
        pid: File::open(format!("/proc/{pid}/ns/pid"))?.into(),
    })
}

/// A control group with limits set, its `cgroup.procs` files open for joining.
#[derive(Debug)]
pub struct Cgroup {
    /// Its `cgroup.procs` in each hierarchy: writing "0" to each moves the writer in.
    pub procs: Vec<OwnedFd>,
    /// Where the memory controller's files are, to tell a memory kill from others.
    memory_dir: PathBuf,
    /// Where the pids controller's files are.
    pids_dir: PathBuf,
    /// Its directory in each hierarchy.
    dirs: Vec<PathBuf>,
}

/// A process parked in a cgroup and in a root file system's PID namespace (see
/// [`super::zygote`]), and the two parts. Dropped in field order: the process sees its socket
/// hang up and exits, then the cgroup (killing anything left) and the root file system go.
#[derive(Debug)]
pub struct Forker {
    /// The parked process's socket; once it is assembled, its template's.
    pub sock: OwnedFd,
    /// The socket of the process it forked to run the container's first invocation.
    pub spare: OwnedFd,
    pub cgroup: Cgroup,
    pub rootfs: RootFs,
}

impl Forker {
    /// Pairs `rootfs` and `cgroup` with a process that `park` starts inside both: it is given
    /// the PID namespace and the `cgroup.procs` files, and returns the process's socket and
    /// its spare's once they are in.
    pub fn park(
        rootfs: RootFs,
        cgroup: Cgroup,
        park: impl FnOnce(&OwnedFd, &[OwnedFd]) -> io::Result<(OwnedFd, OwnedFd)>,
    ) -> io::Result<Self> {
        let (sock, spare) = park(&rootfs.pid, &cgroup.procs)?;
        Ok(Self {
            sock,
            spare,
            cgroup,
            rootfs,
        })
    }
}

/// The cgroup root of this agent's containers, relative to each hierarchy.
pub fn cgroup_parent(node: &str) -> String {
    format!("sandstorm/{node}")
}

fn hierarchy_dirs(relative: &str) -> (Vec<PathBuf>, PathBuf, PathBuf) {
    if hierarchies::is_cgroup2_unified_mode() {
        let dir = Path::new("/sys/fs/cgroup").join(relative);
        (vec![dir.clone()], dir.clone(), dir)
    } else {
        let dir = |c: &str| Path::new("/sys/fs/cgroup").join(c).join(relative);
        (
            vec![dir("memory"), dir("cpu"), dir("pids")],
            dir("memory"),
            dir("pids"),
        )
    }
}

/// Creates cgroup `sandstorm/<node>/<name>` with `limits`.
pub fn create_cgroup(node: &str, name: &str, limits: ContainerLimits) -> io::Result<Cgroup> {
    let relative = format!("{}/{name}", cgroup_parent(node));
    // Built (directories made, limits written) by cgroups-rs; afterwards the part is its files.
    CgroupBuilder::new(&relative)
        .memory()
        .memory_hard_limit(limits.memory_bytes)
        .done()
        .pid()
        .maximum_number_of_processes(MaxValue::Value(limits.pids))
        .done()
        .cpu()
        .period(limits.cpu_period_us)
        .quota(limits.cpu_quota_us)
        .done()
        .set_specified_controllers(vec!["memory".into(), "pids".into(), "cpu".into()])
        .build(hierarchies::auto())
        .map_err(|e| io::Error::other(format!("creating cgroup {relative}: {e}")))?;
    let (dirs, memory_dir, pids_dir) = hierarchy_dirs(&relative);
    let mut procs = Vec::new();
    for dir in dirs {
        let path = dir.join("cgroup.procs");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        procs.push(file.into());
    }
    Ok(Cgroup {
        procs,
        memory_dir,
        pids_dir,
        dirs: hierarchy_dirs(&relative).0,
    })
}

impl Cgroup {
    /// Times the memory limit was hit (v1 `memory.failcnt`, v2 `memory.events` max).
    pub fn memory_limit_hits(&self) -> u64 {
        read_counter(&self.memory_dir.join("memory.failcnt"), None)
            .or_else(|| read_counter(&self.memory_dir.join("memory.events"), Some("max")))
            .unwrap_or(0)
    }

    /// Its memory limit (v1 `memory.limit_in_bytes`, v2 `memory.max`), bytes.
    pub fn memory_limit(&self) -> u64 {
        read_counter(&self.memory_dir.join("memory.limit_in_bytes"), None)
            .or_else(|| read_counter(&self.memory_dir.join("memory.max"), None))
            .unwrap_or(0)
    }

    /// Memory charged to it now (v1 `memory.usage_in_bytes`, v2 `memory.current`), bytes.
    pub fn memory_usage(&self) -> u64 {
        read_counter(&self.memory_dir.join("memory.usage_in_bytes"), None)
            .or_else(|| read_counter(&self.memory_dir.join("memory.current"), None))
            .unwrap_or(0)
    }

    /// Times a fork was refused by the pids limit.
    pub fn pids_limit_hits(&self) -> u64 {
        read_counter(&self.pids_dir.join("pids.events"), Some("max")).unwrap_or(0)
    }

    /// Its directory in each hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Kills every process in it until none is left (a process forking meanwhile is caught on
    /// the next pass: its children are listed then), then removes it. Gives up after
    /// `patience`; whether it is gone. Blocking.
    pub fn empty_and_remove(&self, patience: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + patience;
        loop {
            let mut left = 0usize;
            for dir in &self.dirs {
                if !dir.exists() {
                    continue;
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs
                    .lines()
                    .filter_map(|p| p.trim().parse().ok())
                    .collect();
                for &pid in &pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                // Busy while killed processes have not left yet (they do so asynchronously).
                if !pids.is_empty() || (std::fs::remove_dir(dir).is_err() && dir.exists()) {
                    left += 1;
                }
            }
            if left == 0 {
                return true;
            }
            if std::time::Instant::now() >= until {
                tracing::warn!(dirs = ?self.dirs, "a cgroup could not be emptied and removed");
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // What is left is removed at the next start (see `remove_stale_cgroups`).
        self.empty_and_remove(std::time::Duration::from_secs(5));
    }
}

/// Kills every process in the cgroup directory `dir` and removes it; whether it is gone.
fn kill_and_remove(dir: &Path) -> bool {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Killed processes leave the cgroup asynchronously: retry briefly (a later start of the
    // agent removes what is left, see `remove_stale_cgroups`).
    for _ in 0..250 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

fn read_counter(path: &Path, key: Option<&str>) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match key {
        None => text.trim().parse().ok(),
        Some(key) => text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok()),
    }
}

/// Removes what a killed predecessor left in `sandstorm/<node>`: cgroups (and their processes).
/// Returns how many cgroups were removed.
pub fn remove_stale_cgroups(node: &str) -> usize {
    let (dirs, _, _) = hierarchy_dirs(&cgroup_parent(node));
    let mut removed = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if kill_and_remove(&path) {
                removed += 1;
            }
        }
    }
    removed
}
