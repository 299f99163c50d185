//! The emulator client code (`emu_client`) runs against the sim phone's
//! EmulatorController server over real gRPC on loopback: screenshot stream,
//! touch, key, sensors, GPS, battery, and token authentication.

use std::time::Duration;

use host_core::emu_client::{EmulatorClient, listened_sensors};
use sensor_proto::emulator::{
    AudioFormat, BatteryState, GpsState, Image, KeyboardEvent, Touch, TouchEvent, audio_format,
    image_format::ImgFormat, keyboard_event, sensor_value::SensorType,
};
use sim_phone::{RIPPLE_RGB, SimPhone, SimPhoneConfig, StatusClock};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

const TOKEN: &str = "test-token-0123456789";

async fn start() -> (SimPhone, String, tokio::sync::oneshot::Sender<()>) {
    let phone = SimPhone::start(SimPhoneConfig {
        auth_token: Some(TOKEN.to_owned()),
        ..SimPhoneConfig::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let p = phone.clone();
    tokio::spawn(async move {
        p.serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (phone, addr, stop)
}

fn pixel(img: &Image, x: u32, y: u32) -> [u8; 3] {
    let w = img.format.as_ref().unwrap().width;
    let i = ((y * w + x) * 3) as usize;
    [img.image[i], img.image[i + 1], img.image[i + 2]]
}

/// Centroid of RIPPLE_RGB pixels in an RGB888 image.
fn ripple_centroid(img: &Image) -> Option<(f32, f32)> {
    let f = img.format.as_ref().unwrap();
    let (mut sx, mut sy, mut n) = (0f64, 0f64, 0f64);
    for y in 0..f.height {
        for x in 0..f.width {
            if pixel(img, x, y) == RIPPLE_RGB {
                sx += f64::from(x);
                sy += f64::from(y);
                n += 1.0;
            }
        }
    }
    (n > 0.0).then(|| ((sx / n) as f32, (sy / n) as f32))
}

#[tokio::test]
async fn emulator_client_drives_the_sim_phone() {
    let (_phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();

    let status = client.status().await.unwrap();
    assert!(status.booted);
    let listening = listened_sensors(&status);
    assert!(
        listening.contains(&("acceleration".to_owned(), 60)),
        "{listening:?}"
    );
    assert!(listening.contains(&("gps".to_owned(), 1)), "{listening:?}");

    // Sensors: what was set is what is read back.
    client
        .set_sensor(SensorType::Acceleration, &[1.5, -2.25, 9.0])
        .await
        .unwrap();
    assert_eq!(
        client.sensor(SensorType::Acceleration).await.unwrap(),
        vec![1.5, -2.25, 9.0]
    );
    client
        .set_sensor(SensorType::Gyroscope, &[0.1, 0.2, 0.3])
        .await
        .unwrap();
    assert_eq!(
        client.sensor(SensorType::Gyroscope).await.unwrap(),
        vec![0.1, 0.2, 0.3]
    );
    assert!(
        client
            .set_sensor(SensorType::Light, &[f32::NAN])
            .await
            .is_err()
    );

    // GPS and battery round trips.
    let gps = GpsState {
        passive_update: false,
        latitude: 48.858_370,
        longitude: 2.294_481,
        speed: 1.5,
        bearing: 90.0,
        altitude: 35.0,
        satellites: 7,
    };
    client.set_gps(gps).await.unwrap();
    assert_eq!(client.gps().await.unwrap(), gps);
    let bad = GpsState {
        latitude: 123.0,
        ..gps
    };
    assert!(client.set_gps(bad).await.is_err());
    let battery = BatteryState {
        has_battery: true,
        is_present: true,
        charger: 0,
        charge_level: 42,
        health: 0,
        status: 2,
    };
    client.set_battery(battery).await.unwrap();
    assert_eq!(client.battery().await.unwrap(), battery);

    // Screenshot stream: a touch puts the ripple where it landed.
    let mut frames = client.screenshots(ImgFormat::Rgb888).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), frames.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.format.as_ref().unwrap().width, 720);
    assert_eq!(first.format.as_ref().unwrap().height, 1280);
    assert_eq!(first.image.len(), 720 * 1280 * 3);
    client
        .send_touch(TouchEvent {
            touches: vec![Touch {
                x: 200,
                y: 900,
                identifier: 1,
                pressure: 1,
                ..Touch::default()
            }],
            display: 0,
        })
        .await
        .unwrap();
    let mut found = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while found.is_none() && tokio::time::Instant::now() < deadline {
        let img = tokio::time::timeout(Duration::from_secs(5), frames.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(img.seq > first.seq);
        found = ripple_centroid(&img);
    }
    let (cx, cy) = found.expect("a frame with the ripple");
    assert!(
        (cx - 200.0).abs() <= 2.0 && (cy - 900.0).abs() <= 2.0,
        "ripple at {cx},{cy}"
    );

    // A key changes the picture too.
    let before = client.screenshot(ImgFormat::Rgba8888).await.unwrap();
    client
        .send_key(KeyboardEvent {
            code_type: 0,
            event_type: keyboard_event::KeyEventType::Keypress as i32,
            key_code: 0,
            key: "GoHome".into(),
            text: String::new(),
        })
        .await
        .unwrap();
    let mut changed = false;
    for _ in 0..50 {
        let now = client.screenshot(ImgFormat::Rgba8888).await.unwrap();
        if now.seq != before.seq && now.image != before.image {
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(changed, "key press did not change the screen");

    // PNG screenshots decode with an independent decoder.
    let png = client.screenshot(ImgFormat::Png).await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png.image.to_vec()));
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (720, 1280));
}

#[tokio::test]
async fn wrong_or_missing_token_is_refused() {
    let (_phone, addr, _stop) = start().await;
    let none = EmulatorClient::connect(&addr, None).await.unwrap();
    let e = none.status().await.unwrap_err().to_string();
    assert!(
        e.contains("Missing the 'authorization' header") && e.contains("Unauthenticated"),
        "{e}"
    );
    let wrong = EmulatorClient::connect(&addr, Some("nope")).await.unwrap();
    let e = wrong.status().await.unwrap_err().to_string();
    assert!(e.contains("is invalid"), "{e}");
}

#[tokio::test]
async fn input_stream_applies_events_in_order() {
    let (phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();
    let (tx, done) = client.input_stream();
    for i in 0..20 {
        let ev = sensor_proto::emulator::InputEvent {
            r#type: Some(sensor_proto::emulator::input_event::Type::KeyEvent(
                KeyboardEvent {
                    key: format!("k{i}"),
                    event_type: keyboard_event::KeyEventType::Keydown as i32,
                    ..KeyboardEvent::default()
                },
            )),
        };
        tx.send(ev).await.unwrap();
    }
    drop(tx);
    done.await.unwrap().unwrap();
    assert_eq!(
        phone
            .stats()
            .input_events
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    // The last key shown is the last one sent.
    assert_eq!(phone.last_key().as_deref(), Some("k19 down"));
}

/// A file directly in the temp dir (where the sim accepts regions), removed
/// when dropped.
struct TempRegion(std::path::PathBuf);

impl TempRegion {
    fn path(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("vphone-sim-grpc-{}-{name}", std::process::id())))
    }
}

impl Drop for TempRegion {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The emulator's MMAP transport: the pixels land in the client's region,
/// the messages carry none, and bad regions get specific errors.
#[tokio::test]
async fn screenshots_through_a_shared_region() {
    let (phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();
    let region = TempRegion::path("screen");
    let side = 1280u32;
    std::fs::File::create(&region.0)
        .unwrap()
        .set_len(u64::from(side * side * 4))
        .unwrap();

    // Same frame (seq) both ways: identical pixels.
    let mut matched = false;
    for _ in 0..10 {
        let mut shared = client
            .screenshots_into(ImgFormat::Rgba8888, (side, side), &region.0)
            .await
            .unwrap();
        let img = shared.next().await.unwrap().unwrap();
        let f = img.format.clone().unwrap();
        assert_eq!(
            (f.width, f.height),
            (720, 1280),
            "native size in the square box"
        );
        assert!(
            img.image.is_empty(),
            "pixels travel in the region, not the message"
        );
        let in_region = std::fs::read(&region.0).unwrap();
        let mut inline = client.screenshots(ImgFormat::Rgba8888).await.unwrap();
        let reference = inline.next().await.unwrap().unwrap();
        if reference.seq != img.seq {
            continue; // the screen changed in between
        }
        assert_eq!(&in_region[..reference.image.len()], &reference.image[..]);
        matched = true;
        break;
    }
    assert!(matched, "never caught the same frame both ways");
    assert!(
        phone
            .stats()
            .region_images
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // Too small for a frame: the stream says how much it needs.
    let small = TempRegion::path("small");
    std::fs::File::create(&small.0)
        .unwrap()
        .set_len(16)
        .unwrap();
    let mut s = client
        .screenshots_into(ImgFormat::Rgba8888, (side, side), &small.0)
        .await
        .unwrap();
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("holds 16 bytes"), "{err:?}");

    // Refused up front: a symlink, a FIFO (not waited on), a file outside
    // the allowed dirs, a missing file, a hard-linked file, PNG.
    let link = TempRegion::path("link");
    std::os::unix::fs::symlink(&region.0, &link.0).unwrap();
    let fifo = TempRegion::path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo.0)
        .status()
        .unwrap();
    assert!(made.success());
    let sub = tempfile::tempdir().unwrap();
    let nested = sub.path().join("screen");
    std::fs::File::create(&nested)
        .unwrap()
        .set_len(u64::from(side * side * 4))
        .unwrap();
    let missing = TempRegion::path("missing");
    let hard = TempRegion::path("hard");
    std::fs::hard_link(&region.0, &hard.0).unwrap();
    for (path, format, why) in [
        (&link.0, ImgFormat::Rgba8888, "symbolic link"),
        // Refused (ENXIO: no reader) instead of blocking the phone's API.
        (&fifo.0, ImgFormat::Rgba8888, "fifo: No such device"),
        (&nested, ImgFormat::Rgba8888, "only directly in"),
        (&missing.0, ImgFormat::Rgba8888, "No such file"),
        (&hard.0, ImgFormat::Rgba8888, "one link"),
        (&region.0, ImgFormat::Png, "not PNG"),
    ] {
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            client.screenshots_into(format, (side, side), path),
        )
        .await
        .expect("answered at once")
        .unwrap_err()
        .to_string();
        assert!(err.contains(why), "{path:?} {format:?}: {err}");
    }
    assert!(!missing.0.exists(), "the phone never creates a region");
}

fn s16_mono(p: &sensor_proto::emulator::AudioPacket) -> Vec<i16> {
    p.audio
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn format_48k() -> AudioFormat {
    AudioFormat {
        sampling_rate: 48_000,
        channels: audio_format::Channels::Mono as i32,
        format: audio_format::SampleFormat::AudFmtS16 as i32,
        mode: audio_format::DeliveryMode::ModeRealTime as i32,
    }
}

#[tokio::test]
async fn a_touch_sounds_its_position_on_stream_audio() {
    let (phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();
    let mut sound = client.audio(format_48k()).await.unwrap();
    // Silence first, in 20 ms packets of 960 samples.
    let p = sound.next().await.unwrap().unwrap();
    assert_eq!(p.audio.len(), 960 * 2);
    assert_eq!(vphone_media::audio::level_dbfs(&s16_mono(&p)), -120.0);
    let x = 540;
    client
        .send_touch(TouchEvent {
            touches: vec![Touch {
                x,
                y: 600,
                identifier: 1,
                pressure: 100,
                ..Touch::default()
            }],
            display: 0,
        })
        .await
        .unwrap();
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while heard.len() < 4800 && tokio::time::Instant::now() < deadline {
        let p = sound.next().await.unwrap().unwrap();
        let pcm = s16_mono(&p);
        if !heard.is_empty() || vphone_media::audio::level_dbfs(&pcm) > -40.0 {
            heard.extend(pcm);
        }
    }
    let want = sim_phone::sound::touch_tone_hz(x as f32, phone.config().width);
    let got = vphone_media::audio::dominant_hz(&heard[..4800], 48_000).expect("a tone");
    assert!((got - want).abs() < 10.0, "heard {got} Hz, want {want} Hz");
    // A format the phone cannot take is refused.
    let mut bad = format_48k();
    bad.sampling_rate = 192_000;
    let e = client.audio(bad).await.unwrap_err();
    assert!(e.to_string().contains("too high"), "{e}");
}

#[tokio::test]
async fn the_microphone_hears_a_tone_and_takes_one_client() {
    let (phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();
    let (mic, done) = client.microphone();
    let mut tone = vphone_media::audio::Tone::new(660.0, 0.3, 48_000);
    for i in 0..10u64 {
        let mut pcm = vec![0i16; 960];
        tone.add_to(&mut pcm);
        let audio: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        mic.send(sensor_proto::emulator::AudioPacket {
            format: Some(format_48k()),
            timestamp: i * 20_000,
            audio: audio.into(),
        })
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let heard = loop {
        if let Some(m) = phone.microphone().filter(|m| m.packets >= 10) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the phone heard nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!((heard.hz.unwrap() - 660.0).abs() < 5.0, "{heard:?}");
    assert!((heard.level_dbfs - -13.5).abs() < 1.0, "{heard:?}");
    // A second microphone is refused, as the emulator refuses it.
    let (mic2, done2) = client.microphone();
    mic2.send(sensor_proto::emulator::AudioPacket {
        format: Some(format_48k()),
        ..Default::default()
    })
    .await
    .ok();
    let e = done2.await.unwrap().unwrap_err();
    assert!(matches!(e, host_core::HostError::Conflict(_)), "{e}");
    drop(mic);
    done.await.unwrap().unwrap();
    // Closed, the microphone is free again.
    assert!(!phone.microphone().unwrap().active);
}

#[tokio::test]
async fn clipboard_set_get_and_the_phones_own_copies_stream() {
    let (phone, addr, _stop) = start().await;
    let client = EmulatorClient::connect(&addr, Some(TOKEN)).await.unwrap();
    let mut changes = client.clipboard_changes().await.unwrap();
    assert_eq!(changes.next().await.unwrap().unwrap().text, "");
    client.set_clipboard("from the host".into()).await.unwrap();
    assert_eq!(client.clipboard().await.unwrap(), "from the host");
    // Typed text, then Ctrl+C on the phone: a change the phone made.
    let key = |key: &str, t: keyboard_event::KeyEventType| KeyboardEvent {
        key: key.into(),
        event_type: t as i32,
        ..KeyboardEvent::default()
    };
    client
        .send_key(KeyboardEvent {
            text: "copied on the phone".into(),
            event_type: keyboard_event::KeyEventType::Keypress as i32,
            ..KeyboardEvent::default()
        })
        .await
        .unwrap();
    client
        .send_key(key("Control", keyboard_event::KeyEventType::Keydown))
        .await
        .unwrap();
    client
        .send_key(key("c", keyboard_event::KeyEventType::Keypress))
        .await
        .unwrap();
    client
        .send_key(key("Control", keyboard_event::KeyEventType::Keyup))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), changes.next())
        .await
        .expect("a clipboard event")
        .unwrap()
        .unwrap();
    // The set did not make an event; the copy did.
    assert_eq!(got.text, "copied on the phone");
    assert_eq!(phone.clipboard(), "copied on the phone");
    // Ctrl+V pastes it into the text field.
    client
        .send_key(key("Control", keyboard_event::KeyEventType::Keydown))
        .await
        .unwrap();
    client
        .send_key(key("v", keyboard_event::KeyEventType::Keypress))
        .await
        .unwrap();
    assert_eq!(phone.typed(), "copied on the phonecopied on the phone");
}

/// A resting screen with Android's `HH:MM` clock stays still across a
/// second's turn (no new frame for a viewer to encode); the sim's default
/// `HH:MM:SS` clock changes it once a second.
#[tokio::test]
async fn a_resting_screen_with_the_minute_clock_publishes_no_frames() {
    let phone = SimPhone::start(SimPhoneConfig::default()).unwrap();
    let seq = |p: &SimPhone| p.frames().borrow().as_ref().map(|f| f.seq);
    // The first frame.
    let mut frames = phone.frames();
    tokio::time::timeout(Duration::from_secs(5), frames.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    drop(frames);
    // The default clock shows seconds: 1.3 s of rest holds a turn.
    let before = seq(&phone);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_ne!(seq(&phone), before, "the seconds clock did not turn");

    phone.set_status_clock(StatusClock::Minutes);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = seq(&phone);
    // 2.3 s holds two turns of a seconds clock; a minute clock turns there
    // at most once (its phase may fall inside the window).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..23 {
        seen.insert(seq(&phone));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.insert(before);
    assert!(
        seen.len() <= 2,
        "a resting screen with the minute clock changed {} times in 2.3 s",
        seen.len() - 1
    );
}
