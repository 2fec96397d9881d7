//! A container: its parts and the template that runs its invocations, each in a process of its
//! own (SAND's two levels). Many invocations may run in one container at once: every `Run`
//! carries an id, and a reader thread hands each exit report to the invocation waiting for it.
//!
//! Dropping a container tears it down: the template (which kills its processes when the agent
//! hangs up), then the cgroup (killing anything left and removing it), the root file system's
//! holder, and the namespaces.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;
use tokio::sync::oneshot;

use super::link::{self, LinkOutcome, StorageRouter};
use super::parts::{Cgroup, IpcUts, NetNs, RootFs};
use super::zygote::{self, FromTemplate, Program, ToTemplate, WasmFunction};
use crate::sandbox::RunError;

/// Which parts came from pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Every part came ready from a pool.
    Pooled,
    /// Some part was made on the critical path.
    Built,
}

/// How an invocation's process ended, as its template saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// The template killed it at its deadline.
    Deadline,
    /// The template could not start it (for example, the pids limit refused the fork).
    Refused(String),
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
    /// Never started; why.
    Refused(String),
}

/// One native invocation's result.
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

/// One WebAssembly invocation's result.
#[derive(Debug)]
pub struct WasmRun {
    /// The output, or why it failed.
    pub result: Result<Vec<u8>, RunError>,
    /// What the process and the link measured, if the process reported before it ended.
    pub link: Option<LinkOutcome>,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Exit>>>>;

/// A container: its parts and the template that runs its invocations.
#[derive(Debug)]
pub struct Container {
    // Field order is teardown order.
    template: Arc<OwnedFd>,
    reader: Option<JoinHandle<()>>,
    waiters: Waiters,
    next_id: AtomicU64,
    /// Held until teardown.
    parts: Parts,
    live: Arc<AtomicU64>,
    /// How it was assembled.
    pub provenance: Provenance,
    /// The WebAssembly function its template holds, if it is one.
    pub wasm: Option<WasmFunction>,
    /// When it was assembled.
    pub born: Instant,
}

/// The parts a container is made of (dropped in this order).
#[derive(Debug)]
pub(super) struct Parts {
    pub cgroup: Cgroup,
    pub net: NetNs,
    pub ipc_uts: IpcUts,
    pub rootfs: RootFs,
}

impl Container {
    /// Wraps a freshly assembled template; `live` counts containers alive.
    pub(super) fn new(
        template: OwnedFd,
        parts: Parts,
        provenance: Provenance,
        wasm: Option<WasmFunction>,
        live: Arc<AtomicU64>,
    ) -> io::Result<Self> {
        let template = Arc::new(template);
        let waiters: Waiters = Arc::default();
        let reader = {
            let (template, waiters) = (template.clone(), waiters.clone());
            std::thread::Builder::new()
                .name("template-reader".into())
                .spawn(move || read_reports(&template, &waiters))?
        };
        live.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            template,
            reader: Some(reader),
            waiters,
            next_id: AtomicU64::new(0),
            parts,
            live,
            provenance,
            wasm,
            born: Instant::now(),
        })
    }

    /// Asks the template to fork a process for `program` with `fds`; returns where its exit
    /// will be reported.
    fn start(
        &self,
        program: Program,
        deadline: Duration,
        fds: &[std::os::fd::RawFd],
    ) -> io::Result<oneshot::Receiver<Exit>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let run = ToTemplate::Run {
            id,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            program,
        };
        if let Err(e) = zygote::send(self.template.as_fd(), &run, fds) {
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(io::Error::other(format!("{} ({e})", self.failure())));
        }
        Ok(rx)
    }

    /// Starts `argv` with `input` on its stdin; returns its stdout and where its exit will be
    /// reported.
    fn start_exec(
        &self,
        argv: &[&str],
        input: &[u8],
        deadline: Duration,
    ) -> io::Result<(std::fs::File, oneshot::Receiver<Exit>)> {
        // Close-on-exec: a holder the rootfs pool spawns meanwhile must not inherit them (it would
        // hold the output open, and the read below would never see its end).
        let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let argv = argv.iter().map(|a| (*a).to_owned()).collect();
        let exit = self.start(
            Program::Exec { argv },
            deadline,
            &[stdin_r.as_raw_fd(), stdout_w.as_raw_fd()],
        )?;
        drop((stdin_r, stdout_w));
        let mut stdin = std::fs::File::from(stdin_w);
        // A program that exits without reading its input is not an error. (Inputs beyond a
        // pipe's 64 KiB would need a writer thread; native invocations here are small.)
        let _ = stdin.write_all(input);
        Ok((std::fs::File::from(stdout_r), exit))
    }

    /// Starts `argv` without waiting (empty stdin); its output is read from the returned file.
    /// Returns where its exit will be reported, too.
    pub fn spawn(
        &self,
        argv: &[&str],
        deadline: Duration,
    ) -> io::Result<(std::fs::File, oneshot::Receiver<Exit>)> {
        self.start_exec(argv, b"", deadline)
    }

    /// Runs `argv` in the container with `input` on stdin; blocks until it ends. (Not from an
    /// async task: async callers run it on a blocking thread.)
    pub fn run(&self, argv: &[&str], input: &[u8], deadline: Duration) -> io::Result<RunResult> {
        let started = Instant::now();
        let memory_hits = self.parts.cgroup.memory_limit_hits();
        let pids_hits = self.parts.cgroup.pids_limit_hits();
        let (mut stdout, exit) = self.start_exec(argv, input, deadline)?;
        let mut output = Vec::new();
        let mut first_byte = None;
        let mut buf = [0u8; 8192];
        // The template kills the invocation's process group when it ends, so EOF comes.
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(|| started.elapsed());
            output.extend_from_slice(&buf[..n]);
        }
        let exit = exit
            .blocking_recv()
            .map_err(|_| io::Error::other(self.failure()))?;
        Ok(RunResult {
            output,
            outcome: self.outcome(exit, memory_hits),
            first_byte,
            hit_pids_limit: self.parts.cgroup.pids_limit_hits() > pids_hits,
        })
    }

    /// Runs the container's WebAssembly function on `input` for `tenant`, its data calls
    /// forwarded by `router`. Gives up `deadline` plus a grace period after the start, whatever
    /// happens inside.
    pub async fn run_wasm(
        &self,
        tenant: TenantId,
        input: &[u8],
        deadline: Duration,
        router: &StorageRouter,
    ) -> io::Result<WasmRun> {
        let memory_hits = self.parts.cgroup.memory_limit_hits();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let exit = self.start(Program::Wasm, deadline, &[theirs.as_raw_fd()])?;
        drop(theirs);
        ours.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(ours)?;
        let serve = async {
            match link::serve(stream, tenant, input, router).await {
                // It reported: the result is known; the process's exit (its teardown takes a
                // few hundred microseconds) is not waited for.
                Ok(outcome) => (Ok(outcome), None),
                // It died first: its exit report says how.
                Err(e) => (Err(e), Some(exit.await)),
            }
        };
        let grace = Duration::from_secs(2);
        let (link, exit) = tokio::time::timeout(deadline + grace, serve)
            .await
            .map_err(|_| {
                io::Error::other(format!(
                    "the container did not report within {grace:?} of the deadline"
                ))
            })?;
        match (link, exit) {
            (Ok(outcome), _) => Ok(WasmRun {
                result: outcome.result.clone(),
                link: Some(outcome),
            }),
            (Err(_), None) => Err(io::Error::other("the link failed without an exit")),
            (Err(_), Some(exit)) => {
                let exit = exit.map_err(|_| io::Error::other(self.failure()))?;
                let deadline_error = RunError::DeadlineExceeded { deadline };
                let error = match self.outcome(exit, memory_hits) {
                    Outcome::DeadlineExceeded => deadline_error,
                    Outcome::MemoryLimit => RunError::MemoryLimit {
                        wanted: 0,
                        limit: usize::try_from(self.parts.cgroup.memory_limit())
                            .unwrap_or(usize::MAX),
                    },
                    Outcome::Refused(why) => RunError::NoSlot(why),
                    Outcome::Exited(code) => {
                        RunError::Trap(format!("the function's process exited with code {code}"))
                    }
                    Outcome::Signaled(signal) => RunError::Trap(format!(
                        "the function's process was killed by signal {signal}"
                    )),
                };
                Ok(WasmRun {
                    result: Err(error),
                    link: None,
                })
            }
        }
    }

    fn outcome(&self, exit: Exit, memory_hits_before: u64) -> Outcome {
        match exit {
            Exit::Deadline => Outcome::DeadlineExceeded,
            Exit::Code(code) => Outcome::Exited(code),
            Exit::Refused(why) => Outcome::Refused(why),
            Exit::Signal(_) if self.parts.cgroup.memory_limit_hits() > memory_hits_before => {
                Outcome::MemoryLimit
            }
            Exit::Signal(signal) => Outcome::Signaled(signal),
        }
    }

    /// Why the container stopped answering: the forker's report if assembly failed.
    pub fn failure(&self) -> String {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let forker = self.parts.cgroup.forker.as_fd();
        let mut fds = [PollFd::new(forker, PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0
            && let Ok(Some((zygote::FromZygote::Failed { error }, _))) =
                zygote::recv::<zygote::FromZygote>(forker)
        {
            return format!("assembling the container failed: {error}");
        }
        "the container's template is gone".to_owned()
    }

    /// Memory the container's cgroup charges now, bytes.
    pub fn memory_usage(&self) -> u64 {
        self.parts.cgroup.memory_usage()
    }

    /// Invocations running in it now.
    pub fn running(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Wakes the reader; the template sees the agent hang up and kills its processes.
        let _ =
            nix::sys::socket::shutdown(self.template.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        // The parts drop after this: cgroup, root file system, namespaces.
    }
}

/// The reader thread: hands each exit report to its waiter, until the template is gone (then
/// every waiter learns so, its sender dropped).
fn read_reports(template: &OwnedFd, waiters: &Waiters) {
    loop {
        let report = match zygote::recv::<FromTemplate>(template.as_fd()) {
            Ok(Some((report, _))) => report,
            Ok(None) | Err(_) => break,
        };
        let (id, exit) = match report {
            FromTemplate::Exited {
                id,
                code,
                signal,
                deadline,
                ..
            } => {
                let exit = if deadline {
                    Exit::Deadline
                } else if let Some(code) = code {
                    Exit::Code(code)
                } else {
                    Exit::Signal(signal.unwrap_or(0))
                };
                (id, exit)
            }
            FromTemplate::Refused { id, error } => (id, Exit::Refused(error)),
            FromTemplate::Failed { error } => {
                tracing::warn!(%error, "a container's template failed");
                break;
            }
        };
        let waiter = waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(tx) = waiter {
            // An invocation that gave up is not an error.
            let _ = tx.send(exit);
        }
    }
    waiters.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
