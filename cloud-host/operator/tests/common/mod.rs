//! Shared by the in-process host tests: a host on 127.0.0.1 with every port
//! chosen by the OS, in `dir`.

use std::path::Path;

use host_core::config::ConfigLayer;
use host_core::daemon::Listeners;
use vphone_operator::ServedHost;

/// Starts a host in `dir` (its sim phone `phone-1` may still be booting).
pub(crate) async fn start_host(dir: &Path) -> ServedHost {
    let cfg = ConfigLayer {
        data_dir: Some(dir.to_path_buf()),
        operator_listen: Some("127.0.0.1:0".parse().unwrap()),
        quic_listen: Some("127.0.0.1:0".parse().unwrap()),
        netsim_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ConfigLayer::default()
    }
    .resolve(&|_| None);
    let listeners = Listeners::bind(&cfg).await.unwrap();
    ServedHost::start(&cfg, listeners, sim_phone::SimKind::default().backends())
        .await
        .unwrap()
}
