//! What a hostile tenant must not get from a compute node (issue 14), proven on real
//! namespaces and cgroups, driving the compute node in-process (no gRPC):
//!
//! - `descriptors`: a container's processes hold descriptors 0, 1, 2 and their own link only:
//!   a native function lists its own descriptors and a child's, and probes every number from
//!   3 past the descriptor limit (first invocation in the forker's spare, later ones in
//!   spares and processes the template forks); a WebAssembly invocation's process holds 0,
//!   1, 2 and one socket; and from outside
//!   no process of any container shares an open file with the zygote or with another
//!   container (another tenant's WebAssembly container running meanwhile, parked forkers).
//! - `spinning_start_function`: a WebAssembly start function that never returns (it runs when
//!   the template and the spare make their instance): the invocation gets `DeadlineExceeded`
//!   naming the deadline, its container is killed and its cgroup removed, no process of it is
//!   left, it is not reused, and the node serves other functions afterwards.
//! - `spinning_invocation`: the same for an invocation that spins (native and WebAssembly).
//! - `spinning_children`: a native function whose children spin, one of them in a session of
//!   its own (out of reach of the template's process-group kill): all are killed at the
//!   deadline; and a child left running by an invocation that succeeded is killed when the
//!   keep-alive window passes.
//!
//! The test binary is its own zygote and holder (`__zygote`, `__holder`), so it has no harness:
//! `cargo test -p sandstorm-node-agent --test compute_hygiene [NAME...]`. Needs root and
//! cgroups; without them every test prints `SKIPPED: <reason>` and passes. No timing
//! thresholds: outcomes are asserted, waits are generous.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // A test's output.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;
use sandstorm_node_agent::compute::parts::ContainerLimits;
use sandstorm_node_agent::compute::{ComputeConfig, ComputeNode, ExecuteError, preflight};
use sandstorm_node_agent::sandbox::{FunctionLimits, RunError};

const NODE: &str = "hygiene-test";
const ALICE: TenantId = TenantId(701);
const BOB: TenantId = TenantId(702);
/// How long anything is waited for before a test gives up (outcomes, not timings).
const PATIENCE: Duration = Duration::from_secs(60);

