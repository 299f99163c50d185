//! End-to-end tests of the live session: a real host (sim phones, router,
//! operator API) and real handsets (the companion, or a raw bridge client)
//! over QUIC on 127.0.0.1, checked at the handset (decoded H.264 pictures)
//! and at the phone (its EmulatorController API and counters).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mobile_client::ClientError;
use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use sensor_proto::bridge::{
    SensorCapability, SensorKind, SensorSample, TouchAction, control_message,
};
use sensor_proto::emulator::sensor_value::SensorType;
use sim_phone::{
    BUBBLE_RGB, RIPPLE_RGB, StatusClock, bubble_center, bubble_radius, level_center_and_radius,
    ripple_dot_radius,
};
use vphone_tests::{
    SCREEN_H, SCREEN_W, TestHost, VIDEO_TOLERANCE, eventually, find_colour, flat_recording, key,
    touch, wait_picture, wait_sim_frame, write_recording,
};

/// Where the bubble is in a decoded picture, checked for plausibility.
fn bubble_in(p: &mobile_client::video::Picture) -> Result<(f32, f32), String> {
    if (p.width, p.height) != (SCREEN_W, SCREEN_H) {
        return Err(format!("picture is {}x{}", p.width, p.height));
    }
    let blob = find_colour(&p.rgba, p.width, BUBBLE_RGB, VIDEO_TOLERANCE)
        .ok_or_else(|| "no bubble-coloured pixels".to_owned())?;
    let r = bubble_radius(SCREEN_W, SCREEN_H);
    let area = std::f32::consts::PI * r * r;
    if (blob.count as f32) < 0.5 * area || (blob.count as f32) > 1.5 * area {
        return Err(format!(
            "{} bubble-coloured pixels (a bubble has ~{area:.0}): {blob:?}",
            blob.count
        ));
    }
    Ok((blob.x, blob.y))
}

