//! `sandstorm bench provision`: request to function running, for a warm container, one assembled
//! from pooled parts, one built from scratch on the critical path, and `runc run` of the same root
//! file system with the same namespaces and limits, in one run.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_naming::TenantId;
use sandstorm_node_agent::compute::parts::ContainerLimits;
use sandstorm_node_agent::compute::{ComputeConfig, ComputeNode, Container};
use sandstorm_node_agent::sandbox::FunctionLimits;

use super::{BenchOutput, Better, CommonArgs, Figure, Peer, Row, Target, Unit};

/// Options of `sandstorm bench provision`.
#[derive(Debug, Args)]
pub struct ProvisionBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Containers assembled from pools (and warm runs: ten times as many).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Containers built from scratch and runc runs.
    #[arg(long, default_value_t = 30)]
    slow_iterations: usize,
    /// Concurrent invocations held in one warm container to measure their memory.
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
}

const PROGRAM: [&str; 2] = ["/bin/echo", "ready"];
const DEADLINE: Duration = Duration::from_secs(10);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: &ProvisionBenchArgs) -> anyhow::Result<BenchOutput> {
    if args.iterations == 0 || args.slow_iterations == 0 {
        bail!("--iterations and --slow-iterations must be at least 1");
    }
    // As a compute agent does: this thread (requests, its async runtime) and everything it
    // starts (the node's threads and processes, and runc) get the scheduler's short slice.
    sandstorm_node_agent::scheduling::prefer_latency();
    let exe = std::env::current_exe().context("locating the sandstorm binary")?;
    let mut config = ComputeConfig::new("bench-provision", exe);
    config.pool_size = 4;
    let state_dir = config.state_dir.clone();
    let limits = config.limits;
    let node = ComputeNode::start(config).context("starting the compute node")?;
    anyhow::ensure!(
        node.wait_pools_full(Duration::from_secs(60)),
        "the part pools did not fill in 60 s"
    );
    let tenant = TenantId(1);
    let module = sandstorm_guest_examples::module("echo").context("the echo example")?;
    node.deploy_wasm(tenant, "echo", module, FunctionLimits::default())?;
    let argv = PROGRAM.iter().map(|a| (*a).to_owned()).collect();
    node.deploy_native(tenant, "echo-native", argv, FunctionLimits::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // WebAssembly: until the agent hears from the function's process that it runs (its
    // instance is ready and `run` called); the output is checked too.
    let wasm = |container: &Container| -> anyhow::Result<Instant> {
        let run =
            runtime.block_on(container.run_wasm(tenant, b"ready", DEADLINE, node.router()))?;
        let output = run.result?;
        anyhow::ensure!(output == b"ready", "unexpected output {output:?}");
        run.link
            .and_then(|l| l.stats.running_at)
            .context("the function did not report running")
    };
    // Native: the request until the program writes its first byte.
    let native = |container: &Container| -> anyhow::Result<Duration> {
        let r = container.run(&PROGRAM, b"", DEADLINE)?;
        anyhow::ensure!(
            r.output == b"ready\n",
            "unexpected output {:?}",
            String::from_utf8_lossy(&r.output)
        );
        r.first_byte.context("no output")
    };
    let refill = || {
        anyhow::ensure!(
            node.wait_pools_full(Duration::from_secs(60)),
            "the pools did not refill"
        );
        Ok(())
    };

    // Warm: a process forked inside the function's container.
    let (mut warm, mut warm_native) = (Vec::new(), Vec::new());
    let warm_wasm = node.assemble_function(tenant, "echo", false)?;
    let warm_exec = node.assemble_function(tenant, "echo-native", false)?;
    for _ in 0..args.iterations * 10 {
        let started = Instant::now();
        warm.push(ms(wasm(&warm_wasm)? - started));
        warm_native.push(ms(native(&warm_exec)?));
    }

    // Memory of extra concurrent invocations in a warm container.
    let before = warm_exec.memory_usage();
    let mut running = Vec::new();
    for _ in 0..args.concurrent {
        running.push(warm_exec.spawn(&["/bin/sleep", "2"], DEADLINE)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = warm_exec.memory_usage();
    for (_stdout, exit) in running {
        exit.blocking_recv()
            .context("the warm container's template went away")?;
    }
    let fork_extra_kib = during.saturating_sub(before) as f64 / 1024.0 / args.concurrent as f64;
    drop((warm_wasm, warm_exec));

    // Assembled from pools (the pools refill between runs, off the measured path).
    let (mut assembled, mut assembled_native) = (Vec::new(), Vec::new());
    for _ in 0..args.iterations {
        refill()?;
        let started = Instant::now();
        let container = node.assemble_function(tenant, "echo", false)?;
        assembled.push(ms(wasm(&container)? - started));
        drop(container);
        refill()?;
        let started = Instant::now();
        let container = node.assemble_function(tenant, "echo-native", false)?;
        let assembled_in = started.elapsed();
        assembled_native.push(ms(assembled_in + native(&container)?));
    }

    // Every part built on the critical path.
    let mut scratch = Vec::new();
    for _ in 0..args.slow_iterations {
        let started = Instant::now();
        let container = node.assemble_function(tenant, "echo", true)?;
        scratch.push(ms(wasm(&container)? - started));
    }
    drop(node);

    let runc = runc_runs(&state_dir, limits, args.slow_iterations)?;

    let warm = Figure::distribution("provision.warm", Unit::Milliseconds, &warm);
    let warm_native =
        Figure::distribution("provision.warm_native", Unit::Milliseconds, &warm_native);
    let assembled_native = Figure::distribution(
        "provision.assembled_native",
        Unit::Milliseconds,
        &assembled_native,
    );
    let assembled = Figure::distribution("provision.assembled", Unit::Milliseconds, &assembled);
    let scratch = Figure::distribution("provision.from_scratch", Unit::Milliseconds, &scratch);
    let runc = Figure::distribution("provision.runc", Unit::Milliseconds, &runc);
    let runc_p50 = runc.p50.unwrap_or(f64::NAN);
    // Like for like: runc runs the native program, so only the native rows are judged
    // against it. The WebAssembly rows have no peer measured here.
    let native_ratio = runc_p50 / assembled_native.p50.unwrap_or(f64::NAN);
    let runc_peer = |value| {
        Some(Peer {
            system: "runc run",
            value,
            as_published: None,
            measured: true,
        })
    };
    Ok(BenchOutput {
        bench: "provision",
        rows: vec![
            Row {
                figure: warm,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: assembled,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: 1.0,
                }),
                peer: None,
            },
            Row {
                figure: scratch,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: warm_native,
                better: Better::Lower,
                target: None,
                peer: runc_peer(runc_p50),
            },
            Row {
                figure: assembled_native,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: runc_p50 / 40.0,
                }),
                peer: runc_peer(runc_p50),
            },
            Row {
                figure: runc,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: Figure::single(
                    "provision.fork_extra_memory",
                    Unit::Kibibytes,
                    fork_extra_kib,
                ),
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: 2048.0,
                }),
                peer: Some(Peer {
                    system: "SAND process; OpenWhisk container: 14 MB",
                    value: 1.1 * 1024.0,
                    as_published: Some("1.1 MB"),
                    measured: false,
                }),
            },
        ],
        notes: vec![
            format!(
                "warm, assembled, from_scratch: the `echo` WebAssembly example, from the request until the agent hears from \
                 its process that it runs (instance ready, `run` called; the template holds the compiled code, so nothing \
                 is exec'd). *_native and runc: `{}`, until the agent reads its first output byte. Containers: netns (lo only), IPC, UTS, \
                 mount (overlay of a busybox base + tmpfs layer, pivoted) and PID namespaces; cgroup memory {} MiB, pids {}, \
                 cpu {}/{} us; all capabilities dropped, uid 65534, no_new_privs, seccomp (installed before the request, \
                 while the parts wait in their pools). runc: same root file system, namespaces, limits and user, run with \
                 `runc run`. The bench and everything it starts, runc included, run with the scheduler's shortest time slice \
                 (0.1 ms, Linux 6.12 and later), as a compute agent does. Like for like (the same native program, to its \
                 first output byte), assembled is {native_ratio:.0}x faster than runc (target >= 40x); the WebAssembly rows \
                 have no peer here (runc cannot run them) and are judged against 1 ms.",
                PROGRAM.join(" "),
                limits.memory_bytes >> 20,
                limits.pids,
                limits.cpu_quota_us,
                limits.cpu_period_us
            ),
            format!(
                "fork_extra_memory: the container's memory cgroup charge with {} concurrent `sleep` invocations, less before, per \
                 invocation. SAND and OpenWhisk figures are published, not measured here.",
                args.concurrent
            ),
        ],
    })
}

/// Runs `runc run` of the base root file system `n` times; request to first output byte, ms.
fn runc_runs(state_dir: &Path, limits: ContainerLimits, n: usize) -> anyhow::Result<Vec<f64>> {
    let bundle = state_dir.join("runc-bundle");
    std::fs::create_dir_all(&bundle)?;
    let base = state_dir.join("base");
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 65534, "gid": 65534},
            "args": PROGRAM,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "noNewPrivileges": true
        },
        "root": {"path": base, "readonly": true},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {
                "memory": {"limit": limits.memory_bytes},
                "pids": {"limit": limits.pids},
                "cpu": {"quota": limits.cpu_quota_us, "period": limits.cpu_period_us}
            },
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("sandstorm-bench-{}-{i}", std::process::id());
        let started = Instant::now();
        let mut child = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running runc (installed by scripts/setup.sh)")?;
        let mut stdout = child.stdout.take().context("runc stdout")?;
        let mut byte = [0u8; 1];
        let got = stdout.read(&mut byte)?;
        let first = started.elapsed();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest)?;
        let output = child.wait_with_output()?;
        if got == 0 || !output.status.success() {
            bail!(
                "runc run failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        times.push(ms(first));
    }
    Ok(times)
}
