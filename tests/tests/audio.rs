//! Sound and clipboard end to end: the in-process host with its sim phone
//! and the real companion, over real QUIC on loopback (and through the
//! testkit's lossy UDP proxy). What the companion heard is read back from
//! its WAV file and checked by pitch alone.

use std::time::{Duration, Instant};

use mobile_client::audio::{AudioOptions, AudioOut, MicSpec};
use mobile_client::session::{Companion, ConnectOptions};
use sensor_proto::bridge::{Key, KeyAction, TouchAction, input_message};
use sim_phone::sound::{key_tone_hz, touch_tone_hz};
use vphone_testkit::net::{FaultProxy, Faults};
use vphone_tests::{Handset, TestHost, bursts, eventually, now_ns, read_wav, touch};

fn with_sound(h: &Handset, wav: &std::path::Path, mic: MicSpec) -> ConnectOptions {
    let mut o = h.options(mobile_client::sensors::SourceSpec::Synthetic { seed: 3 });
    o.audio = AudioOptions {
        out: Some(AudioOut::Wav(wav.to_path_buf())),
        mic,
        ..AudioOptions::default()
    };
    o
}

async fn sound_started(c: &Companion) {
    eventually(Duration::from_secs(10), || async {
        match c.report().audio {
            Some(a) if a.playback => Ok(()),
            other => Err(format!("no sound yet: {other:?}")),
        }
    })
    .await
    .expect("the host says it sends sound");
}

fn key_event(keycode: i32, action: KeyAction) -> input_message::Event {
    input_message::Event::Key(Key {
        keycode,
        action: action as i32,
        timestamp_ns: now_ns(),
        ..Key::default()
    })
}

