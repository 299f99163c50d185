//! vphone's shared test fixtures, used by every crate's tests.
//!
//! * [`net::FaultProxy`]: a UDP proxy between a handset and a host that
//!   injects the faults real networks have (independent and bursty loss,
//!   delay and jitter, reordering, duplication, a bandwidth cap, blackouts,
//!   a new source address), seeded so a failing run replays exactly. This
//!   kernel has no `tc netem`; the proxy is the userspace replacement.
//! * [`process::Proc`]: a child process with a log file, readiness waits
//!   and SIGTERM-then-SIGKILL stops, killed on drop.
//! * [`netns::Netns`]: a network namespace behind a veth pair, removed on
//!   drop; [`netns::DelayLine`], a userspace UDP delay for the same path.
//! * [`postgres::Postgres`]: a throwaway PostgreSQL server (its own
//!   cluster on a free port), stopped and deleted on drop.
//! * [`tools`]: the external checkers (ffprobe, tshark) and root, failing
//!   a test when missing unless `VPHONE_ALLOW_MISSING_TOOLS` says skip.
//! * [`eventually`]: poll a condition until it holds or a deadline passes.
//!
//! It depends on no vphone crate, so the lowest crate's tests can use it.

pub mod net;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod tools;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Ok` or `timeout` passes; then
/// returns the last error text.
///
/// # Errors
/// The last error `f` returned, once `timeout` has passed.
pub async fn eventually<T, F: Future<Output = Result<T, String>>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                return Err(format!("still failing after {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A built binary of the workspace (`vphone-host`, `vphonectl`,
/// `vphone-companion`), next to the running test executable's directory.
///
/// # Panics
/// When it has not been built, saying how to build it.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --bins; scripts/test does)",
        path.display()
    );
    path
}
