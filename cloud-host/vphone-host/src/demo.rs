//! `vphone-host demo`: the whole product on one machine, with no setup.
//!
//! On loopback it starts a host with a sim phone, enrolls a companion
//! through the same single-use token flow a real handset uses, streams
//! synthetic sensors and a scripted sequence of touches and keys, prints
//! live statistics, and writes `last-frame.png` and `session.h264`. Sound
//! too: every scripted touch makes the sim phone play a tone, which the
//! companion hears and writes to `audio.wav`; its synthetic microphone (a
//! 523 Hz tone) reaches the phone, which says what it hears; and the
//! phone's clipboard reaches the companion.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mobile_client::session::{Companion, ConnectOptions, Report};
use sensor_proto::bridge::{TouchAction, input_message};

use host_core::HostError;
use host_core::daemon::Host;

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct DemoOptions {
    /// How long to stream.
    pub seconds: f64,
    /// Where `last-frame.png` and `session.h264` go (state lives in hidden
    /// subdirectories there too).
    pub out: PathBuf,
    /// Print a statistics line every second.
    pub live_stats: bool,
}

/// The demo's results.
#[derive(Clone, Debug)]
pub(crate) struct DemoReport {
    /// The companion's numbers (video, glass-to-glass, sensors sent).
    pub companion: Report,
    /// Sensor sample -> applied in the phone, p50 / p99, ms.
    pub sensor_latency_ms: (f64, f64),
    /// Touches and keys sent.
    pub taps: u64,
    /// The files written.
    pub last_frame: PathBuf,
    /// The recorded video.
    pub video: PathBuf,
    /// What the companion heard.
    pub audio: PathBuf,
    /// What the phone's microphone heard from the companion.
    pub mic: Option<sim_phone::MicHeard>,
    /// The phone's clipboard as the companion received it.
    pub clipboard: Option<String>,
}

/// The demo companion's microphone: a steady C5.
const MIC_HZ: f32 = 523.25;

fn demo_err(e: impl std::fmt::Display) -> HostError {
    HostError::Demo(e.to_string())
}

fn now_ns() -> u64 {
    u64::try_from(device_bridge::clock::unix_ns()).unwrap_or(0)
}

fn touch(action: TouchAction, x: f32, y: f32) -> input_message::Event {
    input_message::Event::one_finger(action, x, y, now_ns())
}

