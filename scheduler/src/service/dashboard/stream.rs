//! `/api/stream`: the server-sent events one browser receives.
//!
//! Each connection holds a receiver of the hub's bounded broadcast channel and of the cluster
//! `watch`; nothing else. Its filter (`tenant`, `function`, `tier`, `start`) is applied to each
//! batch as it is sent: the exact matching count from the batch's counters, and the matching
//! part of its sample. A connection that reads too slowly loses the oldest batches (the
//! channel keeps [`super::hub::BATCH_BACKLOG`]) and the next `decisions` event says how many it
//! has lost in all.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::hub::{Batch, Decision};
use super::{Dashboard, DashboardError, only_params};

/// Which decisions a connection wants; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tenant: Option<String>,
    pub function: Option<String>,
    pub tier: Option<&'static str>,
    pub start: Option<&'static str>,
}

impl Filter {
    /// From the query; unknown parameters and values are errors naming what is accepted.
    pub fn parse(query: &HashMap<String, String>) -> Result<Self, DashboardError> {
        only_params(query, &["tenant", "function", "tier", "start"])?;
        let text = |k: &str| {
            query
                .get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let one_of = |k: &str, allowed: &[&'static str]| -> Result<_, DashboardError> {
            match text(k) {
                None => Ok(None),
                Some(v) => allowed
                    .iter()
                    .find(|a| **a == v)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| {
                        DashboardError::BadQuery(format!(
                            "{k} {:?} is not one of {}",
                            v.chars().take(40).collect::<String>(),
                            allowed.join(", ")
                        ))
                    }),
            }
        };
        let filter = Self {
            tenant: text("tenant"),
            function: text("function"),
            tier: one_of("tier", &["storage", "compute"])?,
            start: one_of("start", &["warm", "assembled", "cold"])?,
        };
        for (k, v) in [("tenant", &filter.tenant), ("function", &filter.function)] {
            if v.as_ref().is_some_and(|v| v.len() > 128) {
                return Err(DashboardError::BadQuery(format!(
                    "{k} is longer than 128 bytes"
                )));
            }
        }
        Ok(filter)
    }

    /// Refuses a tenant or function the catalog does not know (a typo would otherwise show
    /// an empty stream forever).
    pub fn check_names(
        &self,
        catalog: &sandstorm_naming::catalog::Catalog,
    ) -> Result<(), DashboardError> {
        let tenant =
            match &self.tenant {
                Some(name) => Some(catalog.tenant_by_name(name).ok_or_else(|| {
                    DashboardError::BadQuery(format!("no tenant named {name:?}"))
                })?),
                None => None,
            };
        if let Some(function) = &self.function {
            let known = catalog
                .functions()
                .any(|f| f.name == *function && tenant.is_none_or(|t| t.id == f.tenant));
            if !known {
                return Err(DashboardError::BadQuery(match tenant {
                    Some(t) => format!("tenant {:?} has no function {function:?}", t.name),
                    None => format!("no function named {function:?}"),
                }));
            }
        }
        Ok(())
    }

    fn matches(&self, tenant: &str, function: &str, tier: &str, start: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.function.as_deref().is_none_or(|f| f == function)
            && self.tier.is_none_or(|t| t == tier)
            && self.start.is_none_or(|s| s == start)
    }
}

/// One `decisions` event: a batch as one connection sees it through its filter.
#[derive(Debug, Serialize)]
pub struct BatchEvent<'a> {
    pub seq: u64,
    pub at_unix_ms: u64,
    pub interval_ms: f64,
    /// Every decision in the interval, and per second.
    pub count: u64,
    pub rate_per_s: f64,
    /// Those matching the filter, and per second (exact, not sampled).
    pub matched: u64,
    pub matched_rate_per_s: f64,
    /// Matching decisions by tier and by start kind (exact).
    pub storage: u64,
    pub compute: u64,
    pub warm: u64,
    pub assembled: u64,
    pub cold: u64,
    /// The matching part of the batch's sample.
    pub sample: Vec<&'a Decision>,
    /// Decisions since the scheduler started.
    pub total: u64,
    /// Batches this connection lost by reading too slowly, since it connected.
    pub dropped_batches: u64,
}

