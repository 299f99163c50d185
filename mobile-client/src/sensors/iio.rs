//! Real sensors from the Linux IIO sysfs tree.
//!
//! Every `iio:deviceN` directory under the sysfs root (normally
//! `/sys/bus/iio/devices`) is scanned for channel families:
//!
//! | sysfs channels                                 | kind            | IIO unit -> proto unit |
//! |------------------------------------------------|-----------------|------------------------|
//! | `in_accel_{x,y,z}_{raw,input}`                 | ACCELEROMETER   | m/s^2 -> m/s^2         |
//! | `in_anglvel_{x,y,z}_{raw,input}`               | GYROSCOPE       | rad/s -> rad/s         |
//! | `in_magn_{x,y,z}_{raw,input}`                  | MAGNETOMETER    | gauss -> uT (x100)     |
//! | `in_illuminance[0]_{input,raw}`                | LIGHT           | lux -> lux             |
//! | `in_pressure[0]_{input,raw}`                   | PRESSURE        | kPa -> hPa (x10)       |
//! | `in_humidityrelative[0]_{input,raw}`           | RELATIVE_HUMIDITY | milli % -> % (/1000) |
//!
//! A `_raw` value becomes `(raw + offset) * scale` with the channel's own
//! `_offset`/`_scale` attribute or else the family's shared one
//! (`in_accel_scale`), defaulting to offset 0 and scale 1; `_input` values
//! are already scaled. Scales and offsets are read once, at discovery.
//! Vectors are rotated into the device frame with the family's
//! `in_<family>_mount_matrix` (or the device's `mount_matrix`) when
//! present. When both an accelerometer and a magnetometer exist, an
//! ORIENTATION sensor is derived from them (Android's `getRotationMatrix` +
//! `TYPE_ORIENTATION` angles). The first device providing a kind wins.
//! Max rates come from `in_<family>_sampling_frequency` or
//! `sampling_frequency` (0 = unknown).
//!
//! Samples are read from sysfs on demand (one file read per axis), which is
//! fine for the rates handsets stream (up to a few hundred Hz).

use std::fs;
use std::path::{Path, PathBuf};

use sensor_proto::bridge::{Location, SensorCapability, SensorKind};

use super::math::{self, Mat3, Vec3};
use super::{Reading, SensorSource};
use crate::ClientError;

/// The sysfs directory holding the `iio:deviceN` entries.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys/bus/iio/devices";

/// Three-axis families: sysfs prefix, kind, factor from the IIO unit to the
/// proto unit.
const VECTOR_FAMILIES: [(&str, SensorKind, f64); 3] = [
    ("accel", SensorKind::Accelerometer, 1.0),
    ("anglvel", SensorKind::Gyroscope, 1.0),
    ("magn", SensorKind::Magnetometer, 100.0),
];

/// Single-value families.
const SCALAR_FAMILIES: [(&str, SensorKind, f64); 3] = [
    ("illuminance", SensorKind::Light, 1.0),
    ("pressure", SensorKind::Pressure, 10.0),
    ("humidityrelative", SensorKind::RelativeHumidity, 0.001),
];

/// One sysfs value file and how to convert it.
#[derive(Clone, Debug)]
struct Channel {
    path: PathBuf,
    /// `(raw + offset) * factor`, factor = scale * unit conversion.
    offset: f64,
    factor: f64,
}

impl Channel {
    fn read(&self) -> Result<f64, ClientError> {
        read_number(&self.path).map(|raw| (raw + self.offset) * self.factor)
    }
}

/// The channels of one kind.
#[derive(Clone, Debug)]
struct IioSensor {
    kind: SensorKind,
    /// `name` of the IIO device.
    name: String,
    channels: Vec<Channel>,
    mount: Option<Mat3>,
    max_rate_hz: f32,
}

