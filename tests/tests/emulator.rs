//! The Android Emulator backend, run for real against the emulator
//! stand-in (`tests/emulator-standin`, linked as `emulator/emulator` in a
//! fake SDK): launch with the backend's command line, discovery through the
//! private runtime dir, token authentication, the boot wait, a handset's
//! touches, sensors and GPS, Bluetooth through the phone's attach point, a
//! crash, the restart policy, a boot timeout, a wrong token, a foreign
//! discovery file, and leftovers of a killed host.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host_core::backend::Backends;
use host_core::phones::{Lifecycle, ManagerConfig, PhoneManager, PhoneSpec, RestartPolicy};
use host_core::registry::{Backend, Registry};
use mobile_client::radio::{RadioOptions, RadioSpec};
use mobile_client::sensors::SourceSpec;
use mobile_client::session::Companion;
use sensor_proto::bridge::TouchAction;
use sensor_proto::emulator::image_format::ImgFormat;
use sensor_proto::emulator::sensor_value::SensorType;
use sensor_proto::operator as op;
use sensor_proto::operator::operator_client::OperatorClient;
use sim_phone::RIPPLE_RGB;
use vphone_tests::bumble::Testbed;
use vphone_tests::standin::{FakeSdk, advertised_pids, running};
use vphone_tests::{TestHost, eventually, find_colour, touch, write_recording};

const AVD: &str = "pixel_standin";

fn spec(name: &str, avd: &str) -> PhoneSpec {
    PhoneSpec {
        name: name.to_owned(),
        backend: Backend::Emulator,
        display: (720, 1280, 320),
        avd: Some(avd.to_owned()),
        start: true,
    }
}

/// A phone manager running emulator phones from `sdk` with extra emulator
/// `args`, its state in `dir`.
fn manager(
    dir: &Path,
    sdk: &FakeSdk,
    restart: RestartPolicy,
    boot: Duration,
    args: &[&str],
) -> (PhoneManager, Arc<Registry>) {
    std::fs::create_dir_all(dir).expect("host dir");
    let reg = Arc::new(Registry::open(&dir.join("registry.db")).expect("registry"));
    let m = PhoneManager::spawn(
        reg.clone(),
        ManagerConfig {
            data_dir: dir.to_path_buf(),
            attach: Arc::new(
                host_core::bluetooth::AttachPoints::new(host_core::bluetooth::DEFAULT_ATTACH_IP)
                    .expect("attach points"),
            ),
            boot_timeout: boot,
            restart,
            emulator_args: args.iter().map(|a| (*a).to_owned()).collect(),
            backends: Backends::default().with(Backend::Emulator, Arc::new(sdk.kind())),
            first_phone: None,
            fleet: host_core::lease::FleetConfig::single("test-host"),
        },
    )
    .expect("phone manager");
    (m, reg)
}

