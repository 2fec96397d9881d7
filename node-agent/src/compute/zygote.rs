//! The processes on the critical path of a container, and the holder of a root file system.
//!
//! - The **zygote** (`sandstorm __zygote`): a single-threaded process started with the agent. On
//!   `Park` (off the critical path, when the forker pool refills) it forks a **parked forker**
//!   into the PID namespace of a pooled root file system, and the forker joins a pooled
//!   cgroup. Both must happen to a process before the request: a process enters a PID
//!   namespace only by being forked into it, and joining a cgroup costs 10-20 ms the first time
//!   on cgroup v1 (the kernel's threadgroup lock waits for an RCU grace period). Everything
//!   forked later from the forker starts inside both for free. While it waits, the forker also
//!   gives up what it will not need (the capability bounding set, the right to gain
//!   privileges: no_new_privs) and installs the whole seccomp filter, compiled once in the
//!   zygote: installing a filter costs the kernel 50-100 us, too much for the critical path.
//!   The filter refuses `setns` for every descriptor below [`RESERVED_FD`] and lets it through
//!   from there up, where only the forker and its spare put namespaces.
//! - The forker then forks its **spare**, which waits beside it to become the container's
//!   first invocation: that one then starts without a fork (a fork costs 60-300 us here, page
//!   tables and the child's page faults). The forker itself waits at the idle scheduling
//!   policy, so on a busy or small machine the spare's way to a running function does not wait
//!   for it. No tenant's code runs in a parked forker or its spare (a WebAssembly start function
//!   runs when an instance is made): they do not know yet whose container they will be, still
//!   hold privileges, and nothing bounds their time.
//! - On `Assemble` (sent to the spare at once, and to the forker with the first invocation)
//!   each moves the namespaces it is sent from `RESERVED_FD` up, joins them (setns into
//!   network, IPC, UTS, and the mount namespace, whose root is already the container's),
//!   closes every descriptor but its own socket to the agent (see [`keep_only`]) and lowers its
//!   descriptor limit (soft and hard) to `RESERVED_FD`, so nothing in the container can hold a
//!   descriptor the filter lets `setns` use, changes its user to `nobody` (which clears its
//!   capabilities; the kernel then refuses `setns` too) and checks that no capability is left.
//!   A WebAssembly spare then makes its instance (running the module's start function); the
//!   spare runs the first `Run` it is sent; the forker becomes the container's **template** and
//!   adopts the spare. Nothing on that path forks, creates a namespace, mounts, installs a
//!   filter or moves a process between cgroups.
//! - The **template** (SAND's second level) lives inside the container for as long as it is
//!   warm. Once its spare runs (or ends), it forks the next one with its prepared instance
//!   and hands the agent its socket, so a warm container's next invocation starts without a
//!   fork too; invocations that find no spare waiting (concurrent ones) get a process forked
//!   on `Run`. For each it adopts or forks it enforces the deadline (killing the invocation's
//!   whole process group) and reports how it exited. The agent enforces every deadline too,
//!   from outside: a template can be stuck in a start function, and a process can leave its
//!   group; at the deadline it kills the whole container (see [`super::container`]). A
//!   **native** invocation execs the function's program; a **WebAssembly** template already
//!   holds the function's compiled code (the zygote loaded it at deploy, so forkers parked
//!   since inherit it) and keeps the next instance prepared, so its process starts running at
//!   once, its data calls going over a descriptor to the agent ([`super::link`]). Nothing is
//!   exec'd. The template prepares the following instance once that process has its input and
//!   runs (it writes a byte on a pipe then), not while the process is starting.
//! - What tenant code holds: every process closes what it does not need with a keep-list
//!   ([`keep_only`]) at each step: a forker when the zygote forks it (the zygote's socket and
//!   everything else of the zygote's goes), a spare when forked, a template and its spare when
//!   they join the container, an invocation's process when forked and again right before the
//!   function runs. A native program starts with descriptors 0, 1 and 2 only; a WebAssembly
//!   function's process holds those and its link. Every descriptor is opened close-on-exec
//!   besides.
//! - Every one of these processes runs with the scheduler's short time slice
//!   ([`crate::scheduling::prefer_latency`], inherited from the zygote): on a busy machine each
//!   wake-up and fork on the way from a request to a running function would otherwise wait
//!   for the running task's slice (milliseconds). Their CPU share and limits do not change.
//! - The **holder** (`sandstorm __holder BASE`): builds a root file system part (see
//!   [`super::parts`]) and stays as PID 1 of its namespace.
//!
//! Messages are JSON over a `SOCK_SEQPACKET` socket, descriptors alongside as `SCM_RIGHTS`; a
//! receiver sizes its buffer to the message (a freshly forked process pays a page fault for
//! every page it writes).
#![allow(unsafe_code)] // fork and exec: every use says why it is sound.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, Gid, Pid, Uid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, execve, fork,
    pivot_root,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::link::AgentLink;
use crate::sandbox::{Compiled, FunctionLimits, Sandbox, SandboxConfig};

/// A WebAssembly function's identity and the version of its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmFunction {
    pub tenant: u32,
    pub name: String,
    /// Changes with every deployment, so a stale copy is never used.
    pub version: u64,
    pub limits: FunctionLimits,
}

/// What the agent asks the zygote.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToZygote {
    /// Fork a forker into the PID namespace sent after its socket, that joins the cgroups
    /// whose `cgroup.procs` are sent after that.
    Park,
    /// Load the function whose serialized code is in the memfd sent alongside: forkers parked
    /// from now on are born holding it.
    Load(WasmFunction),
    /// Forget a function.
    Unload { tenant: u32, name: String },
}

/// What the agent asks a parked forker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToForker {
    /// Join the parts sent alongside (net, ipc, uts, mnt, and for a WebAssembly template the
    /// memfd of its code, used only if the forker does not already hold this version) and
    /// become the container's template, serving `ToTemplate` on the same socket.
    Assemble {
        uid: u32,
        gid: u32,
        wasm: Option<WasmFunction>,
    },
}

/// Answers of the zygote and of forkers.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromZygote {
    /// A forker was forked (host pid); it reports `Ready` on its own socket once in its cgroups.
    Parked {
        pid: i32,
    },
    /// The forker is in its cgroups.
    Ready,
    /// The function is loaded.
    Loaded,
    Failed {
        error: String,
    },
}

