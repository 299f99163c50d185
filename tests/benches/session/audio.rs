//! The session benchmark's sound phases:
//!
//! * phone -> handset ("mouth to ear" of this path): the sim phone's tones
//!   (a tap every 250 ms) to the companion's output, per frame, p50/p99,
//!   beside a baseline run in the same process with a 50 ms jitter buffer
//!   (scrcpy's default `--audio-buffer`, before its 10 ms output buffer);
//! * handset microphone -> phone: capture to heard by the phone, p50/p99;
//! * bitrate while the phone sounds and while it is silent (DTX);
//! * CPU of the audio threads (host encoder, companion playout and mic);
//! * a long run of steady sound: gaps (concealed, late, underrun) in it;
//! * why datagrams: the same 20 ms frames over QUIC datagrams and over one
//!   reliable stream through 5% loss and a 40 ms round trip, per-frame
//!   delivery delay.

use std::path::Path;
use std::time::{Duration, Instant};

use mobile_client::audio::{AudioOptions, AudioOut, MicSpec};
use mobile_client::sensors::SourceSpec;
use mobile_client::session::{Companion, ConnectOptions};
use sensor_proto::bridge::{Key, KeyAction, TouchAction, input_message};
use vphone_testkit::net::{FaultProxy, Faults};
use vphone_tests::{Handset, TestHost, now_ns, threads_cpu_seconds, touch};

use super::pct;

fn audio_cpu() -> f64 {
    // The host's "vphone-audio" thread, the companion's playout and mic.
    threads_cpu_seconds("vphone-audio") + threads_cpu_seconds("audio-")
}

fn options(h: &Handset, wav: &Path, buffer_ms: u32, mic: MicSpec) -> ConnectOptions {
    let mut o = h.options(SourceSpec::Synthetic { seed: 5 });
    o.audio = AudioOptions {
        out: Some(AudioOut::Wav(wav.to_path_buf())),
        buffer_ms,
        mic,
    };
    o
}

fn key(keycode: i32, action: KeyAction) -> input_message::Event {
    input_message::Event::Key(Key {
        keycode,
        action: action as i32,
        timestamp_ns: now_ns(),
        ..Key::default()
    })
}

/// What one sound run measured.
struct Run {
    latencies: Vec<u64>,
    sound_kbps: f64,
    silence_kbps: f64,
    cpu: f64,
    mic: Vec<u64>,
    stats: mobile_client::audio::AudioStats,
}

