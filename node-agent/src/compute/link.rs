//! The data path of a WebAssembly function in a compute container: the descriptor between the
//! function's process and its agent (`proto/sandstorm/v1/link.proto`), and the agent's
//! forwarding of each data call to the storage node that owns the key.
//!
//! - [`AgentLink`] is the process side: the [`DataAccess`] its sandbox runs with. It checks sizes
//!   against the store's limits before anything leaves the container, so a guest learns the same
//!   error codes as in a storage node.
//! - [`serve`] is the agent side of one invocation: it sends the input, answers data calls and
//!   returns how the function ended. The tenant of every forwarded call is the container's; the
//!   process cannot name another.
//! - [`StorageRouter`] maps keys to storage nodes with the [`KeyRing`] and holds one gRPC channel
//!   per node.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use prost::Message;
use sandstorm_naming::ring::{DEFAULT_VNODES_PER_NODE, KeyRing};
use sandstorm_naming::{NodeId, TenantId};
use sandstorm_proto::v1::{
    DeleteRequest, FromFunction, FunctionDone, GetRequest, GetResponse, MaybeValue,
    MultiGetRequest, MultiGetResponse, PutRequest, ScanRequest, ScanResponse, ToFunction,
    from_function::Call, key_value_client::KeyValueClient, to_function::Reply,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use sandstorm_identity::{Credentials, Peer, Role};

use crate::sandbox::{DataAccess, RunError, RunOutcome};
use crate::storage::store::{Limits, Pair, StoreError};
use crate::storage::wal::Ack;

/// Largest frame either side accepts: a 4 MiB payload plus framing.
const MAX_FRAME: usize = 5 << 20;

fn encode_frame(message: &impl Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&(len as u32).to_le_bytes());
    // Encoding into a Vec cannot run out of room.
    let _ = message.encode(&mut frame);
    frame
}

fn frame_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {len} bytes on the function link is larger than the limit of {MAX_FRAME}"
        )));
    }
    Ok(len)
}

fn read_frame<T: Message + Default>(mut stream: &UnixStream) -> io::Result<T> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut body = vec![0u8; frame_len(header)?];
    stream.read_exact(&mut body)?;
    T::decode(body.as_slice()).map_err(io::Error::other)
}

/// The function process's end of the link. Made before its invocation exists (the template
/// prepares an instance with it, then forks) and bound to the invocation's descriptor in the
/// forked process.
#[derive(Debug, Default)]
pub struct AgentLink {
    stream: std::sync::OnceLock<UnixStream>,
    limits: Limits,
    /// Time spent waiting for data calls' replies, nanoseconds.
    data_wait_ns: std::sync::atomic::AtomicU64,
    /// Where a byte is written once the agent was told the function runs (the template's pipe).
    running_notice: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

impl AgentLink {
    /// A link not bound to a descriptor yet.
    pub fn unbound() -> Self {
        Self::default()
    }

    /// Binds the link to the descriptor the template received with the invocation.
    pub fn bind(&self, stream: UnixStream) -> io::Result<()> {
        self.stream
            .set(stream)
            .map_err(|_| io::Error::other("the link is already bound"))
    }

    /// Also tells `notice` (a byte) when the function runs, after the agent.
    pub fn notify_running(&self, notice: std::os::fd::OwnedFd) -> io::Result<()> {
        self.running_notice
            .set(notice)
            .map_err(|_| io::Error::other("the link already has a notice"))
    }

    fn stream(&self) -> io::Result<&UnixStream> {
        self.stream
            .get()
            .ok_or_else(|| io::Error::other("the link is not bound to an invocation"))
    }

    /// The invocation's input, the agent's first frame.
    pub fn read_input(&self) -> io::Result<Vec<u8>> {
        match read_frame::<ToFunction>(self.stream()?)?.reply {
            Some(Reply::Input(input)) => Ok(input),
            other => Err(io::Error::other(format!(
                "expected the invocation's input first, got {other:?}"
            ))),
        }
    }

    /// Reports how the invocation ended: the last frame.
    pub fn done(&self, result: Result<RunOutcome, RunError>) -> io::Result<()> {
        let done = match result {
            Ok(outcome) => FunctionDone {
                output: outcome.output,
                error: String::new(),
                start_us: micros(outcome.start),
                exec_us: micros(outcome.exec),
                data_wait_us: self.data_wait_ns.load(std::sync::atomic::Ordering::Relaxed) / 1_000,
            },
            Err(e) => FunctionDone {
                output: Vec::new(),
                error: serde_json::to_string(&e).map_err(io::Error::other)?,
                start_us: 0,
                exec_us: 0,
                data_wait_us: 0,
            },
        };
        self.send(Call::Done(done))
    }