pub fn batch_event<'a>(batch: &'a Batch, filter: &Filter, dropped: u64) -> BatchEvent<'a> {
    let mut e = BatchEvent {
        seq: batch.seq,
        at_unix_ms: batch.at_unix_ms,
        interval_ms: batch.interval_ms,
        count: batch.count,
        rate_per_s: per_s(batch.count, batch.interval_ms),
        matched: 0,
        matched_rate_per_s: 0.0,
        storage: 0,
        compute: 0,
        warm: 0,
        assembled: 0,
        cold: 0,
        sample: batch
            .sample
            .iter()
            .filter(|d| filter.matches(&d.tenant, &d.function, d.tier, d.start))
            .map(Arc::as_ref)
            .collect(),
        total: batch.total,
        dropped_batches: dropped,
    };
    for r in &batch.counts {
        if !filter.matches(&r.tenant, &r.function, r.tier, r.start) {
            continue;
        }
        e.matched += r.n;
        match r.tier {
            "storage" => e.storage += r.n,
            "compute" => e.compute += r.n,
            _ => {}
        }
        match r.start {
            "warm" => e.warm += r.n,
            "assembled" => e.assembled += r.n,
            "cold" => e.cold += r.n,
            _ => {}
        }
    }
    e.matched_rate_per_s = per_s(e.matched, batch.interval_ms);
    e
}

fn per_s(n: u64, interval_ms: f64) -> f64 {
    if interval_ms > 0.0 {
        n as f64 * 1e3 / interval_ms
    } else {
        0.0
    }
}

struct Client {
    batches: broadcast::Receiver<Arc<Batch>>,
    cluster: watch::Receiver<Arc<str>>,
    filter: Filter,
    dropped: u64,
    first: bool,
}

fn cluster_event(json: &str) -> Event {
    Event::default().event("cluster").data(json)
}

impl Client {
    async fn next(&mut self) -> Option<Event> {
        if self.first {
            self.first = false;
            let now = self.cluster.borrow_and_update().clone();
            return Some(cluster_event(&now));
        }
        loop {
            tokio::select! {
                r = self.batches.recv() => match r {
                    Ok(batch) => {
                        let e = batch_event(&batch, &self.filter, self.dropped);
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        return Some(Event::default().event("decisions").data(data));
                    }
                    Err(RecvError::Lagged(n)) => self.dropped += n,
                    Err(RecvError::Closed) => return None,
                },
                r = self.cluster.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    let now = self.cluster.borrow_and_update().clone();
                    return Some(cluster_event(&now));
                }
            }
        }
    }
}

pub async fn stream(
    State(d): State<Dashboard>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    let filter = Filter::parse(&query)?;
    if let Some(scheduler) = &d.scheduler {
        filter.check_names(&scheduler.lock().catalog)?;
    }
    let client = Client {
        batches: d.hub.subscribe(),
        cluster: d.cluster.clone(),
        filter,
        dropped: 0,
        first: true,
    };
    let events = stream::unfold(client, |mut c| async move {
        let e = c.next().await?;
        Some((Ok::<_, Infallible>(e), c))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn filter_names_must_exist() {
        let mut catalog = sandstorm_naming::catalog::Catalog::new();
        let demo = catalog.add_tenant("demo").unwrap();
        catalog
            .add_function(demo, sandstorm_naming::AppId(0), "echo", 16)
            .unwrap();
        let filter = |pairs: &[(&str, &str)]| Filter::parse(&q(pairs)).unwrap();
        assert!(
            filter(&[("tenant", "demo"), ("function", "echo")])
                .check_names(&catalog)
                .is_ok()
        );
        assert!(
            filter(&[("function", "echo")])
                .check_names(&catalog)
                .is_ok()
        );
        // (filter, message)
        let table = [
            (
                filter(&[("tenant", "acme")]),
                "bad query: no tenant named \"acme\"",
            ),
            (
                filter(&[("function", "ehco")]),
                "bad query: no function named \"ehco\"",
            ),
            (
                filter(&[("tenant", "demo"), ("function", "kv-sum")]),
                "bad query: tenant \"demo\" has no function \"kv-sum\"",
            ),
        ];
        for (f, says) in table {
            assert_eq!(f.check_names(&catalog).unwrap_err().to_string(), says);
        }
    }

    #[test]
    fn filters_are_checked() {
        assert_eq!(Filter::parse(&q(&[])).ok(), Some(Filter::default()));
        let f = Filter::parse(&q(&[("tier", "compute"), ("function", " kv-sum ")])).ok();
        assert_eq!(
            f,
            Some(Filter {
                function: Some("kv-sum".into()),
                tier: Some("compute"),
                ..Filter::default()
            })
        );
        // (query, message)
        let table = [
            (
                q(&[("tier", "gpu")]),
                "bad query: tier \"gpu\" is not one of storage, compute",
            ),
            (
                q(&[("start", "hot")]),
                "bad query: start \"hot\" is not one of warm, assembled, cold",
            ),
            (
                q(&[("colour", "red")]),
                "bad query: unknown parameter \"colour\"; this endpoint takes tenant, function, tier, start",
            ),
        ];
        for (query, says) in table {
            let e = Filter::parse(&query).expect_err(says);
            assert_eq!(e.to_string(), says);
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        }
    }
}
