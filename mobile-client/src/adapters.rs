//! What the user could lend: local Bluetooth adapters and nearby BLE
//! peripherals (`vphone-companion radios`), and the BlueZ side of lending an
//! adapter through the HCI user channel (`--radio hci:N`).
//!
//! Adapters come from Linux sysfs (`/sys/class/bluetooth/hciN`: index, bus,
//! rfkill state, and the address on kernels that still expose it) and, with
//! the cargo feature `bluez` (on by default) where `bluetoothd` runs, from
//! BlueZ over D-Bus (`bluer`: address, name, powered). The BLE scan uses
//! `btleplug` (BlueZ too). Without BlueZ the listing says so and shows what
//! sysfs shows.
//!
//! Lending `hci:N` needs the adapter down: where BlueZ runs, it is powered off
//! through BlueZ before the user channel opens and powered on again afterwards
//! ([`PowerRestore`]); otherwise the user channel is opened as it is and the
//! kernel's answer (CAP_NET_ADMIN, EBUSY, ENODEV) is reported.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::ClientError;

/// Where Linux lists Bluetooth adapters.
pub const SYSFS_BLUETOOTH: &str = "/sys/class/bluetooth";

/// One local Bluetooth adapter.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct AdapterInfo {
    /// The N of `hciN`.
    pub index: u16,
    /// `hciN`.
    pub name: String,
    /// The public address, where sysfs (older kernels) or BlueZ tell it.
    pub address: Option<String>,
    /// The bus it hangs on (`usb`, `pci`, `serial`, `virtual`, ...).
    pub bus: Option<String>,
    /// The controller type, where sysfs tells it (older kernels).
    pub kind: Option<String>,
    /// Blocked by rfkill (soft or hard), where an rfkill switch exists.
    pub rfkill_blocked: Option<bool>,
    /// Powered (up), from BlueZ.
    pub powered: Option<bool>,
    /// Its friendly name, from BlueZ.
    pub alias: Option<String>,
}

impl AdapterInfo {
    /// The `--radio` spec that lends it.
    #[must_use]
    pub fn radio_spec(&self) -> String {
        format!("hci:{}", self.index)
    }
}

/// A BLE peripheral seen advertising.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Peripheral {
    /// Its address.
    pub address: String,
    /// Its advertised or GAP name.
    pub name: Option<String>,
    /// Signal strength, dBm.
    pub rssi: Option<i16>,
    /// The adapter that saw it.
    pub adapter: String,
}

/// What `vphone-companion radios` shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RadiosReport {
    /// Local adapters, by index.
    pub adapters: Vec<AdapterInfo>,
    /// Why BlueZ added nothing (not running, no D-Bus, built without it).
    pub bluez_note: Option<String>,
    /// Peripherals seen in the scan, strongest first.
    pub peripherals: Vec<Peripheral>,
    /// Why there was no scan, or what went wrong with it.
    pub scan_note: Option<String>,
    /// How long the scan ran.
    pub scan: Duration,
}

/// Reads the adapters under `root` (normally [`SYSFS_BLUETOOTH`]). A missing
/// directory means no adapters.
#[must_use]
pub fn sysfs_adapters(root: &Path) -> Vec<AdapterInfo> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut out: Vec<AdapterInfo> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // `hci0:256` entries are connections, not adapters.
            let index: u16 = name.strip_prefix("hci")?.parse().ok()?;
            let path = e.path();
            let address = read(&path.join("address")).filter(|a| a != "00:00:00:00:00:00");
            let bus = std::fs::read_link(path.join("device").join("subsystem"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                .or_else(|| read(&path.join("bus")).map(|b| b.to_lowercase()))
                .or_else(|| (!path.join("device").exists()).then(|| "virtual".to_owned()));
            let rfkill_blocked = std::fs::read_dir(&path).ok().and_then(|d| {
                d.flatten()
                    .find(|r| r.file_name().to_string_lossy().starts_with("rfkill"))
                    .map(|r| {
                        ["soft", "hard"]
                            .iter()
                            .any(|f| read(&r.path().join(f)).as_deref() == Some("1"))
                    })
            });
            Some(AdapterInfo {
                index,
                name,
                address,
                bus,
                kind: read(&path.join("type")),
                rfkill_blocked,
                ..AdapterInfo::default()
            })
        })
        .collect();
    out.sort_by_key(|a| a.index);
    out
}

