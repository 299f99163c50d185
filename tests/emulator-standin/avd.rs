//! Finding an AVD the way the SDK's tools do, and reading its
//! `config.ini`: the screen it declares (`hw.lcd.*`) and the stand-in's own
//! behaviour keys (`standin.*`, which a real AVD never has).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// `key=value` lines: an AVD's `.ini` files have the discovery file's format.
use host_core::backend::emulator::parse_discovery as parse_ini;

/// A found AVD.
#[derive(Debug)]
pub(crate) struct Avd {
    /// Its name.
    pub name: String,
    /// Its `<name>.avd` directory.
    pub dir: PathBuf,
    /// Its `config.ini`, as keys and values.
    pub config: HashMap<String, String>,
}

/// Where AVDs live: `ANDROID_AVD_HOME`, else `ANDROID_USER_HOME/avd`, else
/// `ANDROID_SDK_HOME/.android/avd`, else `~/.android/avd`.
pub(crate) fn home(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(h) = set("ANDROID_AVD_HOME") {
        return h;
    }
    if let Some(h) = set("ANDROID_USER_HOME") {
        return h.join("avd");
    }
    if let Some(h) = set("ANDROID_SDK_HOME") {
        return h.join(".android").join("avd");
    }
    set("HOME").unwrap_or_default().join(".android").join("avd")
}

/// The AVD `name` under `home`.
///
/// # Errors
/// The emulator's message for an AVD it cannot find.
pub(crate) fn find(home: &Path, name: &str) -> Result<Avd, String> {
    let unknown = || {
        format!(
            "Unknown AVD name [{name}], use -list-avds to see valid list.\n\
             ERROR   | (Note: Directories are searched in the order $ANDROID_AVD_HOME, \
             $ANDROID_SDK_HOME/avd and $HOME/.android/avd)"
        )
    };
    let ini = std::fs::read_to_string(home.join(format!("{name}.ini"))).map_err(|_| unknown())?;
    let ini = parse_ini(&ini);
    let dir = match (ini.get("path"), ini.get("path.rel")) {
        (Some(p), _) if Path::new(p).is_dir() => PathBuf::from(p),
        (_, Some(rel)) => home.parent().unwrap_or(home).join(rel),
        _ => return Err(unknown()),
    };
    let config = std::fs::read_to_string(dir.join("config.ini")).map_err(|e| {
        format!(
            "Could not read AVD config file {}: {e}",
            dir.join("config.ini").display()
        )
    })?;
    Ok(Avd {
        name: name.to_owned(),
        dir,
        config: parse_ini(&config),
    })
}

/// The AVDs under `home` (`-list-avds`).
pub(crate) fn list(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".ini"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// How the stand-in behaves, from the AVD's `standin.*` keys.
#[derive(Debug)]
pub(crate) struct Behaviour {
    /// How long the "boot" takes (`standin.boot_ms`, default 1500); `None`
    /// (`never`) boots forever.
    pub boot: Option<Duration>,
    /// Exit with an error before advertising anything
    /// (`standin.exit_early=1`).
    pub exit_early: bool,
    /// Crash (abort) this long after the boot (`standin.crash_after_boot_ms`).
    pub crash_after_boot: Option<Duration>,
    /// Crash only on the first N launches of this AVD
    /// (`standin.crash_launches`; default: every launch).
    pub crash_launches: Option<u32>,
    /// Advertise a token other than the one the API requires
    /// (`standin.advertise_wrong_token=1`).
    pub wrong_token: bool,
    /// The discovery file's mode (`standin.discovery_mode`, octal, default
    /// 1600, as the emulator's).
    pub discovery_mode: u32,
}

impl Behaviour {
    /// From an AVD's config.
    ///
    /// # Errors
    /// A key with a value that does not parse.
    pub(crate) fn from_config(c: &HashMap<String, String>) -> Result<Self, String> {
        let ms = |k: &str| -> Result<Option<Duration>, String> {
            c.get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| format!("{k}={v} is not a number of milliseconds"))
                })
                .transpose()
        };
        let flag = |k: &str| {
            c.get(k)
                .is_some_and(|v| v == "1" || v == "yes" || v == "true")
        };
        Ok(Self {
            boot: match c.get("standin.boot_ms").map(String::as_str) {
                Some("never") => None,
                _ => Some(ms("standin.boot_ms")?.unwrap_or(Duration::from_millis(1500))),
            },
            exit_early: flag("standin.exit_early"),
            crash_after_boot: ms("standin.crash_after_boot_ms")?,
            crash_launches: c
                .get("standin.crash_launches")
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("standin.crash_launches={v} is not a count"))
                })
                .transpose()?,
            wrong_token: flag("standin.advertise_wrong_token"),
            discovery_mode: match c.get("standin.discovery_mode") {
                Some(v) => u32::from_str_radix(v, 8)
                    .map_err(|_| format!("standin.discovery_mode={v} is not an octal mode"))?,
                None => 0o1600,
            },
        })
    }
}

/// The screen an AVD declares: `hw.lcd.width`, `hw.lcd.height`,
/// `hw.lcd.density` (defaults: a 720x1280 phone at 320 dpi).
pub(crate) fn screen(c: &HashMap<String, String>) -> (u32, u32, u32) {
    let get = |k: &str, d: u32| c.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    (
        get("hw.lcd.width", 720),
        get("hw.lcd.height", 1280),
        get("hw.lcd.density", 320),
    )
}
