//! The real binaries: `vphone-host serve` driven by `vphonectl`, a
//! screenshot checked by ffprobe, one-line errors with exit codes, and the
//! registry and the companion's session surviving the host's `kill -9`.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vphone_tests::companion::HeadlessCompanion;

/// The built `vphone-host` (scripts/test builds the binaries first).
fn host_bin() -> std::path::PathBuf {
    vphone_testkit::binary("vphone-host")
}

/// The built `vphonectl`.
fn ctl_bin() -> std::path::PathBuf {
    vphone_testkit::binary("vphonectl")
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_host(dir: &Path) -> Daemon {
    start_host_on(dir, "127.0.0.1:0")
}

/// The host with its QUIC endpoint on `quic` (a fixed port survives a
/// restart, as a real host's does).
fn start_host_on(dir: &Path, quic: &str) -> Daemon {
    start_host_with(dir, quic, &[])
}

/// The host with `env` set (an SDK for the emulator backend, say).
fn start_host_with(dir: &Path, quic: &str, env: &[(&str, &Path)]) -> Daemon {
    let _ = std::fs::remove_file(dir.join("operator.addr"));
    let child = Command::new(host_bin())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--operator-listen", "127.0.0.1:0", "--quic-listen", quic])
        .env_remove("VPHONE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vphone-host");
    let t = Instant::now();
    while !dir.join("operator.addr").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "vphone-host did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(child)
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(ctl_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run vphonectl")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ctl(dir, args);
    assert!(
        o.status.success(),
        "vphonectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn wait_for_state(dir: &Path, phone: &str, state: &str) {
    let t = Instant::now();
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&ok(dir, &["--json", "phone", "show", phone])).unwrap();
        if v["state"] == state {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{phone} stuck in {}",
            v["state"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn screenshot_is_a_png_that_ffprobe_reads() {
    let dir = tempfile::tempdir().unwrap();
    let _host = start_host(dir.path());
    wait_for_state(dir.path(), "phone-1", "running");
    let out = dir.path().join("shot.png");
    let msg = ok(
        dir.path(),
        &[
            "phone",
            "screenshot",
            "phone-1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(msg.contains("(720x1280)"), "{msg}");
    let Some(ffprobe) = vphone_testkit::tools::require("ffprobe") else {
        return;
    };
    assert_eq!(
        vphone_testkit::tools::ffprobe_stream(&ffprobe, &out, false),
        "png,720,1280"
    );
}

/// The development netsim listener is never put where an emulator guest
/// reaches it (10.0.2.2 is the host's 127.0.0.1): the host refuses to start
/// and says why, before it binds anything.
#[test]
fn a_guest_reachable_bluetooth_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["127.0.0.1:0", "0.0.0.0:0", "[::1]:0"] {
        let o = Command::new(host_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([
                "--operator-listen",
                "127.0.0.1:0",
                "--quic-listen",
                "127.0.0.1:0",
                "--netsim-listen",
                addr,
            ])
            .env_remove("VPHONE_CONFIG")
            .output()
            .expect("run vphone-host");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{addr} accepted: {err}");
        assert!(err.contains("is refused"), "{addr}: {err}");
        assert!(!dir.path().join("operator.addr").exists());
    }
}

/// The operator API has no TLS: an address off loopback is refused (the admin
/// token would cross the network in clear) unless the operator accepts that
/// explicitly, and then the host says so loudly.
#[test]
fn an_operator_api_off_loopback_is_refused_without_the_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = Command::new(host_bin());
        c.args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([
                "--operator-listen",
                "0.0.0.0:0",
                "--quic-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("VPHONE_CONFIG")
            .env_remove("VPHONE_OPERATOR_INSECURE_LISTEN");
        c
    };
    let o = serve(&[]).output().expect("run vphone-host");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "0.0.0.0 accepted: {err}");
    assert!(
        err.contains("0.0.0.0:0 is refused") && err.contains("in clear"),
        "{err}"
    );
    assert!(!dir.path().join("operator.addr").exists());

    let log = dir.path().join("host.log");
    let child = serve(&["--operator-insecure-listen"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start vphone-host");
    let _host = Daemon(child);
    let t = Instant::now();
    while !dir.path().join("operator.addr").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "vphone-host did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("WITHOUT TLS"), "{text}");
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let _host = start_host(dir.path());
    let o = ctl(dir.path(), &["phone", "show", "ghost"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "vphonectl: phone 'ghost' not found\n"
    );
    let bad = dir.path().join("bad.token");
    std::fs::write(&bad, "nope\n").unwrap();
    let o = ctl(
        dir.path(),
        &["--token-file", bad.to_str().unwrap(), "phone", "list"],
    );
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "vphonectl: operator token rejected\n"
    );
    let o = ctl(dir.path(), &["--operator", "127.0.0.1:1", "phone", "list"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is it running?"));
    // Enrollment: --quiet prints only the string.
    let s = ok(
        dir.path(),
        &[
            "handset", "enroll", "--name", "alice", "--phone", "phone-1", "--quiet",
        ],
    );
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(s.starts_with("vphone://127.0.0.1:"), "{s}");
    let full = ok(dir.path(), &["handset", "enroll", "--all-phones"]);
    assert!(
        full.contains('█') || full.contains('▀'),
        "no QR code: {full}"
    );
    assert!(
        full.contains("Grants: every phone on this host, present and future."),
        "{full}"
    );
    // A phone's browser gets a link to the host's page (plain HTTP on
    // localhost without a certificate), with the pin and the WebTransport
    // certificate hashes, and its QR code.
    let link = ok(
        dir.path(),
        &[
            "handset", "enroll", "--web", "--phone", "phone-1", "--quiet",
        ],
    );
    let link = link.trim();
    eprintln!("web link: {link}");
    assert!(link.starts_with("http://localhost:"), "{link}");
    for part in ["/#enroll=vpe1.", "&pin=", "&certs="] {
        assert!(link.contains(part), "{link}");
    }
    let certs = link.split("&certs=").nth(1).unwrap_or_default();
    assert_eq!(
        certs.split(',').count(),
        2,
        "current and next hashes: {link}"
    );
    let web = ok(dir.path(), &["handset", "enroll", "--web", "--all-phones"]);
    assert!(web.contains('█') || web.contains('▀'), "no QR code: {web}");
    assert!(web.contains("Open the link on the phone"), "{web}");
    // What a handset may use is always said: no phone and no --all-phones
    // is a usage error, both at once too.
    let o = ctl(dir.path(), &["handset", "enroll"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--phone"),
        "{o:?}"
    );
    let o = ctl(
        dir.path(),
        &["handset", "enroll", "--phone", "phone-1", "--all-phones"],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn registry_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = start_host(dir.path());
    wait_for_state(dir.path(), "phone-1", "running");
    ok(dir.path(), &["phone", "create", "lab", "--size", "480x800"]);
    ok(dir.path(), &["phone", "create", "idle", "--no-start"]);
    wait_for_state(dir.path(), "lab", "running");
    ok(dir.path(), &["phone", "stop", "phone-1"]);
    // SIGKILL: no chance to flush or clean up.
    host.0.kill().unwrap();
    host.0.wait().unwrap();
    drop(host);
    let _host = start_host(dir.path());
    wait_for_state(dir.path(), "lab", "running");
    wait_for_state(dir.path(), "phone-1", "stopped");
    wait_for_state(dir.path(), "idle", "stopped");
    let list: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "phone", "list"])).unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["idle", "lab", "phone-1"]);
}

/// An emulator phone through `vphonectl` on the real host binary, the
/// emulator being the stand-in in a fake SDK named by `ANDROID_SDK_ROOT`
/// and `ANDROID_AVD_HOME`: created, running, screenshot, stopped, started;
/// then the host is killed with `kill -9`, which leaves its emulator
/// running, and the restarted host stops that leftover before it boots the
/// phone again.
#[test]
fn an_emulator_phone_through_vphonectl_survives_a_killed_host() {
    let dir = tempfile::tempdir().unwrap();
    use vphone_tests::standin::{FakeSdk, advertised_pids, running};
    let sdk = FakeSdk::new(&dir.path().join("android"));
    sdk.add_avd("pixel_standin", &["standin.boot_ms=300"]);
    let data = dir.path().join("host");
    let env = [
        ("ANDROID_SDK_ROOT", sdk.sdk.as_path()),
        ("ANDROID_AVD_HOME", sdk.avd_home.as_path()),
    ];
    let mut host = start_host_with(&data, "127.0.0.1:0", &env);
    let created = ok(
        &data,
        &[
            "phone",
            "create",
            "emu",
            "--backend",
            "emulator",
            "--avd",
            "pixel_standin",
        ],
    );
    assert!(created.contains("emu"), "{created}");
    wait_for_state(&data, "emu", "running");
    let shot = data.join("emu.png");
    let msg = ok(
        &data,
        &[
            "phone",
            "screenshot",
            "emu",
            "--out",
            shot.to_str().unwrap(),
        ],
    );
    assert!(msg.contains("(720x1280)"), "{msg}");
    ok(&data, &["phone", "stop", "emu"]);
    wait_for_state(&data, "emu", "stopped");
    ok(&data, &["phone", "start", "emu"]);
    wait_for_state(&data, "emu", "running");

    let runtime = data.join("run/emu");
    let before = advertised_pids(&runtime);
    assert_eq!(before.len(), 1, "{before:?}");
    host.0.kill().unwrap();
    host.0.wait().unwrap();
    drop(host);
    assert!(
        running(before[0]),
        "a killed host leaves its emulator running"
    );
    let mut host = start_host_with(&data, "127.0.0.1:0", &env);
    wait_for_state(&data, "emu", "running");
    let after = advertised_pids(&runtime);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "a new emulator");
    assert!(
        !running(before[0]),
        "the leftover emulator {} was stopped",
        before[0]
    );
    assert_eq!(sdk.launches("pixel_standin"), 3);

    // A clean stop (SIGTERM) takes its emulator with it: nothing is left
    // running after the host (a Daemon's drop is a kill -9, which would).
    vphone_testkit::process::signal(host.0.id(), "TERM");
    let t = Instant::now();
    while host.0.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the host did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    while running(after[0]) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the emulator {} outlived the host's clean stop",
            after[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9` of the host in the middle of a session: the host comes back
/// on the same address with its registry, and the companion, which nobody
/// touches, reconnects by itself and says so.
#[test]
fn the_companion_reconnects_by_itself_after_the_host_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host");
    std::fs::create_dir(&data).unwrap();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut host = start_host_on(&data, &quic);
    wait_for_state(&data, "phone-1", "running");
    let enrollment = ok(
        &data,
        &[
            "handset", "enroll", "--name", "bob", "--phone", "phone-1", "--quiet",
        ],
    );
    let companion = HeadlessCompanion::enroll_and_connect(dir.path(), &enrollment, 60);
    let _ = companion.said("connected to phone 'phone-1'", Duration::from_secs(20));

    host.0.kill().unwrap();
    host.0.wait().unwrap();
    drop(host);
    let _host = start_host_on(&data, &quic);
    let text = companion.said("reconnected", Duration::from_secs(40));
    eprintln!("the companion said:\n{text}");
    assert!(text.contains("reconnecting in"), "{text}");
    let sessions: serde_json::Value =
        serde_json::from_str(&ok(&data, &["--json", "session", "list"])).unwrap();
    assert_eq!(
        sessions.as_array().map(Vec::len),
        Some(1),
        "one live session after the restart: {sessions}"
    );
    drop(companion);
}

/// No secret reaches a log. A whole run at debug level, through the real
/// binaries: the host, `vphonectl` minting an enrollment, the companion
/// enrolling with it and streaming for two seconds, then connecting again
/// with its certificate alone. Every log and every output is then searched
/// for every secret the run made: the admin token, the token key, the
/// enrollment token (whole, and its MAC).
#[test]
fn no_secret_reaches_any_log_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host");
    std::fs::create_dir(&data).unwrap();
    let host_log = dir.path().join("host.log");
    let child = Command::new(host_bin())
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args([
            "--operator-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .env_remove("VPHONE_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&host_log).unwrap())
        .spawn()
        .expect("start vphone-host");
    let host = Daemon(child);
    let t = Instant::now();
    while !data.join("operator.addr").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "vphone-host did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_state(&data, "phone-1", "running");

    let mut outputs = String::new();
    // What a command prints on stdout is searched too, except the enrollment
    // string `vphonectl handset enroll --quiet` prints: handing it over is
    // that command's job.
    let mut run = |cmd: &mut Command, what: &str, keep_stdout: bool| {
        let o = cmd.env("RUST_LOG", "debug").output().expect(what);
        if keep_stdout {
            outputs.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        outputs.push_str(&String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{what}: {outputs}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let enrollment = run(
        Command::new(ctl_bin()).arg("--data-dir").arg(&data).args([
            "handset", "enroll", "--name", "alice", "--phone", "phone-1", "--quiet",
        ]),
        "vphonectl handset enroll",
        false,
    );
    let enrollment = enrollment.trim().to_owned();
    let companion = dir.path().join("companion");
    let companion_cmd = || {
        let mut c = Command::new(vphone_testkit::binary("vphone-companion"));
        c.arg("--config-dir").arg(&companion);
        c
    };
    run(
        companion_cmd().args(["enroll", &enrollment, "--name", "alice-phone"]),
        "vphone-companion enroll",
        true,
    );
    for _ in 0..2 {
        run(
            companion_cmd().args(["connect", "--headless", "--duration", "2", "--stats"]),
            "vphone-companion connect",
            true,
        );
    }
    drop(host);

    let mut logs = std::fs::read_to_string(&host_log).unwrap();
    logs.push_str(&outputs);
    assert!(
        logs.contains("DEBUG") && logs.contains("alice"),
        "the run did not log at debug level: {logs}"
    );
    let token = enrollment
        .split("token=")
        .nth(1)
        .expect("the enrollment string has a token")
        .to_owned();
    let mac = token[token.len() - 32..].to_owned();
    let secrets = [
        (
            "the admin token",
            std::fs::read_to_string(data.join("admin.token"))
                .unwrap()
                .trim()
                .to_owned(),
        ),
        (
            "the token key",
            std::fs::read_to_string(data.join("token.key"))
                .unwrap()
                .trim()
                .to_owned(),
        ),
        ("the enrollment token", token),
        ("the enrollment token's MAC", mac),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} looks wrong: {secret:?}");
        assert!(
            !logs.to_lowercase().contains(&secret.to_lowercase()),
            "{what} reached a log"
        );
    }
    eprintln!("{} bytes of logs searched", logs.len());
}

/// The main job, `vphone-host demo`, as the README's first command runs
/// it: every output is there and real, and sound went both ways.
#[test]
fn the_demo_streams_video_sound_and_the_clipboard() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(host_bin())
        .args(["demo", "--seconds", "4", "--out"])
        .arg(tmp.path())
        .env_remove("VPHONE_CONFIG")
        .output()
        .expect("run vphone-host demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the phone heard:  523 Hz"), "{stdout}");
    assert!(
        stdout.contains("the phone copied 17 characters"),
        "{stdout}"
    );
    // What the handset heard: the tones of the demo's taps (-9 dBFS, above
    // the keys' quiet hum), each within the sim phone's 400..2000 Hz touch
    // range.
    let heard = vphone_tests::bursts(
        &vphone_tests::read_wav(&tmp.path().join("audio.wav")),
        -20.0,
    );
    assert!(heard.len() >= 4, "{heard:?}");
    assert!(
        heard.iter().all(|b| (390.0..2010.0).contains(&b.hz)),
        "{heard:?}"
    );
    assert!(tmp.path().join("last-frame.png").is_file());
    if let Some(ffprobe) = vphone_testkit::tools::require("ffprobe") {
        let v = vphone_testkit::tools::ffprobe_stream(
            &ffprobe,
            &tmp.path().join("session.h264"),
            false,
        );
        assert_eq!(v, "h264,720,1280");
    }
}

/// `GET PATH` on the host's operator port (no token: probes need none):
/// the status code and body, or `None` when nothing answers.
fn probe(dir: &Path, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::fs::read_to_string(dir.join("operator.addr")).ok()?;
    let mut tcp = std::net::TcpStream::connect(addr.trim()).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((code, body))
}

/// The probes a load balancer and Kubernetes use: `/healthz` while the
/// process serves, `/readyz` while the registry lists this host. With
/// `VPHONE_SHUTDOWN_DELAY_SECS`, SIGTERM first makes `/readyz` say
/// "leaving" (503) while the host keeps serving (the operator API still
/// answers), and the host stops once the delay is over.
#[test]
fn readiness_says_leaving_for_the_shutdown_delay_before_the_host_stops() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host_with(
        dir.path(),
        "127.0.0.1:0",
        &[("VPHONE_SHUTDOWN_DELAY_SECS", Path::new("3"))],
    );
    assert_eq!(probe(dir.path(), "/healthz"), Some((200, "ok\n".into())));
    assert_eq!(probe(dir.path(), "/readyz"), Some((200, "ready\n".into())));
    vphone_testkit::process::signal(host.0.id(), "TERM");
    let asked = Instant::now();
    let leaving = loop {
        let now = probe(dir.path(), "/readyz");
        if now.as_ref().is_some_and(|(code, _)| *code == 503) {
            break now.unwrap();
        }
        assert!(asked.elapsed() < Duration::from_secs(2), "still {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(leaving.1.contains("leaving"), "{leaving:?}");
    // Still serving: the operator API answers, and health stays ok.
    ok(dir.path(), &["phone", "list"]);
    assert_eq!(probe(dir.path(), "/healthz"), Some((200, "ok\n".into())));
    let mut host = host;
    let status = loop {
        if let Some(s) = host.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the host did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(2_900),
        "stopped {took:?} after SIGTERM, before its 3 s delay"
    );
}
