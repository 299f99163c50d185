//! Sensor sources and the sampler that turns them into `SensorBatch`es.
//!
//! A [`SensorSource`] produces readings on demand: the [`Sampler`] asks it
//! for one reading of one kind at a time, only for the kinds the host
//! activated (`ActiveSensors`) and at most at the requested rate. Sources:
//!
//! - [`synthetic::SyntheticSource`]: a deterministic, physically
//!   consistent handset motion (accelerometer, gyroscope, magnetometer and
//!   orientation all derived from one rotation over time) plus a walking
//!   GPS track and slow environment sensors.
//! - [`replay::ReplaySource`]: plays back a recording (the line format is
//!   documented in [`replay`]); [`replay::RecordingSource`] records what
//!   another source produced.
//! - [`iio::IioSource`]: real Linux sensors from the IIO sysfs tree.
//!
//! [`SourceSpec`] parses the CLI's `--sensors` value and opens the source.
//!
//! Timestamps are handset monotonic nanoseconds ([`MonotonicClock`]), the
//! time base of `SensorSample.timestamp_ns` and `ClockPing`.

pub mod iio;
pub mod math;
pub mod replay;
pub mod sampler;
pub mod synthetic;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use sensor_proto::bridge::{Location, SensorCapability, SensorKind};

use crate::ClientError;

pub use sampler::{Sampler, SamplerEvent, run_sampler};

/// One reading of one sensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// When the reading was taken, handset monotonic ns.
    pub timestamp_ns: u64,
    /// The values, in the units and order of the kind (see `SensorKind`).
    pub values: Vec<f32>,
}

/// Something that can produce sensor readings and location fixes.
///
/// The [`Sampler`] drives it: it calls [`SensorSource::sample`] only for
/// active kinds, at most at their requested rate, with the current
/// monotonic time. A source returns the reading valid at `now_ns` (live and
/// synthetic sources) or the newest not yet returned reading at or before
/// `now_ns` (recordings); `Ok(None)` means "nothing new".
pub trait SensorSource: Send + fmt::Debug {
    /// The sensors this source can produce, for `Hello.capabilities`.
    fn capabilities(&self) -> Vec<SensorCapability>;

    /// One reading of `kind` at `now_ns`.
    ///
    /// # Errors
    ///
    /// Source specific (e.g. [`ClientError::Iio`] when a sysfs read fails).
    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError>;

    /// The location fix at `now_ns`, `Ok(None)` if the source has no (new)
    /// location.
    ///
    /// # Errors
    ///
    /// Source specific.
    fn location(&mut self, now_ns: u64) -> Result<Option<Location>, ClientError>;

    /// True once the source will never produce anything again (a recording
    /// played to its end without looping).
    fn finished(&self) -> bool {
        false
    }
}

impl<S: SensorSource + ?Sized> SensorSource for Box<S> {
    fn capabilities(&self) -> Vec<SensorCapability> {
        (**self).capabilities()
    }

    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError> {
        (**self).sample(kind, now_ns)
    }

    fn location(&mut self, now_ns: u64) -> Result<Option<Location>, ClientError> {
        (**self).location(now_ns)
    }

    fn finished(&self) -> bool {
        (**self).finished()
    }
}

/// The handset's monotonic clock: Unix-time nanoseconds at the clock's
/// creation plus the monotonic time elapsed since, so it never jumps (even
/// when the wall clock is adjusted) yet is comparable with the host's Unix
/// clock once the bridge's clock sync has measured the offset. Never 0.
/// Copy it to share one time base between the sampler, the location updates
/// and `ClockPing`.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    epoch: Instant,
    epoch_unix_ns: u64,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    #[must_use]
    pub fn new() -> Self {
        let epoch_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            epoch: Instant::now(),
            epoch_unix_ns: epoch_unix_ns.max(1),
        }
    }

    /// Unix nanoseconds at the epoch plus the monotonic time since.
    #[must_use]
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.epoch_unix_ns)
    }

    /// The [`Instant`] at time `ns` of this clock (times before the epoch
    /// map to the epoch; times more than about 30 years ahead are clamped).
    #[must_use]
    pub fn instant_at(&self, ns: u64) -> Instant {
        const MAX_AHEAD_NS: u64 = 1_000_000_000_000_000_000;
        self.epoch
            + std::time::Duration::from_nanos(
                ns.saturating_sub(self.epoch_unix_ns).min(MAX_AHEAD_NS),
            )
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The `--sensors` choice.
///
/// Text forms: `synthetic`, `synthetic:SEED` (SEED a u64), `still` (the
/// synthetic handset lying still: constant readings stamped when taken),
/// `replay:FILE`,
/// `iio` (the default sysfs root `/sys/bus/iio/devices`) or `iio:DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceSpec {
    /// [`synthetic::SyntheticSource`] with a seed.
    Synthetic {
        /// Seed of the trajectory.
        seed: u64,
    },
    /// [`synthetic::SyntheticSource`] lying still (`still`): constant
    /// readings, stamped when they are taken.
    Still,
    /// [`replay::ReplaySource`] of a recording file (looping).
    Replay {
        /// The recording.
        path: PathBuf,
    },
    /// [`iio::IioSource`] under a sysfs root.
    Iio {
        /// Directory holding the `iio:deviceN` entries.
        root: PathBuf,
    },
}

