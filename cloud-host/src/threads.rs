//! Threads of their own for work that must not share the async workers:
//! latency-sensitive paths (sensors) and bulk video work (screen feed,
//! encoder, the sim's display), each on its own single-threaded runtime.

use std::future::Future;

use crate::HostError;

/// Scheduling priority of a thread started by [`spawn_on_own_runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Latency-sensitive work (sensors).
    Normal,
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
pub(crate) fn spawn_on_own_runtime(
    name: &str,
    priority: Priority,
    work: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HostError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HostError::io(format!("starting the {name} runtime"), e))?;
    std::thread::Builder::new()
        .name(format!("vphone-{name}"))
        .spawn(move || {
            if priority == Priority::Bulk {
                device_bridge::bulk_thread_priority();
            }
            rt.block_on(work)
        })
        .map_err(|e| HostError::io(format!("starting the {name} thread"), e))?;
    Ok(())
}

/// Like [`spawn_on_own_runtime`], but `work` also stops when the returned
/// sender is dropped.
///
/// # Errors
/// [`HostError::Io`] when the runtime or the thread cannot start.
pub(crate) fn spawn_until_dropped(
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
