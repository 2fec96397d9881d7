//! Containers of the compute node, proven isolated from the inside: code runs in a container
//! assembled from pooled parts and tries what a container must not be able to do. The node keeps
//! serving through all of it and leaks no parts. Needs root (namespaces, cgroups, mounts): without
//! it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::time::Duration;

use sandstorm_node_agent::compute::parts::ContainerLimits;
use sandstorm_node_agent::compute::{ComputeConfig, ComputeNode, Outcome, RunResult, preflight};
use sandstorm_tests::sandstorm_bin;

fn node(name: &str) -> Option<ComputeNode> {
    if let Err(e) = preflight() {
        eprintln!("SKIPPED: the compute role cannot run here: {e}");
        return None;
    }
    let mut config = ComputeConfig::new(name, sandstorm_bin());
    config.pool_size = 2;
    config.limits = ContainerLimits {
        memory_bytes: 32 << 20,
        pids: 16,
        ..ContainerLimits::default()
    };
    Some(ComputeNode::start(config).unwrap())
}

fn sh(script: &str) -> [&str; 3] {
    ["/bin/sh", "-c", script]
}

fn cgroup_dirs(node: &str) -> usize {
    std::fs::read_dir(format!("/sys/fs/cgroup/memory/sandstorm/{node}"))
        .or_else(|_| std::fs::read_dir(format!("/sys/fs/cgroup/sandstorm/{node}")))
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_container_is_isolated_and_its_escapes_fail() {
    let Some(node) = node("isolation-test") else {
        return;
    };
    assert!(node.wait_pools_full(Duration::from_secs(60)));
    let containers_before = node.live_containers();
    let c = node.assemble(false).unwrap();
    let run = |script: &str| {
        let r = c.run(&sh(script), b"", Duration::from_secs(5)).unwrap();
        (r.outcome, String::from_utf8_lossy(&r.output).into_owned())
    };

    // Only its own processes: PID 1 (the holder) and the template (both `sandstorm`), and this
    // pipeline. The test runner and everything else on the host are invisible.
    let (outcome, out) = run("cat /proc/[0-9]*/comm");
    assert_eq!(outcome, Outcome::Exited(0));
    let names: Vec<&str> = out.lines().collect();
    assert!(names.len() <= 4, "processes visible: {names:?}");
    assert!(
        names.iter().all(|n| ["sandstorm", "sh", "cat"].contains(n)),
        "{names:?}"
    );
    // Only lo.
    let (_, out) = run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '");
    assert_eq!(out.trim(), "lo");
    // Not root, no capabilities.
    let (_, out) = run("id -u; grep CapEff /proc/self/status");
    assert!(
        out.starts_with("65534\n") && out.contains("0000000000000000"),
        "{out}"
    );
    // The base file system cannot be written.
    let (outcome, out) = run("echo x > /bin/busybox 2>&1; echo x > /etc/passwd 2>&1; echo done");
    assert!(
        out.contains("Permission denied") || out.contains("Read-only"),
        "{out}"
    );
    assert_eq!(outcome, Outcome::Exited(0));
    // The chroot escape SOCK was criticised for: refused (no CAP_SYS_CHROOT, and seccomp).
    let (outcome, out) = run("mkdir -p /tmp/x && chroot /tmp/x /bin/true 2>&1; echo rc=$?");
    assert!(
        out.contains("rc=1") || out.contains("Operation not permitted"),
        "{outcome:?} {out}"
    );
    // mount, ptrace (reading PID 1's memory needs ptrace access), unshare, module loading:
    // refused.
    for (what, script) in [
        ("ptrace", "head -c1 /proc/1/mem >/dev/null 2>&1; echo rc=$?"),
        ("mount", "mount -t tmpfs none /tmp 2>&1; echo rc=$?"),
        ("unshare", "unshare -n true 2>&1; echo rc=$?"),
        // setns, even into its own namespace (seccomp, and no CAP_SYS_ADMIN).
        ("setns", "nsenter -t $$ -n true 2>&1; echo rc=$?"),
        ("insmod", "insmod /tmp/none.ko 2>&1; echo rc=$?"),
    ] {
        let (_, out) = run(script);
        assert!(!out.contains("rc=0"), "{what} succeeded: {out}");
    }
    // No descriptor setns would let through can be opened: the limit ends below them.
    assert_eq!(
        run("ulimit -Hn; ulimit -Sn").1,
        format!(
            "{0}\n{0}\n",
            sandstorm_node_agent::compute::zygote::RESERVED_FD
        )
    );
    // The container's hostname is its own.
    assert_eq!(run("hostname").1.trim(), "sandbox");

    // A memory bomb is stopped by the memory limit and reported as such.
    let r = c
        .run(
            &sh("a=x; while true; do a=\"$a$a\"; done"),
            b"",
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(
        r.outcome,
        Outcome::MemoryLimit,
        "{}",
        String::from_utf8_lossy(&r.output)
    );
    // A fork bomb is contained by the pids limit (and stopped at its deadline: the shell that
    // started it waits, so the bomb is not cut short when it exits).
    let r = c
        .run(
            &sh("b() { b | b & }; b; sleep 10"),
            b"",
            Duration::from_millis(1500),
        )
        .unwrap();
    assert!(r.hit_pids_limit, "{:?}", r.outcome);
    // An endless loop is stopped at its deadline.
    let r = c
        .run(
            &sh("while true; do :; done"),
            b"",
            Duration::from_millis(300),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::DeadlineExceeded);
    // Still serving.
    assert_eq!(run("echo alive").1, "alive\n");

    node.destroy(c);
    assert_eq!(
        node.live_containers(),
        containers_before,
        "containers leaked"
    );
    drop(node);
    assert_eq!(cgroup_dirs("isolation-test"), 0, "cgroups leaked");
}

/// A container's first invocation runs in the spare its forker parked (no fork on the request's
/// path), every later one in a process its template forks. Both must be held alike: each case
/// here is the first invocation of a fresh container, followed by a forked second one.
#[test]
fn the_first_invocation_of_a_container_is_held_to_the_same_limits() {
    let Some(node) = node("first-invocation-test") else {
        return;
    };
    assert!(node.wait_pools_full(Duration::from_secs(60)));
    type Check = dyn Fn(&RunResult);
    let cases: [(&str, Duration, &Check); 5] = [
        (
            "id -u; grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status; ulimit -n; hostname",
            Duration::from_secs(5),
            &|r| {
                let out = String::from_utf8_lossy(&r.output);
                assert_eq!(r.outcome, Outcome::Exited(0), "{out}");
                assert!(out.starts_with("65534\n"), "{out}");
                assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
                assert!(out.contains("NoNewPrivs:\t1"), "{out}");
                assert!(out.contains("Seccomp:\t2"), "{out}");
                assert!(out.contains("\n1024\nsandbox\n"), "{out}");
            },
        ),
        (
            "ls /proc | grep -c '^[0-9]'; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
            Duration::from_secs(5),
            // PID 1, the template, the spare waiting for the next invocation, this shell and
            // its pipeline (ls, grep); only lo.
            &|r| {
                let out = String::from_utf8_lossy(&r.output);
                let mut lines = out.lines();
                let pids: usize = lines.next().unwrap().parse().unwrap();
                assert!(pids <= 6, "{out}");
                assert_eq!(lines.collect::<Vec<_>>(), ["lo"], "{out}");
            },
        ),
        (
            "a=x; while true; do a=\"$a$a\"; done",
            Duration::from_secs(20),
            &|r| assert_eq!(r.outcome, Outcome::MemoryLimit),
        ),
        (
            "b() { b | b & }; b; sleep 10",
            Duration::from_millis(1500),
            &|r| assert!(r.hit_pids_limit, "{:?}", r.outcome),
        ),
        ("while true; do :; done", Duration::from_millis(300), &|r| {
            assert_eq!(r.outcome, Outcome::DeadlineExceeded)
        }),
    ];
    for (script, deadline, check) in cases {
        let c = node.assemble(false).unwrap();
        let first = c.run(&sh(script), b"", deadline).unwrap();
        check(&first);
        let second = c.run(&sh(script), b"", deadline).unwrap();
        check(&second);
        assert_eq!(
            c.run(&sh("echo alive"), b"", Duration::from_secs(5))
                .unwrap()
                .output,
            b"alive\n"
        );
        node.destroy(c);
    }
    assert_eq!(node.live_containers(), 0, "containers leaked");
    drop(node);
    assert_eq!(cgroup_dirs("first-invocation-test"), 0, "cgroups leaked");
}

/// Invocations that arrive together at a fresh container: one runs in the spare, the template
/// forks the others, and each gets its own output and exit.
#[test]
fn concurrent_first_invocations_of_a_container_all_run() {
    let Some(node) = node("concurrent-first-test") else {
        return;
    };
    assert!(node.wait_pools_full(Duration::from_secs(60)));
    for _ in 0..5 {
        let c = node.assemble(false).unwrap();
        let c = &c;
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..6)
                .map(|i| {
                    scope.spawn(move || {
                        let script = format!("echo {i}");
                        c.run(&sh(&script), b"", Duration::from_secs(5)).unwrap()
                    })
                })
                .collect();
            for (i, run) in runs.into_iter().enumerate() {
                let r = run.join().unwrap();
                assert_eq!(r.outcome, Outcome::Exited(0));
                assert_eq!(r.output, format!("{i}\n").into_bytes());
            }
        });
    }
    drop(node);
    assert_eq!(cgroup_dirs("concurrent-first-test"), 0, "cgroups leaked");
}
