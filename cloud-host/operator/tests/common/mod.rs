//! Shared by the in-process host tests: a host on 127.0.0.1 with every port
//! chosen by the OS, in `dir`.

use std::path::Path;

use vphone_operator::ServedHost;

/// Starts a host in `dir` (its sim phone `phone-1` may still be booting).
pub(crate) async fn start_host(dir: &Path) -> ServedHost {
    ServedHost::start_on_loopback(dir.to_path_buf(), sim_phone::SimKind::default().backends())
        .await
        .unwrap()
}