/// An adapter as BlueZ reports it.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct BluezAdapter {
    /// `hciN`.
    pub name: String,
    /// Its address.
    pub address: Option<String>,
    /// Its friendly name.
    pub alias: Option<String>,
    /// Powered.
    pub powered: Option<bool>,
}

/// Adds what BlueZ knows to the sysfs list (adapters only BlueZ lists are
/// added too).
pub fn merge_bluez(adapters: &mut Vec<AdapterInfo>, bluez: Vec<BluezAdapter>) {
    for b in bluez {
        let Some(index) = b.name.strip_prefix("hci").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let pos = match adapters.iter().position(|a| a.index == index) {
            Some(p) => p,
            None => {
                adapters.push(AdapterInfo {
                    index,
                    name: b.name.clone(),
                    ..AdapterInfo::default()
                });
                adapters.len() - 1
            }
        };
        let a = &mut adapters[pos];
        a.address = b.address.or(a.address.take());
        a.alias = b.alias;
        a.powered = b.powered;
    }
    adapters.sort_by_key(|a| a.index);
}

/// Lists adapters (sysfs under `root`, then BlueZ) and, if `scan` is not
/// zero, nearby BLE peripherals. Never fails: what cannot be known is
/// explained in the notes.
pub async fn list(root: &Path, scan: Duration) -> RadiosReport {
    let mut report = list_adapters(root).await;
    scan_into(&mut report, scan).await;
    report
}

/// The adapters only (sysfs under `root`, then BlueZ), no scan.
pub async fn list_adapters(root: &Path) -> RadiosReport {
    let mut report = RadiosReport {
        adapters: sysfs_adapters(root),
        ..RadiosReport::default()
    };
    match bluez::adapters().await {
        Ok(found) => merge_bluez(&mut report.adapters, found),
        Err(note) => {
            report.bluez_note = Some(note);
            report.scan_note = Some("no BLE scan without BlueZ".to_owned());
        }
    }
    report
}

/// True when [`scan_into`] would scan for `scan` (BlueZ is there, `scan` is
/// not zero and some adapter may be powered).
#[must_use]
pub fn can_scan(report: &RadiosReport, scan: Duration) -> bool {
    report.bluez_note.is_none()
        && !scan.is_zero()
        && !report.adapters.iter().all(|a| a.powered == Some(false))
}

/// Scans for BLE peripherals for `scan` and adds them (or why not) to
/// `report`.
pub async fn scan_into(report: &mut RadiosReport, scan: Duration) {
    report.scan = scan;
    if report.bluez_note.is_some() {
        return;
    }
    if scan.is_zero() {
        report.scan_note = Some("BLE scan skipped (--scan-seconds 0)".to_owned());
    } else if report.adapters.iter().all(|a| a.powered == Some(false)) {
        report.scan_note = Some("no powered adapter to scan with".to_owned());
    } else {
        match bluez::scan(scan).await {
            Ok(p) => report.peripherals = p,
            Err(e) => report.scan_note = Some(format!("BLE scan failed: {e}")),
        }
    }
}

