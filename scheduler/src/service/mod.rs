//! The scheduler service: the only part of this crate that does I/O.
//!
//! It owns the running system of docs/design.md around the pure placement core:
//! - [`api`]: the gRPC services on one port: `Scheduler` (the client API: functions, data,
//!   invocations, chains, cluster status), `Admin` (tenants and tokens) and `Cluster` (agents
//!   register), plus gRPC health checking and server reflection;
//! - [`auth`]: bearer tokens (`t<ID>.<SECRET>`, `admin.<SECRET>`), stored only as hashes;
//! - [`membership`]: the cluster CA, the scheduler's certificate, join tokens and the
//!   certificate each node name is bound to (TLS bootstrap of agents);
//! - [`store`]: tenants, tokens, functions with their modules and limits, and nodes, in an
//!   embedded redb database under the data directory;
//! - [`state`]: the in-memory state and its four locks: the cluster lock (catalog, node
//!   channels, the placement `ClusterView`, liveness, warm compute containers, calibrated cost
//!   model, profiles, holds) and three leaf locks: [`tenants`] (tokens and quota settings,
//!   read by every call's authentication), the key ring ([`rebalance::RingState`]) and the
//!   re-provisioner's latest plan;
//! - [`cluster`]: registration (answered with the storage nodes' addresses, so compute nodes
//!   route data calls by the same key ring), the per-node stats streams (storage and compute
//!   alike) folded into the view, liveness and calibration;
//! - [`warm`]: which compute nodes hold a warm container of which function, inferred from
//!   execution records and each node's keep-alive window: the placement request's `warm` list;
//! - [`invoke`]: the invocation path (place with `Placer::place_recorded`, execute on the chosen
//!   node, record, profile; retries);
//! - [`holds`]: what running calls hold (reservations per node, tenants' admission places and
//!   calls in flight); [`failure`]: how an attempt failed, from the node's answer, for retries;
//! - [`executor`]: each node's long-lived `ExecuteStream`;
//! - [`chain`]: chains, steps on one node handing off through its local bus, others through the
//!   global path;
//! - [`data`]: tenant data routed by the key ring to the owning storage node;
//! - [`functions`]: tenants and functions (deploy, list, remove);
//! - [`record`]: invocation records from placement decisions and node measurements;
//! - [`reprovision`]: the periodic re-provisioner: solves [`crate::provision`]'s model over recent
//!   profiles and applies the plan through the agents' `Provision` call;
//! - [`results`]: async invocations' results; [`error`]: the one `ApiError -> Status` mapping;
//! - [`telemetry`]: what it reports to Prometheus (`metrics` facade);
//! - [`hub`]: where decisions and node statistics are published for the dashboard;
//! - [`dashboard`]: the operator dashboard (HTTP on its own port): live decisions, cluster,
//!   functions, simulator reports.
//!
//! Imports run one way: the modules that extend `Scheduler` with a path of their own (`invoke`,
//! `chain`, `cluster`, `data`, `functions`, `reprovision`, `dashboard`) import `state`; `state`
//! imports only the types it holds (`executor`, `holds`, `hub`, `warm`, `store`, ...), none of
//! which imports it back.
//!
//! The placement core is used exactly as the simulator uses it: the service builds a
//! `PlacementRequest` and calls `place_recorded` on its `ClusterView`; nothing here changes how a
//! node is chosen (a request restricted to one tier is placed with the policy that allows only
//! that tier). The re-provisioner shapes the capacity placement chooses from (dedicated cores,
//! kept warm containers, pool sizes); it never routes an invocation.

pub mod api;
pub mod auth;
pub mod calibration;
pub mod chain;
pub mod cluster;
pub mod dashboard;
pub mod data;
pub mod error;
pub mod executor;
pub mod failure;
pub mod functions;
pub mod holds;
pub mod hub;
pub mod invoke;
pub mod keep_alive;
pub mod limits;
pub mod membership;
pub mod quota;
pub mod rebalance;
pub mod record;
pub mod reprovision;
pub mod results;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod warm;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandstorm_proto::v1::admin_server::AdminServer;
use sandstorm_proto::v1::cluster_server::ClusterServer;
use sandstorm_proto::v1::scheduler_server::SchedulerServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use sandstorm_identity::ClientAuth;

use crate::placement::{PlacerConfig, Policy};
pub use api::Api;
pub use state::Scheduler;

pub use sandstorm_identity::ADMIN_TOKEN_FILE;