impl IioSensor {
    fn read(&self) -> Result<Vec<f64>, ClientError> {
        let mut values = self
            .channels
            .iter()
            .map(Channel::read)
            .collect::<Result<Vec<_>, _>>()?;
        if let (Some(m), [x, y, z]) = (&self.mount, values.as_slice()) {
            values = math::mul_vec(m, [*x, *y, *z]).to_vec();
        }
        Ok(values)
    }
}

/// Real sensors from the IIO sysfs tree (see the module docs).
#[derive(Debug)]
pub struct IioSource {
    root: PathBuf,
    sensors: Vec<IioSensor>,
}

impl IioSource {
    /// Scans `root` (normally [`DEFAULT_SYSFS_ROOT`]) for sensors.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoIioSensors`] when `root` does not exist or holds no
    /// usable sensor.
    pub fn discover(root: impl AsRef<Path>) -> Result<Self, ClientError> {
        let root = root.as_ref().to_owned();
        let no_sensors = || ClientError::NoIioSensors { root: root.clone() };
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(root = %root.display(), error = %e, "cannot list IIO devices");
                return Err(no_sensors());
            }
        };
        let mut devices: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix("iio:device")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        devices.sort();

        let mut sensors: Vec<IioSensor> = Vec::new();
        for (_, dir) in &devices {
            for sensor in scan_device(dir) {
                if sensors.iter().any(|s| s.kind == sensor.kind) {
                    tracing::info!(
                        device = %dir.display(),
                        kind = super::kind_name(sensor.kind),
                        "ignoring second IIO sensor of the same kind"
                    );
                    continue;
                }
                tracing::info!(
                    device = %dir.display(),
                    name = %sensor.name,
                    kind = super::kind_name(sensor.kind),
                    "using IIO sensor"
                );
                sensors.push(sensor);
            }
        }
        if sensors.is_empty() {
            return Err(no_sensors());
        }
        Ok(Self { root, sensors })
    }

    /// The scanned sysfs root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn sensor(&self, kind: SensorKind) -> Option<&IioSensor> {
        self.sensors.iter().find(|s| s.kind == kind)
    }

    fn vector(&self, kind: SensorKind) -> Result<Option<Vec3>, ClientError> {
        let Some(sensor) = self.sensor(kind) else {
            return Ok(None);
        };
        let v = sensor.read()?;
        Ok(match v.as_slice() {
            [x, y, z] => Some([*x, *y, *z]),
            _ => None,
        })
    }
}

/// Finds the value file of a channel: `<stem>_input` (already scaled) or
/// `<stem>_raw`.
fn value_file(dir: &Path, stem: &str) -> Option<(PathBuf, bool)> {
    let input = dir.join(format!("{stem}_input"));
    if input.is_file() {
        return Some((input, true));
    }
    let raw = dir.join(format!("{stem}_raw"));
    raw.is_file().then_some((raw, false))
}

/// The first of `names` that exists in `dir`, parsed.
fn optional_number(dir: &Path, names: &[String]) -> Result<Option<f64>, ClientError> {
    for name in names {
        let path = dir.join(name);
        if path.is_file() {
            return read_number(&path).map(Some);
        }
    }
    Ok(None)
}

fn channel(
    dir: &Path,
    family: &str,
    stem: &str,
    unit: f64,
) -> Result<Option<Channel>, ClientError> {
    let Some((path, processed)) = value_file(dir, stem) else {
        return Ok(None);
    };
    if processed {
        return Ok(Some(Channel {
            path,
            offset: 0.0,
            factor: unit,
        }));
    }
    let scale = optional_number(
        dir,
        &[format!("{stem}_scale"), format!("in_{family}_scale")],
    )?
    .unwrap_or(1.0);
    let offset = optional_number(
        dir,
        &[format!("{stem}_offset"), format!("in_{family}_offset")],
    )?
    .unwrap_or(0.0);
    Ok(Some(Channel {
        path,
        offset,
        factor: scale * unit,
    }))
}

fn max_rate(dir: &Path, family: &str) -> f32 {
    let names = [
        format!("in_{family}_sampling_frequency"),
        "sampling_frequency".to_owned(),
    ];
    match optional_number(dir, &names) {
        Ok(Some(hz)) if hz.is_finite() && hz > 0.0 => hz as f32,
        _ => 0.0,
    }
}

