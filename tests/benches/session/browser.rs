//! The browser as handset beside the native companion, in the same run and
//! under the same load: headless Chromium (driven over DevTools) on the
//! page the host serves, against `vphone-companion`'s library.
//!
//! Load in both phases: the phone listens to accelerometer, gyroscope and
//! orientation at 60 Hz; the handset's motion changes continuously (the
//! native synthetic source; DevTools sensor overrides updated at ~30 Hz for
//! the browser, whose `devicemotion` fires at 60 Hz) and it taps every
//! 250 ms, so the bubble and ripples keep the screen changing.
//! Glass-to-glass is measured where the picture lands: decoded to a picture
//! by the companion, decoded and drawn on the page's canvas by the browser
//! (its frame capture time mapped through the page's clock sync). Sensor ->
//! applied is the host's own log for each session (sample time mapped to
//! the host clock -> the phone acknowledged it).

use std::time::{Duration, Instant};

use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use serde_json::json;
use vphone_tests::TestHost;
use vphone_tests::browser::{Chromium, chromium_binary, web_host};

fn q(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

struct Figures {
    g2g: (f64, f64),
    sensor: (f64, f64),
    received: (f64, f64),
    frames: u64,
    samples: usize,
}

async fn native(th: &mut TestHost, secs: f64) -> Figures {
    let handset = th.enroll("bench-native-vs-browser", &["phone-2"]);
    let options = handset.options(SourceSpec::Synthetic { seed: 11 });
    // The handset is another device: its own thread and runtime, as
    // `vphone-companion connect` runs it (and as the browser has its own
    // processes).
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = mobile_client::session::runtime().expect("handset runtime");
        rt.block_on(async move {
            let c = Companion::connect(options)
                .await
                .expect("companion connects");
            let input = c.input();
            let t0 = Instant::now();
            vphone_tests::tap_until(&input, t0 + Duration::from_secs_f64(secs)).await;
            let _ = report_tx.send(c.report());
            let _ = finish_rx.await;
            c.finish().await.expect("finish");
        });
    });
    let r = report_rx.await.expect("handset report");
    let sensor = th
        .host
        .sessions
        .sensor_latency(&r.session_id)
        .unwrap_or((0, 0, 0));
    let received = th
        .host
        .sessions
        .sensor_receive_latency(&r.session_id)
        .unwrap_or((0, 0, 0));
    let _ = finish_tx.send(());
    thread.join().expect("handset thread");
    Figures {
        g2g: (r.g2g_p50_ms, r.g2g_p99_ms),
        sensor: (sensor.0 as f64 / 1000.0, sensor.1 as f64 / 1000.0),
        received: (received.0 as f64 / 1000.0, received.1 as f64 / 1000.0),
        frames: r.decoded,
        samples: sensor.2,
    }
}