/// Waits for `phone` to be in a state named `want`, collecting the names of
/// the states passed on the way (each once).
async fn states_until(m: &PhoneManager, phone: &str, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let v = m.get(phone).await.expect("the phone exists");
        let name = v.state.name().to_owned();
        if seen.last() != Some(&name) {
            seen.push(name.clone());
        }
        if name == want {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{phone} never became {want}: states {seen:?}, now {:?} ({:?})",
            v.state,
            v.progress
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why `phone` failed, once it has.
async fn failure(m: &PhoneManager, phone: &str, within: Duration) -> String {
    states_until(m, phone, "failed", within).await;
    match m.get(phone).await.expect("the phone").state {
        Lifecycle::Failed(why) => why,
        other => panic!("{phone} is {other:?}"),
    }
}

/// Created through the operator API, an emulator phone goes Creating ->
/// Booting -> Running; a handset's touch, sensors and GPS reach it; its
/// screenshot is the AVD's size; stop and start work; its log is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_phone_boots_and_a_handset_drives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    sdk.add_avd(AVD, &["standin.boot_ms=1500"]);
    let kind = Arc::new(sdk.kind());
    let mut t = TestHost::start_with(move |b| b.with(Backend::Emulator, kind)).await;

    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", t.host.operator_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", t.host.admin_token).parse().unwrap();
    let mut op = OperatorClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", token.clone());
        Ok(r)
    });
    let created = op
        .create_phone(op::CreatePhoneRequest {
            name: "emu".into(),
            backend: op::Backend::Emulator as i32,
            display: Some(op::DisplaySpec {
                width_px: 720,
                height_px: 1280,
                dpi: 320,
            }),
            avd: AVD.into(),
            allowed_handsets: vec![],
            start: true,
        })
        .await
        .expect("CreatePhone")
        .into_inner();
    assert_eq!(created.name, "emu");
    let seen = states_until(&t.host.phones, "emu", "running", Duration::from_secs(30)).await;
    assert!(
        seen.iter().any(|s| s == "booting"),
        "booting is seen (the stand-in boots for 1.5 s): {seen:?}"
    );
    let log =
        std::fs::read_to_string(t.data_dir().join("logs/emu.log")).expect("the emulator's log");
    assert!(log.contains("Boot completed"), "{log}");
    assert!(
        log.contains("-avd pixel_standin") || log.contains("AVD 'pixel_standin'"),
        "{log}"
    );

    // A handset drives it: sensors and GPS from its recording, a tap.
    let handset = t.enroll("emu-handset", &["emu"]);
    let rec = write_recording(
        &t.scratch("rec"),
        "values.rec",
        "1000000000 ACCELEROMETER 1.25 -2.5 9.0\n\
         LOC 1000000000 48.137154 11.576124 519.25 1.5 87.5 3.9 11\n",
    );
    let mut o = handset.options(SourceSpec::Replay { path: rec });
    o.phone = Some("emu".into());
    // Sound both ways and the clipboard, through the emulator's own RPCs.
    let wav = t.scratch("sound").join("emu.wav");
    o.audio = mobile_client::audio::AudioOptions {
        out: Some(mobile_client::audio::AudioOut::Wav(wav.clone())),
        mic: mobile_client::audio::MicSpec::Synthetic(660.0),
        ..Default::default()
    };
    o.clipboard = true;
    let companion = Companion::connect(o).await.expect("companion connects");
    let phone = t.host.phones.connect("emu").await.expect("the phone's API");
    let p = &phone;
    eventually(Duration::from_secs(10), || async move {
        let a = p
            .sensor(SensorType::Acceleration)
            .await
            .map_err(|e| e.to_string())?;
        let g = p.gps().await.map_err(|e| e.to_string())?;
        if a == [1.25, -2.5, 9.0] && (g.latitude - 48.137154).abs() < 1e-9 {
            Ok(())
        } else {
            Err(format!("acceleration {a:?}, gps {g:?}"))
        }
    })
    .await
    .expect("the handset's sensor and GPS values reach the emulator phone");
    let input = companion.input();
    input
        .send(touch(TouchAction::Down, 300.0, 500.0))
        .await
        .unwrap();
    let shot = eventually(Duration::from_secs(5), || async move {
        let img = p
            .screenshot(ImgFormat::Rgba8888)
            .await
            .map_err(|e| e.to_string())?;
        let f = img.format.clone().unwrap_or_default();
        let blob = find_colour(&img.image, f.width, RIPPLE_RGB, 8)
            .ok_or_else(|| "no touch ripple on the screen".to_owned())?;
        if (blob.x - 300.0).abs() < 6.0 && (blob.y - 500.0).abs() < 6.0 {
            Ok((f.width, f.height))
        } else {
            Err(format!("ripple at {blob:?}"))
        }
    })
    .await
    .expect("the handset's touch reaches the emulator phone's screen");
    assert_eq!(shot, (720, 1280));
    input
        .send(touch(TouchAction::Up, 300.0, 500.0))
        .await
        .unwrap();
    companion.paste("pasted into the emulator").await.unwrap();
    eventually(Duration::from_secs(5), || async move {
        let c = p.clipboard().await.map_err(|e| e.to_string())?;
        (c == "pasted into the emulator").then_some(()).ok_or(c)
    })
    .await
    .expect("the paste reaches the emulator's clipboard (setClipboard)");
    let metrics = &t;
    eventually(Duration::from_secs(5), || async move {
        let up = metrics.metric("vphone_audio_frames_up_total").await;
        (up >= 10.0)
            .then_some(())
            .ok_or(format!("{up} microphone frames fed"))
    })
    .await
    .expect("the handset's microphone feeds the emulator (injectAudio)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = companion.finish().await.expect("finish");
    assert_eq!(r.audio.and_then(|a| a.microphone_refused), None);
    let heard = vphone_tests::bursts(&vphone_tests::read_wav(&wav), -30.0);
    let want = sim_phone::sound::touch_tone_hz(300.0, 720);
    assert!(
        heard.iter().any(|b| (b.hz - want).abs() < 15.0),
        "the touch's tone ({want:.0} Hz) comes out of the emulator's streamAudio: {heard:?}"
    );

    // Stop: the emulator exits cleanly (its discovery file is gone); start.
    let runtime = t.data_dir().join("run/emu");
    let first = advertised_pids(&runtime);
    assert_eq!(first.len(), 1, "one emulator advertised: {first:?}");
    t.host.phones.stop("emu").await.unwrap();
    states_until(&t.host.phones, "emu", "stopped", Duration::from_secs(30)).await;
    assert!(
        advertised_pids(&runtime).is_empty(),
        "a clean exit removes the discovery file"
    );
    assert!(!running(first[0]), "the emulator process is gone");
    t.host.phones.start("emu").await.unwrap();
    states_until(&t.host.phones, "emu", "running", Duration::from_secs(30)).await;
    assert_eq!(sdk.launches(AVD), 2);
    t.shutdown().await;
}