fn mount_matrix(dir: &Path, family: &str) -> Result<Option<Mat3>, ClientError> {
    for name in [
        format!("in_{family}_mount_matrix"),
        "mount_matrix".to_owned(),
    ] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = read_text(&path)?;
        let numbers: Vec<f64> = text
            .split([';', ','])
            .map(|f| f.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| ClientError::Iio {
                path: path.clone(),
                why: format!("not a 3x3 matrix `x1, y1, z1; x2, y2, z2; x3, y3, z3`: {text:?}"),
            })?;
        let [a, b, c, d, e, f, g, h, i] = numbers.as_slice() else {
            return Err(ClientError::Iio {
                path,
                why: format!("expected 9 numbers, found {}", numbers.len()),
            });
        };
        return Ok(Some([[*a, *b, *c], [*d, *e, *f], [*g, *h, *i]]));
    }
    Ok(None)
}

/// The sensors of one `iio:deviceN` directory. A family whose attributes
/// are unreadable is skipped with a warning.
fn scan_device(dir: &Path) -> Vec<IioSensor> {
    let name = read_text(&dir.join("name")).unwrap_or_else(|_| {
        dir.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    });
    let mut found = Vec::new();
    for (family, kind, unit) in VECTOR_FAMILIES {
        let sensor = (|| {
            let mut channels = Vec::with_capacity(3);
            for axis in ["x", "y", "z"] {
                match channel(dir, family, &format!("in_{family}_{axis}"), unit)? {
                    Some(c) => channels.push(c),
                    None => return Ok(None),
                }
            }
            Ok::<_, ClientError>(Some(IioSensor {
                kind,
                name: name.clone(),
                channels,
                mount: mount_matrix(dir, family)?,
                max_rate_hz: max_rate(dir, family),
            }))
        })();
        match sensor {
            Ok(Some(s)) => found.push(s),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping IIO {family} channels"),
        }
    }
    for (family, kind, unit) in SCALAR_FAMILIES {
        let sensor = (|| {
            for stem in [format!("in_{family}"), format!("in_{family}0")] {
                if let Some(c) = channel(dir, family, &stem, unit)? {
                    return Ok::<_, ClientError>(Some(IioSensor {
                        kind,
                        name: name.clone(),
                        channels: vec![c],
                        mount: None,
                        max_rate_hz: max_rate(dir, family),
                    }));
                }
            }
            Ok(None)
        })();
        match sensor {
            Ok(Some(s)) => found.push(s),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping IIO {family} channel"),
        }
    }
    found
}

fn read_text(path: &Path) -> Result<String, ClientError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| ClientError::Iio {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

fn read_number(path: &Path) -> Result<f64, ClientError> {
    let text = read_text(path)?;
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| ClientError::Iio {
            path: path.to_owned(),
            why: format!("not a number: {text:?}"),
        })
}

impl SensorSource for IioSource {
    fn capabilities(&self) -> Vec<SensorCapability> {
        let mut caps: Vec<SensorCapability> = self
            .sensors
            .iter()
            .map(|s| SensorCapability {
                kind: s.kind as i32,
                max_rate_hz: s.max_rate_hz,
                name: s.name.clone(),
            })
            .collect();
        if let (Some(a), Some(m)) = (
            self.sensor(SensorKind::Accelerometer),
            self.sensor(SensorKind::Magnetometer),
        ) {
            caps.push(SensorCapability {
                kind: SensorKind::Orientation as i32,
                max_rate_hz: if a.max_rate_hz > 0.0 && m.max_rate_hz > 0.0 {
                    a.max_rate_hz.min(m.max_rate_hz)
                } else {
                    0.0
                },
                name: format!("orientation from {} + {}", a.name, m.name),
            });
        }
        caps
    }

    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError> {
        let values = if kind == SensorKind::Orientation {
            match (
                self.vector(SensorKind::Accelerometer)?,
                self.vector(SensorKind::Magnetometer)?,
            ) {
                (Some(a), Some(m)) => math::orientation_from_accel_mag(a, m).map(|o| o.to_vec()),
                _ => None,
            }
        } else {
            match self.sensor(kind) {
                Some(sensor) => Some(sensor.read()?),
                None => None,
            }
        };
        Ok(values.map(|v| Reading {
            timestamp_ns: now_ns,
            values: v.into_iter().map(|x| x as f32).collect(),
        }))
    }

