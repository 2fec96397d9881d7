//! Native functions through the scheduler, tried as a hostile tenant would: a tenant deploys a
//! program of the compute nodes' base root file system (`sandstorm deploy NAME --command ...`);
//! it goes to compute nodes only, runs in a container as nobody with no capabilities and no
//! network, cannot reach the agents' ports or read another tenant's anything, and bad commands
//! are refused with INVALID_ARGUMENT naming what was wrong. Needs root (the compute role):
//! without it the test says so and is skipped.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use common::{Tenant, authed};
use sandstorm_proto::v1 as pb;
use sandstorm_tests::{Service, sandstorm_bin};

fn native(name: &str, command: &[&str]) -> pb::DeployFunctionRequest {
    pb::DeployFunctionRequest {
        name: name.into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

async fn deploy(
    tenant: &mut Tenant,
    request: pb::DeployFunctionRequest,
) -> Result<pb::DeployFunctionResponse, tonic::Status> {
    let token = tenant.token.clone();
    tenant
        .client
        .deploy_function(authed(request, &token))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_a_native_command_on_compute_nodes_only_and_reaches_nothing_else() {
    if let Err(e) = sandstorm_node_agent::compute::preflight() {
        println!("SKIPPED: the compute role cannot run here: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scheduler = Service::scheduler(dir.path(), &[]);
    let storage = scheduler.start_storage("storage-0", &[]);
    let admin = common::admin_token(dir.path());
    let mut tenant = Tenant::create(&scheduler, &admin, "native").await;
    let mut other = Tenant::create(&scheduler, &admin, "other").await;
    other.deploy("kv-sum").await;
    other.put("secret", "41").await;

    // With only a storage node there is nowhere to run it, and nothing is stored.
    let refused = deploy(&mut tenant, native("upper", &["/bin/tr", "a-z", "A-Z"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("compute node"),
        "{}",
        refused.message()
    );

    let compute = scheduler.start_compute("compute-0", state.path(), &[]);

    // The CLI's path: `sandstorm deploy NAME --command PROG ARGS...`, the command last.
    let cli = std::process::Command::new(sandstorm_bin())
        .args(["deploy", "upper", "--scheduler"])
        .arg(scheduler.addr.to_string())
        .args([
            "--token",
            &tenant.token,
            "--command",
            "/bin/tr",
            "a-z",
            "A-Z",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        printed.contains("deployed upper on 1 node(s): compute-0"),
        "only the compute node has it: {printed}"
    );
    let listed = tenant
        .client
        .list_functions(authed(pb::ListFunctionsRequest {}, &tenant.token))
        .await
        .unwrap()
        .into_inner();
    let upper = listed.functions.iter().find(|f| f.name == "upper").unwrap();
    assert_eq!(upper.command, ["/bin/tr", "a-z", "A-Z"]);
    assert_eq!(upper.module_bytes, 0);

    // Left to the scheduler, and forced to the compute tier: the compute node runs it.
    for tier in [pb::Tier::Unspecified, pb::Tier::Compute] {
        let (out, record) = tenant.invoke("upper", "hello sandstorm", tier).await;
        assert_eq!(out, "HELLO SANDSTORM");
        assert_eq!(record.node, "compute-0", "{record:#?}");
        assert_eq!(record.tier, pb::Tier::Compute as i32);
    }
    // The storage tier cannot run a native program: refused before anything runs.
    let refused = tenant
        .try_invoke("upper", "x", pb::Tier::Storage, false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("compute nodes only"),
        "{}",
        refused.message()
    );

    // Bad commands, each refused with what was wrong; none is stored.
    let module = sandstorm_guest_examples::module("echo").unwrap().to_vec();
    let bad: [(pb::DeployFunctionRequest, &str); 6] = [
        (native("relative", &["sh", "-c", "id"]), "absolute path"),
        (native("missing", &["/bin/no-such-program"]), "no program"),
        (native("escape", &["/bin/../../../../bin/sh"]), "no program"),
        (native("nul", &["/bin/sh", "-c", "id\0x"]), "NUL"),
        (
            pb::DeployFunctionRequest {
                module: module.clone(),
                ..native("both", &["/bin/sh"])
            },
            "not both",
        ),
        (native("huge", &vec!["/bin/true"; 10_000]), "at most 256"),
    ];
    for (request, why) in bad {
        let name = request.name.clone();
        let refused = deploy(&mut tenant, request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{name}: {refused:?}"
        );
        assert!(
            refused.message().contains(why),
            "{name}: {}",
            refused.message()
        );
    }
    let listed = tenant
        .client
        .list_functions(authed(pb::ListFunctionsRequest {}, &tenant.token))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["upper"], "a refused deploy stores nothing");

    // Inside: nobody, no capabilities, no_new_privs, and no way to the scheduler's or agents'
    // ports: the container's network namespace is its own.
    let probe = [
        "/bin/sh",
        "-c",
        "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; \
         for a in \"$@\"; do if nc -w 1 ${a%:*} ${a##*:} </dev/null >/dev/null 2>&1; \
         then echo reached $a; else echo refused $a; fi; done; \
         nc -l -p 40000 </dev/null >/dev/null 2>&1 & sleep 0.2; \
         if nc -w 1 127.0.0.1 40000 </dev/null >/dev/null 2>&1; then echo control reached; \
         else echo control refused; fi",
        "probe",
    ];
    let targets: Vec<String> = [&scheduler, &storage, &compute]
        .iter()
        .map(|s| s.addr.to_string())
        .chain([scheduler.cluster_addr().to_string()])
        .collect();
    let mut command: Vec<&str> = probe.to_vec();
    command.extend(targets.iter().map(String::as_str));
    deploy(&mut tenant, native("probe", &command))
        .await
        .unwrap();
    let (out, _) = tenant.invoke("probe", "", pb::Tier::Unspecified).await;
    println!("inside the container:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534", "runs as nobody: {out}");
    for line in [
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(lines.contains(&line), "{line} missing: {out}");
    }
    // The probe itself works: a listener inside the container's own namespace is reached.
    assert!(lines.contains(&"control reached"), "{out}");
    for target in &targets {
        assert!(
            lines.contains(&format!("refused {target}").as_str()),
            "a container reached {target}: {out}"
        );
    }

    // The other tenant cannot run it, and its own data and functions are untouched.
    let refused = other
        .try_invoke("upper", "x", pb::Tier::Unspecified, false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let (sum, _) = other.invoke("kv-sum", "secret", pb::Tier::Storage).await;
    assert_eq!(sum, "41");
    drop((scheduler, storage, compute));
}