/// What the agent asks a container's template.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToTemplate {
    /// Fork a process for invocation `id`. (Sent to the spare instead, it runs it itself.)
    Run {
        id: u64,
        deadline_ms: u64,
        program: Program,
    },
    /// Spare number `spare` runs invocation `id` (the agent sent it the `Run`): report its
    /// exit and enforce its deadline as if it had been forked for it.
    Adopt {
        id: u64,
        deadline_ms: u64,
        spare: u64,
    },
}

/// What an invocation's process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Program {
    /// Exec `argv` with the stdin and stdout descriptors sent alongside.
    Exec { argv: Vec<String> },
    /// Run the template's WebAssembly function over the link descriptor sent alongside.
    Wasm,
}

/// A template's reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromTemplate {
    /// Setup inside the container failed; the template is gone.
    Failed { error: String },
    /// Invocation `id`'s process could not be started.
    Refused { id: u64, error: String },
    /// A new spare waits, its socket sent alongside: send it the next invocation's `Run`,
    /// then `Adopt` it by this number.
    Spare { number: u64 },
    /// It ended: its exit code, or the signal that killed it, and whether that was the deadline.
    Exited {
        id: u64,
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
        deadline: bool,
    },
}

const MAX_MESSAGE: usize = 64 << 10;
const MAX_FDS: usize = 16;

/// Sends `message` with `fds`.
pub fn send(sock: BorrowedFd<'_>, message: &impl Serialize, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one message and its descriptors; `None` when the peer hung up.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    // The message's length first, without taking it (its descriptors stay queued with it): a
    // freshly forked template or forker then touches a buffer of that size, not of the largest
    // message (every page it writes costs a copy-on-write or zero-fill fault).
    let len = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut [IoSliceMut::new(&mut [])],
        None,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
    )?
    .bytes;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "a message of {len} bytes is larger than the limit of {MAX_MESSAGE}"
        )));
    }
    let mut buf = vec![0u8; len.max(1)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buf[..len]).map_err(io::Error::other)?;
    Ok(Some((message, fds)))
}

/// The seccomp filters of every container process, compiled once in the zygote: these calls
/// fail with EPERM (the rest of the kernel interface is allowed, as a deny list like Docker's
/// refusals). Installing a filter costs the kernel a compilation (50-100 us each here), so
/// they are all installed by the parked forker, off the critical path, and inherited by its
/// spare and every process its template forks.
///
/// `setns` is refused for every descriptor below [`RESERVED_FD`]: the forker (as the spare)
/// moves the namespaces it is sent above it, joins them, closes everything from
/// `RESERVED_FD` up and lowers its `RLIMIT_NOFILE` (soft and hard) to `RESERVED_FD`, so no
/// process in the container can hold a descriptor `setns` accepts (nor raise the limit again:
/// that needs `CAP_SYS_RESOURCE`). Without capabilities the kernel refuses their `setns` too.
#[derive(Debug)]
struct Filters {
    /// Installed by a forker when it parks.
    park: Vec<seccompiler::BpfProgram>,
}

/// The lowest descriptor `setns` accepts in a container, and the most descriptors a process
/// in a container may have open (as in AWS Lambda).
pub const RESERVED_FD: u32 = 1024;

/// Closes every descriptor of the calling process from 3 up except those in `keep`, unsharing
/// its descriptor table first (`CLOSE_RANGE_UNSHARE`). Called right before anything a tenant
/// controls runs (a program exec'd, a WebAssembly instance started, a process joining a
/// container), so what a process holds then is decided by a list of what it needs, not by
/// remembering to close each descriptor something else opened: a descriptor added anywhere
/// later (the zygote's socket on descriptor 3, another tenant's memfd, a forker's or a
/// template's socket) is closed too.
///
/// The caller must not drop (or otherwise use) a Rust owner of a descriptor closed here: every
/// caller keeps what it still uses and leaves only by exec or `std::process::exit`, or has
/// released every other owner before.
pub fn keep_only(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    // The gaps between the descriptors kept: [3, k1 - 1], [k1 + 1, k2 - 1], ..., [kn + 1, max].
    let mut from = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > from {
            let to = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: closes descriptors the caller promises no live Rust object will use.
            let closed = unsafe {
                libc::syscall(libc::SYS_close_range, from, to, libc::CLOSE_RANGE_UNSHARE)
            };
            if closed != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

/// Namespaces joined by a template, moved from `RESERVED_FD` up in this order.
const NAMESPACES: [CloneFlags; 4] = [
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWNS,
];

fn compile_filters() -> io::Result<Filters> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let denied = [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_ptrace,
        libc::SYS_unshare,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_userfaultfd,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
    ];
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        denied.iter().map(|&s| (s, vec![])).collect();
    // clone with any namespace flag set (one rule per flag; rules are OR-ed): a new namespace
    // from inside would be an escape hatch. clone3 passes its flags in memory, out of a
    // filter's reach, so it is refused outright (ENOSYS: libc falls back to clone).
    let mut clone_rules = Vec::new();
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWCGROUP,
    ] {
        let flag = flag as u64;
        clone_rules.push(
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .map_err(io::Error::other)?,
            ])
            .map_err(io::Error::other)?,
        );
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // setns with a descriptor below RESERVED_FD (compared as the 32-bit int it is).
    rules.insert(
        libc::SYS_setns,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Lt,
                    u64::from(RESERVED_FD),
                )
                .map_err(io::Error::other)?,
            ])
            .map_err(io::Error::other)?,
        ],
    );
    // A filter that fails the calls of `rules` with `errno` and allows the rest.
    let program = |rules: std::collections::BTreeMap<i64, Vec<SeccompRule>>, errno: i32| {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            std::env::consts::ARCH
                .try_into()
                .map_err(io::Error::other)?,
        )
        .map_err(io::Error::other)?;
        seccompiler::BpfProgram::try_from(filter).map_err(io::Error::other)
    };
    let only = |call: i64| [(call, vec![])].into_iter().collect();
    Ok(Filters {
        park: vec![
            program(rules, libc::EPERM)?,
            program(only(libc::SYS_clone3), libc::ENOSYS)?,
        ],
    })
}

/// A function's code as loaded, and its version.
type Loaded = (u64, std::sync::Arc<Compiled<AgentLink>>);

/// What the zygote holds and every process forked from it inherits: the seccomp filter, the
/// WebAssembly engine (no threads), and the code of every deployed WebAssembly function.
struct Runtime {
    filters: Filters,
    sandbox: Sandbox<AgentLink>,
    functions: HashMap<(u32, String), Loaded>,
    /// The zygote's own PID namespace, to return to after forking a forker into another.
    own_pid_ns: OwnedFd,
}

