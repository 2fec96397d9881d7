//! Results of async invocations, per tenant, until fetched or pushed out.
//!
//! Each async invocation has a watch channel that holds `None` while it runs and its outcome once
//! done. The table keeps at most [`MAX_RESULTS`] entries; the oldest go first. A tenant sees
//! only its own invocations: another tenant's id is as unknown as one never issued.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sandstorm_naming::TenantId;
use sandstorm_proto::v1 as pb;
use tokio::sync::watch;

use super::error::ApiError;

/// Async results kept at once.
pub const MAX_RESULTS: usize = 10_000;

/// How an async invocation ended: its response, or the gRPC code and message of its error.
pub type Outcome = Result<pb::InvokeResponse, (i32, String)>;

#[derive(Debug)]
struct Slot {
    tenant: TenantId,
    rx: watch::Receiver<Option<Outcome>>,
}

/// The table of async results.
#[derive(Debug, Default)]
pub struct Results {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<u64, Slot>,
    order: VecDeque<u64>,
}

impl Results {
    /// Registers invocation `id` of `tenant`; the sender publishes its outcome.
    pub fn start(&self, tenant: TenantId, id: u64) -> watch::Sender<Option<Outcome>> {
        let (tx, rx) = watch::channel(None);
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while t.order.len() >= MAX_RESULTS {
            if let Some(old) = t.order.pop_front() {
                t.slots.remove(&old);
            }
        }
        t.slots.insert(id, Slot { tenant, rx });
        t.order.push_back(id);
        tx
    }

    fn receiver(
        &self,
        tenant: TenantId,
        id: u64,
    ) -> Result<watch::Receiver<Option<Outcome>>, ApiError> {
        let t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match t.slots.get(&id) {
            Some(slot) if slot.tenant == tenant => Ok(slot.rx.clone()),
            _ => Err(ApiError::UnknownInvocation(id)),
        }
    }

    /// The outcome now (`None`: still running).
    pub fn get(&self, tenant: TenantId, id: u64) -> Result<Option<Outcome>, ApiError> {
        Ok(self.receiver(tenant, id)?.borrow().clone())
    }

    /// Waits up to `timeout` for the outcome (`None`: still running when it expired).
    pub async fn wait(
        &self,
        tenant: TenantId,
        id: u64,
        timeout: Duration,
    ) -> Result<Option<Outcome>, ApiError> {
        let mut rx = self.receiver(tenant, id)?;
        let done = match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => Some(outcome.clone()),
            // Timed out, or the sender is gone (it always publishes first): report the state now.
            _ => None,
        };
        Ok(done.unwrap_or_else(|| rx.borrow().clone()))
    }
}

/// The response for an outcome.
pub fn response(id: u64, outcome: Option<Outcome>) -> pb::ResultResponse {
    match outcome {
        None => pb::ResultResponse {
            invocation_id: id,
            done: false,
            ..Default::default()
        },
        Some(Ok(result)) => pb::ResultResponse {
            invocation_id: id,
            done: true,
            result: Some(result),
            ..Default::default()
        },
        Some(Err((code, message))) => pb::ResultResponse {
            invocation_id: id,
            done: true,
            result: None,
            error_code: code,
            error_message: message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_are_per_tenant_and_waitable() {
        let results = Results::default();
        let (a, b) = (TenantId(1), TenantId(2));
        let tx = results.start(a, 7);
        assert!(results.get(a, 7).expect("own id").is_none());
        assert!(matches!(
            results.get(b, 7),
            Err(ApiError::UnknownInvocation(7))
        ));
        assert!(matches!(
            results.get(a, 8),
            Err(ApiError::UnknownInvocation(8))
        ));
        // Still running when a short wait ends.
        assert!(
            results
                .wait(a, 7, Duration::ZERO)
                .await
                .expect("own")
                .is_none()
        );
        let out = pb::InvokeResponse {
            output: b"ok".to_vec(),
            record: None,
        };
        let waiter = results.wait(a, 7, Duration::from_secs(60));
        tx.send_replace(Some(Ok(out.clone())));
        assert_eq!(waiter.await.expect("own"), Some(Ok(out)));
        let r = response(7, results.get(a, 7).expect("own"));
        assert!(r.done && r.result.is_some());
    }

    #[test]
    fn the_oldest_results_go_first() {
        let results = Results::default();
        let senders: Vec<_> = (0..MAX_RESULTS as u64 + 2)
            .map(|i| results.start(TenantId(0), i))
            .collect();
        assert!(results.get(TenantId(0), 0).is_err());
        assert!(results.get(TenantId(0), 1).is_err());
        assert!(results.get(TenantId(0), 2).is_ok());
        drop(senders);
    }
}