/// A crash after boot: Failed with the reason and the log's path; with
/// `restart_max` the phone is started again; without, it stays Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_reported_with_its_log_and_the_restart_policy_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    // Crashes 1 s after its first boot only.
    sdk.add_avd(
        AVD,
        &[
            "standin.boot_ms=300",
            "standin.crash_after_boot_ms=1000",
            "standin.crash_launches=1",
        ],
    );
    let (m, _) = manager(
        &tmp.path().join("h1"),
        &sdk,
        RestartPolicy::OnFailure(1),
        Duration::from_secs(30),
        &[],
    );
    m.create(spec("emu", AVD)).await.unwrap();
    states_until(&m, "emu", "running", Duration::from_secs(30)).await;
    // It crashes (Failed) and the policy starts it again at once; the
    // second launch does not crash.
    // restarted after the crash
    sdk.wait_launches(AVD, 2, Duration::from_secs(30)).await;
    states_until(&m, "emu", "running", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(m.get("emu").await.unwrap().state, Lifecycle::Running);

    // Without restarts, a crash leaves it Failed, saying why and where the log is.
    // (Another AVD: the first phone still runs its own, and the emulator
    // runs one instance per AVD.)
    sdk.add_avd(
        "crashy",
        &["standin.boot_ms=300", "standin.crash_after_boot_ms=500"],
    );
    let (m2, _) = manager(
        &tmp.path().join("h2"),
        &sdk,
        RestartPolicy::Never,
        Duration::from_secs(30),
        &[],
    );
    m2.create(spec("emu2", "crashy")).await.unwrap();
    let why = failure(&m2, "emu2", Duration::from_secs(30)).await;
    assert!(why.contains("emulator exited"), "{why}");
    assert!(why.contains("crashed"), "the log's last lines: {why}");
    assert!(
        why.contains(&tmp.path().join("h2/logs/emu2.log").display().to_string()),
        "{why}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(
        m2.get("emu2").await.unwrap().state,
        Lifecycle::Failed(_)
    ));
}