impl fmt::Display for RadiosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(note) = &self.bluez_note {
            writeln!(f, "note: {note}")?;
        }
        if self.adapters.is_empty() {
            writeln!(f, "no Bluetooth adapters found")?;
        } else {
            writeln!(f, "Local Bluetooth adapters:")?;
            for a in &self.adapters {
                let state = match (a.powered, a.rfkill_blocked) {
                    (_, Some(true)) => "blocked (rfkill)",
                    (Some(true), _) => "up (powered)",
                    (Some(false), _) => "down",
                    (None, _) => "up/down unknown without BlueZ",
                };
                write!(
                    f,
                    "  {:<6} {:<17}  {:<8} {}",
                    a.name,
                    a.address.as_deref().unwrap_or("address unknown"),
                    a.bus.as_deref().unwrap_or("bus ?"),
                    state
                )?;
                if let Some(kind) = &a.kind {
                    write!(f, ", {kind}")?;
                }
                if let Some(alias) = &a.alias {
                    write!(f, ", \"{alias}\"")?;
                }
                writeln!(f, "\n         lend it with: --radio {}", a.radio_spec())?;
            }
        }
        if !self.peripherals.is_empty() {
            writeln!(
                f,
                "Nearby BLE peripherals ({} s scan):",
                self.scan.as_secs_f32()
            )?;
            for p in &self.peripherals {
                writeln!(
                    f,
                    "  {:<17}  {:>8}  {:<24} via {}",
                    p.address,
                    p.rssi
                        .map_or_else(|| "? dBm".to_owned(), |r| format!("{r} dBm")),
                    p.name
                        .as_deref()
                        .map_or_else(String::new, |n| format!("\"{n}\"")),
                    p.adapter
                )?;
            }
        } else if self.bluez_note.is_none() && self.scan_note.is_none() {
            writeln!(
                f,
                "no BLE peripherals seen in {} s",
                self.scan.as_secs_f32()
            )?;
        }
        if let Some(note) = &self.scan_note
            && self.bluez_note.is_none()
        {
            writeln!(f, "note: {note}")?;
        }
        writeln!(
            f,
            "Also: --radio tcp:HOST:PORT lends an H4-over-TCP controller (bumble, RootCanal, \
             a rooted Android's HCI proxy)."
        )
    }
}

/// Gives a BlueZ-managed adapter back after the user channel closed: powers
/// it on again if it was powered before lending.
pub struct PowerRestore {
    #[cfg(feature = "bluez")]
    inner: bluez::Restore,
    #[cfg(not(feature = "bluez"))]
    never: std::convert::Infallible,
}

impl fmt::Debug for PowerRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerRestore").finish_non_exhaustive()
    }
}

impl PowerRestore {
    /// Restores the adapter's power state (logs, never fails).
    pub async fn restore(self) {
        #[cfg(feature = "bluez")]
        self.inner.restore().await;
        #[cfg(not(feature = "bluez"))]
        match self.never {}
    }
}

/// Before opening `hciN`'s user channel: where BlueZ manages the adapter,
/// power it off through BlueZ and return how to restore it. `Ok(None)` when
/// BlueZ is not there (the kernel's answer then tells the user what to do).
///
/// # Errors
/// [`ClientError::Radio`] when BlueZ manages the adapter but refuses to
/// power it off.
pub async fn power_off_for_user_channel(index: u16) -> Result<Option<PowerRestore>, ClientError> {
    #[cfg(feature = "bluez")]
    {
        Ok(bluez::power_off(index)
            .await?
            .map(|inner| PowerRestore { inner }))
    }
    #[cfg(not(feature = "bluez"))]
    {
        tracing::debug!(
            index,
            "built without BlueZ support: opening hci{index} as it is"
        );
        Ok(None)
    }
}

#[cfg(feature = "bluez")]
mod bluez {
    //! BlueZ over D-Bus: `bluer` for adapters, `btleplug` for the scan.

    use std::collections::HashMap;
    use std::time::Duration;

    use btleplug::api::{Central as _, Manager as _, Peripheral as _, ScanFilter};

