//! The phone actor with real sim phones: lifecycle, desired state, and
//! the errors a person sees for bad requests.

use std::sync::Arc;
use std::time::Duration;

use host_core::backend::Backends;
use host_core::backend::emulator::EmulatorKind;
use host_core::phones::{
    DEFAULT_DISPLAY, Lifecycle, ManagerConfig, PhoneManager, PhoneSpec, RestartPolicy,
};
use host_core::registry::{Backend, DesiredState, Registry};

fn cfg(dir: &std::path::Path) -> ManagerConfig {
    ManagerConfig {
        data_dir: dir.to_path_buf(),
        attach: Arc::new(
            host_core::bluetooth::AttachPoints::new(host_core::bluetooth::DEFAULT_ATTACH_IP)
                .unwrap(),
        ),
        boot_timeout: Duration::from_secs(60),
        restart: RestartPolicy::Never,
        emulator_args: Vec::new(),
        backends: Backends::default()
            .with(Backend::Sim, Arc::new(sim_phone::SimKind::default()))
            .with(Backend::Emulator, Arc::new(EmulatorKind::default())),
        first_phone: Some(PhoneSpec {
            name: "phone-1".into(),
            backend: Backend::Sim,
            display: DEFAULT_DISPLAY,
            avd: None,
            start: true,
        }),
        fleet: host_core::lease::FleetConfig::single("test-host"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_phone_1_and_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(Registry::open_in_memory().unwrap());
    let m = PhoneManager::spawn(reg.clone(), cfg(dir.path())).unwrap();
    let v = m
        .wait_running("phone-1", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(v.record.backend, Backend::Sim);
    let client = m.connect("phone-1").await.unwrap();
    assert!(client.status().await.unwrap().booted);
    // Stop, and the desired state is recorded.
    m.stop("phone-1").await.unwrap();
    assert_eq!(reg.phone("phone-1").unwrap().desired, DesiredState::Stopped);
    for _ in 0..100 {
        if m.get("phone-1").await.unwrap().state == Lifecycle::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.get("phone-1").await.unwrap().state, Lifecycle::Stopped);
    assert!(
        m.connect("phone-1")
            .await
            .unwrap_err()
            .to_string()
            .contains("not running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(Registry::open_in_memory().unwrap());
    let m = PhoneManager::spawn(reg, cfg(dir.path())).unwrap();
    let spec = |name: &str, backend, display, avd: Option<&str>| PhoneSpec {
        name: name.into(),
        backend,
        display,
        avd: avd.map(Into::into),
        start: false,
    };
    let e = m
        .create(spec("phone-1", Backend::Sim, (720, 1280, 320), None))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "phone 'phone-1' already exists");
    let e = m
        .create(spec("x y", Backend::Sim, (720, 1280, 320), None))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("invalid phone name"), "{e}");
    let e = m
        .create(spec("tiny", Backend::Sim, (10, 10, 320), None))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unsupported screen size 10x10"),
        "{e}"
    );
    let e = m
        .create(spec("emu", Backend::Emulator, (1080, 2400, 420), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs an AVD"), "{e}");
    let e = m.get("ghost").await.unwrap_err();
    assert_eq!(e.to_string(), "phone 'ghost' not found");
    m.wait_running("phone-1", Duration::from_secs(10))
        .await
        .unwrap();
    let e = m.delete("phone-1", false).await.unwrap_err();
    assert!(e.to_string().contains("use --force"), "{e}");
    m.delete("phone-1", true).await.unwrap();
    assert!(m.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_phone_without_kvm_or_sdk_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(Registry::open_in_memory().unwrap());
    let m = PhoneManager::spawn(reg, cfg(dir.path())).unwrap();
    m.create(PhoneSpec {
        name: "emu".into(),
        backend: Backend::Emulator,
        display: (1080, 2400, 420),
        avd: Some("pixel".into()),
        start: true,
    })
    .await
    .unwrap();
    let e = m
        .wait_running("emu", Duration::from_secs(10))
        .await
        .unwrap_err();
    // A host that cannot run emulators is unavailable, not bad input: the
    // operator API answers UNAVAILABLE and the CLI exits with its code.
    assert_eq!(e.kind(), host_core::ErrorKind::Unavailable, "{e}");
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let e = status.message().to_owned();
    // Which reason depends on the machine: no KVM, or no SDK binary.
    assert!(e.contains("'emu' failed:"), "{e}");
    assert!(e.contains("KVM") || e.contains("emulator"), "{e}");
}
