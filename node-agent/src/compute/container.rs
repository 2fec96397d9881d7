//! A container: its parts and the template that runs its invocations, each in a process of its
//! own (SAND's two levels). Many invocations may run in one container at once: every `Run`
//! carries an id, and the node's [`Reports`] thread hands each exit report to the invocation
//! waiting for it.
//!
//! Dropping a container tears it down: the template (which kills its processes when the agent
//! hangs up), then the cgroup (killing anything left and removing it), the root file system's
//! holder, and the namespaces.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;
use tokio::sync::oneshot;

use super::link::{self, LinkOutcome, StorageRouter};
use super::parts::{Cgroup, Forker, IpcUts, NetNs, RootFs};
use super::zygote::{self, FromTemplate, Program, ToForker, ToTemplate, WasmFunction};
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

/// A container's template as the report reader and the container share it.
#[derive(Debug)]
struct Template {
    sock: OwnedFd,
    /// Invocations waiting for their exit report, by id.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Exit>>>,
    /// Why setting the container up failed, as its template reported.
    failed: Mutex<Option<String>>,
    /// Why the agent killed the container (every process in it), if it did.
    killed: Mutex<Option<String>>,
    /// The number and socket of the process waiting to run the next invocation without a fork
    /// (see [`super::zygote`]): the forker's spare, then each one the template forks after the
    /// last was used.
    spare: Mutex<Option<(u64, OwnedFd)>>,
}

