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

use std::time::Duration;

use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use sensor_proto::bridge::TouchAction;
use vphone_testkit::net::{FaultProxy, Faults, Loss};
use vphone_tests::{TestHost, touch};

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
    let mut i = 0u32;
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        let (x, y) = (
            100.0 + (i % 5) as f32 * 120.0,
            300.0 + (i % 7) as f32 * 120.0,
        );
        let _ = input.send(touch(TouchAction::Down, x, y)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = input.send(touch(TouchAction::Up, x, y)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        i += 1;
    }
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
}
