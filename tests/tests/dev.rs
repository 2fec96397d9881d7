//! `sandstorm dev`, the README's main command: one command starts a scheduler and its agents,
//! deploys the examples, loads demo data, prints every address on a line of its own and an
//! invoke command that works when pasted; Ctrl-C (SIGTERM) stops the whole cluster.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sandstorm_tests::{sandstorm_bin, workspace_root};

#[test]
fn dev_starts_a_cluster_whose_printed_invoke_command_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(sandstorm_bin())
        .args([
            "dev",
            "--grpc",
            "127.0.0.1:0",
            "--demo-rate",
            "5",
            "--data-dir",
        ])
        .arg(dir.path())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its own errors go to stderr: kept, to explain a failure.
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let sink = stderr.clone();
        let pipe = dev.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
    }
    let stdout = dev.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no `{prefix}` line in:\n{}\nstderr:\n{}",
                    lines.join("\n"),
                    stderr.lock().unwrap()
                )
            })
            .trim()
            .to_owned()
    };
    let grpc = find("grpc: ");
    let metrics = find("metrics: ");
    find("dashboard:");
    assert!(metrics.starts_with("http://"), "{metrics}");

    // The printed command, pasted: `SANDSTORM_SCHEDULER=.. SANDSTORM_TOKEN=.. sandstorm invoke ..`.
    let command = find("  SANDSTORM_SCHEDULER=");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("SANDSTORM_SCHEDULER={command}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().next(), Some("42"), "{stdout}");
    assert!(
        stdout.contains("kv-sum on "),
        "the record is printed: {stdout}"
    );
    assert!(command.contains(&grpc));

    // Stopping `dev` stops every process it started: the scheduler's port closes.
    Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    let status = dev.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(&grpc).is_err(),
        "the scheduler still listens on {grpc}"
    );
}
