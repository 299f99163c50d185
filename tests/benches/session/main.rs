//! Live-session benchmark (not a timed test): a host with a sim phone and a
//! companion in one process on loopback (the companion on its own thread and
//! runtime, as on its own device), measured the way a person feels it.
//!
//! `cargo bench -p vphone-tests --bench session` prints a table: frames per
//! second, glass-to-glass latency (phone capture -> decoded on the handset)
//! p50/p99, sensor sample -> applied in the phone p50/p99, bitrate while
//! the screen changes and while it is idle, process CPU, and a baseline run
//! in the same process: polling the phone's PNG screenshot API, which is
//! what a client of the emulator's gRPC API without vphone would do.
//! Then the sound phases (see `audio`): phone -> handset and microphone ->
//! phone latency, bitrate sounding and silent, CPU, a long steady-sound run
//! (`VPHONE_AUDIO_SOAK_SECONDS`, default 60) and datagrams against a stream
//! under loss. Last, the browser as handset beside the native companion
//! (see `browser`). `VPHONE_BENCH_ONLY=browser` runs only that part.

mod audio;
mod browser;

use std::time::{Duration, Instant};

use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use sensor_proto::emulator::image_format::ImgFormat;
use vphone_tests::{TestHost, flat_recording};

/// Process CPU seconds (user + system) from /proc/self/stat.
fn cpu_seconds() -> f64 {
    vphone_tests::proc_cpu_seconds("/proc/self/stat")
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    device_bridge::stats::quantile(v, p).unwrap_or(0) as f64
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = vphone_tests::env_or("VPHONE_BENCH_SECONDS", 10.0_f64);
    if std::env::var("VPHONE_BENCH_ONLY").as_deref() == Ok("browser") {
        browser::bench(secs).await;
        return;
    }
    let mut th = TestHost::start().await;
    let handset = th.enroll("bench", &["phone-1"]);
    // A game-like app: six motion sensors at 200 Hz each (1200 samples/s).
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

    // Active: synthetic motion moves the bubble continuously, a tap every
    // 250 ms. The handset is another device in real life: the companion runs
    // on its own thread and runtime, so its sampler and decoder never wait
    // for the host's async workers (they still share the machine's cores).
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let options = handset.options(SourceSpec::Synthetic { seed: 7 });
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let handset_thread = std::thread::spawn(move || {
        // The companion's own runtime, as `vphone-companion connect` runs it.
        let rt = mobile_client::session::runtime().expect("handset runtime");
        rt.block_on(async move {
            let c = Companion::connect(options)
                .await
                .expect("companion connects");
            let input = c.input();
            vphone_tests::tap_until(&input, t0 + Duration::from_secs_f64(secs)).await;
            let _ = report_tx.send((c.report(), t0.elapsed()));
            let _ = finish_rx.await;
            c.finish().await.expect("finish");
        });
    });
    let (r, active) = report_rx.await.expect("handset report");
    let active_s = active.as_secs_f64();
    let cpu_active = (cpu_seconds() - cpu0) / active_s;
    let sensor = th.host.sessions.sensor_latency(&r.session_id);
    let received = th.host.sessions.sensor_receive_latency(&r.session_id);
    let active_kbps = r.video_bytes as f64 * 8.0 / active_s / 1000.0;
    let fps = r.frames as f64 / active_s;
    let _ = finish_tx.send(());
    handset_thread.join().expect("handset thread");

    // Idle: constant sensor values, no input; only the status-bar clock changes (1 Hz).
    let idle = th.enroll("bench-idle", &["phone-1"]);
    let rec = flat_recording(&th.scratch("idle"));
    let c = idle.connect(&rec).await.expect("idle companion connects");
    tokio::time::sleep(Duration::from_secs(2)).await; // settle: first keyframe, sensors applied
    let before = c.report().video_bytes;
    let t1 = Instant::now();
    let cpu1 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let idle_s = t1.elapsed().as_secs_f64();
    let idle_kbps = (c.report().video_bytes - before) as f64 * 8.0 / idle_s / 1000.0;
    let cpu_idle = (cpu_seconds() - cpu1) / idle_s;
    c.finish().await.expect("finish");

    // Baseline: poll the phone's PNG screenshot over its gRPC API.
    let (client, _) = th.phone("phone-1").await;
    let mut rt = Vec::new();
    let mut bytes = 0usize;
    let t2 = Instant::now();
    while t2.elapsed() < Duration::from_secs_f64(secs.min(5.0)) {
        let s = Instant::now();
        let img = client.screenshot(ImgFormat::Png).await.expect("screenshot");
        rt.push(s.elapsed().as_micros() as u64);
        bytes += img.image.len();
    }
    let base_s = t2.elapsed().as_secs_f64();
    let base_fps = rt.len() as f64 / base_s;
    let base_kbps = bytes as f64 * 8.0 / base_s / 1000.0;
    let (b50, b99) = (pct(&mut rt, 0.5) / 1000.0, pct(&mut rt, 0.99) / 1000.0);

    let ms = |l: Option<(u64, u64, usize)>| {
        l.map_or((f64::NAN, f64::NAN), |(a, b, _)| {
            (a as f64 / 1000.0, b as f64 / 1000.0)
        })
    };
    let (s50, s99) = ms(sensor);
    let (r50, r99) = ms(received);
    println!();
    println!("live session, 720x1280 sim phone, loopback, one process ({secs:.0} s per phase)");
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        "measure", "vphone", "PNG polling", "ratio"
    );
    println!(
        "{:<46} {:>12.1} {:>12.1} {:>9.2}x",
        "frames per second",
        fps,
        base_fps,
        fps / base_fps
    );
    println!(
        "{:<46} {:>12.1} {:>12.1} {:>9.2}x",
        "glass-to-glass p50 (ms) / PNG round trip p50",
        r.g2g_p50_ms,
        b50,
        r.g2g_p50_ms / b50
    );
    println!(
        "{:<46} {:>12.1} {:>12.1} {:>9.2}x",
        "glass-to-glass p99 (ms) / PNG round trip p99",
        r.g2g_p99_ms,
        b99,
        r.g2g_p99_ms / b99
    );
    println!(
        "{:<46} {:>12.1} {:>12.1} {:>9.3}x",
        "bitrate, screen changing (kbit/s)",
        active_kbps,
        base_kbps,
        active_kbps / base_kbps
    );
    println!(
        "{:<46} {:>12.2} {:>12} {:>10}",
        "bitrate, screen idle (kbit/s)", idle_kbps, "-", "-"
    );
    println!(
        "{:<46} {:>12.2} {:>12} {:>10}",
        "sensor -> received by the host p50 (ms)", r50, "-", "-"
    );
    println!(
        "{:<46} {:>12.2} {:>12} {:>10}",
        "sensor -> received by the host p99 (ms)", r99, "-", "-"
    );
    println!(
        "{:<46} {:>12.2} {:>12} {:>10}",
        "sensor -> applied p50 (ms)", s50, "-", "-"
    );
    println!(
        "{:<46} {:>12.2} {:>12} {:>10}",
        "sensor -> applied p99 (ms)", s99, "-", "-"
    );
    println!(
        "{:<46} {:>11.0}% {:>12} {:>10}",
        "process CPU, active (host + companion)",
        cpu_active * 100.0,
        "-",
        "-"
    );
    println!(
        "{:<46} {:>11.0}% {:>12} {:>10}",
        "process CPU, idle",
        cpu_idle * 100.0,
        "-",
        "-"
    );
    println!(
        "sensor samples sent {}, decoded frames {}, skipped {}",
        r.sensor_samples, r.decoded, r.skipped
    );
    println!(
        "host latency threads (QUIC endpoint, sensors, sim phone API): {}",
        match device_bridge::latency_priority_outcome() {
            Some(device_bridge::LatencyPriority::RealTime) => format!(
                "real-time (SCHED_RR {})",
                device_bridge::LATENCY_RT_PRIORITY
            ),
            _ => "normal (this process may not use real-time priority)".to_owned(),
        }
    );
    println!(
        "goals: glass-to-glass p50 < 25 ms; idle < 10 kbit/s; sensor p99 < 2 ms (the phone listens to 6 sensors x 200 Hz)"
    );
    audio::bench(&mut th, secs).await;
    th.shutdown().await;
    browser::bench(secs).await;
}
