//! Threads of their own for work that must not share the async workers:
//! latency-sensitive paths (sensors) and bulk video work (screen feed,
//! encoder, the sim's display), each on its own single-threaded runtime;
//! and the latency runtime that serves handsets.

use std::future::Future;

use device_bridge::LatencyPriority;

use crate::HostError;

/// Scheduling priority of a thread started by [`spawn_on_own_runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Latency-sensitive work (sensors): real-time priority where the
    /// process may, see [`device_bridge::latency_thread_priority`].
    Latency,
    /// Bulk video work: see [`device_bridge::bulk_thread_priority`].
    Bulk,
}

/// Runs `work` on a new thread named `vphone-{name}` with its own
/// single-threaded runtime, away from the shared async workers (so
/// latency-sensitive or bulky work never waits behind, or delays, the rest
/// of the host). It runs until `work` ends.
///
/// # Errors
/// [`HostError::Io`] when the runtime or the thread cannot start.
pub fn spawn_on_own_runtime(
    name: &str,
    priority: Priority,
    work: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HostError> {
    // The runtime is built on the new thread: were the thread refused, a
    // runtime dropped here (possibly inside async code) would panic.
    let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
    // Its blocking-pool threads (`spawn_blocking`) carry the name too, so
    // a thread count by name says whose they are.
    let pool_name = format!("vphone-{name}-b");
    std::thread::Builder::new()
        .name(format!("vphone-{name}"))
        .spawn(move || {
            // Each of these runtimes serves one phone or one session: two
            // blocking threads are plenty (a sim phone's image writes), and
            // idle ones leave after 2 s instead of tokio's 10 s, so hundreds
            // of phones do not keep hundreds of parked threads.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .thread_name(pool_name)
                .max_blocking_threads(2)
                .thread_keep_alive(std::time::Duration::from_secs(2))
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = built_tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            match priority {
                Priority::Bulk => device_bridge::bulk_thread_priority(),
                Priority::Latency => {
                    let _ = device_bridge::latency_thread_priority();
                }
            }
            rt.block_on(work);
        })
        .map_err(|e| HostError::io(format!("starting the {name} thread"), e))?;
    // A runtime builds in microseconds; this wait is that long.
    match built_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HostError::io(format!("starting the {name} runtime"), e)),
        Err(_) => Err(HostError::io(
            format!("starting the {name} runtime"),
            std::io::Error::other("its thread ended first"),
        )),
    }
}

/// Like [`spawn_on_own_runtime`], but `work` also stops when the returned
/// sender is dropped.
///
/// # Errors
/// [`HostError::Io`] when the runtime or the thread cannot start.
pub fn spawn_until_dropped(
    name: &str,
    priority: Priority,
    work: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::sync::oneshot::Sender<()>, HostError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    spawn_on_own_runtime(name, priority, async move {
        tokio::select! {
            () = work => {}
            _ = stopped => {}
        }
    })?;
    Ok(stop)
}

/// A multi-threaded runtime for the latency paths: the QUIC endpoint that
/// serves handsets (sensors, touches, HCI) and the session router's tasks.
/// Its workers run at real-time priority where the process may, so a
/// datagram is read the moment it arrives even when video threads keep
/// every core busy; everything CPU-heavy (encoding, rendering, screenshots)
/// runs on other threads. Its blocking-pool threads (`spawn_blocking`) get
/// the same priority (tokio starts them with the same hook), so blocking
/// calls made there must wait on I/O, not compute. Dropping it stops its
/// tasks without waiting (also from async code, which a plain runtime
/// forbids).
#[derive(Debug)]
pub struct LatencyRuntime {
    handle: tokio::runtime::Handle,
    rt: Option<tokio::runtime::Runtime>,
}

impl LatencyRuntime {
    /// Starts `workers` threads named `vphone-{name}`.
    ///
    /// # Errors
    /// [`HostError::Io`] when the runtime cannot start.
    pub fn start(name: &str, workers: usize) -> Result<Self, HostError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(format!("vphone-{name}"))
            .on_thread_start(|| {
                let _ = device_bridge::latency_thread_priority();
            })
            .enable_all()
            .build()
            .map_err(|e| HostError::io(format!("starting the {name} runtime"), e))?;
        Ok(Self {
            handle: rt.handle().clone(),
            rt: Some(rt),
        })
    }

    /// Where to spawn onto it, or enter it (to create sockets on it).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The priority its workers got (the first outcome in the process:
    /// every thread of one process has the same permission).
    pub async fn priority(&self) -> LatencyPriority {
        // A task runs on a worker, which has set its priority by then.
        self.handle()
            .spawn(async { device_bridge::latency_priority_outcome() })
            .await
            .ok()
            .flatten()
            .unwrap_or(LatencyPriority::Normal)
    }
}

impl Drop for LatencyRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
