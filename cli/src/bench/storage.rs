//! `sandstorm bench storage`: what running next to the data saves, measured on a real storage
//! node (in memory, one worker core) with the real example modules.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sandstorm_identity::{ClusterCa, Peer as IdPeer, Role};
use sandstorm_naming::TenantId;
use sandstorm_node_agent::sandbox::FunctionLimits;
use sandstorm_node_agent::storage::{StorageConfig, StorageNode, service};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;

use super::{BenchOutput, Better, CommonArgs, Figure, Peer, Row, Target, Unit};

/// Options of `sandstorm bench storage`.
#[derive(Debug, Args)]
pub struct StorageBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Invocations (and remote walks) measured per figure.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Concurrent instances held to measure the memory each one adds.
    #[arg(long, default_value_t = 200)]
    instances: usize,
}

const TENANT: TenantId = TenantId(1);
const GRAPH_NODES: u32 = 1000;
const DEGREE: u32 = 8;
const HOPS: u32 = 8;
/// Host calls per timed run of the get loop.
const GET_LOOP: u32 = 100_000;

/// A guest that calls `kv_get` on key `k0` as many times as its 4-byte input says.
const GET_LOOP_WAT: &str = r#"
(module
  (import "sandstorm" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "sandstorm" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k0")
  (func (export "run") (result i32) (local $n i32)
    (drop (call $input_read (i32.const 16) (i32.const 4)))
    (local.set $n (i32.load (i32.const 16)))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $kv_get (i32.const 0) (i32.const 2) (i32.const 64) (i32.const 64)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.const 0)))
"#;