type Test = fn(&Arc<ComputeNode>, &tokio::runtime::Runtime);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__zygote") => return done(sandstorm_node_agent::compute::zygote::zygote_main()),
        Some("__holder") => {
            let base = PathBuf::from(args.get(2).cloned().unwrap_or_default());
            return done(sandstorm_node_agent::compute::zygote::holder_main(&base));
        }
        _ => {}
    }
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let tests: [(&str, Test); 4] = [
        ("descriptors", descriptors),
        ("spinning_start_function", spinning_start_function),
        ("spinning_invocation", spinning_invocation),
        ("spinning_children", spinning_children),
    ];
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return ExitCode::SUCCESS;
    }
    if let Err(e) = preflight() {
        for (name, _) in &chosen {
            println!("test {name} ... SKIPPED: the compute role cannot run here: {e}");
        }
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = Arc::new(start_node());
    let mut failed = Vec::new();
    let ran = chosen.len();
    for (name, test) in chosen {
        println!("test {name} ...");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            test(&node, &runtime);
        }));
        match result {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    drop(node);
    let passed = ran - failed.len();
    println!("compute_hygiene: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}

fn done(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start_node() -> ComputeNode {
    let exe = std::env::current_exe().unwrap();
    let mut config = ComputeConfig::new(NODE, exe);
    config.pool_size = 2;
    config.limits = ContainerLimits {
        memory_bytes: 64 << 20,
        pids: 32,
        ..ContainerLimits::default()
    };
    // Idle containers go whenever `reclaim_idle` is called (only `spinning_children` does).
    config.keep_alive = Duration::ZERO;
    let node = ComputeNode::start(config).unwrap();
    assert!(node.wait_pools_full(PATIENCE), "the pools never filled");
    node
}

fn limits(deadline: Duration) -> FunctionLimits {
    FunctionLimits {
        deadline,
        ..FunctionLimits::default()
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

/// A function that returns at once with no output.
const NOTHING: &str = r#"(module (memory (export "memory") 1)
    (func (export "run") (result i32) (i32.const 0)))"#;

/// A function whose start function never returns.
const SPINNING_START: &str = r#"(module (memory (export "memory") 1)
    (func $spin (loop (br 0)))
    (start $spin)
    (func (export "run") (result i32) (i32.const 0)))"#;

/// A function whose invocation never returns.
const SPINNING_RUN: &str = r#"(module (memory (export "memory") 1)
    (func (export "run") (result i32) (loop (br 0)) (i32.const 0)))"#;

/// A process as it was seen: pid and start time (so a reused pid is not mistaken for it).
type Seen = (i32, u64);

/// The pids in the cgroup directories `dirs` (every hierarchy).
fn procs(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// State and start time of `pid` (fields 3 and 22 of `/proc/<pid>/stat`).
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

fn observe(pids: &[i32]) -> Vec<Seen> {
    pids.iter()
        .filter_map(|&p| stat(p).map(|(_, start)| (p, start)))
        .collect()
}

/// Whether a process seen earlier still runs (a zombie does not).
fn alive(&(pid, start): &Seen) -> bool {
    matches!(stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

/// Waits (generously) until `done` holds; false if it never did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + PATIENCE;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// An invocation running on a task, its container's cgroup directories and the processes seen
/// in them.
type Watched = (
    tokio::task::JoinHandle<Result<Vec<u8>, ExecuteError>>,
    Vec<PathBuf>,
    Vec<Seen>,
);

/// Runs `tenant`'s `name` on a task; returns once its warm container exists, with the task,
/// the container's cgroup directories and the processes in them then (after `settle` holds
/// for them, or the patience runs out).
fn start_and_watch(
    node: &Arc<ComputeNode>,
    runtime: &tokio::runtime::Runtime,
    tenant: TenantId,
    name: &str,
    settle: impl Fn(&[i32]) -> bool,
) -> Watched {
    let task = {
        let (node, name) = (node.clone(), name.to_owned());
        runtime.spawn(async move {
            node.execute(tenant, &name, Vec::new())
                .await
                .map(|e| e.output)
        })
    };
    let mut dirs = None;
    assert!(
        eventually(|| {
            dirs = node.warm_cgroup_dirs(tenant, name);
            dirs.is_some() || task.is_finished()
        }),
        "{name}: no container was assembled"
    );
    let dirs = dirs.unwrap_or_else(|| panic!("{name} ended before its container was seen"));
    let mut pids = Vec::new();
    eventually(|| {
        pids = procs(&dirs);
        settle(&pids) || task.is_finished()
    });
    let seen = observe(&pids);
    (task, dirs, seen)
}

/// Asserts `result` is `DeadlineExceeded` naming `deadline`.
fn assert_deadline(what: &str, result: Result<Vec<u8>, ExecuteError>, deadline: Duration) {
    match result {
        Err(ExecuteError::Run(RunError::DeadlineExceeded { deadline: d })) => {
            assert_eq!(d, deadline, "{what}: the error names another deadline");
            let message = ExecuteError::Run(RunError::DeadlineExceeded { deadline: d }).to_string();
            println!("  {what}: {message}");
        }
        other => panic!("{what}: expected DeadlineExceeded, got {other:?}"),
    }
}

/// Asserts nothing of a container is left: its cgroup directories are gone (so empty) and
/// none of the processes seen in it runs.
fn assert_nothing_left(what: &str, dirs: &[PathBuf], seen: &[Seen]) {
    assert!(
        !seen.is_empty(),
        "{what}: no process was seen in the container"
    );
    for dir in dirs {
        assert!(
            !dir.exists(),
            "{what}: cgroup {} is still there, holding {:?}",
            dir.display(),
            procs(std::slice::from_ref(dir))
        );
    }
    let left: Vec<&Seen> = seen.iter().filter(|s| alive(s)).collect();
    assert!(
        left.is_empty(),
        "{what}: processes of the killed container still run: {left:?}"
    );
    println!(
        "  {what}: {} processes killed, cgroup {} removed",
        seen.len(),
        dirs.first()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
}

fn block<T>(runtime: &tokio::runtime::Runtime, f: impl Future<Output = T>) -> T {
    runtime.block_on(f)
}

/// Runs an invocation to its end.
fn execute(
    node: &ComputeNode,
    runtime: &tokio::runtime::Runtime,
    tenant: TenantId,
    name: &str,
) -> Result<Vec<u8>, ExecuteError> {
    block(runtime, node.execute(tenant, name, Vec::new())).map(|e| e.output)
}

/// The node still assembles containers and runs functions.
fn assert_still_serving(node: &ComputeNode, runtime: &tokio::runtime::Runtime) {
    // Deployed again each time: a new version gets a new container.
    node.deploy_wasm(
        BOB,
        "nothing",
        &wasm(NOTHING),
        limits(Duration::from_secs(30)),
    )
    .unwrap();
    assert_eq!(execute(node, runtime, BOB, "nothing").unwrap(), b"");
    node.deploy_native(
        ALICE,
        "echo",
        sh("echo still here"),
        limits(Duration::from_secs(30)),
    )
    .unwrap();
    assert_eq!(
        execute(node, runtime, ALICE, "echo").unwrap(),
        b"still here\n"
    );
    println!("  the node still serves (WebAssembly and native)");
}

/// The descriptor numbers a native function's shell lists for itself, then for a child, then
/// every number from 3 past the descriptor limit (1024) that a probe finds open: a subshell
/// duplicates it onto its stdin (`exec <&N` fails on a closed descriptor, whatever the open
/// one's mode or close-on-exec flag), so a descriptor `/proc` would not list is found too.
const LIST_FDS: &str = "ls /proc/$$/fd; echo --; sleep 30 & c=$!; ls /proc/$c/fd; kill $c; \
                        echo --; for fd in $(seq 3 1100); do (exec <&$fd) 2>/dev/null && echo $fd; done; \
                        echo probed";

fn descriptors(node: &Arc<ComputeNode>, runtime: &tokio::runtime::Runtime) {
    node.deploy_native(ALICE, "fds", sh(LIST_FDS), limits(Duration::from_secs(30)))
        .unwrap();
    let expected = "0\n1\n2\n--\n0\n1\n2\n--\nprobed\n";
    // The first invocation runs in the forker's spare, the next in spares the template
    // forked; concurrent ones find no spare waiting and get a process forked by the template.
    for i in 0..3 {
        let out = execute(node, runtime, ALICE, "fds").unwrap();
        assert_eq!(String::from_utf8_lossy(&out), expected, "invocation {i}");
    }
    let concurrent: Vec<_> = (0..3)
        .map(|_| {
            let node = node.clone();
            runtime.spawn(async move { node.execute(ALICE, "fds", Vec::new()).await })
        })
        .collect();
    for task in concurrent {
        let out = block(runtime, task).unwrap().unwrap().output;
        assert_eq!(
            String::from_utf8_lossy(&out),
            expected,
            "a concurrent invocation"
        );
    }
    println!(
        "  a native function and its child list descriptors 0, 1, 2 only; probing 3 to 1100 finds none open"
    );

    // From outside: while one of Bob's WebAssembly invocations and one of Alice's native ones
    // run, no open file of any container process (descriptors 3 and up) is the zygote's or
    // another container's (parked forkers count as containers here).
    let long = Duration::from_secs(8);
    node.deploy_wasm(BOB, "spin", &wasm(SPINNING_RUN), limits(long))
        .unwrap();
    node.deploy_native(
        ALICE,
        "sleep",
        sh("sleep 8"),
        limits(Duration::from_secs(30)),
    )
    .unwrap();
    // Settled once the invocation's process is there beside the template.
    let (bob, bob_dirs, _) = start_and_watch(node, runtime, BOB, "spin", |p| p.len() >= 2);
    let (alice, alice_dirs, _) = start_and_watch(node, runtime, ALICE, "sleep", |p| p.len() >= 2);
    // Bob's invocation process (the one spinning: the most CPU time in its container) holds
    // descriptors 0, 1, 2 and its link, a socket, only.
    let mut spinner = None;
    assert!(
        eventually(|| {
            spinner = procs(&bob_dirs)
                .into_iter()
                .filter_map(|p| cpu_ticks(p).map(|t| (t, p)))
                .max();
            spinner.is_some_and(|(ticks, _)| ticks >= 20)
        }),
        "bob's invocation never ran: {spinner:?}"
    );
    let (_, spinner) = spinner.unwrap();
    let fds = descriptors_of(spinner);
    let numbers: Vec<u32> = fds.iter().map(|(n, _)| *n).collect();
    assert!(
        numbers.len() == 4 && numbers[..3] == [0, 1, 2] && fds[3].1.starts_with("socket:"),
        "a WebAssembly invocation's process holds more than 0, 1, 2 and its link: {fds:?}"
    );
    println!("  a WebAssembly invocation's process holds 0, 1, 2 and its link: {fds:?}");
    let zygote = open_files(node.zygote_pid() as i32);
    let mut owners: HashMap<(u64, u64), String> = zygote
        .iter()
        .map(|(id, link)| (*id, format!("the zygote ({link})")))
        .collect();
    let groups = all_cgroups(&bob_dirs[0]);
    assert!(groups.len() >= 2, "containers seen: {groups:?}");
    let mut checked = 0;
    for group in &groups {
        let mine: HashMap<(u64, u64), String> = procs(std::slice::from_ref(group))
            .into_iter()
            .flat_map(|pid| open_files(pid).into_iter())
            .collect();
        for (id, link) in &mine {
            if let Some(owner) = owners.get(id) {
                panic!(
                    "a process in {} holds {link}, also held by {owner}",
                    group.display()
                );
            }
            checked += 1;
        }
        for (id, link) in mine {
            owners.insert(id, format!("{} ({link})", group.display()));
        }
    }
    println!(
        "  {checked} open files of {} cgroups' processes: none shared with the zygote or across containers",
        groups.len()
    );
    assert!(alice_dirs != bob_dirs);
    assert_eq!(block(runtime, alice).unwrap().unwrap(), b"");
    assert_deadline("bob's spin", block(runtime, bob).unwrap(), long);
    node.remove(BOB, "spin");
}

/// User and system CPU time of `pid`, clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The descriptors of `pid`, in order, with what each is.
fn descriptors_of(pid: i32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let link = std::fs::read_link(e.path()).ok()?;
                    Some((n, link.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// Every container cgroup of the node: the directories beside `one` (same hierarchy).
fn all_cgroups(one: &Path) -> Vec<PathBuf> {
    let parent = one.parent().unwrap();
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// The open files of `pid` from descriptor 3 up, by (device, inode), with what they are.
/// Anonymous inodes (signalfd, epoll, eventfd) are one inode for all and are left out.
fn open_files(pid: i32) -> HashMap<(u64, u64), String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) > Some(2))
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?.display().to_string();
            if link.starts_with("anon_inode:") {
                return None;
            }
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((
                (meta.dev(), meta.ino()),
                format!("pid {pid} fd {}: {link}", e.file_name().to_string_lossy()),
            ))
        })
        .collect()
}

fn spinning_start_function(node: &Arc<ComputeNode>, runtime: &tokio::runtime::Runtime) {
    let deadline = Duration::from_millis(1500);
    node.deploy_wasm(ALICE, "spin-start", &wasm(SPINNING_START), limits(deadline))
        .unwrap();
    let mut cgroups = HashSet::new();
    // Twice: the second invocation gets a new container (the first was not reused).
    for round in 0..2 {
        let what = format!("spinning start function, round {round}");
        // Settled once the template and its spare both run (both spin in the start function).
        let (task, dirs, seen) =
            start_and_watch(node, runtime, ALICE, "spin-start", |p| p.len() >= 2);
        assert_deadline(&what, block(runtime, task).unwrap(), deadline);
        assert_nothing_left(&what, &dirs, &seen);
        assert!(
            node.warm_cgroup_dirs(ALICE, "spin-start").is_none(),
            "{what}: the killed container is still warm"
        );
        assert!(
            cgroups.insert(dirs[0].clone()),
            "{what}: a container was reused"
        );
    }
    assert_still_serving(node, runtime);
    node.remove(ALICE, "spin-start");
}

fn spinning_invocation(node: &Arc<ComputeNode>, runtime: &tokio::runtime::Runtime) {
    let deadline = Duration::from_millis(1500);
    node.deploy_wasm(BOB, "spin-run", &wasm(SPINNING_RUN), limits(deadline))
        .unwrap();
    node.deploy_native(
        ALICE,
        "spin-sh",
        sh("while :; do :; done"),
        limits(deadline),
    )
    .unwrap();
    for (tenant, name) in [(BOB, "spin-run"), (ALICE, "spin-sh")] {
        let what = format!("{name} spinning past its deadline");
        let (task, dirs, seen) = start_and_watch(node, runtime, tenant, name, |p| p.len() >= 2);
        assert_deadline(&what, block(runtime, task).unwrap(), deadline);
        assert_nothing_left(&what, &dirs, &seen);
        assert!(node.warm_cgroup_dirs(tenant, name).is_none());
        node.remove(tenant, name);
    }
    assert_still_serving(node, runtime);
}

fn spinning_children(node: &Arc<ComputeNode>, runtime: &tokio::runtime::Runtime) {
    let deadline = Duration::from_millis(1500);
    // A child in the invocation's process group and one in a session of its own, both
    // spinning, and the invocation itself spinning.
    let script = "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & \
                  sh -c 'while :; do :; done' & \
                  while :; do :; done";
    node.deploy_native(ALICE, "spin-kids", sh(script), limits(deadline))
        .unwrap();
    let what = "a function whose children spin";
    // Settled with the template, the invocation and its two children.
    let (task, dirs, seen) = start_and_watch(node, runtime, ALICE, "spin-kids", |p| p.len() >= 4);
    assert!(seen.len() >= 4, "{what}: processes seen: {seen:?}");
    assert_deadline(what, block(runtime, task).unwrap(), deadline);
    assert_nothing_left(what, &dirs, &seen);
    node.remove(ALICE, "spin-kids");

    // An invocation that succeeds but leaves a child running in a session of its own: the
    // child is killed when the container's keep-alive window passes (zero here).
    // It answers once the child has its own session (out of the invocation's group, which
    // the template kills when the invocation exits).
    let script = "setsid sh -c 'touch /tmp/away; while :; do :; done' </dev/null >/dev/null 2>&1 & \
                  while [ ! -e /tmp/away ]; do :; done; echo left";
    node.deploy_native(ALICE, "leaves", sh(script), limits(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(execute(node, runtime, ALICE, "leaves").unwrap(), b"left\n");
    let dirs = node.warm_cgroup_dirs(ALICE, "leaves").unwrap();
    // The child left behind spins there (the process with CPU time to show for it), beside
    // the template (and a spare, if one is forked by now).
    let mut pids = Vec::new();
    assert!(
        eventually(|| {
            pids = procs(&dirs);
            pids.iter().any(|&p| cpu_ticks(p).is_some_and(|t| t >= 20))
        }),
        "the left child is not spinning in the container: {pids:?}"
    );
    let seen = observe(&pids);
    // Every idle warm container goes (the keep-alive window is zero here), this one with it.
    assert!(
        node.reclaim_idle() >= 1,
        "the idle container was not reclaimed"
    );
    assert_nothing_left("a child left running, at keep-alive", &dirs, &seen);
    node.remove(ALICE, "leaves");
    assert_still_serving(node, runtime);
}
