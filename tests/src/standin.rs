//! An Android SDK for tests whose `emulator/emulator` is the emulator
//! stand-in (`tests/emulator-standin`), with AVDs made on demand: what the
//! emulator backend's tests run against where no real emulator can.

use std::path::{Path, PathBuf};

use host_core::backend::emulator::EmulatorKind;

/// A fake SDK and AVD home in a directory of the test's.
#[derive(Debug)]
pub struct FakeSdk {
    /// The SDK root (`ANDROID_SDK_ROOT`).
    pub sdk: PathBuf,
    /// Where the AVDs are (`ANDROID_AVD_HOME`).
    pub avd_home: PathBuf,
}

impl FakeSdk {
    /// Makes the SDK under `dir`: `emulator/emulator` links to the built
    /// stand-in.
    ///
    /// # Panics
    /// When the stand-in is not built or the files cannot be made.
    pub fn new(dir: &Path) -> Self {
        let sdk = dir.join("sdk");
        let avd_home = dir.join("avd");
        std::fs::create_dir_all(sdk.join("emulator")).expect("sdk dir");
        std::fs::create_dir_all(&avd_home).expect("avd home");
        std::os::unix::fs::symlink(
            vphone_testkit::binary("vphone-emulator-standin"),
            sdk.join("emulator/emulator"),
        )
        .expect("linking the stand-in as emulator/emulator");
        Self { sdk, avd_home }
    }

    /// Creates AVD `name` with a 720x1280 screen and `config` lines
    /// (`key=value`, e.g. the stand-in's `standin.boot_ms=800`).
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn add_avd(&self, name: &str, config: &[&str]) -> PathBuf {
        let dir = self.avd_home.join(format!("{name}.avd"));
        std::fs::create_dir_all(&dir).expect("avd dir");
        std::fs::write(
            self.avd_home.join(format!("{name}.ini")),
            format!(
                "avd.ini.encoding=UTF-8\npath={}\npath.rel=avd/{name}.avd\ntarget=android-35\n",
                dir.display()
            ),
        )
        .expect("avd ini");
        self.configure(name, config);
        dir
    }

    /// Rewrites AVD `name`'s `config.ini` with `config` after the screen.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn configure(&self, name: &str, config: &[&str]) {
        let mut text = String::from("hw.lcd.width=720\nhw.lcd.height=1280\nhw.lcd.density=320\n");
        for line in config {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(self.avd_home.join(format!("{name}.avd/config.ini")), text)
            .expect("config.ini");
    }

    /// The emulator backend, running this SDK's emulator with these AVDs.
    pub fn kind(&self) -> EmulatorKind {
        EmulatorKind {
            sdk_root: Some(self.sdk.clone()),
            avd_home: Some(self.avd_home.clone()),
        }
    }

    /// How many times AVD `name` was launched.
    pub fn launches(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.avd_home.join(format!("{name}.avd/standin.launches")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The port where AVD `name`'s guest Bluetooth stack connects (H4
    /// over TCP), once the stand-in has opened it.
    pub fn hci_port(&self, name: &str) -> Option<u16> {
        std::fs::read_to_string(self.avd_home.join(format!("{name}.avd/standin-hci.port")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits until AVD `name` was launched `n` times.
    ///
    /// # Panics
    /// When that does not happen within `within`.
    pub async fn wait_launches(&self, name: &str, n: u32, within: std::time::Duration) {
        crate::eventually(within, || async {
            match self.launches(name) {
                got if got == n => Ok(()),
                got => Err(format!("{got} launches of {name}, waiting for {n}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The pids of the emulators that advertise themselves in a phone's
/// private runtime dir (`<data dir>/run/<phone>`): their discovery files.
pub fn advertised_pids(runtime_dir: &Path) -> Vec<u32> {
    std::fs::read_dir(runtime_dir.join("avd/running"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("pid_")?
                .strip_suffix(".ini")?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether process `pid` runs (a zombie has exited and does not count).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
