//! The operator dashboard in a real headless browser (Debian's `chromium`, driven through
//! `chromedriver` by fantoccini):
//!
//! 1. against a real `sandstorm dev` cluster: the page loads with no console errors; the
//!    decisions of invocations this test makes appear (the time it took is printed and must be
//!    under the issue's 2 s); clicking one shows every candidate's cost breakdown; the cluster
//!    view shows every node the scheduler knows; the functions view lists the examples; a
//!    simulator report opened from disk is drawn. Screenshots go to `target/dashboard*.png`.
//! 2. against `sandstorm bench dashboard` publishing 5,000 real placement decisions per second:
//!    the page keeps up by showing the true rate with a bounded sample, and its update times
//!    are printed (no timing threshold: machines are noisy).
//!
//! Skipped, with the reason printed, when `chromium` or `chromedriver` is missing
//! (`scripts/setup.sh` installs both).

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use sandstorm_tests::{Service, fixtures_dir, sandstorm_bin, workspace_root};
use serde_json::{Value, json};

/// The two tests run one at a time: each drives a browser against a cluster or a flood of
/// decisions, and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `chromium` and `chromedriver` on this machine, if both are there.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    let chromium = find("chromium").ok_or("no `chromium` on PATH")?;
    let driver = find("chromedriver").ok_or("no `chromedriver` on PATH")?;
    Ok((chromium, driver))
}

