//! Scheduling priorities of the threads on both ends of a session.
//!
//! Two classes of work share a machine's cores: latency paths (the QUIC
//! endpoint, sensor samples, touches, HCI packets) and bulk video work
//! (rendering, encoding, decoding). Video tolerates a late frame (it is
//! dropped downstream); a late sensor sample or HCI reply is not
//! recoverable. Measured on a 2-core machine at 250 Hz ticks, a runnable
//! latency thread could wait a full scheduler tick (4 ms) behind a video
//! thread even at nice 10, while the other core sat idle; at real-time
//! priority it runs at once.
//!
//! Real-time priority has a price where the peer is an ordinary process:
//! a waking real-time thread takes its previous core, preempting whatever
//! ordinary thread runs there, instead of looking for an idle core. The
//! host's HCI relay towards Bluetooth stacks (the emulator, bumble) and the
//! companion therefore stay ordinary; see ARCHITECTURE.md for who is what.
//!
//! - [`bulk_thread_priority`]: nice [`BULK_NICE`]; needs no privilege.
//! - [`latency_thread_priority`]: `SCHED_RR` at [`LATENCY_RT_PRIORITY`] where
//!   the process may (root, `CAP_SYS_NICE`, or `RLIMIT_RTPRIO` >= 1, e.g.
//!   systemd's `LimitRTPRIO=1`); otherwise the thread stays as it was.
//!   `SCHED_RESET_ON_FORK` is set with it, so threads and processes started
//!   from a latency thread (a video thread, an emulator) begin as ordinary
//!   threads instead of inheriting real-time priority.

use std::sync::atomic::{AtomicU8, Ordering};

/// Nice value for bulk video threads (rendering, encoding, decoding).
pub const BULK_NICE: i32 = 10;

/// Real-time (`SCHED_RR`) priority of latency threads: the lowest, above
/// every ordinary thread and below every other real-time thread (the
/// kernel's own and audio servers' among them).
pub const LATENCY_RT_PRIORITY: i32 = 1;

/// What [`latency_thread_priority`] achieved for a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyPriority {
    /// Real-time round robin (`SCHED_RR`) at [`LATENCY_RT_PRIORITY`].
    RealTime,
    /// Ordinary time sharing: the process may not use real-time priority,
    /// or the OS has none. The thread works as before; under load its
    /// wake-ups may wait up to a scheduler tick behind other threads.
    Normal,
}

/// 0: never asked; 1: real time; 2: normal.
static LATENCY_OUTCOME: AtomicU8 = AtomicU8::new(0);

/// Lowers the calling thread's scheduling priority to [`BULK_NICE`] (never
/// raises it), for bulk video work (rendering, encoding, decoding) that
/// shares a machine with latency-sensitive sensor, input and HCI traffic.
/// Lowering a priority needs no privilege; failure (or a non-Linux OS)
/// only leaves the thread as it was, logged at debug.
pub fn bulk_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        // On Linux the nice value is per thread: PRIO_PROCESS with a thread id
        // changes only that thread. A thread already nicer stays as it is.
        let now = rustix::process::getpriority_process(tid).unwrap_or(0);
        if now < BULK_NICE
            && let Err(e) = rustix::process::setpriority_process(tid, BULK_NICE)
        {
            tracing::debug!(error = %e, "cannot lower the thread's priority");
        }
    }
}

/// Raises the calling thread to real-time round robin at
/// [`LATENCY_RT_PRIORITY`] when the process may, for threads on a latency
/// path (the host's QUIC endpoint and sensor path). Such a
/// thread must not do bulk work: it would hold a core from every ordinary
/// thread (the kernel still keeps 5% of each core for them). Not permitted
/// (or not Linux): the thread stays as it was, logged at debug, and
/// [`LatencyPriority::Normal`] is returned. The first outcome in the
/// process is kept for [`latency_priority_outcome`].
#[must_use = "tell the operator when latency threads run without real-time priority"]
pub fn latency_thread_priority() -> LatencyPriority {
    let got = set_latency_priority();
    let code = match got {
        LatencyPriority::RealTime => 1,
        LatencyPriority::Normal => 2,
    };
    let _ = LATENCY_OUTCOME.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    got
}

/// The outcome of the first [`latency_thread_priority`] call in this
/// process; `None` before any.
#[must_use]
pub fn latency_priority_outcome() -> Option<LatencyPriority> {
    match LATENCY_OUTCOME.load(Ordering::Relaxed) {
        1 => Some(LatencyPriority::RealTime),
        2 => Some(LatencyPriority::Normal),
        _ => None,
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_latency_priority() -> LatencyPriority {
    let param = libc::sched_param {
        sched_priority: LATENCY_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler only reads `param`, a valid initialised
    // struct that outlives the call; pid 0 names the calling thread, so no
    // other thread or memory is affected. There is no safe wrapper (std and
    // rustix have none).
    let rc = unsafe {
        libc::sched_setscheduler(
            0,
            libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
            &raw const param,
        )
    };
    if rc == 0 {
        LatencyPriority::RealTime
    } else {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "no real-time priority for a latency thread"
        );
        LatencyPriority::Normal
    }
}

#[cfg(not(target_os = "linux"))]
fn set_latency_priority() -> LatencyPriority {
    LatencyPriority::Normal
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// (policy, nice) of the calling thread from /proc: fields 41 and 19.
    fn sched_of_this_thread() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let rest = stat.rsplit_once(')').expect("comm").1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        (
            f[41 - 3].parse().expect("policy"),
            f[19 - 3].parse().expect("nice"),
        )
    }

    #[test]
    fn bulk_priority_lowers_only_the_calling_thread() {
        let before = rustix::process::getpriority_process(None).expect("own priority");
        let bulk = std::thread::spawn(|| {
            bulk_thread_priority();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("thread priority")
        })
        .join()
        .expect("thread");
        assert_eq!(bulk, BULK_NICE.max(before));
        assert_eq!(
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("own"),
            before,
            "the caller's other threads keep their priority"
        );
    }

    #[test]
    fn latency_priority_is_real_time_where_permitted_and_not_inherited() {
        let (caller_policy, _) = sched_of_this_thread();
        let (got, latency, child) = std::thread::spawn(|| {
            let got = latency_thread_priority();
            let latency = sched_of_this_thread();
            // A video thread started from a latency thread.
            let child = std::thread::spawn(|| {
                bulk_thread_priority();
                sched_of_this_thread()
            })
            .join()
            .expect("child");
            (got, latency, child)
        })
        .join()
        .expect("thread");
        // Root normally may, unless its CAP_SYS_NICE was dropped: read the
        // effective capabilities rather than assume.
        let cap_sys_nice = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & (1 << 23) != 0);
        if cap_sys_nice {
            assert_eq!(got, LatencyPriority::RealTime, "CAP_SYS_NICE grants it");
        }
        match got {
            LatencyPriority::RealTime => assert_eq!(latency.0, 2, "SCHED_RR"),
            LatencyPriority::Normal => {
                assert_eq!(latency.0, caller_policy, "unchanged when not permitted");
            }
        }
        assert_eq!(latency_priority_outcome(), Some(got));
        assert_eq!(
            child.0, 0,
            "threads started from it are ordinary (SCHED_OTHER)"
        );
        let own_nice = rustix::process::getpriority_process(None).expect("own priority");
        assert_eq!(child.1, BULK_NICE.max(own_nice), "and can be made bulk");
        assert_eq!(
            sched_of_this_thread().0,
            caller_policy,
            "the caller is unchanged"
        );
    }
}
