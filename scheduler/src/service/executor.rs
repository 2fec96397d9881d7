//! Invocations to one node over a long-lived `NodeAgent.ExecuteStream`.
//!
//! A unary `Execute` costs an HTTP/2 stream per invocation: request headers, response headers
//! and trailers, each encoded, written, read and decoded on both sides, and a task on the
//! agent. On a stream that stays open, an invocation is one message each way, and under load
//! several share a write. The scheduler opens one stream per node on first use; each invocation
//! is tagged, its answer is matched by tag, and a broken stream fails everything it carried
//! with the error (the next invocation opens a new one). Inputs over [`STREAM_MAX_INPUT`] take
//! the unary call instead, so one big payload never holds up the small ones queued behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tracing::debug;

use super::failure::{Failure, classify, classify_error};

/// Largest input sent on the stream; larger ones get a unary call of their own.
pub const STREAM_MAX_INPUT: usize = 64 << 10;

type Answer = Result<pb::ExecuteResponse, Failure>;

/// The streams of one node.
#[derive(Debug)]
pub struct Executor {
    agent: NodeAgentClient<Channel>,
    /// The stream in use; replaced when it breaks.
    current: std::sync::Mutex<Option<Arc<Live>>>,
    /// Held while a stream is opened, so concurrent invocations open one, not several.
    opening: tokio::sync::Mutex<()>,
    next_tag: AtomicU64,
}

/// An open stream: where requests go, and who waits for which answer. Dropping the last
/// handle ends the requests, so the node finishes what it holds and ends the answers.
#[derive(Debug)]
struct Live {
    requests: mpsc::UnboundedSender<pb::ExecuteStreamRequest>,
    table: Arc<Table>,
}

/// Shared with the task that reads the answers.
#[derive(Debug)]
struct Table {
    pending: DashMap<u64, oneshot::Sender<Answer>>,
    /// Set (before the pending invocations are failed) once the answers stop.
    broken: AtomicBool,
}

/// Removes an invocation from the pending table when its caller stops waiting (answered, timed
/// out or cancelled), so nothing is left behind for an answer that never comes.
struct Waiting<'a> {
    table: &'a Table,
    tag: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.table.pending.remove(&self.tag);
    }
}

impl Executor {
    pub fn new(agent: NodeAgentClient<Channel>) -> Self {
        Self {
            agent,
            current: std::sync::Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            next_tag: AtomicU64::new(1),
        }
    }

    /// Runs `request` on the node: its answer, or how the attempt failed. The caller bounds
    /// the wait (dropping the future withdraws the invocation's entry).
    pub(super) async fn execute(&self, request: pb::ExecuteRequest) -> Answer {
        if request.input.len() > STREAM_MAX_INPUT {
            let mut agent = self.agent.clone();
            return match agent.execute(request).await {
                Ok(response) => Ok(response.into_inner()),
                Err(status) => Err(classify(&status)),
            };
        }
        let live = self.live().await?;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        live.table.pending.insert(tag, answer);
        let waiting = Waiting {
            table: &live.table,
            tag,
        };
        // Checked after the insert: a stream that broke before it is not used; one that breaks
        // after it fails this invocation with the others.
        if live.table.broken.load(Ordering::SeqCst) {
            return Err(Failure::NeverStarted(
                "the execute stream to the node broke before the invocation was sent".into(),
            ));
        }
        let sent = pb::ExecuteStreamRequest {
            tag,
            request: Some(request),
        };
        if live.requests.send(sent).is_err() {
            return Err(Failure::NeverStarted(
                "the execute stream to the node closed before the invocation was sent".into(),
            ));
        }
        let answer = answered.await;
        drop(waiting);
        answer.unwrap_or_else(|_| {
            Err(Failure::MidRun(
                "the execute stream to the node ended without an answer".into(),
            ))
        })
    }

    /// The open stream, opened now if there is none or it broke.
    async fn live(&self) -> Result<Arc<Live>, Failure> {
        if let Some(live) = self.usable() {
            return Ok(live);
        }
        let _opening = self.opening.lock().await;
        if let Some(live) = self.usable() {
            return Ok(live);
        }
        let (requests, outgoing) = mpsc::unbounded_channel();
        let mut agent = self.agent.clone();
        let answers = agent
            .execute_stream(UnboundedReceiverStream::new(outgoing))
            .await
            .map_err(|status| match classify(&status) {
                // Nothing was sent on a stream that did not open.
                Failure::MidRun(message) => Failure::NeverStarted(message),
                other => other,
            })?
            .into_inner();
        let table = Arc::new(Table {
            pending: DashMap::new(),
            broken: AtomicBool::new(false),
        });
        tokio::spawn(deliver(answers, table.clone()));
        let live = Arc::new(Live { requests, table });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    fn usable(&self) -> Option<Arc<Live>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|live| !live.table.broken.load(Ordering::SeqCst))
            .cloned()
    }
}

/// Hands each answer to its invocation until the stream ends; then fails the rest.
async fn deliver(mut answers: tonic::Streaming<pb::ExecuteStreamResponse>, live: Arc<Table>) {
    let why = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let Some((_, waiting)) = live.pending.remove(&answer.tag) else {
                    continue; // Its caller stopped waiting.
                };
                let result = match answer.result {
                    Some(pb::execute_stream_response::Result::Response(r)) => Ok(r),
                    Some(pb::execute_stream_response::Result::Error(e)) => Err(classify_error(e)),
                    None => Err(Failure::MidRun("the node sent an empty answer".into())),
                };
                let _ = waiting.send(result);
            }
            Ok(None) => break "the node ended the execute stream".to_owned(),
            Err(status) => break format!("the execute stream broke: {}", status.message()),
        }
    };
    debug!(%why, pending = live.pending.len(), "execute stream closed");
    live.broken.store(true, Ordering::SeqCst);
    let tags: Vec<u64> = live.pending.iter().map(|e| *e.key()).collect();
    for tag in tags {
        if let Some((_, waiting)) = live.pending.remove(&tag) {
            let _ = waiting.send(Err(Failure::MidRun(why.clone())));
        }
    }
}
