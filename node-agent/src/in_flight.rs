//! The invocations a node holds now, by id: what its stats report as `running`, so the
//! scheduler's view is rebuilt from the node's truth at every message (see the scheduler's
//! `placement::view`). Both roles enter an invocation here when its request arrives and leave
//! when its handler ends, however it ends: the guard does it on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Invocation ids held now, each with how many invocations hold it (a caller may reuse an id,
/// and direct callers send 0).
#[derive(Debug, Default)]
pub struct InFlight {
    ids: Mutex<HashMap<u64, u32>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ids` arrived (one invocation, or a chain's steps): held until the guard drops.
    pub fn enter(self: &Arc<Self>, ids: &[u64]) -> Held {
        let mut held = self.lock();
        for &id in ids {
            *held.entry(id).or_default() += 1;
        }
        Held {
            registry: Arc::clone(self),
            ids: ids.to_vec(),
        }
    }

    /// Every id held, once per invocation holding it.
    pub fn ids(&self) -> Vec<u64> {
        let held = self.lock();
        let mut ids = Vec::with_capacity(held.len());
        for (&id, &n) in held.iter() {
            ids.extend(std::iter::repeat_n(id, n as usize));
        }
        ids
    }

    /// Invocations held.
    pub fn len(&self) -> usize {
        self.lock().values().map(|&n| n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// An entry in [`InFlight`]; leaves it on drop.
#[derive(Debug)]
pub struct Held {
    registry: Arc<InFlight>,
    ids: Vec<u64>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.registry.lock();
        for id in &self.ids {
            if let Some(n) = held.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    held.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_held_once_per_invocation_until_its_guard_drops() {
        let in_flight = Arc::new(InFlight::default());
        let a = in_flight.enter(&[7]);
        let b = in_flight.enter(&[7, 8]);
        let mut ids = in_flight.ids();
        ids.sort_unstable();
        assert_eq!(ids, [7, 7, 8]);
        drop(a);
        let mut ids = in_flight.ids();
        ids.sort_unstable();
        assert_eq!(ids, [7, 8]);
        drop(b);
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.len(), 0);
    }
}
