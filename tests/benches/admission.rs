//! Admission under a flood of strangers (not a timed test): a live session
//! streams six sensors at 200 Hz while handsets the host has never enrolled
//! (fresh self-signed certificates) open QUIC connections as fast as they
//! can and are refused with UNAUTHORIZED.
//!
//! `cargo bench -p vphone-tests --bench admission` prints a table: the live
//! session's sensor latency p50/p99 without the flood (the baseline, same
//! process, same session setup) and with it, and the refusals per second the
//! host served meanwhile. The host's admission check runs off its latency
//! runtime (an indexed registry look-up on the blocking pool), so strangers
//! cost the live session CPU time only, never a wait behind the registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use device_bridge::{BridgeClientConfig, BridgeError, ClientSession, HandsetIdentity};
use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use sensor_proto::bridge::AppErrorCode;
use vphone_tests::{Handset, TestHost};

/// Concurrent strangers.
const STRANGERS: usize = 16;

struct Phase {
    received: Option<(u64, u64, usize)>,
    applied: Option<(u64, u64, usize)>,
    refused: u64,
    capped: u64,
    other: u64,
    secs: f64,
}

/// One live session of `secs`, with `STRANGERS` strangers knocking when
/// `flood`.
async fn phase(th: &TestHost, handset: &Handset, secs: f64, flood: bool) -> Phase {
    let cfg = mobile_client::config::load(&handset.dir).expect("companion config");
    let addr: SocketAddr = cfg.host.parse().expect("host address");
    let refused = Arc::new(AtomicU64::new(0));
    let capped = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(secs + 1.0);
    let mut knockers = Vec::new();
    if flood {
        for _ in 0..STRANGERS {
            let (refused, capped, other, pin) =
                (refused.clone(), capped.clone(), other.clone(), cfg.pin);
            knockers.push(tokio::spawn(async move {
                let identity = HandsetIdentity::generate().expect("identity");
                while Instant::now() < stop {
                    let mut config = BridgeClientConfig::new(addr, pin, identity.clone());
                    // From another address than the owner's, as a stranger
                    // elsewhere would be: the host caps each source.
                    config.bind_addr = Some(SocketAddr::from(([127, 0, 0, 3], 0)));
                    match ClientSession::connect(config).await {
                        Err(BridgeError::Refused {
                            code: AppErrorCode::Unauthorized,
                            ..
                        }) => refused.fetch_add(1, Ordering::Relaxed),
                        Err(BridgeError::Connection(quinn::ConnectionError::ConnectionClosed(
                            c,
                        ))) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
                            capped.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        // Let the flood reach its pace before the session starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let options = handset.options(SourceSpec::Synthetic { seed: 7 });
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    // The handset is another device: its own thread and runtime.
    let handset_thread = std::thread::spawn(move || {
        let rt = mobile_client::session::runtime().expect("handset runtime");
        rt.block_on(async move {
            let c = Companion::connect(options)
                .await
                .expect("companion connects");
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            let _ = report_tx.send(c.report());
            // Stay until the host's figures for the session are read.
            let _ = finish_rx.await;
            c.finish().await.expect("finish");
        });
    });
    let (r0, c0, t0) = (
        refused.load(Ordering::Relaxed),
        capped.load(Ordering::Relaxed),
        Instant::now(),
    );
    let report = report_rx.await.expect("handset report");
    let counted = t0.elapsed().as_secs_f64();
    let refused_in_session = refused.load(Ordering::Relaxed) - r0;
    let capped_in_session = capped.load(Ordering::Relaxed) - c0;
    let received = th.host.sessions.sensor_receive_latency(&report.session_id);
    let applied = th.host.sessions.sensor_latency(&report.session_id);
    let _ = finish_tx.send(());
    handset_thread.join().expect("handset thread");
    for k in knockers {
        let _ = k.await;
    }
    Phase {
        received,
        applied,
        refused: refused_in_session,
        capped: capped_in_session,
        other: other.load(Ordering::Relaxed),
        secs: counted,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = std::env::var("VPHONE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0_f64);
    let mut th = TestHost::start().await;
    let handset = th.enroll("bench", &["phone-1"]);
    let (_, sim) = th.phone("phone-1").await;
    sim.set_listening(
        [
            "acceleration",
            "gyroscope",
            "magnetic_field",
            "orientation",
            "acceleration_uncalibrated",
            "gyroscope_uncalibrated",
        ]
        .iter()
        .map(|n| ((*n).to_owned(), 200))
        .collect(),
    );
    let quiet = phase(&th, &handset, secs, false).await;
    let flood = phase(&th, &handset, secs, true).await;

    let ms = |l: Option<(u64, u64, usize)>, i: usize| {
        l.map_or(f64::NAN, |(a, b, _)| [a, b][i] as f64 / 1000.0)
    };
    println!();
    println!(
        "admission under a flood: live session (6 sensors x 200 Hz) while {STRANGERS} \
         unenrolled handsets reconnect in a loop ({secs:.0} s per phase)"
    );
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "measure", "under flood", "quiet", "ratio"
    );
    for (name, get, i) in [
        ("sensor -> received by the host p50 (ms)", 0, 0),
        ("sensor -> received by the host p99 (ms)", 0, 1),
        ("sensor -> applied p50 (ms)", 1, 0),
        ("sensor -> applied p99 (ms)", 1, 1),
    ] {
        let pick = |p: &Phase| ms(if get == 0 { p.received } else { p.applied }, i);
        let (f, q) = (pick(&flood), pick(&quiet));
        println!("{name:<40} {f:>12.2} {q:>12.2} {:>9.2}x", f / q);
    }
    println!(
        "{:<40} {:>12.0} {:>12} {:>10}",
        "strangers refused after TLS per second",
        flood.refused as f64 / flood.secs,
        0,
        "-"
    );
    println!(
        "{:<40} {:>12.0} {:>12} {:>10}",
        "strangers turned away at a cap per second",
        flood.capped as f64 / flood.secs,
        0,
        "-"
    );
    println!(
        "samples in the session: {} under flood, {} quiet; other outcomes for strangers: {}",
        flood.applied.map_or(0, |l| l.2),
        quiet.applied.map_or(0, |l| l.2),
        flood.other + quiet.other
    );
    println!("goal: sensor -> received p99 < 2 ms under the flood");
    th.shutdown().await;
}
