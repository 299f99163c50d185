//! Boots a real Android Virtual Device through the emulator backend, where
//! the machine has what that needs: an Android SDK with the emulator
//! (`ANDROID_SDK_ROOT` or `ANDROID_HOME`), a usable `/dev/kvm`, and an AVD
//! named in `VPHONE_TEST_AVD`. It is `#[ignore]`d, so a run that cannot
//! boot an AVD counts it as skipped, never as passed; `scripts/test` runs
//! it (`--run-ignored only`) where those three are set. Everywhere else the
//! emulator backend runs against the emulator stand-in
//! (`tests/tests/emulator.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use host_core::backend::emulator::{check_kvm, find_sdk};
use host_core::phones::{ManagerConfig, PhoneManager, PhoneSpec, RestartPolicy};
use host_core::registry::{Backend, Registry};
use sensor_proto::emulator::image_format::ImgFormat;
use sensor_proto::emulator::sensor_value::SensorType;

/// Why this machine cannot boot an AVD, if it cannot.
fn skip_reason() -> Option<String> {
    let env = |k: &str| std::env::var(k).ok();
    if let Err(e) = find_sdk(&env) {
        return Some(e.to_string());
    }
    if let Err(e) = check_kvm(Path::new("/dev/kvm")) {
        return Some(e.to_string());
    }
    if env("VPHONE_TEST_AVD").is_none_or(|a| a.is_empty()) {
        return Some("VPHONE_TEST_AVD is not set (name an AVD to boot)".to_owned());
    }
    None
}

#[tokio::test]
#[ignore = "boots a real AVD: needs ANDROID_SDK_ROOT, a usable /dev/kvm and VPHONE_TEST_AVD"]
async fn boots_a_real_avd_and_drives_it() {
    if let Some(why) = skip_reason() {
        panic!("this machine cannot boot an AVD: {why}");
    }
    let avd = std::env::var("VPHONE_TEST_AVD").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(Registry::open_in_memory().unwrap());
    let m = PhoneManager::spawn(
        reg,
        ManagerConfig {
            data_dir: dir.path().to_path_buf(),
            attach: Arc::new(
                host_core::bluetooth::AttachPoints::new(host_core::bluetooth::DEFAULT_ATTACH_IP)
                    .unwrap(),
            ),
            boot_timeout: Duration::from_secs(900),
            restart: RestartPolicy::Never,
            emulator_args: Vec::new(),
            backends: host_core::backend::Backends::default().with(
                Backend::Emulator,
                Arc::new(host_core::backend::emulator::EmulatorKind::default()),
            ),
            first_phone: None,
            fleet: host_core::lease::FleetConfig::single("test-host"),
        },
    )
    .unwrap();
    m.create(PhoneSpec {
        name: "real".into(),
        backend: Backend::Emulator,
        display: (1080, 2400, 420),
        avd: Some(avd),
        start: true,
    })
    .await
    .unwrap();
    m.wait_running("real", Duration::from_secs(900))
        .await
        .unwrap();
    let client = m.connect("real").await.unwrap();
    let img = client.screenshot(ImgFormat::Png).await.unwrap();
    assert!(!img.image.is_empty());
    client
        .set_sensor(SensorType::Acceleration, &[0.0, 9.8, 0.5])
        .await
        .unwrap();
    let v = client.sensor(SensorType::Acceleration).await.unwrap();
    assert!((v[1] - 9.8).abs() < 0.01, "{v:?}");
    m.stop("real").await.unwrap();
}