async fn browser(th: &mut TestHost, b: &Chromium, secs: f64) -> Result<Figures, String> {
    let link = th.web_link("bench-browser", &["phone-2"]);
    let origin = link
        .split('#')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    b.grant(origin, &["sensors"]).await?;
    let page = b.open("about:blank").await?;
    b.tilt(&page, [0.0, 0.0, 9.81]).await?;
    b.page(
        &page,
        "Emulation.setTouchEmulationEnabled",
        json!({ "enabled": true, "maxTouchPoints": 2 }),
    )
    .await?;
    b.navigate(&page, &link).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let session = loop {
        let s = b
            .eval(&page, "window.vphone && window.vphone.stats")
            .await?;
        if s["state"] == "connected" {
            break s["session"].as_str().unwrap_or_default().to_owned();
        }
        if Instant::now() > deadline {
            return Err(format!("the page did not connect: {s}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Settle (first keyframe, clock sync), then measure from a clean slate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.eval(
        &page,
        "window.vphone.stats.g2g = []; window.vphone.stats.decodeMs = []; 0",
    )
    .await?;
    let t0 = Instant::now();
    let mut i = 0u32;
    let mut next_tap = Instant::now();
    let mut down: Option<Instant> = None;
    let mut next_tilt = Instant::now();
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        // The readings change at 10 Hz (few DevTools calls, so the driver
        // does not load the browser); devicemotion still fires at 60 Hz.
        if Instant::now() >= next_tilt {
            let phase = t0.elapsed().as_secs_f64();
            let x = 4.0 * (phase * 2.0).sin();
            let y = 3.0 * (phase * 1.3).cos();
            b.tilt(&page, [x, y, 8.5]).await?;
            next_tilt += Duration::from_millis(100);
        }
        if let Some(at) = down
            && at.elapsed() >= Duration::from_millis(50)
        {
            b.page(
                &page,
                "Input.dispatchTouchEvent",
                json!({ "type": "touchEnd", "touchPoints": [] }),
            )
            .await?;
            down = None;
        }
        if Instant::now() >= next_tap {
            let (px, py) = (
                100.0 + f64::from(i % 5) * 80.0,
                200.0 + f64::from(i % 7) * 70.0,
            );
            b.page(
                &page,
                "Input.dispatchTouchEvent",
                json!({ "type": "touchStart", "touchPoints": [{ "x": px, "y": py, "id": 1 }] }),
            )
            .await?;
            down = Some(Instant::now());
            next_tap += Duration::from_millis(250);
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = b.eval(&page, "window.vphone.stats").await?;
    let mut decode: Vec<f64> = stats["decodeMs"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    println!(
        "browser: chunk handed to VideoDecoder -> decoded p50 {:.2} ms, p99 {:.2} ms; clock rtt {} ms",
        q(&mut decode, 0.5),
        q(&mut decode, 0.99),
        stats["rttMs"]
    );
    let mut g2g: Vec<f64> = stats["g2g"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let sensor = th
        .host
        .sessions
        .sensor_latency(&session)
        .unwrap_or((0, 0, 0));
    let received = th
        .host
        .sessions
        .sensor_receive_latency(&session)
        .unwrap_or((0, 0, 0));
    b.page(&page, "Page.navigate", json!({ "url": "about:blank" }))
        .await?;
    Ok(Figures {
        g2g: (q(&mut g2g, 0.5), q(&mut g2g, 0.99)),
        sensor: (sensor.0 as f64 / 1000.0, sensor.1 as f64 / 1000.0),
        received: (received.0 as f64 / 1000.0, received.1 as f64 / 1000.0),
        frames: stats["decoded"].as_u64().unwrap_or(0),
        samples: sensor.2,
    })
}

/// Runs both phases on a host of their own (the page needs the host's web
/// certificate) and prints the comparison.
pub(crate) async fn bench(secs: f64) {
    println!();
    let Some(chromium) = chromium_binary() else {
        println!("browser handset: SKIPPED (chromium is not installed; scripts/setup installs it)");
        return;
    };
    let scratch = tempfile::tempdir().expect("tmp");
    let (mut th, spki) = web_host(scratch.path()).await;
    th.add_sim_phone("phone-2").await;
    let (_, sim) = th.phone("phone-2").await;
    sim.set_listening(
        ["acceleration", "gyroscope", "orientation"]
            .iter()
            .map(|n| ((*n).to_owned(), 60))
            .collect(),
    );
    let b =
        match Chromium::start(&chromium, Some(&spki), &scratch.path().join("chromium.log")).await {
            Ok(b) => b,
            Err(e) => {
                println!("browser handset: chromium did not start: {e}");
                return;
            }
        };
    let n = native(&mut th, secs).await;
    let w = match browser(&mut th, &b, secs).await {
        Ok(w) => w,
        Err(e) => {
            println!("browser handset: the browser phase failed: {e}");
            b.stop().await;
            th.shutdown().await;
            return;
        }
    };
    b.stop().await;
    th.shutdown().await;
    println!(
        "browser handset vs native companion, same host and load ({secs:.0} s each; headless Chromium, software decoding)"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>8}",
        "measure", "native", "browser", "ratio", "goal"
    );
    for (what, a, c) in [
        ("glass-to-glass p50 (ms)", n.g2g.0, w.g2g.0),
        ("glass-to-glass p99 (ms)", n.g2g.1, w.g2g.1),
        ("sensor -> applied p50 (ms)", n.sensor.0, w.sensor.0),
        ("sensor -> applied p99 (ms)", n.sensor.1, w.sensor.1),
        (
            "  of which -> host received p50",
            n.received.0,
            w.received.0,
        ),
        (
            "  of which -> host received p99",
            n.received.1,
            w.received.1,
        ),
    ] {
        let ratio = c / a;
        println!(
            "{what:<34} {a:>10.2} {c:>10.2} {ratio:>7.2}x {:>8}",
            if ratio <= 1.3 {
                "<=1.3 ok"
            } else {
                "<=1.3 MISS"
            }
        );
    }
    println!(
        "frames decoded: native {}, browser {}; sensor samples applied: native {}, browser {}",
        n.frames, w.frames, n.samples, w.samples
    );
}
