//! A phone's browser as the handset, in a real headless Chromium driven
//! over the DevTools protocol: enrollment through the link, the page over
//! HTTPS (the operator's certificate, trusted by its key alone), the
//! WebTransport session pinned by certificate hashes, motion sensors and a
//! touch reaching the sim phone, the page's own decoder and stats, and a
//! revocation the page reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use host_core::router::SessionDirectory as _;
use serde_json::json;
use sim_phone::{BUBBLE_RGB, RIPPLE_RGB, bubble_center, level_center_and_radius};
use vphone_tests::browser::{Chromium, Page, chromium_binary, web_host};
use vphone_tests::{SCREEN_H, SCREEN_W, TestHost, find_colour, wait_sim_frame};

fn artifacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&d).expect("artifacts dir");
    d
}

async fn wait_state(b: &Chromium, page: &Page, want: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = b.eval(page, "window.vphone && window.vphone.stats").await;
        if let Ok(s) = &stats
            && s["state"] == want
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "page state never became {want:?}: {stats:?}\nconsole: {:#?}\nchromium: {}",
            b.console(),
            b.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a phone pixel is on the page, in CSS pixels.
async fn page_point(b: &Chromium, page: &Page, (x, y): (f32, f32)) -> (f64, f64) {
    let r = b
        .eval(
            page,
            "(() => { const r = document.getElementById('screen').getBoundingClientRect(); \
             return [r.left, r.top, r.width, r.height]; })()",
        )
        .await
        .expect("canvas rect");
    let f = |i: usize| r[i].as_f64().unwrap_or(0.0);
    let (w, h) = (f64::from(SCREEN_W), f64::from(SCREEN_H));
    let scale = (f(2) / w).min(f(3) / h);
    let ox = f(0) + (f(2) - w * scale) / 2.0;
    let oy = f(1) + (f(3) - h * scale) / 2.0;
    (ox + f64::from(x) * scale, oy + f64::from(y) * scale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_enrolls_drives_the_phone_and_is_told_when_revoked() {
    let Some(chromium) = chromium_binary() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tmp");
    let (mut t, spki) = web_host(scratch.path()).await;
    let link = t.web_link("pixel-browser", &["phone-1"]);
    let web = t.host.web_addr.expect("the page listens");
    assert!(
        link.starts_with(&format!("https://127.0.0.1:{}/#enroll=", web.port())),
        "{link}"
    );
    assert_eq!(
        web.port(),
        t.host.quic_addr.port(),
        "the page shares the QUIC port's number"
    );

    let b = Chromium::start(&chromium, Some(&spki), &scratch.path().join("chromium.log"))
        .await
        .expect("chromium starts");
    let origin = link
        .split('#')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    b.grant(&origin, &["sensors", "geolocation"])
        .await
        .expect("sensor permission");
    // The device's motion sensors report through DevTools from the start
    // (lying flat), as a phone's do.
    let page = b.open("about:blank").await.expect("page opens");
    b.tilt(&page, [0.0, 0.0, 9.81])
        .await
        .expect("sensor override");
    b.page(
        &page,
        "Emulation.setGeolocationOverride",
        json!({ "latitude": 48.137154, "longitude": 11.576124, "accuracy": 5.0 }),
    )
    .await
    .expect("location override");
    b.navigate(&page, &link).await.expect("the link opens");
    let welcome = wait_state(&b, &page, "connected", Duration::from_secs(20)).await;
    assert_eq!(welcome["phone"], "phone-1");
    assert_eq!(welcome["handset"], "pixel-browser");
    // The token left the address bar; the key stayed in the browser.
    let url = b.eval(&page, "location.href").await.expect("href");
    assert!(
        !url.as_str().unwrap_or_default().contains("enroll="),
        "{url}"
    );

    // The host sees a browser session under the enrolled name, and the sim
    // phone says who drives it.
    let sessions = t.host.sessions.list();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (_, sim) = t.phone("phone-1").await;
    vphone_tests::eventually(Duration::from_secs(5), || async {
        match t
            .host
            .phones
            .watch_status("phone-1")
            .borrow()
            .session
            .clone()
        {
            Some(s) if s == "pixel-browser (browser)" => Ok(()),
            other => Err(format!("status shows {other:?}")),
        }
    })
    .await
    .expect("the phone shows the browser handset");

    // The browser's location reached the phone.
    let (phone, _) = t.phone("phone-1").await;
    let gps = vphone_tests::eventually(Duration::from_secs(8), || {
        let phone = phone.clone();
        async move {
            let g = phone.gps().await.map_err(|e| e.to_string())?;
            if (g.latitude - 48.137154).abs() < 1e-6 && (g.longitude - 11.576124).abs() < 1e-6 {
                Ok(g)
            } else {
                Err(format!("getGps = {g:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("location: {e}\nconsole: {:#?}", b.console()));
    eprintln!("location on the phone: {gps:?}");

    // Tilt through DevTools: the bubble level follows.
    let mut frames = sim.frames();
    let (level_x, _, _) = level_center_and_radius(SCREEN_W, SCREEN_H);
    for accel in [[4.9f32, 0.0, 8.5], [-4.9, 0.0, 8.5]] {
        b.tilt(&page, accel.map(f64::from))
            .await
            .expect("sensor override");
        let want = bubble_center(SCREEN_W, SCREEN_H, accel);
        let got = wait_sim_frame(&mut frames, Duration::from_secs(10), |f| {
            let c = find_colour(&f.rgba, f.width, BUBBLE_RGB, 0).ok_or("no bubble")?;
            if (c.x - want.0).abs() <= 12.0 && (c.y - want.1).abs() <= 12.0 {
                Ok((c.x, c.y))
            } else {
                Err(format!("bubble at ({}, {}), want {want:?}", c.x, c.y))
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!("tilt {accel:?}: {e}\nconsole: {:#?}", b.console());
        });
        if accel[0] > 0.0 {
            assert!(
                got.0 > level_x + 40.0,
                "+x raised: bubble right of centre: {got:?}"
            );
        } else {
            assert!(
                got.0 < level_x - 40.0,
                "-x raised: bubble left of centre: {got:?}"
            );
        }
    }

    // A touch dispatched through DevTools lands where it was aimed.
    b.page(
        &page,
        "Emulation.setTouchEmulationEnabled",
        json!({ "enabled": true, "maxTouchPoints": 5 }),
    )
    .await
    .expect("touch emulation");
    let aim = (200.0f32, 400.0f32);
    let (px, py) = page_point(&b, &page, aim).await;
    for kind in ["touchStart", "touchEnd"] {
        let points = if kind == "touchEnd" {
            json!([])
        } else {
            json!([{ "x": px, "y": py, "id": 1 }])
        };
        b.page(
            &page,
            "Input.dispatchTouchEvent",
            json!({ "type": kind, "touchPoints": points }),
        )
        .await
        .expect("touch");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let ripple = wait_sim_frame(&mut frames, Duration::from_secs(5), |f| {
        let r = find_colour(&f.rgba, f.width, RIPPLE_RGB, 0).ok_or("no ripple")?;
        // A CSS pixel is ~1.6 phone pixels at this window size.
        if (r.x - aim.0).abs() <= 6.0 && (r.y - aim.1).abs() <= 6.0 {
            Ok(r)
        } else {
            Err(format!("ripple {r:?}, want {aim:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("touch: {e}\nconsole: {:#?}", b.console()));
    eprintln!("touch at {aim:?} -> ripple {ripple:?}");
    // The tap's tone (the sim phone plays one per touch) reached the page
    // and decoded to sound.
    let deadline = Instant::now() + Duration::from_secs(5);
    let sound = loop {
        let s = b
            .eval(
                &page,
                "({f: window.vphone.stats.audioFrames, p: window.vphone.stats.audioPeak, c: audio.context && audio.context.state})",
            )
            .await
            .expect("sound stats");
        if s["f"].as_u64().unwrap_or(0) >= 10 && s["p"].as_f64().unwrap_or(0.0) > 0.05 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no sound decoded in the page: {s}\nconsole: {:#?}",
            b.console()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("sound in the page: {sound}");

    // Keep the screen changing until the page decoded at least 30 frames.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0u32;
    let stats = loop {
        i += 1;
        let x = 4.0 * (f64::from(i) * 0.3).sin();
        b.tilt(&page, [x, 0.0, 9.0]).await.expect("tilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = b.eval(&page, "window.vphone.stats").await.expect("stats");
        if s["decoded"].as_u64().unwrap_or(0) >= 30 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the page decoded too few frames: {s}"
        );
    };
    eprintln!(
        "page stats: decoded {} frames {} keyframes {} dropped {} rtt {} ms",
        stats["decoded"], stats["frames"], stats["keyframes"], stats["dropped"], stats["rttMs"]
    );
    let g2g: Vec<f64> = stats["g2g"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    assert!(
        g2g.len() >= 20,
        "glass-to-glass measured in the page: {g2g:?}"
    );
    assert!(
        g2g.iter().all(|v| (0.0..2000.0).contains(v)),
        "plausible page latencies (ms): {g2g:?}"
    );
    assert!(stats["sensorsSent"].as_u64().unwrap_or(0) > 0);
    let shot = artifacts().join("browser-handset.png");
    b.screenshot(&page, &shot).await.expect("screenshot");
    eprintln!("screenshot: {}", shot.display());

    // Revoke: the page says so within 2 s.
    let revoked = t
        .host
        .registry
        .revoke_handset("pixel-browser", host_core::unix_ms())
        .expect("revoke");
    let started = Instant::now();
    for s in t.host.sessions.list() {
        if s.handset_fingerprint == revoked.fingerprint {
            t.host
                .sessions
                .kick(&s.id, "handset revoked")
                .expect("kick");
        }
    }
    let closed = wait_state(&b, &page, "closed", Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(closed["code"], "KICKED", "{closed}");
    let shown = b
        .eval(&page, "document.getElementById('message').textContent")
        .await
        .expect("message");
    assert!(
        shown.as_str().unwrap_or_default().contains("revoked"),
        "the page tells the person why: {shown}"
    );
    eprintln!("revocation reported by the page after {took:?}");
    // And a reload is refused as revoked.
    b.page(&page, "Page.reload", json!({}))
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = wait_state(&b, &page, "closed", Duration::from_secs(10)).await;
    assert_eq!(again["code"], "REVOKED", "{again}");
    b.screenshot(&page, &artifacts().join("browser-handset-revoked.png"))
        .await
        .expect("screenshot");
    b.stop().await;
    let _ = &mut t;
    t.shutdown().await;
}

/// Opens a raw WebTransport session from the page, writes `lines` on its
/// control stream and returns what the host answered (up to its `closed`).
const RAW_SESSION_JS: &str = r#"async (lines, mode) => {
  const info = await (await fetch('/webtransport.json')).json();
  const hashes = info.certs.map((c) => ({ algorithm: 'sha-256', value: Uint8Array.from(c.hash.match(/../g).map((x) => parseInt(x, 16))) }));
  const wt = new WebTransport(`https://${location.host}${info.path}`, { serverCertificateHashes: hashes });
  await wt.ready;
  const bidi = await wt.createBidirectionalStream();
  const w = bidi.writable.getWriter();
  const r = bidi.readable.getReader();
  const enc = new TextEncoder();
  let out = '';
  const read = async () => {
    const t = new Promise((res) => setTimeout(() => res({ timeout: true }), 3000));
    const x = await Promise.race([r.read(), t]);
    if (x.timeout || x.done) return false;
    out += new TextDecoder().decode(x.value);
    return true;
  };
  if (mode === 'raw') {
    for (const l of lines) await w.write(enc.encode(l));
  } else {
    const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const spki = btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey('spki', pair.publicKey))));
    await w.write(enc.encode(JSON.stringify({ t: 'hello', name: 'stranger', spki, sensors: lines }) + '\n'));
    while (!out.includes('\n')) if (!(await read())) return out;
    if (!out.includes('challenge')) return out;
    const nonce = Uint8Array.from(atob(JSON.parse(out.split('\n')[0]).nonce), (c) => c.charCodeAt(0));
    const what = mode === 'wrong-proof' ? enc.encode('something else') : new Uint8Array([...enc.encode('vphone web handset proof v1\n'), ...nonce]);
    const sig = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, pair.privateKey, what));
    await w.write(enc.encode(JSON.stringify({ t: 'proof', sig: btoa(String.fromCharCode(...sig)) }) + '\n'));
  }
  while (!out.includes('"t":"closed"')) if (!(await read())) break;
  try { wt.close(); } catch (e) {}
  return out;
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_unfit_pages_get_clear_refusals_and_others_keep_streaming() {
    let Some(chromium) = chromium_binary() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tmp");
    let (mut t, spki) = web_host(scratch.path()).await;
    // A native handset streams from phone-1 throughout.
    let native = t.enroll("native", &["phone-1"]);
    let rec = vphone_tests::flat_recording(&t.scratch("rec"));
    let companion = native.connect(&rec).await.expect("native companion");
    let web = t.host.web_addr.expect("page");
    let origin = format!("https://127.0.0.1:{}/", web.port());

    let b = Chromium::start(&chromium, Some(&spki), &scratch.path().join("chromium.log"))
        .await
        .expect("chromium starts");
    // A browser that never enrolled is told so, and how to enroll.
    let page = b.open(&origin).await.expect("page");
    let s = wait_state(&b, &page, "closed", Duration::from_secs(10)).await;
    assert_eq!(s["code"], "NOT_ENROLLED", "{s}");
    let text = b
        .eval(&page, "document.getElementById('message').textContent")
        .await
        .expect("message");
    assert!(
        text.as_str()
            .unwrap_or_default()
            .contains("handset enroll --web"),
        "{text}"
    );

    let cases: [(&str, serde_json::Value, &str, &str); 5] = [
        (
            "raw",
            json!(["this is not json\n"]),
            "MALFORMED_MESSAGE",
            "control:",
        ),
        (
            "raw",
            json!([r#"{"t":"hello","name":"x","spki":"AAAA"}"#.to_owned() + "\n"]),
            "UNAUTHORIZED",
            "ECDSA P-256",
        ),
        (
            "keyed",
            json!(["warp_drive"]),
            "UNKNOWN_SENSOR",
            "warp_drive",
        ),
        (
            "wrong-proof",
            json!([]),
            "UNAUTHORIZED",
            "proof does not match",
        ),
        ("keyed", json!(["accelerometer"]), "UNAUTHORIZED", ""),
    ];
    for (mode, lines, code, words) in cases {
        let expr = format!("({RAW_SESSION_JS})({lines}, {mode:?})");
        let answer = b.eval(&page, &expr).await.expect("raw session");
        let answer = answer.as_str().unwrap_or_default().to_owned();
        let closed = answer
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|m| m["t"] == "closed")
            .unwrap_or_else(|| panic!("{mode} {lines}: no closed message in {answer:?}"));
        assert_eq!(closed["code"], code, "{mode} {lines}: {closed}");
        assert!(
            closed["message"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{mode} {lines}: {closed}"
        );
        eprintln!("{mode} {lines} -> {closed}");
    }
    // None of that reached the native handset's session.
    let mut pictures = companion.pictures();
    let _ = pictures.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(5), pictures.changed())
        .await
        .expect("a new picture within 5 s (the clock ticks)")
        .expect("the native handset still gets pictures");
    assert_eq!(
        t.host.sessions.list().len(),
        1,
        "only the native session lives"
    );

    // Another web site cannot open sessions through its visitors' browsers,
    // even knowing the certificate hashes: its Origin is refused.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let foreign_port = foreign.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut c in foreign.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "<!doctype html><title>elsewhere</title>";
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let link = t.web_link("csrf", &["phone-1"]);
    let hashes: Vec<String> = link
        .split("&certs=")
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    let elsewhere = b
        .open(&format!("http://localhost:{foreign_port}/"))
        .await
        .expect("foreign page");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attempt = format!(
        "(async () => {{ const wt = new WebTransport('https://127.0.0.1:{}/wt', {{ serverCertificateHashes: {}.map((h) => ({{ algorithm: 'sha-256', value: Uint8Array.from(h.match(/../g).map((x) => parseInt(x, 16))) }})) }}); try {{ await wt.ready; return 'admitted'; }} catch (e) {{ return 'refused: ' + e.message; }} }})()",
        web.port(),
        serde_json::to_string(&hashes).expect("json")
    );
    let verdict = b.eval(&elsewhere, &attempt).await.expect("attempt");
    eprintln!("a session from http://localhost:{foreign_port}: {verdict}");
    assert!(
        verdict.as_str().unwrap_or_default().starts_with("refused"),
        "a foreign origin's session: {verdict}"
    );

    // A browser without WebTransport or WebCodecs is told what it lacks.
    let bare = b.open("about:blank").await.expect("page");
    b.page(
        &bare,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": "delete window.WebTransport; delete window.VideoDecoder;" }),
    )
    .await
    .expect("script");
    b.navigate(&bare, &origin).await.expect("navigate");
    let s = wait_state(&b, &bare, "closed", Duration::from_secs(10)).await;
    assert_eq!(s["code"], "UNSUPPORTED", "{s}");
    let m = s["message"].as_str().unwrap_or_default();
    assert!(m.contains("WebTransport") && m.contains("WebCodecs"), "{m}");

    // A link whose pin is not this host's: the page refuses the host.
    let link = t.web_link("mismatch", &["phone-1"]);
    let pin_at = link.find("pin=").expect("pin") + 4;
    let wrong = format!(
        "{}{}{}",
        &link[..pin_at],
        "00".repeat(32),
        &link[pin_at + 64..]
    );
    let other = b.open(&wrong).await.expect("page");
    let s = wait_state(&b, &other, "closed", Duration::from_secs(10)).await;
    assert_eq!(s["code"], "HOST_KEY_MISMATCH", "{s}");
    b.stop().await;
    companion.finish().await.expect("finish");
    t.shutdown().await;
}

/// Development without a certificate: the page as `http://localhost` (a
/// secure context), the session to the loopback address the host listens
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_page_on_http_localhost_streams() {
    let Some(chromium) = chromium_binary() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tmp");
    let mut t = TestHost::start().await;
    let link = t.web_link("dev-browser", &["phone-1"]);
    let port = t.host.web_addr.expect("page").port();
    assert!(
        link.starts_with(&format!("http://localhost:{port}/#enroll=")),
        "{link}"
    );
    let b = Chromium::start(&chromium, None, &scratch.path().join("chromium.log"))
        .await
        .expect("chromium starts");
    let page = b.open(&link).await.expect("page");
    let s = wait_state(&b, &page, "connected", Duration::from_secs(20)).await;
    assert_eq!(s["handset"], "dev-browser");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .eval(&page, "window.vphone.stats.decoded")
        .await
        .expect("stats")
        .as_u64()
        < Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "no frame decoded: {:#?}",
            b.console()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    let _ = &mut t;
    t.shutdown().await;
}
