//! Results of async invocations, per tenant, until pushed out.
//!
//! Each async invocation has a watch channel that holds `None` while it runs and its outcome once
//! done. A tenant keeps at most [`MAX_RESULTS_PER_TENANT`] entries, its oldest going first, and
//! all tenants' finished outputs together take at most [`MAX_RESULT_BYTES`]: past that, the oldest
//! entry of the tenant holding the most bytes goes. So one tenant's flood of async calls pushes
//! out its own results, never another's. A tenant sees only its own invocations: another
//! tenant's id is as unknown as one never issued.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sandstorm_naming::TenantId;
use sandstorm_proto::v1 as pb;
use tokio::sync::watch;

use super::error::ApiError;

/// Async results one tenant keeps at once.
pub const MAX_RESULTS_PER_TENANT: usize = 10_000;
/// Bytes of outputs and error messages all tenants' results keep at once.
pub const MAX_RESULT_BYTES: usize = 512 << 20;

/// How an async invocation ended: its response, or the gRPC code and message of its error.
pub type Outcome = Result<pb::InvokeResponse, (i32, String)>;

#[derive(Debug)]
struct Slot {
    tenant: TenantId,
    rx: watch::Receiver<Option<Outcome>>,
    /// What its outcome holds (0 while it runs).
    bytes: usize,
}

/// The table of async results.
#[derive(Debug, Default)]
pub struct Results {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<u64, Slot>,
    /// Each tenant's ids, oldest first, and the bytes their outcomes hold.
    tenants: HashMap<TenantId, (VecDeque<u64>, usize)>,
    bytes: usize,
}

impl Table {
    /// Pushes out `tenant`'s oldest entry.
    fn drop_oldest(&mut self, tenant: TenantId) {
        let Some((order, bytes)) = self.tenants.get_mut(&tenant) else {
            return;
        };
        if let Some(slot) = order.pop_front().and_then(|id| self.slots.remove(&id)) {
            *bytes -= slot.bytes;
            self.bytes -= slot.bytes;
        }
        if order.is_empty() {
            self.tenants.remove(&tenant);
        }
    }
}

/// Bytes an outcome keeps: its encoded size, close to what it holds in memory.
fn size(outcome: &Outcome) -> usize {
    match outcome {
        Ok(r) => prost::Message::encoded_len(r),
        Err((_, message)) => message.len(),
    }
}

impl Results {
    /// Registers invocation `id` of `tenant`; [`Results::finish`] publishes its outcome.
    pub fn start(&self, tenant: TenantId, id: u64) -> watch::Sender<Option<Outcome>> {
        let (tx, rx) = watch::channel(None);
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while t
            .tenants
            .get(&tenant)
            .is_some_and(|(order, _)| order.len() >= MAX_RESULTS_PER_TENANT)
        {
            t.drop_oldest(tenant);
        }
        t.slots.insert(
            id,
            Slot {
                tenant,
                rx,
                bytes: 0,
            },
        );
        t.tenants.entry(tenant).or_default().0.push_back(id);
        tx
    }

    /// Publishes invocation `id`'s outcome through `tx` (from [`Results::start`]), then keeps
    /// the table within [`MAX_RESULT_BYTES`].
    pub fn finish(&self, id: u64, tx: &watch::Sender<Option<Outcome>>, outcome: Outcome) {
        let bytes = size(&outcome);
        tx.send_replace(Some(outcome));
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = t.slots.get_mut(&id) else {
            return; // pushed out while it ran
        };
        slot.bytes = bytes;
        let tenant = slot.tenant;
        t.bytes += bytes;
        if let Some((_, held)) = t.tenants.get_mut(&tenant) {
            *held += bytes;
        }
        while t.bytes > MAX_RESULT_BYTES {
            let Some(largest) = t
                .tenants
                .iter()
                .max_by_key(|(_, (_, held))| *held)
                .map(|(tenant, _)| *tenant)
            else {
                break;
            };
            t.drop_oldest(largest);
        }
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
        results.finish(7, &tx, Ok(out.clone()));
        assert_eq!(waiter.await.expect("own"), Some(Ok(out)));
        let r = response(7, results.get(a, 7).expect("own"));
        assert!(r.done && r.result.is_some());
    }

    #[test]
    fn a_tenants_flood_pushes_out_its_own_oldest_results_only() {
        let results = Results::default();
        let (quiet, flood) = (TenantId(1), TenantId(2));
        let kept = results.start(quiet, 0);
        let senders: Vec<_> = (1..=MAX_RESULTS_PER_TENANT as u64 + 2)
            .map(|i| results.start(flood, i))
            .collect();
        assert!(results.get(flood, 1).is_err());
        assert!(results.get(flood, 2).is_err());
        assert!(results.get(flood, 3).is_ok());
        assert!(
            results.get(quiet, 0).is_ok(),
            "another tenant's result stays"
        );
        drop((kept, senders));
    }

    #[test]
    fn large_outputs_push_out_the_largest_holders_oldest() {
        let results = Results::default();
        let (quiet, flood) = (TenantId(1), TenantId(2));
        let output = |bytes: usize| {
            Ok(pb::InvokeResponse {
                output: vec![7; bytes],
                record: None,
            })
        };
        let tx = results.start(quiet, 0);
        results.finish(0, &tx, output(1 << 20));
        // 8 MiB outputs, well past the budget in all.
        let n = MAX_RESULT_BYTES / (8 << 20) + 4;
        for id in 1..=n as u64 {
            let tx = results.start(flood, id);
            results.finish(id, &tx, output(8 << 20));
        }
        assert!(results.get(flood, 1).is_err(), "the flood's oldest went");
        assert!(results.get(flood, n as u64).is_ok(), "its newest stayed");
        assert!(results.get(quiet, 0).expect("kept").is_some());
        let t = results.inner.lock().unwrap();
        assert!(t.bytes <= MAX_RESULT_BYTES, "{} bytes kept", t.bytes);
    }
}