impl Runtime {
    /// The code of `function`: the copy held since the zygote loaded it, or read from `code`.
    fn function(
        &self,
        function: &WasmFunction,
        code: Option<&OwnedFd>,
    ) -> io::Result<std::sync::Arc<Compiled<AgentLink>>> {
        match self
            .functions
            .get(&(function.tenant, function.name.clone()))
        {
            Some((version, compiled)) if *version == function.version => Ok(compiled.clone()),
            _ => {
                let code = code.ok_or_else(|| io::Error::other("no code for the function"))?;
                load(&self.sandbox, function, code).map(std::sync::Arc::new)
            }
        }
    }
}

/// Reads a function's serialized code from a memfd and loads it.
fn load(
    sandbox: &Sandbox<AgentLink>,
    function: &WasmFunction,
    code: &OwnedFd,
) -> io::Result<Compiled<AgentLink>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(code.try_clone()?);
    let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    // SAFETY: the agent serialized this code with an engine of the same configuration, and the
    // memfd came over the agent's own socket.
    unsafe {
        sandbox.load(
            sandstorm_naming::TenantId(function.tenant),
            &function.name,
            &bytes,
            function.limits,
        )
    }
    .map_err(|e| io::Error::other(format!("loading {}: {e}", function.name)))
}

/// `sandstorm __zygote`: serves the agent on descriptor 3 until it hangs up.
pub fn zygote_main() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Inherited by every forker, template and invocation.
    crate::scheduling::prefer_latency();
    // SAFETY: descriptor 3 is the socket the agent passed; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(3) };
    // Inherited without close-on-exec (that is how it got here): no program exec'd from a
    // process forked off the zygote may keep it. (Forked processes close it themselves, see
    // `keep_only`.)
    nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let mut runtime = Runtime {
        filters: compile_filters()?,
        sandbox: Sandbox::for_templates(SandboxConfig::default()).map_err(io::Error::other)?,
        functions: HashMap::new(),
        own_pid_ns: std::fs::File::open("/proc/self/ns/pid")?.into(),
    };
    loop {
        reap_quietly();
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16))? == 0 {
            continue;
        }
        let Some((message, fds)) = recv::<ToZygote>(sock.as_fd())? else {
            return Ok(()); // The agent is gone.
        };
        let reply = match message {
            ToZygote::Park => match park(fds, &runtime) {
                Ok(pid) => FromZygote::Parked { pid: pid.as_raw() },
                Err(e) => FromZygote::Failed {
                    error: e.to_string(),
                },
            },
            ToZygote::Load(function) => match fds
                .first()
                .map(|code| load(&runtime.sandbox, &function, code))
            {
                Some(Ok(compiled)) => {
                    runtime.functions.insert(
                        (function.tenant, function.name),
                        (function.version, std::sync::Arc::new(compiled)),
                    );
                    FromZygote::Loaded
                }
                Some(Err(e)) => FromZygote::Failed {
                    error: e.to_string(),
                },
                None => FromZygote::Failed {
                    error: "Load needs the code's memfd".into(),
                },
            },
            ToZygote::Unload { tenant, name } => {
                runtime.functions.remove(&(tenant, name));
                FromZygote::Loaded
            }
        };
        send(sock.as_fd(), &reply, &[])?;
    }
}

