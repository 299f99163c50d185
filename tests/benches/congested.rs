//! Video on a congested path (a benchmark, not a timed test): a host with
//! its sim phone, the real companion behind the testkit's fault proxy, the
//! Sensor Lab moving and a tap every 250 ms, on paths slower than the
//! encoder's 4 Mbit/s cap. Each path runs twice in this process: with the
//! host pacing video to the path (the default) and, as the baseline,
//! without (`video_adapt = false`: every frame is written into the
//! connection's send buffer at once, as before).
//!
//! `cargo bench -p vphone-tests --bench congested` prints, per path and
//! mode: glass-to-glass p50/p99 (phone capture -> decoded on the handset,
//! over every picture of the run), pictures per second, video kbit/s,
//! keyframes, and the p99 ratio baseline / paced. `VPHONE_BENCH_SECONDS`
//! sets each run's length (default 12).
//!
//! Then Bluetooth on a lossy path: the bumble testbed's central, as the
//! phone's stack, scans, connects, pairs (LE Secure Connections, passkey)
//! and reads the encrypted characteristic through the handset's lent radio
//! while the Sensor Lab moves (video flowing), on a clean path and at 5%
//! loss each way with 25 ms +- 10 ms jitter; it prints the time from the
//! stack's power-on to the encrypted value (median of 3 runs) and the
//! ratio lossy / clean. Needs the bumble venv (`scripts/setup`).

use std::time::Duration;

use mobile_client::radio::{RadioOptions, RadioSpec};
use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use vphone_testkit::net::{FaultProxy, Faults, Loss};
use vphone_tests::TestHost;
use vphone_tests::bumble::Testbed;

/// Seconds from the central's power-on to the encrypted value, with video
/// flowing, on a path with `faults`.
async fn pairing_seconds(faults: Faults) -> f64 {
    let mut th = TestHost::start().await;
    let bed = Testbed::start(&th.scratch("bt")).await;
    let handset = th.enroll("radio", &["phone-1"]);
    let proxy = FaultProxy::start(handset.host_addr(), 0xb1e_10c5)
        .await
        .expect("proxy");
    handset.point_at(proxy.addr());
    let mut o = handset.options(SourceSpec::Synthetic { seed: 7 });
    o.radio = Some(RadioOptions::new(
        bed.radio_spec().parse::<RadioSpec>().expect("radio spec"),
    ));
    let companion = Companion::connect(o)
        .await
        .expect("companion lends its radio");
    th.radio_attached("phone-1").await;
    proxy.set_both(faults);
    let addr = th.host.attach.endpoint("phone-1").expect("attach point");
    let mut central = bed.central(
        &format!("android-netsim:{addr},name=phone-1"),
        &["--timeout", "120"],
    );
    let flow = Duration::from_secs(120);
    let powered = central.expect("powered", flow).await;
    let value = central.expect("value", flow).await;
    let secs = value.json["t"].as_f64().unwrap_or(f64::NAN)
        - powered.json["t"].as_f64().unwrap_or(f64::NAN);
    let _ = central.wait(Duration::from_secs(10)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), companion.finish()).await;
    th.shutdown().await;
    secs
}

struct Run {
    g2g_p50_ms: f64,
    g2g_p99_ms: f64,
    fps: f64,
    kbps: f64,
    keyframes: u64,
}

async fn run(adapt: bool, faults: Faults, secs: f64) -> Run {
    let mut th = TestHost::start_configured(|c| c.video_adapt = adapt, |b| b).await;
    let handset = th.enroll("congested", &["phone-1"]);
    let proxy = FaultProxy::start(handset.host_addr(), 0xc0_9e57)
        .await
        .expect("proxy");
    proxy.set_both(faults);
    handset.point_at(proxy.addr());
    let companion = Companion::connect(handset.options(SourceSpec::Synthetic { seed: 7 }))
        .await
        .expect("companion connects through the proxy");
    let input = companion.input();
    let t0 = std::time::Instant::now();
    vphone_tests::tap_until(&input, t0 + Duration::from_secs_f64(secs)).await;
    let r = companion.report();
    let s = t0.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(5), companion.finish()).await;
    th.shutdown().await;
    Run {
        g2g_p50_ms: r.g2g_p50_ms,
        g2g_p99_ms: r.g2g_p99_ms,
        fps: r.decoded as f64 / s,
        kbps: r.video_bytes as f64 * 8.0 / s / 1000.0,
        keyframes: r.keyframes,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = std::env::var("VPHONE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12.0_f64);
    let paths = [
        (
            "1 Mbit/s cap, 32 KiB buffer, 20 ms",
            Faults {
                rate_bps: Some(1_000_000),
                queue_bytes: 32 * 1024,
                ..Faults::delay(Duration::from_millis(10), Duration::ZERO)
            },
        ),
        (
            "400 kbit/s cap, 32 KiB buffer, 20 ms",
            Faults {
                rate_bps: Some(400_000),
                queue_bytes: 32 * 1024,
                ..Faults::delay(Duration::from_millis(10), Duration::ZERO)
            },
        ),
        (
            "600 kbit/s cap, 5% loss, 50 ms +- 20 ms",
            Faults {
                rate_bps: Some(600_000),
                queue_bytes: 32 * 1024,
                loss: Loss::Random(0.05),
                ..Faults::delay(Duration::from_millis(25), Duration::from_millis(10))
            },
        ),
    ];
    println!(
        "{:<42} {:>8} {:>9} {:>9} {:>7} {:>8} {:>5}",
        "path", "pacing", "g2g p50", "g2g p99", "pic/s", "kbit/s", "keys"
    );
    for (name, faults) in paths {
        let mut p99 = [0.0; 2];
        for (i, adapt) in [false, true].into_iter().enumerate() {
            let r = run(adapt, faults, secs).await;
            p99[i] = r.g2g_p99_ms;
            println!(
                "{:<42} {:>8} {:>7.0}ms {:>7.0}ms {:>7.1} {:>8.0} {:>5}",
                name,
                if adapt { "on" } else { "off" },
                r.g2g_p50_ms,
                r.g2g_p99_ms,
                r.fps,
                r.kbps,
                r.keyframes
            );
        }
        println!(
            "{:<42} glass-to-glass p99 without / with pacing: {:.1}x",
            "",
            p99[0] / p99[1]
        );
    }

    println!();
    println!(
        "{:<42} power-on -> encrypted value (median of 3)",
        "Bluetooth, video flowing"
    );
    let mut medians = Vec::new();
    for (name, faults) in [
        ("clean path", Faults::none()),
        (
            "5% loss, 50 ms +- 20 ms",
            Faults {
                loss: Loss::Random(0.05),
                ..Faults::delay(Duration::from_millis(25), Duration::from_millis(10))
            },
        ),
    ] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(pairing_seconds(faults).await);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "{:<42} {:>6.2} s  (runs {:.2} / {:.2} / {:.2} s)",
            name, runs[1], runs[0], runs[1], runs[2]
        );
        medians.push(runs[1]);
    }
    println!("{:<42} {:.1}x", "lossy / clean", medians[1] / medians[0]);
}