/// 1. Tilt: the bubble level on the decoded screen follows the replayed
/// accelerometer (tilted +x, flat, tilted -x), at `bubble_center`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tilt_moves_the_bubble_on_the_decoded_screen() {
    let mut t = TestHost::start().await;
    let handset = t.enroll("tilt-handset", &["phone-1"]);
    // Three 2 s phases at 20 Hz: +x side raised, flat, -x side raised.
    let phases: [[f32; 3]; 3] = [[4.9, 0.0, 8.5], [0.0, 0.0, 9.81], [-4.9, 0.0, 8.5]];
    let mut body = String::new();
    for (i, a) in phases.iter().enumerate() {
        for k in 0..40u64 {
            let t_ns = 1_000_000_000 + (i as u64 * 40 + k) * 50_000_000;
            body.push_str(&format!(
                "{t_ns} ACCELEROMETER {} {} {}\n",
                a[0], a[1], a[2]
            ));
        }
    }
    let rec = write_recording(&t.scratch("rec"), "tilt.rec", &body);
    let companion = handset.connect(&rec).await.expect("companion connects");
    let mut pictures = companion.pictures();

    let mut seen = Vec::new();
    for accel in phases {
        let want = bubble_center(SCREEN_W, SCREEN_H, accel);
        let got = wait_picture(&mut pictures, Duration::from_secs(10), |p| {
            let c = bubble_in(p)?;
            if (c.0 - want.0).abs() <= 12.0 && (c.1 - want.1).abs() <= 12.0 {
                Ok(c)
            } else {
                Err(format!(
                    "bubble at {c:?}, want {want:?} for accel {accel:?}"
                ))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("phase accel {accel:?}: {e}"));
        seen.push(got);
    }
    let (level_x, _, _) = level_center_and_radius(SCREEN_W, SCREEN_H);
    assert!(
        seen[0].0 > level_x + 40.0,
        "+x raised: bubble should be right of centre: {seen:?}"
    );
    assert!(
        (seen[1].0 - level_x).abs() <= 12.0,
        "flat: bubble should be centred: {seen:?}"
    );
    assert!(
        seen[2].0 < level_x - 40.0,
        "-x raised: bubble should be left of centre: {seen:?}"
    );
    // The host read those screens through a shared memory region (the
    // emulator's MMAP transport), not as pixels inside gRPC messages.
    let (_, sim) = t.phone("phone-1").await;
    assert!(
        sim.stats().region_images.load(Ordering::Relaxed) >= 3,
        "screen images should travel through the shared region"
    );
    companion.finish().await.expect("finish");
    t.shutdown().await;
}

/// 2. Touch: a tap sent by the companion shows the ripple where it landed
/// on the decoded screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_shows_a_ripple_where_it_landed() {
    let mut t = TestHost::start().await;
    let handset = t.enroll("touch-handset", &["phone-1"]);
    let rec = flat_recording(&t.scratch("rec"));
    let companion = handset.connect(&rec).await.expect("companion connects");
    let mut pictures = companion.pictures();
    let input = companion.input();
    let dot = ripple_dot_radius(SCREEN_W, SCREEN_H);
    let min_px = 0.5 * std::f32::consts::PI * dot * dot;

    for (x, y) in [(200.0f32, 400.0f32), (520.0, 1000.0)] {
        // Start from a screen without a ripple, so one centroid = one tap.
        wait_picture(
            &mut pictures,
            Duration::from_secs(5),
            |p| match find_colour(&p.rgba, p.width, RIPPLE_RGB, VIDEO_TOLERANCE) {
                None => Ok(()),
                Some(b) => Err(format!("a ripple is still visible: {b:?}")),
            },
        )
        .await
        .expect("no ripple before the tap");
        input.send(touch(TouchAction::Down, x, y)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        input.send(touch(TouchAction::Up, x, y)).await.unwrap();
        let blob = wait_picture(&mut pictures, Duration::from_secs(5), |p| {
            let b = find_colour(&p.rgba, p.width, RIPPLE_RGB, VIDEO_TOLERANCE)
                .ok_or_else(|| "no ripple-coloured pixels".to_owned())?;
            if (b.count as f32) >= min_px && (b.x - x).abs() <= 4.0 && (b.y - y).abs() <= 4.0 {
                Ok(b)
            } else {
                Err(format!("ripple {b:?}, want centre ({x}, {y})"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("tap at ({x}, {y}): {e}"));
        eprintln!("tap at ({x}, {y}): ripple {blob:?}");
    }
    companion.finish().await.expect("finish");
    t.shutdown().await;
}

/// 2b. Glass-to-glass times changes, not the session's first picture: a
/// resting phone's picture, drawn before the session began, is no latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glass_to_glass_times_changes_not_the_first_picture() {
    let mut t = TestHost::start().await;
    // Android's HH:MM clock: the screen rests; its picture ages.
    t.sims
        .phone("phone-1")
        .expect("phone-1")
        .set_status_clock(StatusClock::Minutes);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handset = t.enroll("g2g-handset", &["phone-1"]);
    // Still, at the phone's own resting values: nothing on the screen moves.
    let rec = write_recording(
        &t.scratch("rec"),
        "zero.rec",
        "1000000000 ACCELEROMETER 0 0 0\n",
    );
    let companion = handset.connect(&rec).await.expect("companion connects");
    let mut pictures = companion.pictures();
    wait_picture(&mut pictures, Duration::from_secs(10), |_| Ok(()))
        .await
        .expect("the first picture");
    // Once the screen rests again (the session's name painted on it is a
    // change of its own), every decoded picture but the first is timed.
    let mut decoded = companion.report().decoded;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = companion.report().decoded;
        if now == decoded {
            break;
        }
        decoded = now;
    }
    let timed = companion.take_video_latencies();
    assert_eq!(
        timed.len() as u64,
        decoded - 1,
        "{decoded} pictures decoded, timed: {timed:?} us"
    );
    // A change is timed.
    let input = companion.input();
    input
        .send(touch(TouchAction::Down, 300.0, 600.0))
        .await
        .unwrap();
    input
        .send(touch(TouchAction::Up, 300.0, 600.0))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async {
        let n = companion.take_video_latencies().len();
        (n > 0)
            .then_some(())
            .ok_or_else(|| "no frame of the touch timed".to_owned())
    })
    .await
    .expect("the touch's frames are timed");
    companion.finish().await.expect("finish");
    t.shutdown().await;
}

/// 3. Values: what the handset sends is exactly what the phone's
/// `getSensor` / `getGps` return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_and_gps_values_arrive_unchanged() {
    let mut t = TestHost::start().await;
    let handset = t.enroll("values-handset", &["phone-1"]);
    let rec = write_recording(
        &t.scratch("rec"),
        "values.rec",
        "1000000000 ACCELEROMETER 1.25 -2.5 9.0\n\
         1000000000 GYROSCOPE 0.1 -0.0625 3.3\n\
         1000000000 MAGNETOMETER 22.3 -5.75 -40.125\n\
         LOC 1000000000 48.137154 11.576124 519.25 1.5 87.5 3.9 11\n",
    );
    let companion = handset.connect(&rec).await.expect("companion connects");
    let (phone, _sim) = t.phone("phone-1").await;
    for (kind, want) in [
        (SensorType::Acceleration, [1.25f32, -2.5, 9.0]),
        (SensorType::Gyroscope, [0.1, -0.0625, 3.3]),
        (SensorType::MagneticField, [22.3, -5.75, -40.125]),
    ] {
        let phone = &phone;
        eventually(Duration::from_secs(8), || async move {
            let got = phone.sensor(kind).await.map_err(|e| e.to_string())?;
            if got == want {
                Ok(())
            } else {
                Err(format!("getSensor({kind:?}) = {got:?}, want {want:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let phone = &phone;
    let gps = eventually(Duration::from_secs(8), || async move {
        let g = phone.gps().await.map_err(|e| e.to_string())?;
        if g.latitude == 0.0 && g.longitude == 0.0 {
            Err("no fix yet".to_owned())
        } else {
            Ok(g)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("getGps: {e}"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9;
    assert!(
        close(gps.latitude, 48.137154)
            && close(gps.longitude, 11.576124)
            && close(gps.altitude, 519.25)
            && close(gps.speed, 1.5)
            && close(gps.bearing, 87.5),
        "getGps = {gps:?}"
    );
    assert_eq!(gps.satellites, 11, "getGps = {gps:?}");
    companion.finish().await.expect("finish");
    t.shutdown().await;
}

/// 4. Recording: the companion's `.h264` is a valid 720x1280 H.264 stream
/// with exactly the frames the companion says it recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_h264_decodes_with_ffprobe() {
    let Some(ffprobe) = vphone_testkit::tools::require("ffprobe") else {
        return;
    };
    let mut t = TestHost::start().await;
    let handset = t.enroll("rec-handset", &["phone-1"]);
    let scratch = t.scratch("rec");
    let rec = flat_recording(&scratch);
    let video = scratch.join("session.h264");
    let mut opts = handset.options(SourceSpec::Replay { path: rec });
    opts.record_h264 = Some(video.clone());
    let companion = Companion::connect(opts).await.expect("companion connects");
    let (_, sim) = t.phone("phone-1").await;
    let rendered0 = sim.stats().frames.load(Ordering::Relaxed);
    let input = companion.input();
    // Taps animate ripples, so there are many frames to record.
    for i in 0..4 {
        let (x, y) = (150.0 + 120.0 * i as f32, 300.0 + 150.0 * i as f32);
        input.send(touch(TouchAction::Down, x, y)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        input.send(touch(TouchAction::Up, x, y)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let rendered = sim.stats().frames.load(Ordering::Relaxed) - rendered0;
    let report = companion.finish().await.expect("finish");
    eprintln!("phone rendered {rendered} frames; companion: {report:?}");
    assert!(
        report.recorded_frames >= 10,
        "only {} frames recorded: {report:?}",
        report.recorded_frames
    );
    let stdout = vphone_testkit::tools::ffprobe_stream(&ffprobe, &video, true);
    assert_eq!(
        stdout,
        format!("h264,{SCREEN_W},{SCREEN_H},{}", report.recorded_frames),
        "ffprobe: codec,width,height,frames"
    );
    t.shutdown().await;
}

/// 5. Bad input from a hostile handset: a sensor flood at 100x the asked
/// rate, touches far off screen and unknown keycodes. The flood is rate
/// limited and counted, touches are clamped, unknown keys dropped, the
/// phone keeps working, and another phone's session keeps streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handset_is_contained() {
    let mut t = TestHost::start().await;
    t.add_sim_phone("phone-2").await;
    let hostile = t.enroll("hostile", &["phone-1"]);
    let bystander = t.enroll("bystander", &["phone-2"]);

    // The bystander drives phone-2 with the real companion.
    let rec = flat_recording(&t.scratch("rec"));
    let mut opts = bystander.options(SourceSpec::Replay { path: rec });
    opts.phone = Some("phone-2".to_owned());
    let companion = Companion::connect(opts).await.expect("bystander connects");
    assert_eq!(companion.report().phone, "phone-2");
    let mut pictures = companion.pictures();
    wait_picture(&mut pictures, Duration::from_secs(10), |_| Ok(()))
        .await
        .expect("bystander's first picture");

    // Watch the bystander's video for the whole test: the longest time
    // without a new received frame.
    let watching = Arc::new(AtomicBool::new(true));
    let max_gap_ms = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (watching, max_gap_ms) = (watching.clone(), max_gap_ms.clone());
        let mut pictures = companion.pictures();
        tokio::spawn(async move {
            let mut last = Instant::now();
            while watching.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(100), pictures.changed()).await {
                    Ok(Ok(())) => last = Instant::now(),
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
                let gap = last.elapsed().as_millis() as u64;
                max_gap_ms.fetch_max(gap, Ordering::Relaxed);
            }
        })
    };
    let frames_before = companion.report().decoded;

    // The hostile handset, on phone-1.
    let session = hostile
        .connect_raw(vec![SensorCapability {
            kind: SensorKind::Accelerometer as i32,
            max_rate_hz: 1000.0,
            name: "flood".to_owned(),
        }])
        .await;
    assert_eq!(session.welcome().phone_name, "phone-1");
    let rate_hz = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = session.recv_control().await.expect("control stream");
            if let Some(control_message::Msg::ActiveSensors(a)) = m.msg {
                break a
                    .sensors
                    .iter()
                    .find(|s| s.kind == SensorKind::Accelerometer as i32)
                    .map(|s| f64::from(s.rate_hz))
                    .expect("the phone asks for the accelerometer");
            }
        }
    })
    .await
    .expect("ActiveSensors within 5 s");
    eprintln!("phone-1 asks for the accelerometer at {rate_hz} Hz");
    // Keep draining what the host sends, like any handset would.
    let drains = [
        tokio::spawn({
            let s = session.clone();
            async move { while s.recv_control().await.is_ok() {} }
        }),
        tokio::spawn({
            let s = session.clone();
            async move { while s.recv_video().await.is_ok() {} }
        }),
    ];

    let (phone, sim) = t.phone("phone-1").await;
    let server = t
        .host
        .sessions
        .on_phone("phone-1")
        .expect("phone-1 has a session");
    let updates0 = sim.stats().sensor_updates.load(Ordering::Relaxed);
    let dropped0 = t.metric("vphone_sensor_dropped_total").await;
    let stats0 = server.stats();

    // Flood: 100x the asked rate for 1.5 s, one sample per datagram.
    let flood_rate = rate_hz * 100.0;
    let flood = Duration::from_millis(1500);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut updates_half = None;
    while start.elapsed() < flood {
        let due = (start.elapsed().as_secs_f64() * flood_rate) as u64;
        while sent < due {
            let v = 0.001 * (sent % 1000) as f32;
            session
                .send_sensors(vec![SensorSample {
                    kind: SensorKind::Accelerometer as i32,
                    seq: 0,
                    timestamp_ns: vphone_tests::now_ns(),
                    values: vec![v, 0.0, 9.8],
                }])
                .expect("send_sensors");
            sent += 1;
        }
        if updates_half.is_none() && start.elapsed() >= flood / 2 {
            updates_half = Some((
                Instant::now(),
                sim.stats().sensor_updates.load(Ordering::Relaxed),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let flood_end = Instant::now();
    let updates_end = sim.stats().sensor_updates.load(Ordering::Relaxed);
    let secs = flood_end.duration_since(start).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let updates1 = sim.stats().sensor_updates.load(Ordering::Relaxed);
    let dropped1 = t.metric("vphone_sensor_dropped_total").await;
    let stats1 = server.stats();
    let received = stats1.sensor_samples_received - stats0.sensor_samples_received;
    let bridge_lost = (stats1.sensor_samples_dropped - stats0.sensor_samples_dropped)
        + (stats1.sensor_samples_stale - stats0.sensor_samples_stale);
    let to_router = received.saturating_sub(bridge_lost);
    let applied = updates1 - updates0;
    let dropped = (dropped1 - dropped0) as u64;
    eprintln!(
        "flood: sent {sent} in {secs:.2} s; host received {received}, bridge dropped {bridge_lost}, \
         router got {to_router}; phone applied {applied}; vphone_sensor_dropped_total +{dropped}"
    );
    assert!(
        received as f64 >= 0.5 * sent as f64,
        "the flood did not reach the host: {received} of {sent}"
    );
    // Limit: twice the asked rate, plus one bucket (2x rate) of burst.
    let cap = 2.0 * rate_hz * secs + 2.0 * rate_hz;
    assert!(
        applied as f64 <= cap * 1.1 + 5.0,
        "phone applied {applied} updates in {secs:.2} s; at most ~{cap:.0} expected ({rate_hz} Hz asked)"
    );
    let (t_half, u_half) = updates_half.expect("mid-flood sample");
    let late = (updates_end - u_half) as f64;
    let late_secs = flood_end.duration_since(t_half).as_secs_f64();
    assert!(
        late <= 2.0 * rate_hz * late_secs * 1.15 + 5.0,
        "sustained rate {:.0}/s in the flood's second half; at most ~{:.0}/s expected",
        late / late_secs,
        2.0 * rate_hz
    );
    assert!(
        dropped + 2 >= to_router.saturating_sub(applied),
        "vphone_sensor_dropped_total grew by {dropped}, but {} samples reached the router and were not applied",
        to_router.saturating_sub(applied)
    );
    let excess = (sent as f64 - cap).max(0.0);
    assert!(
        dropped as f64 >= 0.5 * excess,
        "vphone_sensor_dropped_total grew by {dropped}; the excess over the limit was ~{excess:.0}"
    );

    // Off-screen touches are clamped to the screen's edges (exact frames
    // from the phone itself: the hostile handset does not decode video).
    let mut frames = sim.frames();
    let input_before = sim.stats().input_events.load(Ordering::Relaxed);
    for ((x, y), corner) in [
        ((-500.0f32, 99_999.0f32), (0.0f32, (SCREEN_H - 1) as f32)),
        ((5000.0, -20.0), ((SCREEN_W - 1) as f32, 0.0)),
    ] {
        session
            .send_input(touch(TouchAction::Down, x, y))
            .await
            .unwrap();
        session
            .send_input(touch(TouchAction::Up, x, y))
            .await
            .unwrap();
        let blob = wait_sim_frame(&mut frames, Duration::from_secs(5), |f| {
            let b = find_colour(&f.rgba, f.width, RIPPLE_RGB, 0)
                .ok_or_else(|| "no ripple".to_owned())?;
            if (b.x - corner.0).abs() <= 8.0 && (b.y - corner.1).abs() <= 8.0 {
                Ok(b)
            } else {
                Err(format!("ripple {b:?}, want it at corner {corner:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("touch at ({x}, {y}): {e}"));
        eprintln!("touch at ({x}, {y}) -> ripple {blob:?}");
        // Let it fade before the next one, so the centroid is this touch's.
        wait_sim_frame(&mut frames, Duration::from_secs(3), |f| {
            match find_colour(&f.rgba, f.width, RIPPLE_RGB, 0) {
                None => Ok(()),
                Some(b) => Err(format!("ripple still visible: {b:?}")),
            }
        })
        .await
        .expect("ripple fades");
    }
    assert_eq!(
        sim.stats().input_events.load(Ordering::Relaxed) - input_before,
        4,
        "each clamped DOWN/UP reaches the phone once"
    );

    // Unknown keycodes never reach the phone; a known one right after does
    // (same ordered stream), so the stream survived them.
    let key_before = sim.last_key();
    let input_before = sim.stats().input_events.load(Ordering::Relaxed);
    for code in [9999, -1, i32::MAX] {
        session.send_input(key(code)).await.unwrap();
    }
    session.send_input(key(29)).await.unwrap(); // KEYCODE_A
    let last_key = eventually(Duration::from_secs(5), || {
        let sim = sim.clone();
        let key_before = key_before.clone();
        async move {
            match sim.last_key() {
                k if k != key_before => Ok(k),
                k => Err(format!("last key still {k:?}")),
            }
        }
    })
    .await
    .expect("KEYCODE_A reaches the phone");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sim.stats().input_events.load(Ordering::Relaxed) - input_before,
        1,
        "only KEYCODE_A may reach the phone (last key {last_key:?})"
    );

    // Timestamps and clock offsets are the handset's numbers: the most
    // extreme ones are reported stats, not arithmetic overflow.
    session
        .send_control(control_message::Msg::Stats(sensor_proto::bridge::Stats {
            clock_offset_ns: i64::MAX,
            ..Default::default()
        }))
        .await
        .expect("send Stats");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for timestamp_ns in [i64::MAX as u64, u64::MAX, 1] {
        session
            .send_sensors(vec![SensorSample {
                kind: SensorKind::Accelerometer as i32,
                seq: 0,
                timestamp_ns,
                values: vec![0.0, 0.0, 9.8],
            }])
            .expect("send_sensors");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The phone still takes sensor values from this handset (after the
    // bucket refilled).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    session
        .send_sensors(vec![SensorSample {
            kind: SensorKind::Accelerometer as i32,
            seq: 0,
            timestamp_ns: vphone_tests::now_ns(),
            values: vec![3.5, -1.5, 8.75],
        }])
        .expect("send_sensors");
    let phone = &phone;
    eventually(Duration::from_secs(5), || async move {
        let v = phone
            .sensor(SensorType::Acceleration)
            .await
            .map_err(|e| e.to_string())?;
        if v == [3.5, -1.5, 8.75] {
            Ok(())
        } else {
            Err(format!("accelerometer {v:?}"))
        }
    })
    .await
    .expect("phone-1 still applies sensor values");
    assert!(session.is_connected(), "the hostile session was dropped");

    // The bystander streamed throughout.
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let gap = max_gap_ms.load(Ordering::Relaxed);
    let report = companion.report();
    eprintln!(
        "bystander: decoded {} frames during the test, longest gap {gap} ms",
        report.decoded - frames_before
    );
    assert!(
        gap <= 2500,
        "the bystander's video stalled for {gap} ms during the flood"
    );
    assert!(report.decoded - frames_before >= 3, "{report:?}");
    for d in drains {
        d.abort();
    }
    companion.finish().await.expect("bystander finish");
    t.shutdown().await;
}

/// 6. Busy phone: a second handset for a phone already in use is refused
/// with a message saying so (during admission, before any Welcome); the
/// first session is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_handset_on_a_busy_phone_is_refused() {
    let mut t = TestHost::start().await;
    let first = t.enroll("first-handset", &["phone-1"]);
    let second = t.enroll("second-handset", &["phone-1"]);
    let rec = flat_recording(&t.scratch("rec"));
    let companion = first.connect(&rec).await.expect("first connects");
    let first_id = companion.report().session_id;
    let mut pictures = companion.pictures();
    wait_picture(&mut pictures, Duration::from_secs(10), |_| Ok(()))
        .await
        .expect("first picture");

    match second.connect(&rec).await {
        Err(ClientError::Refused { code, reason }) => {
            eprintln!("refused ({code:?}): {reason}");
            assert_eq!(
                code,
                sensor_proto::bridge::AppErrorCode::PhoneBusy,
                "the refusal carries the typed code, not text"
            );
            assert!(
                reason.contains("in use") && reason.contains("phone-1"),
                "the reason should say phone-1 is in use: {reason}"
            );
            // Nothing about the other tenant: not its handset, not its session.
            assert!(
                !reason.contains("first-handset") && !reason.contains(&first_id),
                "the refusal leaks the holder: {reason}"
            );
        }
        Err(other) => panic!("expected a refusal, got: {other}"),
        Ok(c) => {
            let end = tokio::time::timeout(Duration::from_secs(5), c.ended()).await;
            panic!(
                "the second handset's connect succeeded (Companion::connect returned Ok); \
                 the session then ended with: {end:?}"
            );
        }
    }

    // The first session is still the one on phone-1, and still streams.
    let on_phone = t.host.sessions.on_phone("phone-1").expect("a session");
    assert_eq!(on_phone.id(), first_id);
    let before = companion.report().frames;
    companion
        .input()
        .send(touch(TouchAction::Down, 360.0, 300.0))
        .await
        .unwrap();
    companion
        .input()
        .send(touch(TouchAction::Up, 360.0, 300.0))
        .await
        .unwrap();
    let companion = &companion;
    eventually(Duration::from_secs(5), || async move {
        let r = companion.report();
        if r.frames > before + 3 {
            Ok(())
        } else {
            Err(format!("{} frames", r.frames))
        }
    })
    .await
    .expect("first session keeps streaming");
    t.shutdown().await;
}