/// A companion on its own thread and runtime: `secs` of taps (sound), then
/// `secs` of nothing (silence).
fn run(
    h: &Handset,
    wav: &Path,
    buffer_ms: u32,
    mic: MicSpec,
    secs: f64,
    sim: &sim_phone::SimPhone,
) -> Run {
    let o = options(h, wav, buffer_ms, mic);
    let sim = sim.clone();
    std::thread::spawn(move || {
        let rt = mobile_client::session::runtime().expect("handset runtime");
        rt.block_on(async move {
            let c = Companion::connect(o).await.expect("companion connects");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = c.take_audio_latencies();
            let _ = sim.take_mic_latencies();
            let input = c.input();
            let bytes0 = c.report().audio.map_or(0, |a| a.bytes_received);
            let cpu0 = audio_cpu();
            let t0 = Instant::now();
            let mut i = 0u32;
            while t0.elapsed() < Duration::from_secs_f64(secs) {
                let x = 60.0 + (i % 11) as f32 * 60.0;
                let _ = input.send(touch(TouchAction::Down, x, 900.0)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = input.send(touch(TouchAction::Up, x, 900.0)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                i += 1;
            }
            let sound_s = t0.elapsed().as_secs_f64();
            let cpu = (audio_cpu() - cpu0) / sound_s;
            let latencies = c.take_audio_latencies();
            let bytes1 = c.report().audio.map_or(0, |a| a.bytes_received);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let bytes2 = c.report().audio.map_or(0, |a| a.bytes_received);
            let t1 = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            let bytes3 = c.report().audio.map_or(0, |a| a.bytes_received);
            let silence_s = t1.elapsed().as_secs_f64();
            let mic = sim.take_mic_latencies();
            let r = c.finish().await.expect("finish");
            Run {
                latencies,
                sound_kbps: (bytes1 - bytes0) as f64 * 8.0 / sound_s / 1000.0,
                silence_kbps: (bytes3 - bytes2) as f64 * 8.0 / silence_s / 1000.0,
                cpu,
                mic,
                stats: r.audio.unwrap_or_default(),
            }
        })
    })
    .join()
    .expect("handset thread")
}

/// A long steady hum (a held key): the gaps in it.
fn soak(h: &Handset, wav: &Path, secs: f64) -> mobile_client::audio::AudioStats {
    let o = options(h, wav, 20, MicSpec::Off);
    std::thread::spawn(move || {
        let rt = mobile_client::session::runtime().expect("handset runtime");
        rt.block_on(async move {
            let c = Companion::connect(o).await.expect("companion connects");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let input = c.input();
            let _ = input.send(key(29, KeyAction::Down)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = c.report().audio.unwrap_or_default();
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            let mut after = c.report().audio.unwrap_or_default();
            let _ = input.send(key(29, KeyAction::Up)).await;
            c.finish().await.expect("finish");
            after.jitter.played -= before.jitter.played;
            after.jitter.concealed -= before.jitter.concealed;
            after.jitter.late -= before.jitter.late;
            after.underrun_samples -= before.underrun_samples;
            after
        })
    })
    .join()
    .expect("handset thread")
}

/// 20 ms frames over datagrams and over a stream through `faults`:
/// per-frame delay p50/p99 (ms) and frames lost, each way.
async fn transports(faults: Faults, secs: f64) -> [(f64, f64, f64); 2] {
    use device_bridge::{HandsetIdentity, HostIdentity, TransportSettings};
    let host = HostIdentity::generate().expect("host identity");
    let transport = TransportSettings::default();
    let server_cfg =
        device_bridge::tls::server_config(&host, &transport, None).expect("server config");
    let server =
        quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).expect("server");
    let proxy = FaultProxy::start(server.local_addr().unwrap(), 0xa0d10)
        .await
        .expect("proxy");
    proxy.set_both(faults);
    let handset = HandsetIdentity::generate().expect("handset identity");
    let client_cfg =
        device_bridge::tls::client_config(&handset, host.pin(), &transport).expect("client config");
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client");
    client.set_default_client_config(client_cfg);
    let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
    let conn = client
        .connect(proxy.addr(), "vphone-host")
        .unwrap()
        .await
        .expect("connects through the proxy");
    let srv = accept.await.unwrap();
    let start = Instant::now();
    let frames = (secs * 50.0) as u64;
    let mut out = [(0.0, 0.0, 0.0); 2];
    for (k, stream) in [false, true].into_iter().enumerate() {
        let recv = {
            let srv = srv.clone();
            tokio::spawn(async move {
                let mut delays = Vec::new();
                if stream {
                    let mut rx = srv.accept_uni().await.unwrap();
                    let mut buf = [0u8; 168];
                    while rx.read_exact(&mut buf).await.is_ok() {
                        let sent = u64::from_le_bytes(buf[..8].try_into().unwrap());
                        delays.push(start.elapsed().as_micros() as u64 - sent);
                    }
                } else {
                    while let Ok(Ok(d)) =
                        tokio::time::timeout(Duration::from_secs(2), srv.read_datagram()).await
                    {
                        let sent = u64::from_le_bytes(d[..8].try_into().unwrap());
                        delays.push(start.elapsed().as_micros() as u64 - sent);
                    }
                }
                delays
            })
        };
        let mut tx = if stream {
            Some(conn.open_uni().await.unwrap())
        } else {
            None
        };
        let t0 = Instant::now();
        for i in 0..frames {
            tokio::time::sleep_until((t0 + Duration::from_millis(20 * i)).into()).await;
            let mut frame = vec![0u8; 168];
            frame[..8].copy_from_slice(&(start.elapsed().as_micros() as u64).to_le_bytes());
            match tx.as_mut() {
                Some(s) => s.write_all(&frame).await.unwrap(),
                None => {
                    let _ = conn.send_datagram(frame.into());
                }
            }
        }
        if let Some(mut s) = tx {
            s.finish().unwrap();
            let _ = s.stopped().await;
        }
        let mut delays = recv.await.unwrap();
        let lost = frames.saturating_sub(delays.len() as u64) as f64 / frames as f64 * 100.0;
        out[k] = (
            pct(&mut delays, 0.5) / 1000.0,
            pct(&mut delays, 0.99) / 1000.0,
            lost,
        );
    }
    conn.close(0u32.into(), b"done");
    out
}

/// Runs the sound phases and prints their table.
pub(crate) async fn bench(th: &mut TestHost, secs: f64) {
    let (_, sim) = th.phone("phone-1").await;
    let dir = th.scratch("audio-bench");
    let h = th.enroll("bench-sound", &["phone-1"]);
    let ours = run(
        &h,
        &dir.join("ours.wav"),
        20,
        MicSpec::Synthetic(440.0),
        secs,
        &sim,
    );
    let base = run(&h, &dir.join("base.wav"), 50, MicSpec::Off, secs, &sim);
    let soak_secs = std::env::var("VPHONE_AUDIO_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0_f64);
    let soaked = soak(&h, &dir.join("soak.wav"), soak_secs);
    let lossy = Faults {
        loss: vphone_testkit::net::Loss::Random(0.05),
        ..Faults::delay(Duration::from_millis(20), Duration::from_millis(2))
    };
    let [dg, st] = transports(lossy, secs.min(10.0)).await;

    let (mut a, mut b) = (ours.latencies.clone(), base.latencies.clone());
    let mut mic = ours.mic.clone();
    println!();
    println!("sound, 48 kHz mono Opus in 20 ms frames, loopback ({secs:.0} s per phase)");
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        "measure", "vphone", "50 ms buffer", "ratio"
    );
    let row = |name: &str, x: f64, y: f64| {
        println!("{name:<46} {x:>12.1} {y:>12.1} {:>9.2}x", x / y);
    };
    let (a50, a99, b50, b99) = (
        pct(&mut a, 0.5) / 1000.0,
        pct(&mut a, 0.99) / 1000.0,
        pct(&mut b, 0.5) / 1000.0,
        pct(&mut b, 0.99) / 1000.0,
    );
    row("phone -> handset output p50 (ms)", a50, b50);
    row("phone -> handset output p99 (ms)", a99, b99);
    println!(
        "{:<46} {:>12.1} {:>12} {:>10}",
        "handset mic -> phone p50 (ms)",
        pct(&mut mic, 0.5) / 1000.0,
        "-",
        "-"
    );
    println!(
        "{:<46} {:>12.1} {:>12} {:>10}",
        "handset mic -> phone p99 (ms)",
        pct(&mut mic, 0.99) / 1000.0,
        "-",
        "-"
    );
    row(
        "bitrate, phone sounding (kbit/s)",
        ours.sound_kbps,
        base.sound_kbps,
    );
    row(
        "bitrate, phone silent (kbit/s)",
        ours.silence_kbps.max(1e-9),
        base.silence_kbps.max(1e-9),
    );
    println!(
        "{:<46} {:>11.1}% {:>11.1}% {:>10}",
        "CPU of the audio threads (sound + mic / sound)",
        ours.cpu * 100.0,
        base.cpu * 100.0,
        "-"
    );
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        format!("{soak_secs:.0} s steady sound: concealed / late / underrun"),
        format!(
            "{} / {} / {}",
            soaked.jitter.concealed, soaked.jitter.late, soaked.underrun_samples
        ),
        "-",
        "-"
    );
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        "  frames played in it", soaked.jitter.played, "-", "-"
    );
    println!(
        "why datagrams: 20 ms frames through 5% loss, 40 ms RTT ({:.0} s each)",
        secs.min(10.0)
    );
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        "transport", "datagrams", "one stream", "ratio"
    );
    row("  frame delivery delay p50 (ms)", dg.0, st.0);
    row("  frame delivery delay p99 (ms)", dg.1, st.1);
    println!(
        "{:<46} {:>11.1}% {:>11.1}% {:>10}",
        "  frames lost (concealed by Opus)", dg.2, st.2, "-"
    );
    println!(
        "sound stats: {:?} concealed {} late {}",
        ours.stats.jitter, ours.stats.jitter.concealed, ours.stats.jitter.late
    );
    println!(
        "goals: phone -> handset p50 < 60 ms (scrcpy: 50 ms buffer + 10 ms); silence < 2 kbit/s; no gap in {soak_secs:.0} s"
    );
}