/// Forks a forker into PID namespace `fds[1]` that joins the cgroups (`fds[2..]`) and serves
/// `Assemble` on `fds[0]`. (The forker inherits the descriptors; the zygote closes its own.)
fn park(fds: Vec<OwnedFd>, runtime: &Runtime) -> io::Result<Pid> {
    let mut fds = fds.into_iter();
    let (Some(sock), Some(pid_ns)) = (fds.next(), fds.next()) else {
        return Err(io::Error::other(
            "park needs the forker's socket and its PID namespace",
        ));
    };
    // Children forked from now on start in the container's PID namespace; the zygote stays in
    // its own, and its next children too.
    setns(&pid_ns, CloneFlags::CLONE_NEWPID)?;
    // SAFETY: the zygote is single-threaded, so the child may run any code.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child))
        && let Err(e) = setns(&runtime.own_pid_ns, CloneFlags::CLONE_NEWPID)
    {
        // Every later forker would start in this container: better to stop.
        let _ = writeln!(io::stderr(), "zygote: back to its PID namespace: {e}");
        std::process::exit(1);
    }
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            drop(pid_ns);
            let procs: Vec<OwnedFd> = fds.collect();
            // Nothing of the zygote's stays with the forker: its socket to the agent, its own
            // PID namespace, what it was sent for other requests. Only this forker's socket
            // and the cgroups it joins are kept (the zygote's owners of the rest are never
            // dropped here: the forker leaves by `exit`).
            let mut keep: Vec<RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
            keep.push(sock.as_raw_fd());
            if let Err(e) = keep_only(&keep) {
                let error = format!("closing the zygote's descriptors: {e}");
                let _ = send(sock.as_fd(), &FromZygote::Failed { error }, &[]);
                std::process::exit(1);
            }
            let code = match forker_main(sock.as_fd(), procs, runtime) {
                Ok(()) => 0,
                Err(e) => {
                    let error = e.to_string();
                    let _ = send(sock.as_fd(), &FromZygote::Failed { error }, &[]);
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// A parked forker: joins the cgroups of `procs`, reports ready, and on `Assemble` joins the
/// container's other namespaces and becomes its template, serving on the same socket.
fn forker_main(sock: BorrowedFd<'_>, procs: Vec<OwnedFd>, runtime: &Runtime) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    for cgroup in procs {
        // "0" is the writing process. The descriptor is closed after: the container's
        // processes must not hold it.
        nix::unistd::write(&cgroup, b"0")?;
    }
    drop_privileges_off_path(&runtime.filters.park)?;
    // No tenant's code runs in a parked forker: it does not know yet which function (of which
    // tenant) it will serve, it still holds its privileges and the host's mount namespace, and
    // nothing bounds its time (a WebAssembly start function that spins would keep it from ever
    // reporting ready). Instances are made once it has joined its container, under the
    // deadline of the invocation that assembled it.
    //
    // The spare: the container's first invocation runs in it, so it needs no fork. Exits
    // are read from a signalfd once this is the template; blocked from now on, they wait.
    let mut sigchld = nix::sys::signal::SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld.thread_block()?;
    let (spare, agent_end) = fork_spare(&[], |sock| spare_main(sock, runtime))?;
    // Until it joins the container (after the spare, which runs the first invocation), the
    // forker runs only when nothing else wants the CPU: the spare's way to a running
    // function does not wait for it. (On a machine kept busy by other work this delays the
    // first invocation's exit report and deadline, never its start: the forker's share is the
    // idle policy's until it joins, then a normal one.)
    crate::scheduling::run_when_idle();
    send(sock, &FromZygote::Ready, &[agent_end.as_raw_fd()])?;
    drop(agent_end);
    let Some((ToForker::Assemble { uid, gid, wasm }, parts)) = recv::<ToForker>(sock)? else {
        return Ok(()); // Destroyed without being used.
    };
    let compiled = match &wasm {
        None => None,
        Some(function) => match runtime.function(function, parts.get(NAMESPACES.len())) {
            Ok(compiled) => Some(compiled),
            Err(e) => return template_failed(sock, &e),
        },
    };
    // The template keeps only its socket to the agent: the link over which it is told what to
    // run and reports.
    if let Err(e) = join(parts, uid, gid, &[sock.as_raw_fd()]) {
        return template_failed(sock, &e);
    }
    let wasm = compiled.as_deref().map(|c| (&runtime.sandbox, c));
    template_main(sock, wasm, None, spare)
}

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A parked forker's spare: it waits in the container's cgroup and PID namespace, holding the
/// forker's prepared instances, for the container's first invocation, which then starts
/// without a fork. On `Assemble` (sent to it and to the forker) it joins the container's other
/// namespaces alongside the forker; on `Run` it becomes that invocation's process, and the
/// forker, now the template, adopts it. Returns its exit code.
fn spare_main(sock: BorrowedFd<'_>, runtime: &Runtime) -> i32 {
    let Ok(Some((ToForker::Assemble { uid, gid, wasm }, parts))) = recv::<ToForker>(sock) else {
        return 0; // Destroyed without being used.
    };
    let compiled = match &wasm {
        None => None,
        Some(function) => match runtime.function(function, parts.get(NAMESPACES.len())) {
            Ok(compiled) => Some(compiled),
            // The template reports it too.
            Err(_) => return 1,
        },
    };
    if join(parts, uid, gid, &[sock.as_raw_fd()]).is_err() {
        return 1;
    }
    let wasm = compiled.as_deref().map(|c| (&runtime.sandbox, c));
    // Inside the container now: the instance (and the module's start function) is made here,
    // while the agent waits for the first invocation under its deadline.
    let ready = wasm.map(prepare);
    spare_run(sock, wasm, ready, None)
}

/// Forks a spare that runs `body` on its end of a new socket (and exits with its code);
/// returns its pid and the agent's end. The spare keeps only that socket and `keep` of what
/// its parent holds (not the parent's own socket to the agent, nor its signalfd).
fn fork_spare(
    keep: &[RawFd],
    body: impl FnOnce(BorrowedFd<'_>) -> i32,
) -> io::Result<(Pid, OwnedFd)> {
    let (spare_end, agent_end) = seqpacket_pair()?;
    // SAFETY: the forker and the template are single-threaded, so the child may run any code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(agent_end);
            let mut kept = keep.to_vec();
            kept.push(spare_end.as_raw_fd());
            // Not inherited: a spare does not outlive the process that forked it.
            let code = match keep_only(&kept).and_then(|()| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            }) {
                Ok(()) => body(spare_end.as_fd()),
                Err(_) => 1,
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => Ok((child, agent_end)),
    }
}

/// A spare inside its container: waits for its `Run` and becomes that invocation's process
/// (with `ready`, the instance it was given, for WebAssembly). Returns its exit code.
fn spare_run<'a>(
    sock: BorrowedFd<'_>,
    wasm: Option<WasmTemplate<'a>>,
    mut ready: Option<Ready<'a>>,
    ran_notice: Option<RawFd>,
) -> i32 {
    let Ok(Some((ToTemplate::Run { program, .. }, fds))) = recv::<ToTemplate>(sock) else {
        return 0; // Destroyed without being used.
    };
    let next = || wasm.map(|wasm| ready.take().unwrap_or_else(|| prepare(wasm)));
    match Invocation::new(program, fds, next, ran_notice) {
        Ok(invocation) => {
            become_invocation();
            invocation.run()
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "the spare could not run its invocation: {e}");
            126
        }
    }
}

/// Reports on a template's socket that the container could not be set up (the forker then
/// exits).
fn template_failed(sock: BorrowedFd<'_>, error: &io::Error) -> io::Result<()> {
    let error = error.to_string();
    send(sock, &FromTemplate::Failed { error }, &[])
}

fn reap_quietly() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// What a parked forker gives up while it waits, off the critical path: the capability
/// bounding set (it never execs, so it needs none), inheritable and ambient capabilities,
/// the right to gain privileges, and every call of the deny list (`setns` only from
/// [`RESERVED_FD`] up). It keeps its effective capabilities: it and the template still enter
/// namespaces. It makes room for descriptors from `RESERVED_FD` up, where it will move them.
fn drop_privileges_off_path(filters: &[seccompiler::BpfProgram]) -> io::Result<()> {
    let room = libc::rlim_t::from(RESERVED_FD) + NAMESPACES.len() as libc::rlim_t + 16;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < room {
            limit.rlim_cur = room;
            limit.rlim_max = limit.rlim_max.max(room);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(io::Error::other)?;
    }
    caps::clear(None, caps::CapSet::Inheritable).map_err(io::Error::other)?;
    caps::clear(None, caps::CapSet::Ambient).map_err(io::Error::other)?;
    nix::sys::prctl::set_no_new_privs()?;
    for program in filters {
        seccompiler::apply_filter(program).map_err(io::Error::other)?;
    }
    Ok(())
}