async fn tap(c: &Companion, x: f32, y: f32) {
    let input = c.input();
    input.send(touch(TouchAction::Down, x, y)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    input.send(touch(TouchAction::Up, x, y)).await.unwrap();
}

/// Two touches at known places -> two tones in what the handset heard, each
/// of the pitch its touch's x gives, in order, soon after the touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_sounds_its_position_in_the_handsets_ears() {
    let mut t = TestHost::start().await;
    let h = t.enroll("listener", &["phone-1"]);
    let wav = t.scratch("sound").join("heard.wav");
    let c = Companion::connect(with_sound(&h, &wav, MicSpec::Off))
        .await
        .unwrap();
    sound_started(&c).await;
    let (_, sim) = t.phone("phone-1").await;
    let width = sim.config().width;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let xs = [120.0, 600.0];
    let mut tapped = Vec::new();
    for &x in &xs {
        tapped.push(Instant::now());
        tap(&c, x, 640.0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = c.finish().await.unwrap();
    let audio = report.audio.expect("sound stats");
    let heard = bursts(&read_wav(&wav), -30.0);
    assert_eq!(heard.len(), 2, "two tones, nothing else: {heard:?}");
    for (b, &x) in heard.iter().zip(&xs) {
        let want = touch_tone_hz(x, width);
        assert!(
            (b.hz - want).abs() < 15.0,
            "a touch at x={x} should sound {want:.0} Hz, heard {b:?}"
        );
        // 150 ms of tone (fades and 5 ms windows aside).
        let ms = b.len / 48;
        assert!((120..=200).contains(&ms), "{ms} ms: {b:?}");
    }
    // Sound starts soon after the touch: the bursts are ~550 ms apart as
    // the taps were, and every frame was played within a bounded delay
    // (the goal, p50 under 60 ms, is the benchmark's to measure).
    let gap_ms = (heard[1].start - heard[0].start) / 48;
    let tap_gap = tapped[1].duration_since(tapped[0]).as_millis() as usize;
    assert!(
        gap_ms.abs_diff(tap_gap) < 60,
        "bursts {gap_ms} ms apart, taps {tap_gap} ms"
    );
    assert!(
        audio.latency_p99_ms > 0.0 && audio.latency_p99_ms < 250.0,
        "{audio:?}"
    );
    assert_eq!(audio.jitter.late, 0, "{audio:?}");
    eprintln!(
        "phone-to-ear p50 {:.1} ms p99 {:.1} ms, {} frames played",
        audio.latency_p50_ms, audio.latency_p99_ms, audio.jitter.played
    );
    t.shutdown().await;
}

/// The handset's synthetic microphone tone reaches the phone, which hears
/// its frequency; and a handset that asked for no sound gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microphone_reaches_the_phone_and_no_sound_means_none() {
    let mut t = TestHost::start().await;
    let h = t.enroll("singer", &["phone-1"]);
    let mut o = h.options(mobile_client::sensors::SourceSpec::Synthetic { seed: 3 });
    o.audio.mic = MicSpec::Synthetic(880.0);
    let c = Companion::connect(o).await.unwrap();
    let (_, sim) = t.phone("phone-1").await;
    let heard = eventually(Duration::from_secs(10), || async {
        match sim.microphone() {
            Some(m) if m.packets >= 10 && m.hz.is_some() => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("the phone hears the handset's microphone");
    let hz = heard.hz.unwrap();
    assert!((hz - 880.0).abs() < 10.0, "{heard:?}");
    assert!((heard.level_dbfs - -13.5).abs() < 3.0, "{heard:?}");
    // This handset asked for no playback: touches make the phone sound,
    // but not one frame reaches it.
    tap(&c, 300.0, 300.0).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = c.report();
    assert_eq!(r.audio_frames_received, 0, "{r:?}");
    assert!(
        r.audio
            .as_ref()
            .is_some_and(|a| !a.playback && a.mic_frames_sent > 10)
    );
    assert_eq!(t.metric("vphone_audio_frames_down_total").await, 0.0);
    assert!(t.metric("vphone_audio_frames_up_total").await >= 10.0);
    c.finish().await.unwrap();
    assert!(!sim.microphone().unwrap().active, "closed with the session");
    t.shutdown().await;
}

/// A second handset's microphone on a phone whose microphone another client
/// holds is refused, and the handset is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_microphone_is_refused_with_a_reason() {
    let mut t = TestHost::start().await;
    let h = t.enroll("second-mic", &["phone-1"]);
    let (client, sim) = t.phone("phone-1").await;
    // Someone else (an operator's tool) feeds the phone's microphone.
    let (other, _done) = client.microphone();
    other
        .send(sensor_proto::emulator::AudioPacket {
            format: Some(sensor_proto::emulator::AudioFormat {
                sampling_rate: 48_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async {
        sim.microphone().map(drop).ok_or("not yet".to_owned())
    })
    .await
    .unwrap();
    let mut o = h.options(mobile_client::sensors::SourceSpec::Synthetic { seed: 3 });
    o.audio.mic = MicSpec::Synthetic(440.0);
    let c = Companion::connect(o).await.unwrap();
    let why = eventually(Duration::from_secs(10), || async {
        c.report()
            .audio
            .and_then(|a| a.microphone_refused)
            .ok_or_else(|| "no refusal yet".to_owned())
    })
    .await
    .expect("the handset hears why its microphone was not taken");
    assert!(why.contains("microphone is taken"), "{why}");
    // The session goes on.
    tap(&c, 100.0, 100.0).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.ended())
            .await
            .is_err(),
        "the session goes on"
    );
    c.finish().await.unwrap();
    drop(other);
    t.shutdown().await;
}

/// The phone's copy reaches the handset; the handset's paste reaches the
/// phone; text over the limit is refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clipboard_goes_both_ways() {
    let mut t = TestHost::start().await;
    let h = t.enroll("clipper", &["phone-1"]);
    let mut o = h.options(mobile_client::sensors::SourceSpec::Synthetic { seed: 3 });
    o.clipboard = true;
    let c = Companion::connect(o).await.unwrap();
    let (_, sim) = t.phone("phone-1").await;
    // Handset -> phone.
    c.paste("from the handset ✓").await.unwrap();
    eventually(Duration::from_secs(5), || async {
        let got = sim.clipboard();
        (got == "from the handset ✓").then_some(()).ok_or(got)
    })
    .await
    .expect("the paste reaches the phone's clipboard");
    let too_big = "x".repeat(sensor_proto::bridge::CLIPBOARD_MAX_BYTES + 1);
    let e = c.paste(&too_big).await.unwrap_err();
    assert!(e.to_string().contains("at most 16384"), "{e}");
    // Phone -> handset: text typed into the phone, then Ctrl+C there.
    let input = c.input();
    input
        .send(input_message::Event::Key(Key {
            text: Some("copied on the phone".into()),
            action: KeyAction::Press as i32,
            timestamp_ns: now_ns(),
            ..Key::default()
        }))
        .await
        .unwrap();
    input.send(key_event(113, KeyAction::Down)).await.unwrap();
    input.send(key_event(31, KeyAction::Press)).await.unwrap();
    input.send(key_event(113, KeyAction::Up)).await.unwrap();
    let mut clip = c.clipboard();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        clip.wait_for(|c| c.as_deref() == Some("copied on the phone")),
    )
    .await
    .expect("the phone's copy reaches the handset")
    .unwrap()
    .clone();
    assert_eq!(got.as_deref(), Some("copied on the phone"));
    // A handset without the clipboard cannot paste.
    c.finish().await.unwrap();
    let plain =
        Companion::connect(h.options(mobile_client::sensors::SourceSpec::Synthetic { seed: 3 }))
            .await
            .unwrap();
    assert!(plain.paste("x").await.is_err());
    plain.finish().await.unwrap();
    t.shutdown().await;
}

/// At 5% loss each way the sound keeps playing: a held key's steady tone
/// comes out with lost frames concealed, no silence longer than a frame or
/// two, and no delay that grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sound_keeps_playing_through_five_percent_loss() {
    let mut t = TestHost::start().await;
    let h = t.enroll("lossy-listener", &["phone-1"]);
    let proxy = FaultProxy::start(h.host_addr(), 0x5eed_a0d1).await.unwrap();
    h.point_at(proxy.addr());
    let wav = t.scratch("sound").join("lossy.wav");
    let c = Companion::connect(with_sound(&h, &wav, MicSpec::Off))
        .await
        .unwrap();
    sound_started(&c).await;
    proxy.set_both(Faults::random_loss(0.05));
    let input = c.input();
    // KEYCODE_A held for 6 s: the phone hums steadily.
    input.send(key_event(29, KeyAction::Down)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = c.take_audio_latencies();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let last = c.take_audio_latencies();
    input.send(key_event(29, KeyAction::Up)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set_both(Faults::none());
    let report = c.finish().await.unwrap();
    let audio = report.audio.unwrap();
    let lost = proxy.stats();
    eprintln!("{audio:?}\n{lost:?}");
    assert!(audio.jitter.concealed > 0, "loss was concealed: {audio:?}");
    let p50 = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    let (a, b) = (p50(&first), p50(&last));
    assert!(b < a + 40.0, "delay grew from {a:.1} ms to {b:.1} ms");
    // The hum, by pitch, and how much of it is missing.
    let pcm = read_wav(&wav);
    let hum = bursts(&pcm, -45.0);
    let longest = hum.iter().max_by_key(|b| b.len).expect("the hum");
    assert!((longest.hz - key_tone_hz("a")).abs() < 10.0, "{longest:?}");
    assert!(
        longest.len / 48 > 5_000,
        "the hum played unbroken for {} ms of 6 s: {hum:?}",
        longest.len / 48
    );
    t.shutdown().await;
}