    use super::{BluezAdapter, Peripheral};
    use crate::ClientError;

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    /// A BlueZ session, or why there is none.
    async fn session() -> Result<bluer::Session, String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, bluer::Session::new()).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                tracing::debug!("D-Bus system bus: {e}");
                Err(
                    "BlueZ is not running (no D-Bus system bus): adapters from sysfs only; no BLE scan"
                        .to_owned(),
                )
            }
            Err(_) => Err(
                "the D-Bus system bus did not answer: adapters from sysfs only; no BLE scan"
                    .to_owned(),
            ),
        }
    }

    async fn names(session: &bluer::Session) -> Result<Vec<String>, String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, session.adapter_names()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                tracing::debug!("org.bluez: {e}");
                Err(
                    "BlueZ is not running (no org.bluez on the system bus): adapters from sysfs only; no BLE scan"
                        .to_owned(),
                )
            }
            Err(_) => Err("BlueZ did not answer: adapters from sysfs only; no BLE scan".to_owned()),
        }
    }

    pub(super) async fn adapters() -> Result<Vec<BluezAdapter>, String> {
        let session = session().await?;
        let mut out = Vec::new();
        for name in names(&session).await? {
            let Ok(a) = session.adapter(&name) else {
                continue;
            };
            out.push(BluezAdapter {
                address: a.address().await.ok().map(|a| a.to_string()),
                alias: a.alias().await.ok(),
                powered: a.is_powered().await.ok(),
                name,
            });
        }
        Ok(out)
    }

    pub(super) async fn scan(duration: Duration) -> Result<Vec<Peripheral>, String> {
        let manager = btleplug::platform::Manager::new()
            .await
            .map_err(|e| e.to_string())?;
        let centrals = manager.adapters().await.map_err(|e| e.to_string())?;
        let mut scanning = Vec::new();
        let mut last_err = None;
        for c in centrals {
            match c.start_scan(ScanFilter::default()).await {
                Ok(()) => scanning.push(c),
                Err(e) => last_err = Some(e.to_string()),
            }
        }
        if scanning.is_empty() {
            return Err(last_err.unwrap_or_else(|| "no adapter can scan".to_owned()));
        }
        tokio::time::sleep(duration).await;
        let mut seen: HashMap<String, Peripheral> = HashMap::new();
        for c in &scanning {
            let adapter = c
                .adapter_info()
                .await
                .ok()
                .and_then(|i| i.split_whitespace().next().map(str::to_owned))
                .unwrap_or_default();
            for p in c.peripherals().await.unwrap_or_default() {
                let Ok(Some(props)) = p.properties().await else {
                    continue;
                };
                let entry = Peripheral {
                    address: props.address.to_string(),
                    name: props.local_name.or(props.advertisement_name),
                    rssi: props.rssi,
                    adapter: adapter.clone(),
                };
                let keep = seen
                    .get(&entry.address)
                    .is_none_or(|old| old.rssi < entry.rssi);
                if keep {
                    seen.insert(entry.address.clone(), entry);
                }
            }
            let _ = c.stop_scan().await;
        }
        let mut out: Vec<Peripheral> = seen.into_values().collect();
        out.sort_by(|a, b| b.rssi.cmp(&a.rssi).then(a.address.cmp(&b.address)));
        Ok(out)
    }

    /// A powered-off adapter to power on again.
    pub(super) struct Restore {
        _session: bluer::Session,
        adapter: bluer::Adapter,
        was_powered: bool,
    }

    pub(super) async fn power_off(index: u16) -> Result<Option<Restore>, ClientError> {
        let name = format!("hci{index}");
        let session = match session().await {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!("{why}; opening {name} as it is");
                return Ok(None);
            }
        };
        match names(&session).await {
            Ok(n) if n.contains(&name) => {}
            Ok(_) => {
                tracing::debug!("BlueZ does not manage {name}; opening it as it is");
                return Ok(None);
            }
            Err(why) => {
                tracing::debug!("{why}; opening {name} as it is");
                return Ok(None);
            }
        }
        let fail = |what: &str, e: bluer::Error| ClientError::Radio {
            spec: format!("hci:{index}"),
            why: format!("BlueZ could not {what} {name}: {e}"),
        };
        let adapter = session.adapter(&name).map_err(|e| fail("find", e))?;
        let was_powered = adapter
            .is_powered()
            .await
            .map_err(|e| fail("read the power state of", e))?;
        if was_powered {
            tracing::info!("powering {name} off through BlueZ while it is lent");
            adapter
                .set_powered(false)
                .await
                .map_err(|e| fail("power off", e))?;
        }
        Ok(Some(Restore {
            _session: session,
            adapter,
            was_powered,
        }))
    }

    impl Restore {
        pub(super) async fn restore(self) {
            if !self.was_powered {
                return;
            }
            let name = self.adapter.name().to_owned();
            // After the user channel closes the kernel hands the adapter back
            // to BlueZ, which needs a moment to list it again.
            for attempt in 0..20 {
                match self.adapter.set_powered(true).await {
                    Ok(()) => {
                        tracing::info!("{name} powered on again through BlueZ");
                        return;
                    }
                    Err(e) if attempt == 19 => {
                        tracing::warn!("could not power {name} on again through BlueZ: {e}");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
    }
}

#[cfg(not(feature = "bluez"))]
mod bluez {
    //! Built without the `bluez` feature: sysfs only.

    use std::time::Duration;

    use super::{BluezAdapter, Peripheral};

    const NOTE: &str = "built without BlueZ support (cargo feature `bluez`): adapters from sysfs only; no BLE scan";

    pub(super) async fn adapters() -> Result<Vec<BluezAdapter>, String> {
        Err(NOTE.to_owned())
    }

    pub(super) async fn scan(_: Duration) -> Result<Vec<Peripheral>, String> {
        Err(NOTE.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn sysfs_adapters_are_read_and_connections_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bluetooth");
        // hci1: an old kernel with address/type/bus files, rfkill soft-blocked.
        write(&root.join("hci1/address"), "00:1A:7D:DA:71:13\n");
        write(&root.join("hci1/type"), "Primary\n");
        write(&root.join("hci1/bus"), "USB\n");
        write(&root.join("hci1/rfkill3/soft"), "1\n");
        write(&root.join("hci1/rfkill3/hard"), "0\n");
        // hci0: a modern kernel, a device symlink to its bus.
        std::fs::create_dir_all(dir.path().join("bus/usb")).unwrap();
        std::fs::create_dir_all(root.join("hci0/device")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("bus/usb"),
            root.join("hci0/device/subsystem"),
        )
        .unwrap();
        write(&root.join("hci0/rfkill0/soft"), "0\n");
        write(&root.join("hci0/rfkill0/hard"), "0\n");
        // A connection entry and junk.
        std::fs::create_dir_all(root.join("hci0:256")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();

        let a = sysfs_adapters(&root);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!((a[0].index, a[0].bus.as_deref()), (0, Some("usb")));
        assert_eq!(a[0].address, None);
        assert_eq!(a[0].rfkill_blocked, Some(false));
        assert_eq!(a[1].address.as_deref(), Some("00:1A:7D:DA:71:13"));
        assert_eq!(a[1].kind.as_deref(), Some("Primary"));
        assert_eq!(a[1].bus.as_deref(), Some("usb"));
        assert_eq!(a[1].rfkill_blocked, Some(true));
        assert_eq!(a[1].radio_spec(), "hci:1");
        assert!(sysfs_adapters(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn bluez_details_are_merged_by_index() {
        let mut a = vec![AdapterInfo {
            index: 0,
            name: "hci0".into(),
            bus: Some("usb".into()),
            ..AdapterInfo::default()
        }];
        merge_bluez(
            &mut a,
            vec![
                BluezAdapter {
                    name: "hci0".into(),
                    address: Some("AA:BB:CC:DD:EE:FF".into()),
                    alias: Some("laptop".into()),
                    powered: Some(true),
                },
                BluezAdapter {
                    name: "hci2".into(),
                    powered: Some(false),
                    ..BluezAdapter::default()
                },
            ],
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].address.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
        assert_eq!(a[0].bus.as_deref(), Some("usb"));
        assert_eq!(a[0].powered, Some(true));
        assert_eq!(a[1].radio_spec(), "hci:2");
    }

    #[test]
    fn the_listing_names_the_spec_and_explains_what_is_missing() {
        let r = RadiosReport {
            adapters: vec![AdapterInfo {
                index: 0,
                name: "hci0".into(),
                ..AdapterInfo::default()
            }],
            bluez_note: Some("BlueZ is not running".into()),
            ..RadiosReport::default()
        };
        let text = r.to_string();
        assert!(text.contains("note: BlueZ is not running"), "{text}");
        assert!(text.contains("--radio hci:0"), "{text}");
        assert!(text.contains("tcp:HOST:PORT"), "{text}");
        let empty = RadiosReport::default().to_string();
        assert!(empty.contains("no Bluetooth adapters found"), "{empty}");
    }
}
