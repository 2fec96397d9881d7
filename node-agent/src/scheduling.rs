//! How the kernel schedules the agent's threads: the one place that sets a thread's CPU
//! scheduling class (`sched_setattr`), for both roles. Best effort throughout: a kernel that
//! refuses leaves the thread as it was.
//!
//! - [`prefer_latency`]: the agent's own threads (its gRPC and I/O threads, the compute role's
//!   zygote and every process forked from it) get the shortest time slice. On a busy machine a
//!   thread that wakes otherwise waits for the running task's default slice (a few
//!   milliseconds), several times on the way from a request to a running function. Its CPU
//!   share does not change; it is scheduled sooner and in shorter turns.
//! - [`run_below_agent`]: threads that run tenant code inside the agent (the storage role's
//!   WebAssembly workers) keep a normal policy but a lower weight, so the threads that answer
//!   requests are woken ahead of a core full of spinning functions. The workers still get every
//!   cycle the agent's threads leave: the weight matters only while both want the core, and
//!   between tenants the workers' own fair queue decides.
//! - [`run_when_idle`]: `SCHED_IDLE`, for the compute role's forkers until they join a
//!   container (see `compute::zygote`), and [`run_normally`] to leave it.

/// The shortest time slice the scheduler grants (EEVDF's custom slice, Linux 6.12 and later;
/// older kernels ignore it), in nanoseconds.
const LATENCY_SLICE_NS: u64 = 100_000;

/// The nice value of threads running tenant code inside the agent: weight 15 against the agent
/// threads' 1024 (nice 0), so a woken agent thread preempts a worker at once. The workers still
/// get every cycle the agent leaves, which is nearly all of them: the agent's threads only
/// carry requests. (Measured with `sandstorm bench isolation`: nice 10 left the quiet tenant's
/// p99 7.7x its quiet figure, nice 19 2.6-3.7x, `SCHED_IDLE` 6-8x, since it also delays the
/// quiet tenant's own short invocations behind any other runnable thread.)
pub const TENANT_CODE_NICE: i32 = 19;

/// The calling thread, and the threads and processes it starts from now on, get the shortest
/// time slice (see the module docs).
pub fn prefer_latency() {
    set(None, None);
}

/// The calling thread runs tenant code: nice [`TENANT_CODE_NICE`], short slice kept.
pub fn run_below_agent() {
    set(None, Some(TENANT_CODE_NICE));
}

/// The calling thread runs only when nothing else wants the CPU (`SCHED_IDLE`; leaving it
/// needs `CAP_SYS_NICE`), with the short slice.
pub fn run_when_idle() {
    set(Some(libc::SCHED_IDLE), None);
}

/// Back to the normal policy from [`run_when_idle`], while the thread may (`CAP_SYS_NICE`).
pub fn run_normally() {
    set(Some(libc::SCHED_OTHER), None);
}

/// Sets the calling thread's short slice and, if given, its policy (a normal one) and nice
/// value. Threads of another policy (real-time, deadline) are left alone.
#[allow(unsafe_code)]
fn set(policy: Option<i32>, nice: Option<i32>) {
    /// `struct sched_attr` (linux/sched/types.h).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
    let mut attr = SchedAttr::default();
    let size = size_of::<SchedAttr>() as u32;
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &raw mut attr,
            libc::c_uint::from(size),
            0,
        )
    };
    let normal = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    if got != 0 || !normal.contains(&(attr.policy as i32)) {
        return;
    }
    if let Some(policy) = policy {
        attr.policy = policy as u32;
    }
    if let Some(nice) = nice {
        attr.nice = nice;
    }
    attr.size = size;
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.runtime = LATENCY_SLICE_NS;
    // SAFETY: the kernel reads `attr`; the policy and nice value are the thread's own.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's nice value as the kernel reports it.
    #[allow(unsafe_code)]
    fn nice_now() -> i32 {
        // SAFETY: getpriority reads the calling thread's (tid 0 = caller) nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn tenant_code_threads_run_at_the_lower_weight_and_others_keep_theirs() {
        let before = nice_now();
        let worker = std::thread::spawn(|| {
            run_below_agent();
            nice_now()
        })
        .join()
        .unwrap();
        assert_eq!(worker, TENANT_CODE_NICE.max(before));
        assert_eq!(nice_now(), before, "only the calling thread changes");
    }
}