/// How the scheduler runs. Defaults are documented per field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Address of the client port (the client and admin APIs, health, reflection), for tenants
    /// and the admin with bearer tokens. Default `127.0.0.1:7100`.
    pub listen: SocketAddr,
    /// Address of the cluster port (`Cluster`: join and register), for agents only: mutual TLS
    /// with the cluster CA. Default `127.0.0.1:7102`.
    pub cluster_listen: SocketAddr,
    /// Whether the client port speaks TLS. Default `auto`: whenever it listens on an address
    /// that is not loopback.
    pub client_tls: ClientTls,
    /// Names (DNS or IP) clients reach the scheduler by, beyond loopback, this host's name and
    /// the addresses it listens on: they go into its certificate. Default none.
    pub tls_names: Vec<String>,
    /// Where the store and the admin token live. Default `sandstorm-data/scheduler`.
    pub data_dir: PathBuf,
    /// A node silent this long is declared dead. Default 2 s.
    #[serde(with = "millis")]
    pub node_timeout: Duration,
    /// Interval the scheduler asks nodes to push statistics at. Default 100 ms.
    #[serde(with = "millis")]
    pub stats_interval: Duration,
    /// Placement policy. Default `cost-aware`.
    pub policy: Policy,
    /// The placement core's tunables (cost-model defaults until calibrated).
    pub placer: PlacerConfig,
    /// Largest invocation input, bytes. Default [`sandstorm_proto::MAX_PAYLOAD_BYTES`] (the
    /// nodes' limit).
    pub max_payload_bytes: usize,
    /// Largest module, bytes. Default 16 MiB (the storage node's limit).
    pub max_module_bytes: usize,
    /// Deadline of data calls and removals sent to nodes. Default 5 s.
    #[serde(with = "millis")]
    pub rpc_timeout: Duration,
    /// Deadline of one deploy (compilation) on a node. Default 30 s.
    #[serde(with = "millis")]
    pub deploy_timeout: Duration,
    /// Time allowed beyond a function's own deadline before the scheduler gives up on the node.
    /// Default 2 s.
    #[serde(with = "millis")]
    pub execute_slack: Duration,
    /// Deadline of dialling a node. Default 1 s.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// How often the re-provisioner runs; 0 turns it off. Default 5 s.
    #[serde(with = "millis")]
    pub reprovision_interval: Duration,
    /// The re-provisioner's model tunables.
    pub provision: crate::provision::ProvisionConfig,
    /// Where to serve the operator dashboard (HTTP); `None` (the default) serves none.
    pub dashboard: Option<SocketAddr>,
    /// A `sandstorm sim` JSON report (or a directory: its newest `.json`) the dashboard serves
    /// beside the live figures. Default none.
    pub sim_report: Option<PathBuf>,
    /// The cluster's keep-alive policy for compute nodes' warm containers (`fixed:10m`,
    /// `fixed-lifetime:10m`, `hybrid`, `greedy-dual`: the simulator's), run by the scheduler
    /// (see [`keep_alive`]). Default none: each compute node reclaims by its own fixed window.
    pub keep_alive: Option<crate::keepalive::KeepAliveSpec>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            cluster_listen: SocketAddr::from(([127, 0, 0, 1], 7102)),
            client_tls: ClientTls::Auto,
            tls_names: Vec::new(),
            data_dir: PathBuf::from("sandstorm-data/scheduler"),
            node_timeout: Duration::from_secs(2),
            stats_interval: Duration::from_millis(100),
            policy: Policy::CostAware,
            placer: PlacerConfig::default(),
            max_payload_bytes: sandstorm_proto::MAX_PAYLOAD_BYTES,
            max_module_bytes: 16 << 20,
            rpc_timeout: Duration::from_secs(5),
            deploy_timeout: Duration::from_secs(30),
            execute_slack: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            reprovision_interval: Duration::from_secs(5),
            provision: crate::provision::ProvisionConfig::default(),
            dashboard: None,
            sim_report: None,
            keep_alive: None,
        }
    }
}

/// Whether the client port speaks TLS (the cluster port always does, with client certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// TLS unless the port listens on loopback (plaintext there).
    Auto,
    /// TLS always.
    On,
}

impl ClientTls {
    /// Whether a client port on `addr` speaks TLS.
    pub fn enabled(self, addr: SocketAddr) -> bool {
        self == ClientTls::On || !addr.ip().is_loopback()
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Why the scheduler could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("loading the stored state: {0}")]
    Load(#[from] error::ApiError),
    #[error("admin token file {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness for a secret (the admin token, the dashboard's login code): {0}")]
    Random(getrandom::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the scheduler reports once it accepts connections.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The client port.
    pub addr: SocketAddr,
    /// Whether the client port speaks TLS.
    pub client_tls: bool,
    /// The cluster port (mutual TLS).
    pub cluster_addr: SocketAddr,
    /// The cluster CA's certificate: clients of a TLS client port trust it; agents join with it.
    pub ca_file: PathBuf,
    /// The admin token when it was generated by this start (first start only).
    pub new_admin_token: Option<String>,
    pub admin_token_file: PathBuf,
    /// The dashboard's address, when one is served.
    pub dashboard: Option<SocketAddr>,
    /// A one-time URL that logs a browser into the dashboard (see [`dashboard::access`]).
    pub dashboard_login: Option<String>,
}

/// Reads the admin token's hash, generating the token (written to its file, mode 0600) on
/// first start.
fn admin_token(
    store: &store::Store,
    stored: Option<auth::TokenHash>,
    dir: &Path,
) -> Result<(auth::TokenHash, Option<String>), StartError> {
    if let Some(hash) = stored {
        return Ok((hash, None));
    }
    let token = auth::admin_token(&auth::new_secret().map_err(StartError::Random)?);
    let path = dir.join(ADMIN_TOKEN_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path)?;
        writeln!(file, "{token}")?;
        file.sync_all()
    };
    write().map_err(|source| StartError::AdminToken {
        path: path.clone(),
        source,
    })?;
    let hash = auth::hash(&token);
    store.set_admin_hash(&hash)?;
    Ok((hash, Some(token)))
}

/// Binds `addr`, naming it in the error.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bound)?;
    let local = listener.local_addr().map_err(bound)?;
    Ok((listener, local))
}