impl FromStr for SourceSpec {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClientError::BadSourceSpec { spec: s.to_owned() };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        match (name, arg) {
            ("synthetic", None) => Ok(Self::Synthetic {
                seed: synthetic::SyntheticConfig::default().seed,
            }),
            ("synthetic", Some(seed)) => Ok(Self::Synthetic {
                seed: seed.parse().map_err(|_| bad())?,
            }),
            ("still", None) => Ok(Self::Still),
            ("replay", Some(path)) if !path.is_empty() => Ok(Self::Replay { path: path.into() }),
            ("iio", None) => Ok(Self::Iio {
                root: iio::DEFAULT_SYSFS_ROOT.into(),
            }),
            ("iio", Some(root)) if !root.is_empty() => Ok(Self::Iio { root: root.into() }),
            _ => Err(bad()),
        }
    }
}

impl SourceSpec {
    /// Opens the source.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoIioSensors`], [`ClientError::Recording`],
    /// [`ClientError::Io`].
    pub fn open(&self) -> Result<Box<dyn SensorSource>, ClientError> {
        Ok(match self {
            Self::Synthetic { seed } => Box::new(synthetic::SyntheticSource::new(
                synthetic::SyntheticConfig {
                    seed: *seed,
                    ..synthetic::SyntheticConfig::default()
                },
            )),
            Self::Still => Box::new(synthetic::SyntheticSource::new(
                synthetic::SyntheticConfig {
                    still: true,
                    ..synthetic::SyntheticConfig::default()
                },
            )),
            Self::Replay { path } => Box::new(replay::ReplaySource::open(
                path,
                replay::ReplayOptions::default(),
            )?),
            Self::Iio { root } => Box::new(iio::IioSource::discover(root)?),
        })
    }
}

/// The proto name of a kind without its `SENSOR_KIND_` prefix
/// (`ACCELEROMETER`, ...), as used in recordings and logs.
#[must_use]
pub fn kind_name(kind: SensorKind) -> &'static str {
    let full = kind.as_str_name();
    full.strip_prefix("SENSOR_KIND_").unwrap_or(full)
}

/// The kind for a [`kind_name`] (or the full proto name); `None` for
/// unknown names and `UNSPECIFIED`.
#[must_use]
pub fn kind_from_name(name: &str) -> Option<SensorKind> {
    let kind = SensorKind::from_str_name(name)
        .or_else(|| SensorKind::from_str_name(&format!("SENSOR_KIND_{name}")))?;
    (kind != SensorKind::Unspecified).then_some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!(
            "synthetic:7".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic { seed: 7 }
        );
        assert!(matches!(
            "synthetic".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic { .. }
        ));
        assert_eq!("still".parse::<SourceSpec>().unwrap(), SourceSpec::Still);
        assert!("still:3".parse::<SourceSpec>().is_err());
        assert_eq!(
            "replay:/tmp/x.txt".parse::<SourceSpec>().unwrap(),
            SourceSpec::Replay {
                path: "/tmp/x.txt".into()
            }
        );
        assert_eq!(
            "iio".parse::<SourceSpec>().unwrap(),
            SourceSpec::Iio {
                root: "/sys/bus/iio/devices".into()
            }
        );
        for bad in ["", "replay", "replay:", "synthetic:x", "camera", "iio:"] {
            assert!(
                matches!(
                    bad.parse::<SourceSpec>(),
                    Err(ClientError::BadSourceSpec { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for v in 1..=13 {
            let kind = SensorKind::try_from(v).unwrap();
            assert_eq!(kind_from_name(kind_name(kind)), Some(kind));
        }
        assert_eq!(kind_name(SensorKind::Accelerometer), "ACCELEROMETER");
        assert_eq!(kind_from_name("UNSPECIFIED"), None);
        assert_eq!(kind_from_name("accelerometer"), None);
    }

    #[test]
    fn clock_is_monotonic_and_nonzero() {
        let c = MonotonicClock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(a >= 1 && b >= a);
    }
}