/// Runs the demo.
///
/// # Errors
/// Whatever stops the host or the companion, with the reason.
pub(crate) async fn run(opts: DemoOptions) -> Result<DemoReport, HostError> {
    let host_dir = opts.out.join(".demo-host");
    let companion_dir = opts.out.join(".demo-companion");
    for d in [&host_dir, &companion_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)
                .map_err(|e| HostError::io(format!("clearing {}", d.display()), e))?;
        }
    }
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| HostError::io(format!("creating {}", opts.out.display()), e))?;
    eprintln!("starting a host with a sim phone on loopback…");
    let sims = sim_phone::SimKind::default();
    let host = vphone_operator::ServedHost::start_on_loopback(host_dir, sims.backends()).await?;
    let phone = host
        .phones
        .wait_running("phone-1", Duration::from_secs(30))
        .await?;
    let (w, h) = (phone.record.width as f32, phone.record.height as f32);

    // Enroll a companion exactly as a handset would: single-use token.
    let offer = host_core::enroll::offer_enrollment(
        &host.registry,
        host.enroller.as_ref(),
        Some("demo-handset".into()),
        host_core::registry::PhoneGrant::Only(vec!["phone-1".into()]),
        Duration::from_secs(120),
    )?;
    let enrollment = offer.enrollment;
    mobile_client::config::enroll(&companion_dir, &enrollment, "demo-handset").map_err(demo_err)?;
    let last_frame = opts.out.join("last-frame.png");
    let video = opts.out.join("session.h264");
    let mut copts = ConnectOptions::new(companion_dir);
    copts.record_h264 = Some(video.clone());
    copts.save_frame = Some(last_frame.clone());
    let audio = opts.out.join("audio.wav");
    copts.audio = mobile_client::audio::AudioOptions {
        out: Some(mobile_client::audio::AudioOut::Wav(audio.clone())),
        mic: mobile_client::audio::MicSpec::Synthetic(MIC_HZ),
        ..mobile_client::audio::AudioOptions::default()
    };
    copts.clipboard = true;
    eprintln!("connecting the companion over QUIC (enrolled with a single-use token)…");
    let companion = Companion::connect(copts).await.map_err(demo_err)?;
    let session_id = companion.report().session_id;

    // The script: taps around the level, a key now and then.
    let input = companion.input();
    let tap_count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = tap_count.clone();
    let script = tokio::spawn(async move {
        let mut taps = 0u64;
        let mut i = 0u32;
        loop {
            let a = i as f32 * 0.9;
            let (x, y) = (w * (0.5 + 0.3 * a.cos()), h * (0.55 + 0.2 * a.sin()));
            if input.send(touch(TouchAction::Down, x, y)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(90)).await;
            let _ = input.send(touch(TouchAction::Up, x, y)).await;
            taps += 1;
            counter.store(taps, std::sync::atomic::Ordering::Relaxed);
            if i % 4 == 3 {
                let _ = input
                    .send(input_message::Event::key_press(
                        29 + (i / 4 % 26) as i32,
                        now_ns(),
                    ))
                    .await;
                taps += 1;
                counter.store(taps, std::sync::atomic::Ordering::Relaxed);
            }
            if i == 2 {
                // Type a line into the phone and copy it there (Ctrl+C):
                // the phone's clipboard comes back to the companion.
                let _ = input
                    .send(input_message::Event::Key(sensor_proto::bridge::Key {
                        text: Some("hello from vphone".into()),
                        action: sensor_proto::bridge::KeyAction::Press as i32,
                        timestamp_ns: now_ns(),
                        ..Default::default()
                    }))
                    .await;
                for (code, action) in [
                    (113, sensor_proto::bridge::KeyAction::Down),
                    (31, sensor_proto::bridge::KeyAction::Press),
                    (113, sensor_proto::bridge::KeyAction::Up),
                ] {
                    let _ = input
                        .send(input_message::Event::Key(sensor_proto::bridge::Key {
                            keycode: code,
                            action: action as i32,
                            timestamp_ns: now_ns(),
                            ..Default::default()
                        }))
                        .await;
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let started = Instant::now();
    let total = Duration::from_secs_f64(opts.seconds.max(1.0));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let sensor_ms = |host: &Host| {
        host.sessions
            .sensor_latency(&session_id)
            .map_or((0.0, 0.0), |(p50, p99, _)| {
                (p50 as f64 / 1000.0, p99 as f64 / 1000.0)
            })
    };
    while started.elapsed() < total {
        tokio::select! {
            _ = tick.tick() => {}
            e = companion.ended() => {
                return Err(HostError::Demo(format!("the session ended early: {}", e.reason)));
            }
        }
        if opts.live_stats {
            let r = companion.report();
            let (s50, s99) = sensor_ms(&host);
            let a = r.audio.clone().unwrap_or_default();
            eprintln!(
                "[{:>3.0}s] {:5.1} fps | {:7.1} kbit/s | sensors {:>6} (applied p50 {:.2} ms, p99 {:.2} ms) | glass-to-glass p50 {:.1} ms, p99 {:.1} ms | sound p50 {:.1} ms, buffer {:.0} ms, concealed {}",
                started.elapsed().as_secs_f64(),
                r.fps,
                r.bitrate_bps / 1000.0,
                r.sensor_samples,
                s50,
                s99,
                r.g2g_p50_ms,
                r.g2g_p99_ms,
                a.latency_p50_ms,
                a.buffer_ms,
                a.jitter.concealed,
            );
        }
    }
    script.abort();
    let taps = tap_count.load(std::sync::atomic::Ordering::Relaxed);
    let sensor_latency_ms = sensor_ms(&host);
    let clipboard = companion.clipboard().borrow().clone();
    let mic = sims.phone("phone-1").and_then(|p| p.microphone());
    let companion = companion.finish().await.map_err(demo_err)?;
    host.shutdown().await;
    Ok(DemoReport {
        companion,
        sensor_latency_ms,
        taps,
        last_frame,
        video,
        audio,
        mic,
        clipboard,
    })
}
