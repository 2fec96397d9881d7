//! How a simulated node shares its cores among the work placed on it.
//!
//! - [`CpuModel::Fifo`]: at most `cores` jobs run, each on a core of its own at full speed; the
//!   rest wait in arrival order (a worker-pool node, like the storage node's per-core run queues).
//! - [`CpuModel::Shared`]: every job runs at once and the cores are shared fairly: with n jobs on
//!   c cores each progresses at min(1, c/n) (processor sharing, roughly what Linux CFS gives
//!   containers, and the model of the DSLab FaaS simulator).
//!
//! Processor sharing is simulated with a virtual clock: `work` advances by `c / max(c, n)` per
//! microsecond, and a job that needs w microseconds of work finishes when `work` reaches its tag
//! `work_at_start + w`, so only the smallest tag needs an event and each change costs O(log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How a node's cores are shared.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum CpuModel {
    #[default]
    Fifo,
    Shared,
}

/// A unit of work on a node: what the engine does when it finishes is its business.
pub(super) type JobId = u64;

/// One node's cores.
#[derive(Debug)]
pub(super) enum NodeCpu {
    Fifo {
        cores: u32,
        running: u32,
        waiting: VecDeque<(JobId, u64)>,
    },
    Shared(SharedCpu),
}

#[derive(Debug)]
pub(super) struct SharedCpu {
    cores: f64,
    work: f64,
    last_us: u64,
    jobs: BinaryHeap<Reverse<(Tag, JobId)>>,
    /// The earliest wake-up already scheduled. A change that makes the next completion later
    /// (the usual effect of one more job) schedules nothing: that wake-up will find out and
    /// schedule the next one. So most submissions add no event at all.
    pending_wake_us: Option<u64>,
}

/// A finish tag; f64 ordered totally.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tag(f64);
impl Eq for Tag {}
impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Tag {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What the engine must do after a change to a node's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing new to schedule.
    Nothing,
    /// This job started now and ends after `work_us` (FIFO).
    Started { job: JobId, ends_in_us: u64 },
    /// Wake the node at this time to collect finished jobs (shared).
    WakeAt { at_us: u64 },
}

impl NodeCpu {
    pub fn new(model: CpuModel, cores: u32) -> Self {
        match model {
            CpuModel::Fifo => NodeCpu::Fifo {
                cores: cores.max(1),
                running: 0,
                waiting: VecDeque::new(),
            },
            CpuModel::Shared => NodeCpu::Shared(SharedCpu {
                cores: f64::from(cores.max(1)),
                work: 0.0,
                last_us: 0,
                jobs: BinaryHeap::new(),
                pending_wake_us: None,
            }),
        }
    }

    /// Add a job needing `work_us` of one core at `now_us`.
    pub fn submit(&mut self, job: JobId, work_us: u64, now_us: u64) -> Next {
        match self {
            NodeCpu::Fifo {
                cores,
                running,
                waiting,
            } => {
                if *running < *cores {
                    *running += 1;
                    Next::Started {
                        job,
                        ends_in_us: work_us,
                    }
                } else {
                    waiting.push_back((job, work_us));
                    Next::Nothing
                }
            }
            NodeCpu::Shared(s) => {
                s.advance(now_us);
                s.jobs.push(Reverse((Tag(s.work + work_us as f64), job)));
                s.wake(now_us)
            }
        }
    }

    /// FIFO: a job finished; start the next waiting one, if any.
    pub fn fifo_finished(&mut self) -> Next {
        match self {
            NodeCpu::Fifo {
                running, waiting, ..
            } => match waiting.pop_front() {
                Some((job, work_us)) => Next::Started {
                    job,
                    ends_in_us: work_us,
                },
                None => {
                    *running = running.saturating_sub(1);
                    Next::Nothing
                }
            },
            NodeCpu::Shared(_) => Next::Nothing,
        }
    }

    /// Shared: a wake-up fired at `now_us`; push the finished jobs to `done` and say when to
    /// wake next.
    pub fn shared_wake(&mut self, now_us: u64, done: &mut Vec<JobId>) -> Next {
        let NodeCpu::Shared(s) = self else {
            return Next::Nothing;
        };
        if s.pending_wake_us.is_some_and(|p| p <= now_us) {
            s.pending_wake_us = None;
        }
        s.advance(now_us);
        // Half a microsecond of slack absorbs the rounding of wake-up times to whole microseconds.
        while let Some(Reverse((Tag(tag), job))) = s.jobs.peek().copied() {
            if tag > s.work + 0.5 {
                break;
            }
            s.jobs.pop();
            done.push(job);
        }
        s.wake(now_us)
    }
}

impl SharedCpu {
    fn speed(&self) -> f64 {
        let n = self.jobs.len() as f64;
        if n <= self.cores { 1.0 } else { self.cores / n }
    }

    fn advance(&mut self, now_us: u64) {
        let dt = now_us.saturating_sub(self.last_us) as f64;
        self.work += dt * self.speed();
        self.last_us = now_us;
    }

