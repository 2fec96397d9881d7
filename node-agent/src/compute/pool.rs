//! A pool of pre-created parts, refilled in the background to a target size.
//!
//! Generic over the part and its factory, so the logic (take, refill, shut down, count what
//! exists) is tested without root; the compute node instantiates one per part kind.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

type Factory<T> = Box<dyn Fn() -> std::io::Result<T> + Send + Sync>;

struct Shared<T> {
    items: Mutex<Vec<T>>,
    wake: Condvar,
    stop: AtomicBool,
    target: AtomicUsize,
    factory: Factory<T>,
    created: AtomicU64,
    failures: AtomicU64,
    /// When a part was last taken, as nanoseconds since `epoch`.
    taken_at: AtomicU64,
    epoch: Instant,
}

impl<T> Shared<T> {
    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A pool of `T`.
pub struct Pool<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    name: &'static str,
    refill: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pool<T> {
    /// A pool kept at `target` parts made by `factory` on a background thread.
    pub fn new(
        name: &'static str,
        target: usize,
        factory: impl Fn() -> std::io::Result<T> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            items: Mutex::new(Vec::with_capacity(target)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            target: AtomicUsize::new(target),
            factory: Box::new(factory),
            created: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            taken_at: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let worker = shared.clone();
        let refill = std::thread::Builder::new()
            .name(format!("pool-{name}"))
            .spawn(move || refill_loop(&worker, name))
            .ok();
        Self {
            shared,
            name,
            refill,
        }
    }

    /// A pooled part, if one is ready. The refill thread is not woken: it finds the gap on
    /// its next look and replaces the part [`REFILL_DELAY`] after it was taken, so neither
    /// its wake-up nor its work competes with the assembly that took the part.
    pub fn take(&self) -> Option<T> {
        let part = self
            .shared
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        self.shared
            .taken_at
            .store(self.shared.since_epoch(), Ordering::Relaxed);
        part
    }

    /// A part from the pool, or one made now on the caller's thread; whether it was pooled.
    pub fn take_or_make(&self) -> std::io::Result<(T, bool)> {
        match self.take() {
            Some(part) => Ok((part, true)),
            None => {
                self.shared.created.fetch_add(1, Ordering::Relaxed);
                Ok(((self.shared.factory)()?, false))
            }
        }
    }

    /// Makes a part now, bypassing the pool (what building on the critical path costs).
    pub fn make(&self) -> std::io::Result<T> {
        self.shared.created.fetch_add(1, Ordering::Relaxed);
        (self.shared.factory)()
    }

    /// Parts ready now.
    pub fn ready(&self) -> usize {
        self.shared
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The size the pool is refilled to.
    pub fn target(&self) -> usize {
        self.shared.target.load(Ordering::Relaxed)
    }

    /// Changes the size the pool is refilled to. Parts beyond a smaller size are released now,
    /// on the caller's thread; a larger one is filled in the background.
    pub fn set_target(&self, target: usize) {
        self.shared.target.store(target, Ordering::Relaxed);
        let surplus: Vec<T> = {
            let mut items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner());
            let keep = items.len().min(target);
            items.split_off(keep)
        };
        drop(surplus);
        self.shared.wake.notify_all();
    }

    /// Parts made so far (pooled and on demand).
    pub fn created(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed)
    }

    /// Blocks until the pool is full (for start-up and benchmarks), or `timeout` passes.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner());
        while items.len() < self.target() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            items = self
                .shared
                .wake
                .wait_timeout(items, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// How long a refill waits after a part was taken (and how often a full pool's refill thread
/// looks for a gap).
pub const REFILL_DELAY: Duration = Duration::from_millis(20);

fn refill_loop<T>(shared: &Shared<T>, name: &str) {
    while !shared.stop.load(Ordering::Relaxed) {
        let missing = {
            let items = shared.items.lock().unwrap_or_else(|e| e.into_inner());
            let missing = shared
                .target
                .load(Ordering::Relaxed)
                .saturating_sub(items.len());
            if missing == 0 {
                let _ = shared.wake.wait_timeout(items, REFILL_DELAY);
                continue;
            }
            missing
        };
        // Let the assembly that took the part finish before competing with it for the CPU.
        let since_take = shared
            .since_epoch()
            .saturating_sub(shared.taken_at.load(Ordering::Relaxed));
        std::thread::sleep(REFILL_DELAY.saturating_sub(Duration::from_nanos(since_take)));
        for _ in 0..missing {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            match (shared.factory)() {
                Ok(part) => {
                    shared.created.fetch_add(1, Ordering::Relaxed);
                    let mut items = shared.items.lock().unwrap_or_else(|e| e.into_inner());
                    // The target may have been lowered meanwhile: a surplus part is dropped.
                    if items.len() < shared.target.load(Ordering::Relaxed) {
                        items.push(part);
                    }
                    drop(items);
                    shared.wake.notify_all();
                }
                Err(e) => {
                    let failures = shared.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if failures.is_power_of_two() {
                        warn!(pool = name, error = %e, failures, "could not make a part; retrying");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl<T: Send + 'static> Drop for Pool<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(t) = self.refill.take() {
            let _ = t.join();
        }
        // Parts are dropped here, on the owner's thread (their Drop releases them).
        self.shared
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A part that counts how many exist, as a leak check would.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn counting_pool(target: usize) -> (Pool<Counted>, Arc<AtomicUsize>) {
        let live = Arc::new(AtomicUsize::new(0));
        let l = live.clone();
        let pool = Pool::new("test", target, move || {
            l.fetch_add(1, Ordering::SeqCst);
            Ok(Counted(l.clone()))
        });
        (pool, live)
    }

    #[test]
    fn refills_to_target_after_takes() {
        let (pool, live) = counting_pool(3);
        assert!(pool.wait_full(Duration::from_secs(10)));
        assert_eq!((pool.ready(), live.load(Ordering::SeqCst)), (3, 3));
        let a = pool.take().expect("pooled");
        let b = pool.take().expect("pooled");
        assert!(pool.wait_full(Duration::from_secs(10)));
        // 3 in the pool + 2 taken.
        assert_eq!(live.load(Ordering::SeqCst), 5);
        drop((a, b));
        assert_eq!(live.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn an_empty_pool_makes_on_demand_and_dropping_it_leaks_nothing() {
        let (pool, live) = counting_pool(0);
        let (part, pooled) = pool.take_or_make().expect("made");
        assert!(!pooled);
        assert_eq!(live.load(Ordering::SeqCst), 1);
        drop(part);
        let (pool2, live2) = counting_pool(4);
        assert!(pool2.wait_full(Duration::from_secs(10)));
        drop((pool, pool2));
        assert_eq!(
            (live.load(Ordering::SeqCst), live2.load(Ordering::SeqCst)),
            (0, 0)
        );
    }

    #[test]
    fn a_new_target_releases_the_surplus_at_once_and_fills_a_larger_one() {
        let (pool, live) = counting_pool(4);
        assert!(pool.wait_full(Duration::from_secs(10)));
        pool.set_target(1);
        assert_eq!((pool.ready(), live.load(Ordering::SeqCst)), (1, 1));
        pool.set_target(6);
        assert!(pool.wait_full(Duration::from_secs(10)));
        assert_eq!((pool.target(), pool.ready()), (6, 6));
        drop(pool);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}