fn neighbours(node: u32) -> String {
    (0..DEGREE)
        .map(|j| ((node * 7 + j * 13 + 1) % GRAPH_NODES).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(args: &StorageBenchArgs) -> anyhow::Result<BenchOutput> {
    if args.iterations == 0 || args.instances == 0 {
        bail!("--iterations and --instances must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: &StorageBenchArgs) -> anyhow::Result<BenchOutput> {
    let config = StorageConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        worker_cores: 1,
        ..StorageConfig::default()
    };
    let node = StorageNode::start(config)?;
    let limits = FunctionLimits::default();
    for name in ["kv-sum", "graph-walk"] {
        let module = sandstorm_guest_examples::module(name).context("example module missing")?;
        node.deploy(TENANT, name, module, limits)?;
    }
    let get_loop = wat::parse_str(GET_LOOP_WAT).context("bench module")?;
    node.deploy(
        TENANT,
        "get-loop",
        &get_loop,
        FunctionLimits {
            deadline: Duration::from_secs(60),
            // Its point is many gets in one invocation: past the default quota of 10,000.
            max_data_calls: u64::from(GET_LOOP),
            ..limits
        },
    )?;
    node.store().put(TENANT, b"k0", b"12345678")?;
    for n in 0..GRAPH_NODES {
        node.store().put(
            TENANT,
            format!("node:{n}").as_bytes(),
            neighbours(n).as_bytes(),
        )?;
    }

    // Warm invocation of kv-sum with one key, as the worker measures it.
    let mut warm = Vec::with_capacity(args.iterations);
    let mut queued = Vec::with_capacity(args.iterations);
    let mut phases: [Vec<f64>; 3] = Default::default();
    for _ in 0..args.iterations {
        let sent = Instant::now();
        let run = node.execute(TENANT, "kv-sum", b"k0".to_vec()).await?;
        queued.push(sent.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(
            run.outcome.output == b"12345678",
            "kv-sum returned {:?}",
            run.outcome.output
        );
        warm.push(
            (run.outcome.start + run.outcome.exec + run.outcome.teardown).as_secs_f64() * 1e6,
        );
        phases[0].push(run.outcome.start.as_secs_f64() * 1e6);
        phases[1].push(run.outcome.exec.as_secs_f64() * 1e6);
        phases[2].push(run.outcome.teardown.as_secs_f64() * 1e6);
    }
    // One host get: a guest loop of GET_LOOP calls, less the same module making none.
    let mut per_get = Vec::new();
    for _ in 0..20 {
        let full = node
            .execute(TENANT, "get-loop", GET_LOOP.to_le_bytes().to_vec())
            .await?
            .outcome
            .exec;
        let empty = node
            .execute(TENANT, "get-loop", 0u32.to_le_bytes().to_vec())
            .await?
            .outcome
            .exec;
        per_get.push(full.saturating_sub(empty).as_secs_f64() * 1e9 / f64::from(GET_LOOP));
    }

    // graph-walk, 8 hops: inside the node, then by a client doing remote gets over gRPC.
    let walk_input = format!("0 {HOPS}").into_bytes();
    let expected = node
        .execute(TENANT, "graph-walk", walk_input.clone())
        .await?
        .outcome
        .output;
    let mut in_storage = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let o = node
            .execute(TENANT, "graph-walk", walk_input.clone())
            .await?
            .outcome;
        in_storage.push((o.start + o.exec + o.teardown).as_secs_f64() * 1e6);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node_for_server = node.clone();
    // As a compute node's data calls reach a storage node: over mutual TLS.
    let ca = ClusterCa::ephemeral()?;
    let storage_peer = IdPeer::new(Role::Storage, "bench-storage")?;
    let storage_credentials = ca.issue_with_key(&storage_peer, &[])?;
    let compute_credentials =
        ca.issue_with_key(&IdPeer::new(Role::Compute, "bench-compute")?, &[])?;
    let server = tokio::spawn(async move {
        service::serve(node_for_server, listener, &storage_credentials, async {
            let _ = stopped.await;
        })
        .await
    });
    let channel = compute_credentials
        .endpoint(&storage_peer, &addr.to_string())?
        .connect()
        .await?;
    let mut client = KeyValueClient::new(channel);
    // The walk invoked by a client, as the scheduler invokes it: one Execute over mutual TLS.
    let mut invoker = NodeAgentClient::new(
        ca.issue_with_key(&IdPeer::scheduler(), &[])?
            .endpoint(&storage_peer, &addr.to_string())?
            .connect()
            .await?,
    );
    let remote_iterations = (args.iterations / 10).max(100);
    let mut invoked = Vec::with_capacity(remote_iterations);
    for i in 0..=remote_iterations {
        let started = Instant::now();
        let output = invoker
            .execute(pb::ExecuteRequest {
                function: Some(pb::FunctionRef {
                    tenant: TENANT.0,
                    name: "graph-walk".into(),
                }),
                input: walk_input.clone(),
                invocation_id: i as u64,
            })
            .await?
            .into_inner()
            .output;
        if i == 0 {
            anyhow::ensure!(output == expected, "the invoked walk took another path");
            continue; // Connection warm-up.
        }
        invoked.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mut remote = Vec::with_capacity(remote_iterations);
    for i in 0..=remote_iterations {
        let started = Instant::now();
        let path = remote_walk(&mut client, HOPS).await?;
        if i == 0 {
            anyhow::ensure!(
                path.as_bytes() == expected,
                "the remote walk took another path: {path}"
            );
            continue; // Connection warm-up.
        }
        remote.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let _ = stop.send(());
    let _ = server.await;

    let (extra_kib, linear_kib) = instance_extra_memory(&node, args.instances)?;

    let warm = Figure::distribution("storage.invoke_warm", Unit::Microseconds, &warm);
    let queued = Figure::distribution("storage.invoke_through_queue", Unit::Microseconds, &queued);
    let host_get = Figure::distribution("storage.host_get", Unit::Nanoseconds, &per_get);
    let in_storage = Figure::distribution(
        "storage.graph_walk_in_storage",
        Unit::Microseconds,
        &in_storage,
    );
    let invoked = Figure::distribution("storage.graph_walk_invoked", Unit::Microseconds, &invoked);
    let remote = Figure::distribution("storage.graph_walk_remote", Unit::Microseconds, &remote);
    let remote_p50 = remote.p50.unwrap_or(f64::NAN);
    let ratio = remote_p50 / invoked.p50.unwrap_or(f64::NAN);
    let [start, exec, reset] = phases.map(|p| {
        Figure::distribution("", Unit::Microseconds, &p)
            .p50
            .unwrap_or(f64::NAN)
    });
    let mut notes = vec![
        format!(
            "invoke_warm and graph_walk_in_storage: instantiate + run + return the slot, timed by the worker inside \
             the node (in memory, 1 worker core); invoke_warm medians: {start:.2} + {exec:.2} + {reset:.2} us. \
             invoke_through_queue adds the hand-off to the worker thread and back."
        ),
        format!(
            "host_get: {GET_LOOP} kv_get calls of an 8-byte value in a guest loop, less the same module making none; 20 runs."
        ),
        format!(
            "graph_walk_invoked: the {HOPS}-hop walk run in the node and invoked by a Rust client on this machine, one \
             gRPC Execute over loopback with mutual TLS, timed at the client (as the scheduler invokes it). \
             graph_walk_remote: the same walk by the same kind of client doing one gRPC Get per hop (peer measured in \
             this run). Both include the client's RPCs: like for like."
        ),
    ];
    let _ = write!(
        notes[2],
        " Invoked in storage it is {ratio:.0}x faster (target >= 10x); graph_walk_in_storage, timed inside the \
         node with no RPC, is an extra and is compared with nothing."
    );
    notes.push(format!(
        "instance_extra_memory: resident memory of {} instances of kv-sum held at once after each ran (1 key), less their linear memories \
         ({linear_kib:.0} KiB resident each), per instance. SAND (ATC'18) and OpenWhisk figures are published, not \
         measured here.",
        args.instances
    ));
    Ok(BenchOutput {
        bench: "storage",
        rows: vec![
            Row {
                figure: warm,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: 5.0,
                }),
                peer: None,
            },
            Row {
                figure: queued,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: host_get,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: 200.0,
                }),
                peer: None,
            },
            Row {
                figure: in_storage,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: invoked,
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: remote_p50 / 10.0,
                }),
                peer: Some(Peer {
                    system: "remote gets over gRPC",
                    value: remote_p50,
                    as_published: None,
                    measured: true,
                }),
            },
            Row {
                figure: remote,
                better: Better::Lower,
                target: None,
                peer: None,
            },
            Row {
                figure: Figure::single("storage.instance_extra_memory", Unit::Kibibytes, extra_kib),
                better: Better::Lower,
                target: Some(Target {
                    better: Better::Lower,
                    value: 256.0,
                }),
                peer: Some(Peer {
                    system: "SAND process; OpenWhisk container: 14 MB",
                    value: 1.1 * 1024.0,
                    as_published: Some("1.1 MB"),
                    measured: false,
                }),
            },
        ],
        notes,
    })
}