    fn wake(&mut self, now_us: u64) -> Next {
        let Some(Reverse((Tag(tag), _))) = self.jobs.peek() else {
            return Next::Nothing;
        };
        let at_us =
            now_us.saturating_add(((tag - self.work).max(0.0) / self.speed()).ceil() as u64);
        if self.pending_wake_us.is_some_and(|p| p <= at_us) {
            return Next::Nothing;
        }
        self.pending_wake_us = Some(at_us);
        Next::WakeAt { at_us }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_runs_cores_jobs_then_queues() {
        let mut cpu = NodeCpu::new(CpuModel::Fifo, 2);
        assert_eq!(
            cpu.submit(1, 10, 0),
            Next::Started {
                job: 1,
                ends_in_us: 10
            }
        );
        assert_eq!(
            cpu.submit(2, 20, 0),
            Next::Started {
                job: 2,
                ends_in_us: 20
            }
        );
        assert_eq!(cpu.submit(3, 30, 0), Next::Nothing);
        assert_eq!(
            cpu.fifo_finished(),
            Next::Started {
                job: 3,
                ends_in_us: 30
            }
        );
        assert_eq!(cpu.fifo_finished(), Next::Nothing);
    }

    #[test]
    fn shared_cores_slow_everyone_down_fairly() {
        // 1 core, two jobs of 100 us from t=0: each runs at 1/2, both end at 200.
        let mut cpu = NodeCpu::new(CpuModel::Shared, 1);
        // The first job asks for a wake-up at 100; the second makes both end at 200, later than
        // the pending wake-up, so it schedules nothing.
        assert_eq!(cpu.submit(1, 100, 0), Next::WakeAt { at_us: 100 });
        assert_eq!(cpu.submit(2, 100, 0), Next::Nothing);
        let mut done = Vec::new();
        // At 100 each has had 50 us of work: nothing done, wake again at 200.
        assert_eq!(cpu.shared_wake(100, &mut done), Next::WakeAt { at_us: 200 });
        assert!(done.is_empty());
        assert_eq!(cpu.shared_wake(200, &mut done), Next::Nothing);
        done.sort_unstable();
        assert_eq!(done, vec![1, 2]);
    }

    #[test]
    fn shared_job_ends_early_when_the_other_leaves() {
        // 1 core: job 1 (50 us) and job 2 (100 us) at t=0. Both at half speed until job 1 is done
        // at t=100 (50 us of work each); job 2 then has 50 us left at full speed: ends at 150.
        let mut cpu = NodeCpu::new(CpuModel::Shared, 1);
        assert_eq!(cpu.submit(1, 50, 0), Next::WakeAt { at_us: 50 });
        assert_eq!(cpu.submit(2, 100, 0), Next::Nothing);
        let mut done = Vec::new();
        assert_eq!(cpu.shared_wake(50, &mut done), Next::WakeAt { at_us: 100 });
        assert_eq!(cpu.shared_wake(100, &mut done), Next::WakeAt { at_us: 150 });
        assert_eq!(done, vec![1]);
        assert_eq!(cpu.shared_wake(150, &mut done), Next::Nothing);
        assert_eq!(done, vec![1, 2]);
    }

    #[test]
    fn an_earlier_end_schedules_an_earlier_wake() {
        // 2 cores: a 1,000 us job, then at t=0 a 10 us job: its end (10) is before the pending
        // wake-up (1,000), so it asks for its own.
        let mut cpu = NodeCpu::new(CpuModel::Shared, 2);
        assert_eq!(cpu.submit(1, 1_000, 0), Next::WakeAt { at_us: 1_000 });
        assert_eq!(cpu.submit(2, 10, 0), Next::WakeAt { at_us: 10 });
    }

    proptest::proptest! {
        /// No core is ever oversubscribed: a FIFO node runs at most `cores` jobs at once, starts
        /// a waiting one exactly when one finishes, and loses none.
        #[test]
        fn fifo_never_runs_more_than_its_cores(cores in 1u32..16, ops in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..400)) {
            let mut cpu = NodeCpu::new(CpuModel::Fifo, cores);
            let (mut running, mut waiting, mut next_id) = (0u32, 0u32, 0u64);
            for submit in ops {
                if submit || running == 0 {
                    next_id += 1;
                    match cpu.submit(next_id, 10, 0) {
                        Next::Started { .. } => running += 1,
                        Next::Nothing => waiting += 1,
                        Next::WakeAt { .. } => proptest::prop_assert!(false, "FIFO never asks for a wake-up"),
                    }
                } else {
                    match cpu.fifo_finished() {
                        Next::Started { .. } => waiting -= 1,
                        Next::Nothing => running -= 1,
                        Next::WakeAt { .. } => proptest::prop_assert!(false, "FIFO never asks for a wake-up"),
                    }
                }
                proptest::prop_assert!(running <= cores);
                proptest::prop_assert!(waiting == 0 || running == cores);
            }
        }
    }
}