impl Template {
    /// Reads one report and hands it to its waiter; false once the template is gone (every
    /// waiter then learns so, its sender dropped).
    fn read_one(&self) -> bool {
        let (report, fds) = match zygote::recv::<FromTemplate>(self.sock.as_fd()) {
            Ok(Some(report)) => report,
            Ok(None) | Err(_) => {
                self.lock_waiters().clear();
                return false;
            }
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
            FromTemplate::Spare { number } => {
                let spare = fds.into_iter().next().map(|sock| (number, sock));
                *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = spare;
                return true;
            }
            FromTemplate::Failed { error } => {
                tracing::warn!(%error, "a container's template failed");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                self.lock_waiters().clear();
                return false;
            }
        };
        if let Some(tx) = self.lock_waiters().remove(&id) {
            // An invocation that gave up is not an error.
            let _ = tx.send(exit);
        }
        true
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Exit>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The epoll token that stops the reader.
const STOP: u64 = u64::MAX;

/// The node's reader of template reports: one thread and one `epoll` over every container's
/// template socket, so assembling a container starts no thread (spawning one cost ~300 us of
/// the critical path). Its count of templates is the node's count of live containers.
#[derive(Debug)]
pub struct Reports {
    epoll: Arc<Epoll>,
    templates: Arc<Mutex<HashMap<u64, Arc<Template>>>>,
    next_token: AtomicU64,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Reports {
    /// Starts the reader thread.
    pub fn start() -> io::Result<Self> {
        let epoll = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?;
        epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        let templates: Arc<Mutex<HashMap<u64, Arc<Template>>>> = Arc::default();
        let thread = {
            let (epoll, templates) = (epoll.clone(), templates.clone());
            std::thread::Builder::new()
                .name("template-reports".into())
                .spawn(move || read_reports(&epoll, &templates))?
        };
        Ok(Self {
            epoll,
            templates,
            next_token: AtomicU64::new(0),
            stop,
            thread: Some(thread),
        })
    }

    /// Containers alive now.
    pub fn live(&self) -> usize {
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn register(&self, template: &Arc<Template>) -> io::Result<u64> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Arc::clone(template));
        if let Err(e) = self
            .epoll
            .add(&template.sock, EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            self.unregister(token);
            return Err(e.into());
        }
        Ok(token)
    }

    fn unregister(&self, token: u64) {
        let template = self
            .templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(template) = template {
            // Already gone if the template hung up first.
            let _ = self.epoll.delete(&template.sock);
            template.lock_waiters().clear();
        }
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reader thread: one report per readable template socket per wake-up (the epoll is level
/// triggered, so the next one wakes it again), until [`STOP`].
fn read_reports(epoll: &Epoll, templates: &Mutex<HashMap<u64, Arc<Template>>>) {
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "the template report reader stopped");
                return;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == STOP {
                return;
            }
            let template = templates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&token)
                .cloned();
            if let Some(template) = template
                && !template.read_one()
            {
                let _ = epoll.delete(&template.sock);
            }
        }
    }
}

/// A container: its parts and the template that runs its invocations.
#[derive(Debug)]
pub struct Container {
    // Field order is teardown order.
    template: Arc<Template>,
    /// What the template is sent with the first `Run`, and the function's code for it: it
    /// joins the namespaces then, so it does not compete for a CPU with the spare before.
    /// Every message to the template is sent under this lock.
    unassembled: Mutex<Option<(ToForker, Option<OwnedFd>)>>,
    reports: Arc<Reports>,
    /// Its template's registration with `reports`.
    token: u64,
    next_id: AtomicU64,
    /// Held until teardown.
    parts: Parts,
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

impl Parts {
    /// What `Assemble` sends: the namespaces to join, then `code` if there is one.
    fn assemble_fds(&self, code: Option<&OwnedFd>) -> Vec<RawFd> {
        let mut fds = vec![
            self.net.0.as_raw_fd(),
            self.ipc_uts.ipc.as_raw_fd(),
            self.ipc_uts.uts.as_raw_fd(),
            self.rootfs.mnt.as_raw_fd(),
        ];
        fds.extend(code.map(AsRawFd::as_raw_fd));
        fds
    }
}

impl Container {
    /// Assembles a container from a parked forker and the namespaces: sends `assemble` (with
    /// the namespaces, and `code` for a WebAssembly function) to the forker's spare now, so it
    /// joins them while the caller goes on, and to the forker with the first `Run` (see
    /// [`Self::start`]). Nothing is waited for: if assembly fails, the template reports why
    /// instead of running anything ([`Self::failure`]). `reports` reads the template's reports.
    pub(super) fn assemble(
        forker: Forker,
        net: NetNs,
        ipc_uts: IpcUts,
        assemble: ToForker,
        code: Option<OwnedFd>,
        provenance: Provenance,
        reports: Arc<Reports>,
    ) -> io::Result<Self> {
        let Forker {
            sock,
            spare,
            cgroup,
            rootfs,
        } = forker;
        let parts = Parts {
            cgroup,
            net,
            ipc_uts,
            rootfs,
        };
        let fds = parts.assemble_fds(code.as_ref());
        // If the spare is gone, the template forks for the first invocation too.
        let spare = zygote::send(spare.as_fd(), &assemble, &fds)
            .is_ok()
            .then_some(spare);
        let ToForker::Assemble { wasm, .. } = &assemble;
        let wasm = wasm.clone();
        let template = Arc::new(Template {
            sock,
            waiters: Mutex::default(),
            failed: Mutex::default(),
            killed: Mutex::default(),
            spare: Mutex::new(spare.map(|spare| (0, spare))),
        });
        let token = reports.register(&template)?;
        Ok(Self {
            template,
            unassembled: Mutex::new(Some((assemble, code))),
            reports,
            token,
            next_id: AtomicU64::new(0),
            parts,
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
        fds: &[RawFd],
    ) -> io::Result<oneshot::Receiver<Exit>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.template.lock_waiters().insert(id, tx);
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        let run = ToTemplate::Run {
            id,
            deadline_ms,
            program,
        };
        // The spare waiting in the container, if there is one, runs it and the template then
        // adopts it; otherwise (concurrent invocations, or the spare is gone) the template
        // forks for it.
        let spare = self
            .template
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let spare_runs = spare.and_then(|(number, spare)| {
            zygote::send(spare.as_fd(), &run, fds)
                .is_ok()
                .then_some(number)
        });
        let template = self.template.sock.as_fd();
        let sent = {
            // Held while sending: the template's first message must be its `Assemble`, not a
            // concurrent invocation's `Run`.
            let mut unassembled = self.unassembled.lock().unwrap_or_else(|e| e.into_inner());
            unassembled
                .take()
                .map_or(Ok(()), |(assemble, code)| {
                    zygote::send(template, &assemble, &self.parts.assemble_fds(code.as_ref()))
                })
                .and_then(|()| {
                    if let Some(spare) = spare_runs {
                        let adopt = ToTemplate::Adopt {
                            id,
                            deadline_ms,
                            spare,
                        };
                        zygote::send(template, &adopt, &[])
                    } else {
                        zygote::send(template, &run, fds)
                    }
                })
        };
        if let Err(e) = sent {
            self.template.lock_waiters().remove(&id);
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

    /// Why the container stopped answering: why it was killed, or its template's report if
    /// setting it up failed.
    pub fn failure(&self) -> String {
        if let Some(why) = &*self
            .template
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            return format!("the container was killed: {why}");
        }
        match &*self
            .template
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(error) => format!("assembling the container failed: {error}"),
            None => "the container's template is gone".to_owned(),
        }
    }

    /// Kills every process of the container, whatever it is doing (a start function that
    /// spins, an invocation past its deadline, a child that left its process group or its
    /// session), and removes its cgroup: its PID namespace is killed as a whole (its PID 1
    /// dies), then anything still in its cgroup, until the cgroup is empty and gone. Waiters
    /// learn it is gone, with `why`; nothing can run in it again. Idempotent; what dropping it
    /// does too. Blocking (it waits for the processes to leave the cgroup).
    pub fn kill(&self, why: &str) {
        self.template
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| why.to_owned());
        self.reports.unregister(self.token);
        let _ = nix::sys::socket::shutdown(
            self.template.sock.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        self.parts.rootfs.kill();
        self.parts.cgroup.empty_and_remove(Duration::from_secs(10));
    }

    /// Its cgroup's directory in each hierarchy (gone once it is killed).
    pub fn cgroup_dirs(&self) -> &[std::path::PathBuf] {
        self.parts.cgroup.dirs()
    }

    /// Memory the container's cgroup charges now, bytes.
    pub fn memory_usage(&self) -> u64 {
        self.parts.cgroup.memory_usage()
    }

    /// Invocations running in it now (an invocation that gave up waiting is not counted).
    pub fn running(&self) -> usize {
        self.template
            .lock_waiters()
            .values()
            .filter(|tx| !tx.is_closed())
            .count()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Its waiters learn it is gone; every process in it is killed, whatever the template
        // is doing (it may be spinning in a start function, and a process may have left its
        // invocation's group).
        self.kill("it was torn down");
        // The parts drop after this: cgroup, root file system, namespaces.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

    use super::*;

    /// A template registered with `reports`, and the template process's end of its socket.
    fn registered(reports: &Reports) -> (Arc<Template>, u64, OwnedFd) {
        let (ours, theirs) = zygote::seqpacket_pair().unwrap();
        let template = Arc::new(Template {
            sock: ours,
            waiters: Mutex::default(),
            failed: Mutex::default(),
            killed: Mutex::default(),
            spare: Mutex::default(),
        });
        let token = reports.register(&template).unwrap();
        (template, token, theirs)
    }

    fn waiter(template: &Template, id: u64) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        template.lock_waiters().insert(id, tx);
        rx
    }

    fn report(end: &OwnedFd, report: &FromTemplate) {
        zygote::send(end.as_fd(), report, &[]).unwrap();
    }

    fn exited(id: u64, code: Option<i32>, signal: Option<i32>, deadline: bool) -> FromTemplate {
        FromTemplate::Exited {
            id,
            pid: 10,
            code,
            signal,
            deadline,
        }
    }

    #[test]
    fn one_reader_hands_every_template_report_to_its_waiter() {
        let reports = Reports::start().unwrap();
        let (a, a_token, a_end) = registered(&reports);
        let (b, _, b_end) = registered(&reports);
        assert_eq!(reports.live(), 2);

        let (a1, a2, a3, b1) = (waiter(&a, 1), waiter(&a, 2), waiter(&a, 3), waiter(&b, 1));
        report(&b_end, &exited(1, Some(3), None, false));
        report(&a_end, &exited(2, None, Some(9), true));
        report(&a_end, &exited(3, None, Some(9), false));
        let error = "the pids limit".to_owned();
        report(&a_end, &FromTemplate::Refused { id: 1, error });
        assert_eq!(b1.blocking_recv().unwrap(), Exit::Code(3));
        assert_eq!(a2.blocking_recv().unwrap(), Exit::Deadline);
        assert_eq!(a3.blocking_recv().unwrap(), Exit::Signal(9));
        assert_eq!(
            a1.blocking_recv().unwrap(),
            Exit::Refused("the pids limit".into())
        );

        // A template that fails: its reason is kept and its waiters learn it is gone.
        let a4 = waiter(&a, 4);
        let error = "setns: EPERM".to_owned();
        report(&a_end, &FromTemplate::Failed { error });
        assert!(a4.blocking_recv().is_err());
        assert_eq!(a.failed.lock().unwrap().as_deref(), Some("setns: EPERM"));
        // One that hangs up: the same, without a reason.
        let b2 = waiter(&b, 2);
        drop(b_end);
        assert!(b2.blocking_recv().is_err());
        assert!(b.failed.lock().unwrap().is_none());

        reports.unregister(a_token);
        assert_eq!(reports.live(), 1);
    }
}