/// Joins the namespaces in `parts` (net, ipc, uts, mnt; the forker was born in the PID
/// namespace) and drops the rest of its privileges (it dropped the others when it parked):
/// closes every descriptor but `keep` (its own socket to the agent; so nothing `setns` would
/// accept, nor anything of the zygote's or of another container's) and makes sure none
/// `setns` accepts can be opened again, and changes its user.
fn join(parts: Vec<OwnedFd>, uid: u32, gid: u32, keep: &[RawFd]) -> io::Result<()> {
    if keep.iter().any(|&fd| fd >= RESERVED_FD as RawFd) {
        return Err(io::Error::other(
            "a descriptor to keep is where setns would accept it",
        ));
    }
    if parts.len() < NAMESPACES.len() {
        return Err(io::Error::other(format!(
            "assemble needs {} namespaces, got {}",
            NAMESPACES.len(),
            parts.len()
        )));
    }
    for (part, flag) in parts.iter().zip(NAMESPACES) {
        // Moved where the filter lets `setns` use it.
        // SAFETY: fcntl duplicates a descriptor this process owns; the copy is closed by
        // close_range below, and nothing else refers to it.
        let fd = unsafe {
            libc::fcntl(
                part.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                RESERVED_FD as libc::c_int,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; borrowed only for this call.
        setns(unsafe { BorrowedFd::borrow_raw(fd) }, flag)?;
    }
    drop(parts);
    chdir("/")?;
    // Back from the forker's idle policy, while it may (CAP_SYS_NICE).
    crate::scheduling::run_normally();
    let limit = libc::rlimit {
        rlim_cur: libc::rlim_t::from(RESERVED_FD),
        rlim_max: libc::rlim_t::from(RESERVED_FD),
    };
    // Everything but `keep` goes, the namespaces' copies from RESERVED_FD up among them (the
    // namespaces' owners were released above; the owners of what the zygote left are never
    // dropped in this process).
    keep_only(keep)?;
    // SAFETY: setrlimit reads the struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nix::unistd::setgroups(&[Gid::from_raw(gid)])?;
    nix::unistd::setgid(Gid::from_raw(gid))?;
    // From root to another user: the kernel clears the permitted and effective sets.
    nix::unistd::setuid(Uid::from_raw(uid))?;
    if !caps::read(None, caps::CapSet::Permitted)
        .map_err(io::Error::other)?
        .is_empty()
    {
        return Err(io::Error::other("capabilities survived the change of user"));
    }
    Ok(())
}

/// A WebAssembly template's engine and function.
type WasmTemplate<'a> = (&'a Sandbox<AgentLink>, &'a Compiled<AgentLink>);

/// An invocation's process, as its template tracks it.
struct Running {
    id: u64,
    deadline: Instant,
    killed: bool,
}

/// How a process ended: its exit code, or the signal that killed it.
type Ending = (Option<i32>, Option<i32>);

/// A template's spares: the process waiting for the container's next invocation, so that one
/// starts without a fork (the agent sends it the `Run` and tells the template to adopt it, by
/// number), and the spares that ended before they were adopted.
struct Spares {
    /// The one waiting now, with its number.
    waiting: Option<(u64, Pid)>,
    /// Spares that ended unadopted (the out-of-memory killer may pick one), the last few: the
    /// agent may have sent one its `Run` just before.
    ended: std::collections::VecDeque<(u64, Pid, Ending)>,
    /// The number the next spare gets.
    next: u64,
}

impl Spares {
    /// The forker's spare, number 0, is the first one.
    fn new(first: Pid) -> Self {
        Self {
            waiting: Some((0, first)),
            ended: std::collections::VecDeque::new(),
            next: 1,
        }
    }

    /// Notes that `pid` ended, if it is the waiting spare; whether it was.
    fn ended(&mut self, pid: Pid, ending: Ending) -> bool {
        match self.waiting {
            Some((number, spare)) if spare == pid => {
                self.waiting = None;
                if self.ended.len() == 8 {
                    self.ended.pop_front();
                }
                self.ended.push_back((number, pid, ending));
                true
            }
            _ => false,
        }
    }

    /// Spare `number` for an invocation: its pid if it waits, or how it ended.
    fn adopt(&mut self, number: u64) -> Option<Result<Pid, (Pid, Ending)>> {
        match self.waiting {
            Some((waiting, pid)) if waiting == number => {
                self.waiting = None;
                Some(Ok(pid))
            }
            _ => {
                let at = self.ended.iter().position(|(n, ..)| *n == number)?;
                let (_, pid, ending) = self.ended.remove(at)?;
                Some(Err((pid, ending)))
            }
        }
    }

    /// Forks a new spare running `body` if none waits, and hands the agent its socket. A fork
    /// the pids limit refuses is tried again at the next chance.
    fn replenish(
        &mut self,
        sock: BorrowedFd<'_>,
        keep: &[RawFd],
        body: impl FnOnce(BorrowedFd<'_>) -> i32,
    ) -> io::Result<()> {
        if self.waiting.is_some() {
            return Ok(());
        }
        let Ok((pid, agent_end)) = fork_spare(keep, body) else {
            return Ok(());
        };
        let number = self.next;
        self.next += 1;
        self.waiting = Some((number, pid));
        send(
            sock,
            &FromTemplate::Spare { number },
            &[agent_end.as_raw_fd()],
        )
    }
}

/// A container's template: forks one process per `Run`, adopts its spare on `Adopt` and forks
/// the next spare once that one runs, until the agent hangs up.
fn template_main<'a>(
    sock: BorrowedFd<'_>,
    wasm: Option<WasmTemplate<'a>>,
    first: Option<Ready<'a>>,
    spare: Pid,
) -> io::Result<()> {
    let mut spares = Spares::new(spare);
    // An exit wakes the template at once (a signalfd polled beside the socket), so it is
    // reported without waiting for the next timeout.
    let mut sigchld = nix::sys::signal::SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld.thread_block()?;
    let exits = nix::sys::signalfd::SignalFd::with_flags(
        &sigchld,
        nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )?;
    let mut running: HashMap<i32, Running> = HashMap::new();
    // A WebAssembly template keeps its next instance ready, so a forked invocation starts
    // running at once. It prepares the following one once that invocation's process says it
    // runs (a byte on this pipe, written after its report to the agent), so the two do not
    // compete for a CPU before then; or once it exits, or when a `Run` finds none ready.
    let (ran, ran_notice) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let mut next = first.or_else(|| wasm.map(prepare));
    loop {
        // Drain the exit notifications (coalesced: waitpid below finds every exit).
        while let Ok(Some(_)) = exits.read_signal() {}
        // Reap and report.
        loop {
            let (pid, code, signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, None, Some(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            // Whatever the invocation left running goes with it.
            let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
            if let Some(r) = running.remove(&pid.as_raw()) {
                let exited = FromTemplate::Exited {
                    id: r.id,
                    pid: pid.as_raw(),
                    code,
                    signal,
                    deadline: r.killed,
                };
                send(sock, &exited, &[])?;
            } else {
                spares.ended(pid, (code, signal));
            }
        }
        // Deadlines.
        let now = Instant::now();
        let mut wait = Duration::from_millis(50);
        for (pid, r) in &mut running {
            if r.deadline <= now && !r.killed {
                // The whole group: a fork bomb's children too.
                let _ = nix::sys::signal::killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                r.killed = true;
            } else if !r.killed {
                wait = wait.min(r.deadline.saturating_duration_since(now));
            }
        }
        let mut fds = [
            PollFd::new(sock, PollFlags::POLLIN),
            PollFd::new(exits.as_fd(), PollFlags::POLLIN),
            PollFd::new(ran.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::from(wait.as_millis().clamp(1, 50) as u16);
        let ready = poll(&mut fds, timeout)?;
        let is_set = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if is_set(&fds[2]) || is_set(&fds[1]) {
            let mut drain = [0u8; 64];
            while nix::unistd::read(&ran, &mut drain).is_ok_and(|n| n > 0) {}
            // The spare takes the prepared instance; the template prepares another.
            if spares.waiting.is_none() {
                let (ready, notice) = (next.take(), ran_notice.as_raw_fd());
                spares.replenish(sock, &[notice], |sock| {
                    spare_run(sock, wasm, ready, Some(notice))
                })?;
            }
            if next.is_none() {
                next = wasm.map(prepare);
            }
        }
        if ready == 0 || !is_set(&fds[0]) {
            continue; // Exits are reaped at the top of the loop.
        }
        let (id, deadline_ms, program, fds) = match recv::<ToTemplate>(sock)? {
            Some((
                ToTemplate::Run {
                    id,
                    deadline_ms,
                    program,
                },
                fds,
            )) => (id, deadline_ms, program, fds),
            Some((
                ToTemplate::Adopt {
                    id,
                    deadline_ms,
                    spare,
                },
                _,
            )) => {
                match spares.adopt(spare) {
                    Some(Ok(pid)) => {
                        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                        let killed = false;
                        running.insert(
                            pid.as_raw(),
                            Running {
                                id,
                                deadline,
                                killed,
                            },
                        );
                    }
                    Some(Err((pid, (code, signal)))) => {
                        let pid = pid.as_raw();
                        let exited = FromTemplate::Exited {
                            id,
                            pid,
                            code,
                            signal,
                            deadline: false,
                        };
                        send(sock, &exited, &[])?;
                    }
                    None => {
                        let error = format!("the container has no spare process {spare}");
                        send(sock, &FromTemplate::Refused { id, error }, &[])?;
                    }
                }
                continue;
            }
            None => {
                // The agent hung up: everything in the container goes.
                let spare = spares.waiting.map(|(_, pid)| pid.as_raw());
                for pid in running.keys().copied().chain(spare) {
                    let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                return Ok(());
            }
        };
        let ran = ran_notice.as_raw_fd();
        let spawned = Invocation::new(
            program,
            fds,
            || wasm.map(|wasm| next.take().unwrap_or_else(|| prepare(wasm))),
            Some(ran),
        )
        .and_then(Invocation::spawn);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                // Typically the pids limit refusing the fork: this invocation fails, the
                // container stays.
                let error = format!("starting the invocation's process: {e}");
                send(sock, &FromTemplate::Refused { id, error }, &[])?;
                continue;
            }
        };
        running.insert(
            pid.as_raw(),
            Running {
                id,
                deadline: Instant::now() + Duration::from_millis(deadline_ms),
                killed: false,
            },
        );
    }
}

/// What an invocation's process does first, whether the template forked it for its `Run` or
/// it waited as the container's spare: a process group of its own (so a deadline kills
/// everything it forked), death with the template, and the default SIGCHLD disposition back
/// (the template blocks it for its signalfd).
fn become_invocation() {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut sigchld = nix::sys::signal::SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    let _ = sigchld.thread_unblock();
}

/// An invocation, checked and ready to run in its process.
enum Invocation<'a> {
    /// Exec `args` with `stdio[0]` as stdin and `stdio[1]` as stdout and stderr.
    Exec {
        args: Vec<CString>,
        stdio: Vec<OwnedFd>,
    },
    /// Run the prepared instance over the link `stream`; write a byte on `ran_notice` once
    /// the agent was told it runs.
    Wasm {
        ready: Ready<'a>,
        stream: std::os::unix::net::UnixStream,
        ran_notice: Option<RawFd>,
    },
}

impl<'a> Invocation<'a> {
    /// Checks `program` and the descriptors sent with it; `ready` gives a WebAssembly
    /// template's prepared instance (`None` in a native container).
    fn new(
        program: Program,
        mut fds: Vec<OwnedFd>,
        ready: impl FnOnce() -> Option<Ready<'a>>,
        ran_notice: Option<RawFd>,
    ) -> io::Result<Self> {
        match program {
            Program::Exec { argv } => {
                if argv.is_empty() {
                    return Err(io::Error::other("empty argv"));
                }
                if fds.len() < 2 {
                    return Err(io::Error::other("Run needs stdin and stdout descriptors"));
                }
                let args = argv
                    .iter()
                    .map(|a| CString::new(a.as_bytes()))
                    .collect::<Result<_, _>>()
                    .map_err(io::Error::other)?;
                Ok(Self::Exec { args, stdio: fds })
            }
            Program::Wasm => {
                if fds.is_empty() {
                    return Err(io::Error::other(
                        "Run of WebAssembly needs the link descriptor",
                    ));
                }
                let ready = ready().ok_or_else(|| {
                    io::Error::other("this container runs native programs, not WebAssembly")
                })?;
                let stream = std::os::unix::net::UnixStream::from(fds.swap_remove(0));
                Ok(Self::Wasm {
                    ready,
                    stream,
                    ran_notice,
                })
            }
        }
    }

    /// The descriptors it needs of what its process holds now.
    fn descriptors(&self) -> Vec<RawFd> {
        match self {
            Self::Exec { stdio, .. } => stdio.iter().map(AsRawFd::as_raw_fd).collect(),
            Self::Wasm {
                stream, ran_notice, ..
            } => std::iter::once(stream.as_raw_fd())
                .chain(*ran_notice)
                .collect(),
        }
    }

    /// Runs it in this process (after [`become_invocation`]); the process's exit code. What
    /// the tenant's code then holds: descriptors 0, 1 and 2, and for WebAssembly the link.
    fn run(self) -> i32 {
        match self {
            Self::Exec { args, stdio } => {
                let _ = dup2_stdin(&stdio[0]);
                let _ = dup2_stdout(&stdio[1]);
                let _ = dup2_stderr(&stdio[1]);
                drop(stdio);
                // Whatever this process still holds (its spare's socket, the template's pipe,
                // anything inherited), close-on-exec or not, is not the program's.
                if let Err(e) = keep_only(&[]) {
                    let _ = writeln!(io::stderr(), "closing descriptors: {e}");
                    return 126;
                }
                let env = [c"PATH=/bin:/usr/bin", c"HOME=/tmp"];
                let err = execve(&args[0], &args, &env).err();
                let _ = writeln!(io::stderr(), "exec {:?}: {err:?}", args[0]);
                127
            }
            Self::Wasm {
                ready,
                stream,
                ran_notice,
            } => run_wasm(ready, stream, ran_notice),
        }
    }

    /// Forks a process that runs it.
    fn spawn(self) -> io::Result<Pid> {
        // SAFETY: the template is single-threaded.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // Only what this invocation was sent: not the template's socket, signalfd or
                // other invocations' descriptors.
                if keep_only(&self.descriptors()).is_err() {
                    std::process::exit(126);
                }
                become_invocation();
                std::process::exit(self.run());
            }
        }
    }
}

/// An instance prepared for the next invocation (with its unbound link), or why it could not be.
type Ready<'a> = Result<
    (
        std::sync::Arc<AgentLink>,
        crate::sandbox::Prepared<'a, AgentLink>,
    ),
    crate::sandbox::RunError,
>;

/// Prepares an instance of the template's function with an unbound link.
fn prepare<'a>((sandbox, function): WasmTemplate<'a>) -> Ready<'a> {
    let link = std::sync::Arc::new(AgentLink::unbound());
    sandbox
        .prepare(function, link.clone())
        .map(|prepared| (link, prepared))
}