/// A child process stopped with SIGTERM (so `sandstorm dev` stops its own children) and
/// waited for when dropped, even when the test fails.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free port and waits for its "started successfully" line.
fn start_driver(driver: &Path) -> (Stopped, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let guard = Stopped(child);
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("started successfully") => break,
            Some(Ok(_)) => {}
            _ => panic!("chromedriver exited before it was ready"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (guard, format!("http://127.0.0.1:{port}"))
}

async fn open_browser(chromium: &Path, driver_url: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1440,900", "--hide-scrollbars"],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .unwrap()
}

/// chromedriver's browser log (console messages, failed loads) since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

/// Console messages at level SEVERE (errors), as "level: message".
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.unwrap();
    let entries = log.as_array().cloned().unwrap_or_default();
    for e in &entries {
        println!("browser console: {} {}", e["level"], e["message"]);
    }
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| format!("{}: {}", e["level"], e["message"]))
        .collect()
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Polls `script` (which returns a boolean) every 25 ms until true or `limit` passes; returns
/// the time it took.
async fn wait_for(c: &Client, script: &str, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if js(c, script).await == Value::Bool(true) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `target/` (where the binary is built), for the screenshots.
fn target_dir() -> PathBuf {
    sandstorm_bin()
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| workspace_root().join("target"), Path::to_path_buf)
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = target_dir().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// What `sandstorm dev` printed: (gRPC address, dashboard URL, demo token).
struct Dev {
    _process: Stopped,
    grpc: String,
    dashboard: String,
    token: String,
    dir: tempfile::TempDir,
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(sandstorm_bin())
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
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let process = Stopped(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        seen.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let find = |prefix: &str| {
        seen.iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| {
                panic!(
                    "no `{prefix}` line in:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    stderr.lock().unwrap_or_else(|e| e.into_inner())
                )
            })
    };
    let grpc = find("grpc: ");
    let dashboard = find("dashboard: ");
    let paste = find("SANDSTORM_SCHEDULER=");
    let token = paste
        .split_whitespace()
        .find_map(|w| w.strip_prefix("SANDSTORM_TOKEN="))
        .unwrap()
        .to_owned();
    Dev {
        _process: process,
        grpc,
        dashboard,
        token,
        dir,
    }
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_live_cluster_in_a_real_browser() {
    let (chromium, driver) = match browser() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIPPED the browser test: {why} (scripts/setup.sh installs both)");
            return;
        }
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = start_dev();
    assert!(dev.dashboard.starts_with("http://"), "{}", dev.dashboard);
    let (_driver, driver_url) = start_driver(&driver);
    let c = open_browser(&chromium, &driver_url).await;

    // Without the login (or the admin token) nothing is served; the login URL works once.
    let base = dev.dashboard.split("/login").next().unwrap().to_owned();
    for path in [
        "/",
        "/api/cluster",
        "/api/functions",
        "/api/stream",
        "/app.js",
    ] {
        assert_eq!(
            common::http_status(&base, path, None),
            401,
            "{path} without a login"
        );
    }
    let admin =
        std::fs::read_to_string(dev.dir.path().join("scheduler").join("admin-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", admin.trim());
    assert_eq!(
        common::http_status(&base, "/api/cluster", Some(&bearer)),
        200
    );
    let wrong = format!("Authorization: Bearer {}", dev.token);
    assert_eq!(
        common::http_status(&base, "/api/cluster", Some(&wrong)),
        401,
        "a tenant's token"
    );
    c.goto(&dev.dashboard).await.unwrap();
    let login = dev.dashboard.strip_prefix(&base).unwrap();
    assert_eq!(
        common::http_status(&base, login, None),
        401,
        "the login code is used up"
    );
    wait_for(
        &c,
        "return document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
        "the event stream connects",
    )
    .await;

    // Every node the scheduler knows has a card.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", dev.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SchedulerClient::new(channel);
    let status = client
        .cluster_status(authed(pb::ClusterStatusRequest {}, &dev.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.nodes.is_empty());
    for n in &status.nodes {
        wait_for(
            &c,
            &format!(
                "return !!document.querySelector('.node-card[data-node=\"{}\"] .heat')",
                n.name
            ),
            Duration::from_secs(5),
            &format!("the cluster view shows {}", n.name),
        )
        .await;
    }
    let cards = js(&c, "return document.querySelectorAll('.node-card').length").await;
    assert_eq!(cards, json!(status.nodes.len()));

    // Invocations made here appear as decisions.
    let mut slowest = Duration::ZERO;
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = client
            .invoke(authed(
                pb::InvokeRequest {
                    function: "echo".into(),
                    input: format!("dashboard test {i}").into_bytes(),
                    retryable: true,
                    ..Default::default()
                },
                &dev.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let id = response.record.unwrap().invocation_id;
        let took = wait_for(
            &c,
            &format!("return !!document.querySelector('tr[data-id=\"{id}\"]')"),
            Duration::from_secs(10),
            &format!("decision {id} appears"),
        )
        .await;
        println!("decision {id} appeared in the page {took:?} after its invocation returned");
        slowest = slowest.max(took);
        ids.push(id);
    }
    assert!(
        slowest <= Duration::from_secs(2),
        "the slowest decision took {slowest:?} to appear (the issue asks for 2 s)"
    );

    // Clicking one shows every candidate's cost breakdown.
    let id = ids[0];
    c.find(Locator::Css(&format!("tr[data-id=\"{id}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &c,
        "return document.querySelectorAll('#detail .cand-row').length > 0",
        Duration::from_secs(5),
        "the cost breakdown opens",
    )
    .await;
    let detail = c
        .find(Locator::Css("#detail"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    println!("detail of {id}:\n{detail}");
    assert!(detail.contains(&format!("Decision {id}")), "{detail}");
    assert!(detail.contains("chosen"), "{detail}");
    for term in ["queue µs", "network RTT µs", "Why each candidate"] {
        assert!(detail.contains(term), "no {term} column: {detail}");
    }
    js(
        &c,
        "document.getElementById('detail').scrollIntoView(); return true",
    )
    .await;
    screenshot(&c, "dashboard-detail.png").await;
    js(&c, "window.scrollTo(0, 0); return true").await;
    let candidates = js(
        &c,
        "return document.querySelectorAll('#detail .cand-row').length",
    )
    .await;
    println!(
        "{candidates} candidates shown; {} nodes",
        status.nodes.len()
    );
    assert!(candidates.as_u64().unwrap() >= 1);
    if candidates.as_u64().unwrap() > 1 {
        // A candidate that was not chosen says why, in the placement core's words.
        assert!(
            detail.contains("lower wins")
                || detail.contains("rejected:")
                || detail.contains("tie-break"),
            "{detail}"
        );
    }

    // The functions view lists the examples, profiled.
    wait_for(
        &c,
        "return !!document.querySelector('.function-row[data-function=\"echo\"]') && \
         !document.querySelector('.function-row[data-function=\"echo\"]').textContent.includes('not invoked yet')",
        Duration::from_secs(5),
        "the functions view profiles echo",
    )
    .await;
    // The re-provisioner (every 5 s in `sandstorm dev`) plans for the functions the demo load
    // keeps busy, and the page shows the plan.
    let planned = wait_for(
        &c,
        "return [...document.querySelectorAll('.function-row')].some(r => r.textContent.includes('dedicated storage cores'))",
        Duration::from_secs(20),
        "the functions view shows the re-provisioner's plan",
    )
    .await;
    println!("a re-provisioning plan shown after {planned:?}");
    screenshot(&c, "dashboard.png").await;

    // A simulator report opened from disk is drawn.
    js(
        &c,
        "document.getElementById('sim-file').style.display = 'block'; return true",
    )
    .await;
    let report = fixtures_dir().join("tiny.golden.json");
    c.find(Locator::Id("sim-file"))
        .await
        .unwrap()
        .send_keys(&report.display().to_string())
        .await
        .unwrap();
    wait_for(
        &c,
        "return !!document.getElementById('chart-latency_p50') && !!document.getElementById('side-by-side')",
        Duration::from_secs(5),
        "the report's charts are drawn",
    )
    .await;
    js(
        &c,
        "document.getElementById('functions').scrollIntoView(); return true",
    )
    .await;
    screenshot(&c, "dashboard-functions.png").await;

    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_up_with_5000_decisions_per_second() {
    let (chromium, driver) = match browser() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIPPED the browser load test: {why} (scripts/setup.sh installs both)");
            return;
        }
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let bench = Service::start([
        "bench",
        "dashboard",
        "--rate",
        "5000",
        "--seconds",
        "40",
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = format!("http://{}/", bench.addr);
    let (_driver, driver_url) = start_driver(&driver);
    let c = open_browser(&chromium, &driver_url).await;
    c.goto(&url).await.unwrap();
    wait_for(
        &c,
        "return window.sandstormDashboard.stats.batches > 0",
        Duration::from_secs(10),
        "the first batch arrives",
    )
    .await;
    // Start counting from here, for 6 s of load.
    js(
        &c,
        "const s = window.sandstormDashboard.stats; \
         window.__from = {batches: s.batches, decisions: s.decisions, sampled: s.sampled, at: performance.now()}; \
         s.renderMsMax = 0; s.frameGapMaxMs = 0; s.renders = 0; s.renderMsTotal = 0; return true",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let figures = js(
        &c,
        "const s = window.sandstormDashboard.stats, f = window.__from; \
         const secs = (performance.now() - f.at) / 1000; \
         return {secs, batches: s.batches - f.batches, decisions: s.decisions - f.decisions, \
                 sampled: s.sampled - f.sampled, shown_rate: s.lastRatePerS, renders: s.renders, \
                 render_mean_ms: s.renderMsTotal / Math.max(1, s.renders), render_max_ms: s.renderMsMax, \
                 frame_gap_max_ms: s.frameGapMaxMs, dropped_batches: s.droppedBatches, \
                 rows: document.querySelectorAll('#decision-rows tr').length, \
                 rate_text: document.getElementById('rate-line').textContent}",
    )
    .await;
    let f = |k: &str| figures[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "browser under `bench dashboard --rate 5000`: {:.0} decisions/s counted by the page over {:.1} s \
         (last shown true rate {:.0}/s), {} batches, {} sampled rows received, {} rows in the table; \
         page update mean {:.2} ms, max {:.2} ms over {} updates; longest gap between frames {:.1} ms; \
         {} batches dropped by the server",
        f("decisions") / f("secs"),
        f("secs"),
        f("shown_rate"),
        figures["batches"],
        figures["sampled"],
        figures["rows"],
        f("render_mean_ms"),
        f("render_max_ms"),
        figures["renders"],
        f("frame_gap_max_ms"),
        figures["dropped_batches"],
    );
    println!("rate line: {}", figures["rate_text"]);
    screenshot(&c, "dashboard-load.png").await;
    // Functional: the page counts every decision but receives only a sample, and its table
    // stays bounded.
    assert!(f("batches") >= 5.0, "{figures}");
    assert!(f("decisions") > 0.0, "{figures}");
    assert!(
        f("sampled") < f("decisions"),
        "at 5,000/s the page must get a sample, not every decision: {figures}"
    );
    assert!(f("rows") <= 200.0, "{figures}");
    assert!(
        figures["rate_text"]
            .as_str()
            .unwrap()
            .contains("decisions/s (true rate")
    );
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.close().await.unwrap();
}
