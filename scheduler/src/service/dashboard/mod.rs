//! The operator dashboard: an HTTP server in the scheduler's process, on a port of its own,
//! showing what the scheduler decides and why, live. Every asset is compiled into the binary
//! (`scheduler/dashboard/`: one HTML page, one stylesheet, one script with hand-written SVG and
//! canvas charts); nothing is fetched from anywhere else.
//!
//! Every endpoint is the operator's only ([`access`]: the admin token or a login session; 401
//! otherwise). Endpoints (`GET`; errors are JSON `{"error": "..."}` with a 4xx status, see
//! [`DashboardError`]):
//! - `/login` (`GET` and `POST`): see [`access`];
//! - `/`, `/app.js`, `/style.css`: the page;
//! - `/api/stream?tenant=&function=&tier=&start=`: server-sent events. `cluster` (the
//!   [`views::ClusterView`], at most every [`CLUSTER_INTERVAL`]) and `decisions` (one per
//!   [`hub::BATCH_INTERVAL`]: the true count and rate of matching decisions, a sample of them,
//!   and how many batches this connection has lost by reading too slowly);
//! - `/api/decisions/{id}`: a sampled decision with every candidate's cost breakdown;
//! - `/api/cluster`, `/api/functions`: the same views on demand;
//! - `/api/sim-report`: the `sandstorm sim` JSON report the scheduler was given (a file, or the
//!   newest `.json` in a directory), for the page to draw beside the live figures.
//!
//! Memory: decisions reach browsers only as batches on the hub's bounded broadcast channel, and
//! the cluster view through a `watch` (latest value only); a browser that stops reading holds
//! at most the channel's backlog, shared with everyone else. See [`hub`].

pub mod access;
pub use super::hub;
mod stream;
pub mod views;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sandstorm_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use hub::{FunctionPlan, Hub};

use super::state::{FunctionEntry, Scheduler};

/// How often the cluster view is recomputed for the stream.
pub const CLUSTER_INTERVAL: Duration = Duration::from_millis(250);
/// Largest simulator report served, bytes.
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

const INDEX_HTML: &str = include_str!("../../../dashboard/index.html");
const APP_JS: &str = include_str!("../../../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../../../dashboard/style.css");

/// What a dashboard request can fail with; the doc of each variant is its meaning, its
/// `Display` the message the client gets, [`DashboardError::status`] its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A query parameter the endpoint does not know, or a value it cannot take.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// A path segment that is not what the endpoint expects.
    #[error("bad path: {0}")]
    BadPath(String),
    /// The decision is not held (never sampled, or pushed out of the ring).
    #[error(
        "decision {0} is not held: the dashboard keeps the last {n} sampled decisions",
        n = hub::DETAIL_RING
    )]
    UnknownDecision(u64),
    /// No report was configured.
    #[error(
        "no simulator report: start the scheduler with --sim-report FILE|DIR, or open one in the page"
    )]
    NoReport,
    /// The configured report cannot be read.
    #[error("simulator report {path}: {reason}")]
    Report { path: PathBuf, reason: String },
    /// No such page.
    #[error("no page {0}")]
    NoPage(String),
}

impl DashboardError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadQuery(_) | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::UnknownDecision(_) | Self::NoReport | Self::NoPage(_) => StatusCode::NOT_FOUND,
            Self::Report { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// What the dashboard serves from.
#[derive(Debug, Clone)]
pub struct Dashboard {
    hub: Arc<Hub>,
    /// `None` for `sandstorm bench dashboard`: decisions only, no cluster.
    scheduler: Option<Arc<Scheduler>>,
    sim_report: Option<PathBuf>,
    cluster: watch::Receiver<Arc<str>>,
    cluster_tx: Arc<watch::Sender<Arc<str>>>,
    /// The gate every request passes ([`access`]); `None` only for `sandstorm bench dashboard`
    /// and tests, which serve no cluster.
    access: Option<Arc<access::Access>>,
}

impl Dashboard {
    /// A dashboard over `hub` (and the scheduler that publishes to it, if any).
    pub fn new(
        hub: Arc<Hub>,
        scheduler: Option<Arc<Scheduler>>,
        sim_report: Option<PathBuf>,
    ) -> Self {
        let initial = cluster_json(scheduler.as_deref(), &hub);
        let (tx, rx) = watch::channel(initial);
        Self {
            hub,
            scheduler,
            sim_report,
            cluster: rx,
            cluster_tx: Arc::new(tx),
            access: None,
        }
    }

    /// The same dashboard behind `access`.
    pub fn with_access(mut self, access: Arc<access::Access>) -> Self {
        self.access = Some(access);
        self
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The routes, without a socket (tests call it directly).
    pub fn router(&self) -> Router {
        let router = Router::new()
            .route("/", get(index))
            .route("/index.html", get(index))
            .route("/app.js", get(app_js))
            .route("/style.css", get(style_css))
            .route("/api/stream", get(stream::stream))
            .route("/api/decisions/{id}", get(decision))
            .route("/api/cluster", get(cluster))
            .route("/api/functions", get(functions))
            .route("/api/sim-report", get(sim_report))
            .fallback(not_found)
            .with_state(self.clone());
        match &self.access {
            None => router,
            Some(access) => router
                .merge(
                    Router::new()
                        .route("/login", get(access::login_get).post(access::login_post))
                        .with_state(access.clone()),
                )
                .layer(axum::middleware::from_fn_with_state(
                    access.clone(),
                    access::gate,
                )),
        }
    }

    /// The tickers that feed the stream: a batch of decisions every
    /// [`hub::BATCH_INTERVAL`], the cluster view every [`CLUSTER_INTERVAL`]. Runs forever.
    pub async fn tick(self) {
        let mut batches = tokio::time::interval(hub::BATCH_INTERVAL);
        let mut cluster = tokio::time::interval(CLUSTER_INTERVAL);
        batches.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        cluster.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = batches.tick() => {
                    self.hub.flush();
                }
                _ = cluster.tick() => {
                    let json = cluster_json(self.scheduler.as_deref(), &self.hub);
                    self.cluster_tx.send_replace(json);
                }
            }
        }
    }
}

