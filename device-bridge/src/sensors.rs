//! Sans-IO sensor sample filter: latest wins, never backwards.

use std::collections::HashMap;

use sensor_proto::bridge::{SensorKind, SensorSample};

/// What to do with one received sample.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum SampleVerdict {
    /// Newer than anything applied for its sensor: apply it.
    Apply,
    /// Not newer than a sample already applied for its sensor: drop it.
    Stale,
}

/// A sample named a sensor the handset never advertised (or no sensor at
/// all): close with `APP_ERROR_CODE_UNKNOWN_SENSOR`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct UnknownSensor(pub i32);

impl std::fmt::Display for UnknownSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sample for sensor kind {} that the handset did not advertise",
            self.0
        )
    }
}

/// Per sensor, the highest seq applied so far. A sample is applied only if
/// its seq is above that, so values never go backwards even when datagrams
/// are reordered or duplicated.
#[derive(Clone, Debug, Default)]
pub struct LatestWins {
    allowed: Vec<SensorKind>,
    last: HashMap<SensorKind, u64>,
    stale: u64,
    applied: u64,
}

impl LatestWins {
    /// A filter accepting only the `allowed` kinds (the handset's advertised
    /// capabilities).
    #[must_use]
    pub fn new(allowed: impl IntoIterator<Item = SensorKind>) -> Self {
        let allowed = allowed
            .into_iter()
            .filter(|k| *k != SensorKind::Unspecified)
            .collect();
        Self {
            allowed,
            ..Self::default()
        }
    }

    /// Judges one sample and records it if applied.
    ///
    /// # Errors
    ///
    /// [`UnknownSensor`] for an unknown, unspecified or unadvertised kind.
    pub fn check(&mut self, sample: &SensorSample) -> Result<SampleVerdict, UnknownSensor> {
        let kind = SensorKind::try_from(sample.kind)
            .ok()
            .filter(|k| self.allowed.contains(k))
            .ok_or(UnknownSensor(sample.kind))?;
        let last = self.last.entry(kind).or_insert(0);
        if sample.seq > *last {
            *last = sample.seq;
            self.applied += 1;
            Ok(SampleVerdict::Apply)
        } else {
            self.stale += 1;
            Ok(SampleVerdict::Stale)
        }
    }

    /// The highest applied seq of `kind` (0 if none).
    #[must_use]
    pub fn last_applied(&self, kind: SensorKind) -> u64 {
        self.last.get(&kind).copied().unwrap_or(0)
    }

    /// Samples dropped as stale so far.
    #[must_use]
    pub fn stale_count(&self) -> u64 {
        self.stale
    }

    /// Samples applied so far.
    #[must_use]
    pub fn applied_count(&self) -> u64 {
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: SensorKind, seq: u64) -> SensorSample {
        SensorSample {
            kind: kind as i32,
            seq,
            ..SensorSample::default()
        }
    }

    #[test]
    fn older_or_equal_samples_are_stale_per_sensor() {
        let mut f = LatestWins::new([SensorKind::Accelerometer, SensorKind::Light]);
        assert_eq!(
            f.check(&s(SensorKind::Accelerometer, 5)),
            Ok(SampleVerdict::Apply)
        );
        assert_eq!(
            f.check(&s(SensorKind::Accelerometer, 3)),
            Ok(SampleVerdict::Stale)
        );
        assert_eq!(
            f.check(&s(SensorKind::Accelerometer, 5)),
            Ok(SampleVerdict::Stale)
        );
        assert_eq!(f.check(&s(SensorKind::Light, 1)), Ok(SampleVerdict::Apply));
        assert_eq!(
            f.check(&s(SensorKind::Accelerometer, 9)),
            Ok(SampleVerdict::Apply)
        );
        assert_eq!(f.last_applied(SensorKind::Accelerometer), 9);
        assert_eq!((f.applied_count(), f.stale_count()), (3, 2));
    }

    #[test]
    fn unknown_and_unadvertised_kinds_are_errors() {
        let mut f = LatestWins::new([SensorKind::Light]);
        assert_eq!(f.check(&s(SensorKind::Gyroscope, 1)), Err(UnknownSensor(2)));
        assert_eq!(
            f.check(&s(SensorKind::Unspecified, 1)),
            Err(UnknownSensor(0))
        );
        let mut odd = s(SensorKind::Light, 1);
        odd.kind = 999;
        assert_eq!(f.check(&odd), Err(UnknownSensor(999)));
    }
}
