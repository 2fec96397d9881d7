//! `sandstorm agent --scheduler ADDR`: the agent's registration with a scheduler.
//!
//! Registers once the agent serves, then again every second: registration is idempotent, and
//! repeating it is how a restarted scheduler learns its nodes again (and deploys their functions
//! back). Each agent process has a random incarnation, so the scheduler can tell a restarted
//! node (which lost its deployments) from a periodic call. Prints
//! `registered with the scheduler at ADDR as node-N (...)` whenever a registration started a new
//! session; logs failures once per outage.

use std::net::SocketAddr;
use std::time::Duration;

use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::cluster_client::ClusterClient;

/// Re-registration period.
const PERIOD: Duration = Duration::from_secs(1);
/// Deadline of one registration (the scheduler deploys every function before answering).
const DEADLINE: Duration = Duration::from_secs(60);

/// What the agent announces.
#[derive(Debug, Clone)]
pub struct Registration {
    pub scheduler: String,
    pub name: String,
    pub role: pb::Tier,
    pub listen: SocketAddr,
    pub cores: u32,
}

/// `http://host:port` for `addr`, with an unspecified address as loopback.
fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Starts the registration loop on the current tokio runtime.
pub fn spawn(registration: Registration) {
    tokio::spawn(register_forever(registration));
}

async fn register_forever(r: Registration) {
    let mut incarnation = [0u8; 8];
    if getrandom::fill(&mut incarnation).is_err() {
        // Fall back on the clock: only needs to differ between processes of one node.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        incarnation = now.to_le_bytes();
    }
    let incarnation = u64::from_le_bytes(incarnation);
    let mut host = r.listen;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let request = pb::RegisterRequest {
        name: r.name.clone(),
        role: r.role.into(),
        address: format!("http://{host}"),
        cores: r.cores,
        memory_mb: 0,
        incarnation,
    };
    let mut failing = false;
    loop {
        let attempt = async {
            let mut client = ClusterClient::connect(url(&r.scheduler))
                .await
                .map_err(|e| e.to_string())?;
            client
                .register(request.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| e.message().to_owned())
        };
        match tokio::time::timeout(DEADLINE, attempt).await {
            Ok(Ok(response)) => {
                if failing {
                    tracing::info!(scheduler = %r.scheduler, "registered again");
                }
                failing = false;
                if response.new_session {
                    println!(
                        "registered with the scheduler at {} as node-{} ({} functions deployed)",
                        r.scheduler, response.node_id, response.functions_deployed
                    );
                }
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(scheduler = %r.scheduler, %error, "registration failed; retrying every second");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!(scheduler = %r.scheduler, "registration timed out; retrying every second");
            }
            _ => {}
        }
        tokio::time::sleep(PERIOD).await;
    }
}