/// The graph walk of `graph-walk`, by a client: one remote Get per hop.
async fn remote_walk(
    client: &mut KeyValueClient<tonic::transport::Channel>,
    hops: u32,
) -> anyhow::Result<String> {
    let mut current = String::from("0");
    let mut path = current.clone();
    for hop in 0..hops {
        let key = format!("node:{current}").into_bytes();
        let reply = client
            .get(pb::GetRequest {
                tenant: TENANT.0,
                key,
            })
            .await?
            .into_inner();
        anyhow::ensure!(reply.found, "node:{current} is missing");
        let list = String::from_utf8(reply.value)?;
        let next: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
        current = next[hop as usize % next.len()].to_owned();
        path.push(' ');
        path.push_str(&current);
    }
    Ok(path)
}

/// Resident memory (KiB) each of `n` concurrently held instances adds, beyond linear memory.
///
/// The pooling allocator reserves every linear memory inside one address range; the resident
/// pages in that range are the instances' linear memories. Everything else that grew (instance
/// state, tables, the host-side store) is what an extra instance costs beyond them.
fn instance_extra_memory(node: &Arc<StorageNode>, n: usize) -> anyhow::Result<(f64, f64)> {
    let compiled = node
        .deploy(
            TENANT,
            "kv-sum-held",
            sandstorm_guest_examples::module("kv-sum").context("kv-sum")?,
            FunctionLimits::default(),
        )?
        .0;
    // One instance first, so one-time costs (code, first pool pages) are not counted.
    let warmup = node
        .sandbox()
        .hold_instance(&compiled, b"k0".to_vec(), node.store().clone())?;
    drop(warmup);
    let before = smaps()?;
    let mut held = Vec::with_capacity(n);
    let mut bases = Vec::with_capacity(n);
    for _ in 0..n {
        let (store, memory) =
            node.sandbox()
                .hold_instance(&compiled, b"k0".to_vec(), node.store().clone())?;
        if let Some(m) = memory {
            bases.push(m.data_ptr(&store) as usize);
        }
        held.push(store);
    }
    let after = smaps()?;
    let (lo, hi) = match (bases.iter().min(), bases.iter().max()) {
        (Some(&lo), Some(&hi)) => (lo, hi + node.sandbox().config().max_memory_bytes),
        _ => bail!("instances export no memory"),
    };
    let linear = |maps: &[Mapping]| -> u64 {
        maps.iter()
            .filter(|m| m.start < hi && m.end > lo)
            .map(|m| m.rss_kib)
            .sum()
    };
    let total = |maps: &[Mapping]| -> u64 { maps.iter().map(|m| m.rss_kib).sum() };
    let grown = total(&after) as f64 - total(&before) as f64;
    let linear_grown = linear(&after) as f64 - linear(&before) as f64;
    drop(held);
    Ok(((grown - linear_grown) / n as f64, linear_grown / n as f64))
}

#[derive(Debug)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// This process's mappings and their resident sizes, from /proc/self/smaps.
fn smaps() -> anyhow::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string("/proc/self/smaps").context("reading /proc/self/smaps")?;
    let mut maps = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let range = first.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        });
        if let Some((start, end)) = range {
            maps.push(Mapping {
                start,
                end,
                rss_kib: 0,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kib = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if let Some(m) = maps.last_mut() {
                m.rss_kib = kib;
            }
        }
    }
    Ok(maps)
}