    fn send(&self, call: Call) -> io::Result<()> {
        self.stream()?
            .write_all(&encode_frame(&FromFunction { call: Some(call) }))
    }

    /// One data call and its reply.
    fn call(&self, call: Call) -> Result<Reply, StoreError> {
        let remote = |e: io::Error| StoreError::Remote(format!("the agent's link: {e}"));
        let started = Instant::now();
        self.send(call).map_err(remote)?;
        let reply = read_frame::<ToFunction>(self.stream().map_err(remote)?)
            .map_err(remote)?
            .reply;
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.data_wait_ns
            .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
        match reply {
            Some(Reply::Error(message)) => Err(StoreError::Remote(message)),
            Some(Reply::OverQuota(message)) => Err(StoreError::RemoteOverQuota(message)),
            Some(reply) => Ok(reply),
            None => Err(StoreError::Remote("an empty reply on the link".into())),
        }
    }
}

fn unexpected(reply: &Reply) -> StoreError {
    StoreError::Remote(format!("an unexpected reply on the link: {reply:?}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// The tenant field is filled in by the agent; the process sends 0.
impl DataAccess for AgentLink {
    fn get_with<R>(
        &self,
        _tenant: TenantId,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        self.limits.check_key(key)?;
        let reply = self.call(Call::Get(GetRequest {
            tenant: 0,
            key: key.to_vec(),
        }))?;
        match reply {
            Reply::Get(r) => Ok(f(r.found.then_some(r.value.as_slice()))),
            other => Err(unexpected(&other)),
        }
    }

    fn multi_get_with(
        &self,
        _tenant: TenantId,
        keys: &[&[u8]],
        mut f: impl FnMut(Option<&[u8]>),
    ) -> Result<(), StoreError> {
        self.limits.check_batch(keys.len())?;
        for key in keys {
            self.limits.check_key(key)?;
        }
        let reply = self.call(Call::MultiGet(MultiGetRequest {
            tenant: 0,
            keys: keys.iter().map(|k| k.to_vec()).collect(),
        }))?;
        match reply {
            Reply::MultiGet(r) if r.values.len() == keys.len() => {
                for v in &r.values {
                    f(v.found.then_some(v.value.as_slice()));
                }
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    fn scan(
        &self,
        _tenant: TenantId,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        if prefix.len() > self.limits.max_key_bytes {
            return Err(StoreError::KeyTooLarge {
                len: prefix.len(),
                limit: self.limits.max_key_bytes,
            });
        }
        let reply = self.call(Call::Scan(ScanRequest {
            tenant: 0,
            prefix: prefix.to_vec(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }))?;
        match reply {
            Reply::Scan(r) => Ok(r.pairs.into_iter().map(|p| (p.key, p.value)).collect()),
            other => Err(unexpected(&other)),
        }
    }

    fn put(&self, _tenant: TenantId, key: &[u8], value: &[u8]) -> Result<Option<Ack>, StoreError> {
        self.limits.check_key(key)?;
        self.limits.check_value(value)?;
        // The storage node acknowledges only once the write is durable.
        match self.call(Call::Put(PutRequest {
            tenant: 0,
            key: key.to_vec(),
            value: value.to_vec(),
        }))? {
            Reply::Put(_) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    fn delete(&self, _tenant: TenantId, key: &[u8]) -> Result<(bool, Option<Ack>), StoreError> {
        self.limits.check_key(key)?;
        match self.call(Call::Delete(DeleteRequest {
            tenant: 0,
            key: key.to_vec(),
        }))? {
            Reply::Delete(r) => Ok((r.existed, None)),
            other => Err(unexpected(&other)),
        }
    }

    fn started(&self, instantiation: Duration) {
        // Best effort: if the agent is gone the next call fails and says so.
        let _ = self.send(Call::RunningUs(micros(instantiation)));
        if let Some(notice) = self.running_notice.get() {
            let _ = nix::unistd::write(notice, b"r");
        }
    }
}

/// The storage nodes a compute node's functions read from, and which keys each owns.
///
/// Replaceable while invocations run: a compute node registered with a scheduler learns the
/// scheduler's key ring (its storage nodes' ids, names and addresses) from every registration
/// answer and [`StorageRouter::replace`]s its routes when they change; an invocation keeps the
/// routes it started with. Standalone (`--storage NAME=ADDR`...) the nodes are numbered in the
/// order given. Every data call goes over mutual TLS with the node's [`Credentials`], and the
/// storage node's certificate must name the node the route names.
#[derive(Debug, Default)]
pub struct StorageRouter {
    routes: std::sync::RwLock<std::sync::Arc<Routes>>,
    /// Set once, before the first route: the compute node's certificate and the cluster CA.
    credentials: std::sync::OnceLock<Credentials>,
}

/// A storage node to route to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StorageRoute {
    pub id: NodeId,
    /// Its node name: what its certificate must say.
    pub name: String,
    /// `host:port`, `http://host:port` or `https://host:port` (dialled with TLS whatever it says).
    pub address: String,
}

/// One version of the routes: the ring and a lazily connected channel per storage node.
#[derive(Debug, Clone, Default)]
struct Routes {
    ring: KeyRing,
    clients: HashMap<NodeId, (StorageRoute, KeyValueClient<Channel>)>,
}

impl StorageRouter {
    /// A router dialling with `credentials` (the compute node's), with no routes yet.
    pub fn new(credentials: Credentials) -> Self {
        let router = Self::default();
        let _ = router.credentials.set(credentials);
        router
    }

    /// Sets the credentials of a router made with `default()`; refused once set.
    pub fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.credentials
            .set(credentials)
            .map_err(|_| "the storage router's credentials are set already".to_owned())
    }

    /// Routes keys over `nodes` on a ring of `vnodes_per_node` points each, as the scheduler's
    /// ring does. Channels to nodes whose name and address did not change are kept. On a bad
    /// address nothing changes.
    pub fn replace(&self, nodes: &[StorageRoute], vnodes_per_node: u32) -> Result<(), String> {
        let credentials = self.credentials.get().ok_or(
            "the storage router has no credentials: data calls are mutual TLS (join the cluster first)",
        )?;
        let current = self.snapshot();
        let mut ring = KeyRing::new(vnodes_per_node);
        let mut clients = HashMap::new();
        for route in nodes {
            let client = match current.clients.get(&route.id) {
                Some((known, client)) if known == route => client.clone(),
                _ => {
                    let peer = Peer::new(Role::Storage, &route.name)
                        .map_err(|e| format!("storage node {:?}: {e}", route.name))?;
                    let endpoint = credentials
                        .endpoint(&peer, &route.address)
                        .map_err(|e| format!("storage node {:?}: {e}", route.name))?
                        .connect_timeout(Duration::from_secs(2));
                    KeyValueClient::new(endpoint.connect_lazy())
                        .max_decoding_message_size(MAX_FRAME)
                }
            };
            ring.add_node(route.id);
            clients.insert(route.id, (route.clone(), client));
        }
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) =
            std::sync::Arc::new(Routes { ring, clients });
        Ok(())
    }

    /// Routes over `nodes` (name, address) numbered in the order given, on the default ring.
    pub fn replace_in_order(&self, nodes: &[(String, String)]) -> Result<(), String> {
        let routes = nodes
            .iter()
            .enumerate()
            .map(|(i, (name, address))| {
                let id = u32::try_from(i).map_err(|_| "too many storage nodes".to_owned())?;
                Ok(StorageRoute {
                    id: NodeId(id),
                    name: name.clone(),
                    address: address.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.replace(&routes, DEFAULT_VNODES_PER_NODE)
    }

    /// The storage nodes known now, in id order.
    pub fn nodes(&self) -> Vec<StorageRoute> {
        let routes = self.snapshot();
        let mut nodes: Vec<StorageRoute> =
            routes.clients.values().map(|(r, _)| r.clone()).collect();
        nodes.sort();
        nodes
    }

    /// Whether any storage node is known.
    pub fn is_empty(&self) -> bool {
        self.snapshot().clients.is_empty()
    }

    fn snapshot(&self) -> std::sync::Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn forward(&self, tenant: TenantId, call: Call, stats: &mut LinkStats) -> Reply {
        let routes = self.snapshot();
        routes.forward(tenant, call, stats).await
    }
}

impl Routes {
    fn client(&self, node: NodeId) -> Result<KeyValueClient<Channel>, String> {
        self.clients
            .get(&node)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| format!("storage node {} is not known", node.0))
    }

    fn owner(&self, tenant: TenantId, key: &[u8]) -> Result<KeyValueClient<Channel>, String> {
        let node = self.ring.owner(tenant, key).ok_or(
            "this compute node knows no storage node (register it with a scheduler that has one, or start it with --storage NAME=ADDR)".to_owned(),
        )?;
        self.client(node)
    }

    async fn forward(&self, tenant: TenantId, call: Call, stats: &mut LinkStats) -> Reply {
        let result = match call {
            Call::Get(mut r) => {
                r.tenant = tenant.0;
                stats.data_calls += 1;
                match self.owner(tenant, &r.key) {
                    Ok(mut c) => c.get(r).await.map(|r| {
                        let r: GetResponse = r.into_inner();
                        if r.found {
                            stats.keys_read += 1;
                            stats.bytes_read += r.value.len() as u64;
                        }
                        Reply::Get(r)
                    }),
                    Err(e) => return Reply::Error(e),
                }
            }
            Call::Put(mut r) => {
                r.tenant = tenant.0;
                stats.data_calls += 1;
                stats.bytes_written += (r.key.len() + r.value.len()) as u64;
                match self.owner(tenant, &r.key) {
                    Ok(mut c) => c.put(r).await.map(|r| Reply::Put(r.into_inner())),
                    Err(e) => return Reply::Error(e),
                }
            }
            Call::Delete(mut r) => {
                r.tenant = tenant.0;
                stats.data_calls += 1;
                stats.bytes_written += r.key.len() as u64;
                match self.owner(tenant, &r.key) {
                    Ok(mut c) => c.delete(r).await.map(|r| Reply::Delete(r.into_inner())),
                    Err(e) => return Reply::Error(e),
                }
            }
            Call::MultiGet(r) => {
                stats.data_calls += 1;
                match self.multi_get(tenant, r.keys).await {
                    Ok(values) => {
                        for v in values.iter().filter(|v| v.found) {
                            stats.keys_read += 1;
                            stats.bytes_read += v.value.len() as u64;
                        }
                        Ok(Reply::MultiGet(MultiGetResponse { values }))
                    }
                    Err(e) => Err(e),
                }
            }
            Call::Scan(r) => {
                stats.data_calls += 1;
                match self.scan(tenant, r).await {
                    Ok(pairs) => {
                        stats.keys_read += pairs.len() as u64;
                        stats.bytes_read += pairs.iter().map(|p| p.value.len() as u64).sum::<u64>();
                        Ok(Reply::Scan(ScanResponse { pairs }))
                    }
                    Err(e) => Err(e),
                }
            }
            other => return Reply::Error(format!("not a data call: {other:?}")),
        };
        // A refusal by the tenant's storage quota stays one inside the container, so the
        // function's failure is reported as RESOURCE_EXHAUSTED naming the quota.
        result.unwrap_or_else(|status| match status.code() {
            tonic::Code::ResourceExhausted => Reply::OverQuota(status.message().to_owned()),
            _ => Reply::Error(status.message().to_owned()),
        })
    }

    /// Groups keys by owner, asks each owner once, and puts the answers back in request order.
    async fn multi_get(
        &self,
        tenant: TenantId,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<MaybeValue>, tonic::Status> {
        let mut by_node: HashMap<NodeId, (Vec<usize>, Vec<Vec<u8>>)> = HashMap::new();
        for (i, key) in keys.into_iter().enumerate() {
            let node = self
                .ring
                .owner(tenant, &key)
                .ok_or_else(|| tonic::Status::unavailable("no storage node is known"))?;
            let entry = by_node.entry(node).or_default();
            entry.0.push(i);
            entry.1.push(key);
        }
        let total = by_node.values().map(|(i, _)| i.len()).sum();
        let mut values = vec![MaybeValue::default(); total];
        let requests = by_node
            .into_iter()
            .map(|(node, (indices, keys))| async move {
                let mut client = self.client(node).map_err(tonic::Status::unavailable)?;
                let reply = client
                    .multi_get(MultiGetRequest {
                        tenant: tenant.0,
                        keys,
                    })
                    .await?
                    .into_inner();
                Ok::<_, tonic::Status>((indices, reply.values))
            });
        for result in futures_util::future::join_all(requests).await {
            let (indices, found) = result?;
            place(&mut values, &indices, found)?;
        }
        Ok(values)
    }

    /// Asks every storage node and merges their pairs in key order.
    async fn scan(
        &self,
        tenant: TenantId,
        request: ScanRequest,
    ) -> Result<Vec<sandstorm_proto::v1::KeyValuePair>, tonic::Status> {
        let requests = self.clients.values().map(|(_, client)| {
            let mut client = client.clone();
            let request = ScanRequest {
                tenant: tenant.0,
                ..request.clone()
            };
            async move { client.scan(request).await.map(|r| r.into_inner().pairs) }
        });
        let mut pairs = Vec::new();
        for result in futures_util::future::join_all(requests).await {
            pairs.extend(result?);
        }
        pairs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        if request.limit > 0 {
            pairs.truncate(request.limit as usize);
        }
        Ok(pairs)
    }
}

/// Puts one storage node's multi-get answers at the request positions they answer. A reply with
/// a different number of values than keys asked is an error: read as "not found", a short reply
/// would tell the guest that keys it holds do not exist.
fn place(
    values: &mut [MaybeValue],
    indices: &[usize],
    found: Vec<MaybeValue>,
) -> Result<(), tonic::Status> {
    if found.len() != indices.len() {
        return Err(tonic::Status::internal(format!(
            "a storage node answered a multi-get of {} keys with {} values",
            indices.len(),
            found.len()
        )));
    }
    for (&i, v) in indices.iter().zip(found) {
        values[i] = v;
    }
    Ok(())
}

/// What the agent counted while serving one invocation's link.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Data calls forwarded.
    pub data_calls: u64,
    /// Keys found by reads.
    pub keys_read: u64,
    /// Value bytes read.
    pub bytes_read: u64,
    /// Key and value bytes written.
    pub bytes_written: u64,
    /// Time the function waited for its data calls, as it measured them (the link to the
    /// agent and the round trips to storage nodes).
    pub data_wait: Duration,
    /// When the process reported its instance ready.
    pub running_at: Option<Instant>,
}

/// How the function ended, as its process reported it.
#[derive(Debug)]
pub struct LinkOutcome {
    /// Its output, or the error it failed with.
    pub result: Result<Vec<u8>, RunError>,
    /// Instantiation inside the process.
    pub start: Duration,
    /// The function's own run.
    pub exec: Duration,
    /// Data calls and when it started running.
    pub stats: LinkStats,
}

/// The agent's side of one invocation: sends `input`, forwards data calls for `tenant`, and
/// returns the process's report. Fails if the process hangs up first (it was killed: the
/// caller learns why from the template).
pub async fn serve(
    stream: tokio::net::UnixStream,
    tenant: TenantId,
    input: &[u8],
    router: &StorageRouter,
) -> io::Result<LinkOutcome> {
    let (mut reader, mut writer) = stream.into_split();
    let first = ToFunction {
        reply: Some(Reply::Input(input.to_vec())),
    };
    writer.write_all(&encode_frame(&first)).await?;
    let mut stats = LinkStats::default();
    loop {
        let mut header = [0u8; 4];
        reader.read_exact(&mut header).await?;
        let mut body = vec![0u8; frame_len(header)?];
        reader.read_exact(&mut body).await?;
        let call = FromFunction::decode(body.as_slice())
            .map_err(io::Error::other)?
            .call
            .ok_or_else(|| io::Error::other("an empty frame from the function"))?;
        match call {
            Call::RunningUs(_) => {
                stats.running_at = Some(Instant::now());
            }
            Call::Done(done) => {
                let result = if done.error.is_empty() {
                    Ok(done.output)
                } else {
                    Err(serde_json::from_str(&done.error).unwrap_or(RunError::Failed(done.error)))
                };
                stats.data_wait = Duration::from_micros(done.data_wait_us);
                return Ok(LinkOutcome {
                    result,
                    start: Duration::from_micros(done.start_us),
                    exec: Duration::from_micros(done.exec_us),
                    stats,
                });
            }
            call => {
                let reply = router.forward(tenant, call, &mut stats).await;
                let frame = encode_frame(&ToFunction { reply: Some(reply) });
                writer.write_all(&frame).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &[u8]) -> MaybeValue {
        MaybeValue {
            found: true,
            value: v.to_vec(),
        }
    }

    #[test]
    fn a_short_or_long_multi_get_reply_is_an_error_not_missing_keys() {
        let mut values = vec![MaybeValue::default(); 3];
        // One node answered keys 0 and 2 in full.
        place(&mut values, &[0, 2], vec![value(b"a"), value(b"c")]).unwrap();
        assert_eq!(values[0], value(b"a"));
        assert_eq!(values[2], value(b"c"));
        // Another was asked for key 1 and answered nothing.
        let err = place(&mut values, &[1], Vec::new()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(
            err.message(),
            "a storage node answered a multi-get of 1 keys with 0 values"
        );
        // Nor may a reply carry more values than asked for.
        assert!(place(&mut values, &[1], vec![value(b"b"), value(b"x")]).is_err());
    }
}