/// Serves the dashboard on `listener` until `shutdown` completes (open event streams are cut,
/// not drained: they never end by themselves).
pub async fn serve(
    listener: TcpListener,
    dashboard: Dashboard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = dashboard.router();
    let ticker = tokio::spawn(dashboard.tick());
    let result = tokio::select! {
        r = axum::serve(listener, app) => r,
        () = shutdown => Ok(()),
    };
    ticker.abort();
    result
}

fn cluster_json(scheduler: Option<&Scheduler>, hub: &Hub) -> Arc<str> {
    serde_json::to_string(&views::cluster(scheduler, hub))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        .into()
}

impl Scheduler {
    /// The invocation `record` of `f` finished: its decision goes to the dashboard's hub.
    pub fn publish_decision(&self, f: &FunctionEntry, record: &pb::InvocationRecord) {
        let tenant = self
            .lock()
            .catalog
            .tenant(f.tenant)
            .map_or_else(|| f.tenant.to_string(), |t| t.name.clone());
        self.dashboard.publish(&tenant, record, true);
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found(uri: http::Uri) -> DashboardError {
    DashboardError::NoPage(uri.path().chars().take(200).collect())
}

/// Refuses any query parameter not in `known`.
fn only_params(query: &HashMap<String, String>, known: &[&str]) -> Result<(), DashboardError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(DashboardError::BadQuery(format!(
            "unknown parameter {:?}; this endpoint takes {}",
            k.chars().take(40).collect::<String>(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

async fn decision(
    State(d): State<Dashboard>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    only_params(&query, &[])?;
    let id: u64 = id.parse().map_err(|_| {
        DashboardError::BadPath(format!(
            "decision id {:?} is not a number",
            id.chars().take(40).collect::<String>()
        ))
    })?;
    let detail = d
        .hub
        .detail(id)
        .ok_or(DashboardError::UnknownDecision(id))?;
    Ok(axum::Json(&*detail).into_response())
}

async fn cluster(
    State(d): State<Dashboard>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    only_params(&query, &[])?;
    let scheduler = d.scheduler.clone();
    let hub = d.hub.clone();
    Ok(axum::Json(views::cluster(scheduler.as_deref(), &hub)).into_response())
}

async fn functions(
    State(d): State<Dashboard>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    only_params(&query, &[])?;
    Ok(axum::Json(views::functions(d.scheduler.as_deref(), &d.hub)).into_response())
}

/// The report file: `path` itself, or the newest `.json` file in it if it is a directory.
pub fn newest_report(path: &Path) -> Result<PathBuf, DashboardError> {
    let fail = |reason: String| DashboardError::Report {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| fail(e.to_string()))?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, p));
        }
    }
    newest
        .map(|(_, p)| p)
        .ok_or_else(|| fail("the directory holds no .json report".into()))
}

async fn sim_report(
    State(d): State<Dashboard>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    only_params(&query, &[])?;
    let configured = d.sim_report.as_deref().ok_or(DashboardError::NoReport)?;
    let path = newest_report(configured)?;
    let fail = |reason: String| DashboardError::Report {
        path: path.clone(),
        reason,
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_REPORT_BYTES {
        return Err(fail(format!(
            "{size} bytes; at most {MAX_REPORT_BYTES} are served"
        )));
    }
    let read = path.clone();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(read))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::HeaderName::from_static("x-report-name"),
                name.chars().filter(char::is_ascii_graphic).collect(),
            ),
        ],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests;