/// The desired state survives the host: after the manager is gone (its
/// emulators with it) a new one on the same registry runs the phone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_is_restored_after_a_host_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    sdk.add_avd(AVD, &["standin.boot_ms=200"]);
    let dir = tmp.path().join("host");
    {
        let (m, _) = manager(
            &dir,
            &sdk,
            RestartPolicy::Never,
            Duration::from_secs(30),
            &[],
        );
        m.create(spec("emu", AVD)).await.unwrap();
        m.create(PhoneSpec {
            start: false,
            ..spec("idle", AVD)
        })
        .await
        .unwrap();
        states_until(&m, "emu", "running", Duration::from_secs(30)).await;
    }
    let (m, _) = manager(
        &dir,
        &sdk,
        RestartPolicy::Never,
        Duration::from_secs(30),
        &[],
    );
    states_until(&m, "emu", "running", Duration::from_secs(30)).await;
    assert_eq!(m.get("idle").await.unwrap().state, Lifecycle::Stopped);
    let client = m.connect("emu").await.unwrap();
    assert!(client.status().await.unwrap().booted);
}

/// Boots that never finish, emulators that exit at once, wrong tokens and
/// discovery files others could have written: each ends Failed with a
/// reason that says what happened, and nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_emulators_fail_clearly_and_leave_nothing_running() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    let dir = tmp.path().join("host");
    let (m, _) = manager(
        &dir,
        &sdk,
        RestartPolicy::Never,
        Duration::from_secs(3),
        &[],
    );

    sdk.add_avd("slow", &["standin.boot_ms=never"]);
    m.create(spec("slow", "slow")).await.unwrap();
    let why = failure(&m, "slow", Duration::from_secs(20)).await;
    assert!(why.contains("did not finish booting within 3s"), "{why}");
    assert!(why.contains("logs/slow.log"), "{why}");

    sdk.add_avd("early", &["standin.exit_early=1"]);
    m.create(spec("early", "early")).await.unwrap();
    let why = failure(&m, "early", Duration::from_secs(20)).await;
    assert!(
        why.contains("exit status: 1") && why.contains("system image is missing"),
        "{why}"
    );

    m.create(spec("unknown", "no_such_avd")).await.unwrap();
    let why = failure(&m, "unknown", Duration::from_secs(20)).await;
    assert!(why.contains("Unknown AVD name [no_such_avd]"), "{why}");

    sdk.add_avd("liar", &["standin.advertise_wrong_token=1"]);
    m.create(spec("liar", "liar")).await.unwrap();
    let why = failure(&m, "liar", Duration::from_secs(20)).await;
    assert!(why.contains("refused our token"), "{why}");
    assert!(!why.contains("Bearer"), "no token echoed: {why}");

    sdk.add_avd("open", &["standin.discovery_mode=666"]);
    m.create(spec("open", "open")).await.unwrap();
    let why = failure(&m, "open", Duration::from_secs(20)).await;
    assert!(why.contains("may be written by others"), "{why}");

    // Every failed emulator was stopped: nothing advertised is alive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for phone in ["slow", "early", "unknown", "liar", "open"] {
        for pid in advertised_pids(&dir.join("run").join(phone)) {
            assert!(!running(pid), "{phone}'s emulator {pid} still runs");
        }
    }
}

/// An unknown flag among the operator's emulator args: the emulator
/// refuses it as the real one does, and the phone says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_emulator_flag_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    sdk.add_avd(AVD, &[]);
    let (m, _) = manager(
        &tmp.path().join("host"),
        &sdk,
        RestartPolicy::Never,
        Duration::from_secs(10),
        &["-frobnicate"],
    );
    m.create(spec("emu", AVD)).await.unwrap();
    let why = failure(&m, "emu", Duration::from_secs(20)).await;
    assert!(why.contains("unknown option: -frobnicate"), "{why}");
}