    fn location(&mut self, _now_ns: u64) -> Result<Option<Location>, ClientError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), format!("{content}\n")).unwrap();
    }

    /// A sysfs-like tree: an accel+gyro IMU, a magnetometer, a light
    /// sensor, a temperature-only device (ignored) and a trigger (ignored).
    fn fake_tree(root: &Path) {
        let imu = root.join("iio:device0");
        write(&imu, "name", "bmi260");
        write(&imu, "in_accel_x_raw", "100");
        write(&imu, "in_accel_y_raw", "-200");
        write(&imu, "in_accel_z_raw", "16384");
        write(&imu, "in_accel_scale", "0.000598550");
        write(&imu, "in_accel_sampling_frequency", "200.000000");
        write(&imu, "in_accel_mount_matrix", "0, 1, 0; -1, 0, 0; 0, 0, 1");
        write(&imu, "in_anglvel_x_raw", "10");
        write(&imu, "in_anglvel_y_raw", "0");
        write(&imu, "in_anglvel_z_raw", "-10");
        write(&imu, "in_anglvel_scale", "0.001065264");
        write(&imu, "in_anglvel_x_offset", "5");

        let mag = root.join("iio:device1");
        write(&mag, "name", "ak09918");
        write(&mag, "in_magn_x_raw", "0");
        write(&mag, "in_magn_y_raw", "1400");
        write(&mag, "in_magn_z_raw", "-2900");
        // Per-channel scales, in gauss per LSB.
        write(&mag, "in_magn_x_scale", "0.0015");
        write(&mag, "in_magn_y_scale", "0.0015");
        write(&mag, "in_magn_z_scale", "0.0015");

        let als = root.join("iio:device2");
        write(&als, "name", "stk3310");
        write(&als, "in_illuminance_input", "312.5");
        write(&als, "in_pressure_raw", "95");
        write(&als, "in_pressure_scale", "1.0");

        let temp = root.join("iio:device3");
        write(&temp, "name", "cpu-thermal");
        write(&temp, "in_temp_raw", "40000");

        write(&root.join("trigger0"), "name", "sysfstrig0");
    }

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() < 1e-4 * b.abs().max(1.0)
    }

    #[test]
    fn reads_a_fake_sysfs_tree_with_units_and_mount_matrix() {
        let tmp = tempfile::tempdir().unwrap();
        fake_tree(tmp.path());
        let mut src = IioSource::discover(tmp.path()).unwrap();

        let mut kinds: Vec<_> = src.capabilities().iter().map(|c| c.kind).collect();
        kinds.sort_unstable();
        let mut expected = vec![
            SensorKind::Accelerometer as i32,
            SensorKind::Gyroscope as i32,
            SensorKind::Magnetometer as i32,
            SensorKind::Orientation as i32,
            SensorKind::Light as i32,
            SensorKind::Pressure as i32,
        ];
        expected.sort_unstable();
        assert_eq!(kinds, expected);
        let accel_cap = src
            .capabilities()
            .into_iter()
            .find(|c| c.kind == SensorKind::Accelerometer as i32)
            .unwrap();
        assert_eq!(accel_cap.name, "bmi260");
        assert!((accel_cap.max_rate_hz - 200.0).abs() < 1e-3);

        // Mount matrix: device = M * chip = (chip_y, -chip_x, chip_z).
        let s = 0.000_598_55;
        let a = src.sample(SensorKind::Accelerometer, 42).unwrap().unwrap();
        assert_eq!(a.timestamp_ns, 42);
        assert!(close(a.values[0], -200.0 * s), "{a:?}");
        assert!(close(a.values[1], -100.0 * s), "{a:?}");
        assert!(close(a.values[2], 16384.0 * s), "{a:?}");

        let g = src.sample(SensorKind::Gyroscope, 1).unwrap().unwrap();
        let gs = 0.001_065_264;
        assert!(close(g.values[0], 15.0 * gs), "offset applied: {g:?}");
        assert!(close(g.values[2], -10.0 * gs), "{g:?}");

        // Gauss -> microtesla.
        let m = src.sample(SensorKind::Magnetometer, 1).unwrap().unwrap();
        assert!(close(m.values[1], 1400.0 * 0.0015 * 100.0), "{m:?}");
        assert!(close(m.values[2], -2900.0 * 0.0015 * 100.0), "{m:?}");

        let l = src.sample(SensorKind::Light, 1).unwrap().unwrap();
        assert_eq!(l.values, vec![312.5]);
        // kPa -> hPa.
        let p = src.sample(SensorKind::Pressure, 1).unwrap().unwrap();
        assert_eq!(p.values, vec![950.0]);

        // Orientation from accel + mag: nearly flat, facing about north.
        let o = src.sample(SensorKind::Orientation, 1).unwrap().unwrap();
        assert!(o.values[1].abs() < 2.0 && o.values[2].abs() < 2.0, "{o:?}");
        assert!(o.values[0] < 5.0 || o.values[0] > 355.0, "{o:?}");

        // Kinds without a sensor produce nothing; no location.
        assert!(src.sample(SensorKind::Proximity, 1).unwrap().is_none());
        assert!(src.location(1).unwrap().is_none());

        // New raw values are read on every sample.
        write(&tmp.path().join("iio:device2"), "in_illuminance_input", "7");
        let l = src.sample(SensorKind::Light, 2).unwrap().unwrap();
        assert_eq!(l.values, vec![7.0]);

        // A sensor that disappears yields an error naming the file.
        fs::remove_file(tmp.path().join("iio:device0/in_accel_x_raw")).unwrap();
        let err = src.sample(SensorKind::Accelerometer, 3).unwrap_err();
        assert!(err.to_string().contains("in_accel_x_raw"), "{err}");
    }

    #[test]
    fn no_sensors_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("iio:device0"), "name", "only-temp");
        write(&tmp.path().join("iio:device0"), "in_temp_raw", "1");
        for root in [tmp.path().to_owned(), tmp.path().join("missing")] {
            let err = IioSource::discover(&root).unwrap_err();
            assert!(matches!(err, ClientError::NoIioSensors { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&root.display().to_string()), "{msg}");
            assert!(msg.contains("try --sensors synthetic"), "{msg}");
        }
        let default = ClientError::NoIioSensors {
            root: DEFAULT_SYSFS_ROOT.into(),
        };
        assert_eq!(
            default.to_string(),
            "no IIO sensors found under /sys/bus/iio/devices (is this a phone or laptop with \
             sensors? try --sensors synthetic)"
        );
    }

    #[test]
    fn malformed_attributes_skip_the_family() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("iio:device0");
        for axis in ["x", "y", "z"] {
            write(&dev, &format!("in_accel_{axis}_raw"), "1");
            write(&dev, &format!("in_magn_{axis}_raw"), "1");
        }
        write(&dev, "in_accel_scale", "banana");
        write(&dev, "in_magn_mount_matrix", "1, 0; 0, 1");
        write(&dev, "in_illuminance0_raw", "3");
        write(&dev, "in_illuminance0_scale", "2");
        let mut src = IioSource::discover(tmp.path()).unwrap();
        let kinds: Vec<_> = src.capabilities().iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![SensorKind::Light as i32]);
        let l = src.sample(SensorKind::Light, 1).unwrap().unwrap();
        assert_eq!(l.values, vec![6.0]);
    }
}