/// Runs the prepared instance over the link; the process's exit code.
fn run_wasm(
    ready: Ready<'_>,
    stream: std::os::unix::net::UnixStream,
    ran_notice: Option<RawFd>,
) -> i32 {
    let (link, result) = match ready {
        Ok((link, prepared)) => {
            let link_fd = stream.as_raw_fd();
            if link.bind(stream).is_err() {
                return 1;
            }
            let Ok(input) = link.read_input() else {
                return 1;
            };
            if let Some(notice) = ran_notice {
                // The template may prepare the next instance now: this one has its input and
                // runs. (Told here rather than by the link once the agent knows, so the
                // template's pipe is closed before the function runs.)
                // SAFETY: the template's descriptor, inherited; this process owns its copy
                // (the template's OwnedFd is never dropped here: the process exits).
                let notice = unsafe { OwnedFd::from_raw_fd(notice) };
                let _ = nix::unistd::write(&notice, b"r");
            }
            // The function holds 0, 1, 2 and its link, nothing else.
            if keep_only(&[link_fd]).is_err() {
                return 1;
            }
            (link, prepared.run(input))
        }
        Err(e) => {
            let link = AgentLink::unbound();
            if link.bind(stream).is_err() || link.read_input().is_err() {
                return 1;
            }
            (std::sync::Arc::new(link), Err(e))
        }
    };
    match link.done(result) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sandstorm __holder BASE`: runs in a new mount namespace whose children start a new PID
/// namespace (the agent unshared both before exec). Mounts the overlay of BASE and a tmpfs
/// layer, forks PID 1 of the new namespace, which mounts `/proc` and `/dev` and pivots into the
/// overlay; prints `ready <pid>` and waits.
pub fn holder_main(base: &Path) -> io::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    // The writable layer's tmpfs goes over `<state>/layers` (made with the base), private to
    // this mount namespace; not over /tmp, which may hold the base itself.
    let layers = base
        .parent()
        .ok_or_else(|| io::Error::other("the base has no parent directory"))?
        .join("layers");
    std::fs::create_dir_all(&layers)?;
    mount(
        Some("tmpfs"),
        &layers,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=64m,mode=755"),
    )?;
    for dir in ["upper", "work", "merged"] {
        std::fs::create_dir(layers.join(dir))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.display(),
        layers.join("upper").display(),
        layers.join("work").display()
    );
    let merged = layers.join("merged");
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the holder is single-threaded.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ready_r);
            let result = (|| -> io::Result<()> {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
                mount(
                    Some("proc"),
                    &merged.join("proc"),
                    Some("proc"),
                    nosuid,
                    None::<&str>,
                )?;
                mount(
                    Some("tmpfs"),
                    &merged.join("dev"),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                    Some("size=64k,mode=755"),
                )?;
                for dev in ["null", "zero", "full", "random", "urandom"] {
                    let target = merged.join("dev").join(dev);
                    std::fs::File::create(&target)?;
                    mount(
                        Some(format!("/dev/{dev}").as_str()),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )?;
                }
                chdir(&merged)?;
                pivot_root(".", ".")?;
                umount2(".", MntFlags::MNT_DETACH)?;
                chdir("/")?;
                // Back from the forker's idle policy, while it may (CAP_SYS_NICE).
                crate::scheduling::run_normally();
                Ok(())
            })();
            if let Err(e) = result {
                let _ = writeln!(io::stderr(), "root file system setup failed: {e}");
                std::process::exit(1);
            }
            let _ = nix::unistd::write(&ready_w, b"1");
            drop(ready_w);
            // PID 1: adopt and reap orphans until killed, at once (zombies count against the
            // pids limit): woken by SIGCHLD even while it has no children to wait for.
            let mut sigchld = nix::sys::signal::SigSet::empty();
            sigchld.add(Signal::SIGCHLD);
            let _ = sigchld.thread_block();
            loop {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
                let _ = sigchld.wait();
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            let n = nix::unistd::read(&ready_r, &mut byte)?;
            if n != 1 {
                return Err(io::Error::other(
                    "PID 1 of the root file system failed to start",
                ));
            }
            println!("ready {child}");
            io::stdout().flush()?;
            let _ = waitpid(child, None);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    /// `keep_only` leaves 0, 1, 2 and the descriptors kept, whatever else is open (with or
    /// without close-on-exec, below and above and between the kept ones): checked in a forked
    /// child by trying every descriptor from 3 to RESERVED_FD + 64 with fcntl. No root needed.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn keep_only_leaves_nothing_but_what_is_kept() {
        let mut opened: Vec<RawFd> = Vec::new();
        for _ in 0..6 {
            let (a, b) = nix::unistd::pipe().unwrap(); // no close-on-exec, like descriptor 3
            opened.push(a.into_raw_fd());
            opened.push(b.into_raw_fd());
        }
        // One far up, where the filter would let setns use it.
        // SAFETY: duplicates a descriptor this test owns.
        let high = unsafe { libc::fcntl(opened[0], libc::F_DUPFD, RESERVED_FD as libc::c_int + 5) };
        assert!(high >= RESERVED_FD as RawFd);
        let keep = [opened[3], opened[7]];
        let limit = RESERVED_FD as RawFd + 64;
        // SAFETY: the child only makes system calls and exits (no allocation after the fork).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if keep_only(&keep).is_err() {
                    std::process::exit(100);
                }
                // SAFETY: F_GETFD only queries a descriptor number.
                let open = |fd: RawFd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
                let mut wrong = 0;
                for fd in 0..limit {
                    if open(fd) != (fd <= 2 || keep.contains(&fd)) {
                        wrong += 1;
                    }
                }
                std::process::exit(wrong.min(99));
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                for fd in opened.into_iter().chain([high]) {
                    // SAFETY: descriptors this test opened and owns.
                    unsafe { libc::close(fd) };
                }
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "exit code: how many descriptors were open that should not be, or closed that should not be (100: keep_only failed)"
                );
            }
        }
    }

    /// What a template's children do: close every descriptor they were not told of
    /// (`keep_only`), then instantiate the function again (a spare that found no instance
    /// prepared) and drop the module. The engine must hold no descriptor of its own for that:
    /// with Wasmtime's copy-on-write memory images it kept the module's initial memory in a
    /// memfd, so the instantiation failed with EBADF, and the drop aborted the process ("IO
    /// Safety violation: owned file descriptor already closed"). Runs again in a process of
    /// its own (no other test thread, whose locks the fork would copy held). No root needed.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_process_that_kept_only_its_own_descriptors_still_instantiates_and_drops_modules() {
        const ALONE: &str = "SANDSTORM_TEST_ALONE";
        const NAME: &str = "compute::zygote::tests::a_process_that_kept_only_its_own_descriptors_still_instantiates_and_drops_modules";
        const CHECKED: &str = "checked in a forked child";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(CHECKED),
                "{}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        // Its one byte of data must be in its memory: `run` fails (non-zero) otherwise.
        let module = wat::parse_str(
            r#"(module (memory (export "memory") 1) (data (i32.const 0) "\2a")
                (func (export "run") (result i32)
                    (i32.sub (i32.load8_u (i32.const 0)) (i32.const 42))))"#,
        )
        .unwrap();
        let sandbox = Sandbox::for_templates(SandboxConfig::default()).unwrap();
        let compiled = sandbox
            .compile(
                sandstorm_naming::TenantId(1),
                "data",
                &module,
                FunctionLimits::default(),
            )
            .unwrap();
        // The template's first instance, before it forks.
        let (_, first) = prepare((&sandbox, &compiled)).unwrap();
        first.run(Vec::new()).unwrap();
        // SAFETY: no other thread of this process runs code (the harness's main thread waits).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = if keep_only(&[]).is_err() {
                    100
                } else {
                    match prepare((&sandbox, &compiled)) {
                        Ok((_, prepared)) => match prepared.run(Vec::new()) {
                            Ok(_) => 0,
                            Err(_) => 102,
                        },
                        Err(_) => 101,
                    }
                };
                drop(compiled);
                drop(sandbox);
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "100: keep_only failed, 101: instantiating failed, 102: the data was not in memory; SIGABRT: dropping the module closed a descriptor already closed"
                );
                println!("{CHECKED}");
            }
        }
    }

    /// The filter every container process runs under, applied in a forked child (no root
    /// needed: no_new_privs allows it): each escape hatch fails with the errno it should.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_seccomp_filter_refuses_escape_hatches() {
        let filters = compile_filters().unwrap();
        let filter: Vec<_> = filters.park.iter().collect();
        // SAFETY: the child only makes system calls and exits; it touches no lock another
        // test thread could hold (no allocation after fork).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // The errno of a call, read right after it.
                let errno = |r: libc::c_long| {
                    if r == -1 {
                        io::Error::last_os_error().raw_os_error().unwrap_or(0)
                    } else {
                        0
                    }
                };
                if nix::sys::prctl::set_no_new_privs().is_err() {
                    std::process::exit(100);
                }
                for program in &filter {
                    if seccompiler::apply_filter(program).is_err() {
                        std::process::exit(101);
                    }
                }
                // SAFETY: raw system calls with valid (or null) arguments.
                let results = unsafe {
                    [
                        errno(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)) == libc::EPERM,
                        errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS)) == libc::EPERM,
                        errno(libc::syscall(libc::SYS_chroot, c"/".as_ptr())) == libc::EPERM,
                        errno(libc::syscall(
                            libc::SYS_mount,
                            c"none".as_ptr(),
                            c"/tmp".as_ptr(),
                            c"tmpfs".as_ptr(),
                            0,
                            0,
                        )) == libc::EPERM,
                        errno(libc::syscall(libc::SYS_init_module, 0, 0, 0)) == libc::EPERM,
                        errno(libc::syscall(libc::SYS_clone3, 0, 0)) == libc::ENOSYS,
                        errno(libc::syscall(libc::SYS_setns, 0, 0)) == libc::EPERM,
                        errno(libc::syscall(libc::SYS_setns, RESERVED_FD - 1, 0)) == libc::EPERM,
                        // Let through from RESERVED_FD up (no such descriptor here).
                        errno(libc::syscall(libc::SYS_setns, RESERVED_FD + 100, 0)) == libc::EBADF,
                    ]
                };
                let mut failures = 0;
                for (i, refused) in results.into_iter().enumerate() {
                    if !refused {
                        failures |= 1 << i;
                    }
                }
                std::process::exit(failures);
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "exit code: bit i set = check i (ptrace, unshare, chroot, mount, init_module, clone3, setns 0, setns below RESERVED_FD, setns above) was not refused as expected; 100/101 = the filter could not be applied"
                );
            }
        }
    }
}