/// Runs the scheduler until `shutdown` completes. `ready` is called once both ports accept
/// connections.
pub async fn run(
    config: SchedulerConfig,
    ready: impl FnOnce(&Ready),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let store = store::Store::open(&config.data_dir)?;
    let loaded = store.load()?;
    let (admin_hash, new_admin_token) = admin_token(&store, loaded.admin_hash, &config.data_dir)?;
    info!(
        tenants = loaded.tenants.len(),
        functions = loaded.functions.len(),
        nodes = loaded.nodes.len(),
        data_dir = %config.data_dir.display(),
        "scheduler state loaded"
    );
    let (listener, addr) = bind(config.listen).await?;
    let (cluster_listener, cluster_addr) = bind(config.cluster_listen).await?;
    let membership = membership::Membership::open(
        &config.data_dir,
        &membership::server_names(&[addr, cluster_addr], &config.tls_names),
        &loaded,
    )?;
    let client_tls = config.client_tls.enabled(addr);
    let admin_token_file = config.data_dir.join(ADMIN_TOKEN_FILE);
    let ca_file = config.data_dir.join(sandstorm_identity::CA_FILE);
    let dashboard_listener = match config.dashboard {
        Some(addr) => Some(bind(addr).await?.0),
        None => None,
    };
    let dashboard_addr = dashboard_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    let sim_report = config.sim_report.clone();
    let max_message = config.max_module_bytes.max(config.max_payload_bytes) + (1 << 20);
    let scheduler = Scheduler::new(config, store, loaded, admin_hash, membership)?;
    tokio::spawn(scheduler.clone().watch_liveness());
    tokio::spawn(scheduler.clone().rebalance_loop());
    tokio::spawn(scheduler.clone().reprovision_loop());
    tokio::spawn(telemetry::export_cluster(scheduler.clone()));
    let mut dashboard_login = None;
    if let Some(listener) = dashboard_listener {
        let (access, code) =
            dashboard::access::Access::new(admin_hash).map_err(StartError::Random)?;
        if let Some(addr) = dashboard_addr {
            dashboard_login = Some(format!("http://{addr}/login?code={code}"));
        }
        let board = dashboard::Dashboard::new(
            scheduler.dashboard.clone(),
            Some(scheduler.clone()),
            sim_report,
        )
        .with_access(std::sync::Arc::new(access));
        tokio::spawn(async move {
            if let Err(e) = dashboard::serve(listener, board, std::future::pending()).await {
                tracing::warn!(error = %e, "the dashboard stopped");
            }
        });
        info!(addr = ?dashboard_addr, "dashboard serving");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SchedulerServer<Api>>().await;
    health.set_serving::<AdminServer<Api>>().await;
    health.set_serving::<ClusterServer<Api>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sandstorm_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let credentials = scheduler.membership.credentials.clone();
    let api = Api { scheduler };
    info!(%addr, %cluster_addr, client_tls, "scheduler serving");
    ready(&Ready {
        addr,
        client_tls,
        cluster_addr,
        ca_file,
        new_admin_token,
        admin_token_file,
        dashboard: dashboard_addr,
        dashboard_login,
    });
    // Both ports stop on the one shutdown signal.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let on_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };

    let mut client = tonic::transport::Server::builder().tcp_nodelay(true);
    if client_tls {
        client = client.tls_config(credentials.server_tls(ClientAuth::None))?;
    }
    let client = client
        .layer(limits::OversizeLayer)
        .add_service(health_service.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            SchedulerServer::new(api.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(AdminServer::new(api.clone()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), on_stop(stopped.clone()));
    // Agents only: a certificate of the cluster CA is optional at the handshake (a node joins
    // before it has one) and required by every call but `Join`.
    let cluster = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .tls_config(credentials.server_tls(ClientAuth::Optional))?
        .add_service(health_service)
        .add_service(ClusterServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(cluster_listener), on_stop(stopped));
    let (client, cluster) = tokio::join!(client, cluster);
    client?;
    cluster?;
    Ok(())
}