/// The emulator phone's Bluetooth: the stand-in's chip attaches to the
/// phone's own attach point under the AVD's name, and a guest stack (a
/// bumble central on the stand-in's virtual HCI) pairs with and reads an
/// encrypted characteristic through a handset's lent radio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_bluetooth_attaches_under_the_avd_name_and_a_lent_radio_serves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    sdk.add_avd(AVD, &["standin.boot_ms=200"]);
    let kind = Arc::new(sdk.kind());
    let mut t = TestHost::start_with(move |b| b.with(Backend::Emulator, kind)).await;
    t.host.phones.create(spec("emu", AVD)).await.unwrap();
    t.host
        .phones
        .wait_running("emu", Duration::from_secs(30))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        match t.host.bluetooth.info("emu").stack {
            Some(s) if s.contains(AVD) => Ok(()),
            other => Err(format!("emu's stack: {other:?}")),
        }
    })
    .await
    .expect("the emulator's chip attaches as emu's stack, named after the AVD");
    assert_eq!(
        t.host.bluetooth.info("phone-1").stack,
        None,
        "and not as any other phone's"
    );

    let bed = Testbed::start(&t.scratch("bt")).await;
    let handset = t.enroll("radio-handset", &["emu"]);
    let mut o = handset.options(SourceSpec::Synthetic { seed: 7 });
    o.phone = Some("emu".into());
    o.radio = Some(RadioOptions::new(
        bed.radio_spec().parse::<RadioSpec>().unwrap(),
    ));
    let companion = Companion::connect(o)
        .await
        .expect("companion lends its radio");
    t.radio_attached("emu").await;
    let port = sdk.hci_port(AVD).expect("the stand-in's guest HCI port");
    let mut central = bed.central(&format!("tcp-client:127.0.0.1:{port}"), &[]);
    let flow = Duration::from_secs(30);
    central.expect("connected", flow).await;
    central.expect("paired", flow).await;
    let enc = central.expect("encrypted", flow).await;
    assert_eq!(enc.json["authenticated"], true, "{}", enc.json);
    let value = central.expect("value", flow).await;
    assert_eq!(value.json["value"], vphone_tests::bumble::SECRET);
    central.expect("done", flow).await;
    companion.finish().await.expect("companion finishes");
    t.shutdown().await;
}

/// The phone's own process dies while a handset drives it: the phone is
/// Failed with the reason, the handset's session is closed saying so
/// (`PhoneStopped`, not a silent freeze), the restart policy boots the
/// phone again, and the handset can connect to it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_emulator_ends_its_session_clearly_and_the_policy_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = FakeSdk::new(tmp.path());
    sdk.add_avd(
        AVD,
        &[
            "standin.boot_ms=200",
            "standin.crash_after_boot_ms=3000",
            "standin.crash_launches=1",
        ],
    );
    let kind = Arc::new(sdk.kind());
    let mut t = TestHost::start_configured(
        |c| c.restart = RestartPolicy::OnFailure(1),
        move |b| b.with(Backend::Emulator, kind),
    )
    .await;
    t.host.phones.create(spec("emu", AVD)).await.unwrap();
    t.host
        .phones
        .wait_running("emu", Duration::from_secs(30))
        .await
        .unwrap();
    let handset = t.enroll("emu-handset", &["emu"]);
    let mut o = handset.options(SourceSpec::Synthetic { seed: 3 });
    o.phone = Some("emu".into());
    let companion = Companion::connect(o.clone())
        .await
        .expect("companion connects");
    let end = tokio::time::timeout(Duration::from_secs(15), companion.session().ended())
        .await
        .expect("the session ends when the phone dies");
    assert_eq!(
        end.code,
        mobile_client::proto::AppErrorCode::PhoneStopped,
        "{end}"
    );
    assert!(end.by_peer, "{end}");
    assert!(
        end.reason.contains("phone 'emu' failed") && end.reason.contains("emulator exited"),
        "{end}"
    );
    // The policy restarts it; the second launch does not crash.
    // restarted by the policy
    sdk.wait_launches(AVD, 2, Duration::from_secs(30)).await;
    t.host
        .phones
        .wait_running("emu", Duration::from_secs(30))
        .await
        .unwrap();
    let again = Companion::connect(o)
        .await
        .expect("the handset connects again");
    assert_eq!(again.session().welcome().phone_name, "emu");
    again.finish().await.expect("finish");
    t.shutdown().await;
}
