//! A synthetic, physically consistent handset.
//!
//! The handset is held by someone walking slowly around a large circle: the
//! phone is tilted top-edge-up by about 30 degrees (reading posture), sways
//! gently in pitch, roll and heading, and its screen's top points roughly
//! along the walking direction. Everything is derived from one rotation
//! `R(t)` (device to East-North-Up world, see [`super::math`]) and its exact
//! time derivative, and is a deterministic function of the monotonic time
//! and the seed:
//!
//! - accelerometer = `R^T (a_lin + [0, 0, g])`, m/s^2: gravity (9.80665,
//!   down) as the accelerometer feels it plus a small linear acceleration
//!   (walking bob, hand sway, the centripetal part of the walk);
//! - gyroscope = the angular velocity `w` with `dR/dt = R [w]x`, rad/s, in
//!   the device frame (computed analytically from the Euler-angle rates);
//! - magnetometer = a fixed Earth field `R^T [0, 21, -43.5]` uT (21 uT
//!   horizontal towards magnetic north, 43.5 uT vertical downwards:
//!   inclination about 64 degrees, magnitude 48.3 uT, as in central Europe);
//! - orientation = Android's `TYPE_ORIENTATION` of `R`
//!   ([`super::math::orientation_from_rotation`]);
//! - location = the walk: constant speed along the circle, bearing the
//!   direction of travel, altitude gently varying;
//! - uncalibrated variants = the calibrated value plus a constant bias,
//!   reported in `values[3..6]` as Android does; light, pressure (from the
//!   altitude), temperature, humidity and proximity (far) vary slowly.

use std::f64::consts::TAU;

use sensor_proto::bridge::{Location, SensorCapability, SensorKind};

use super::math::{
    self, Mat3, STANDARD_GRAVITY, Vec3, add, mul, mul_vec, rot_x, rot_y, rot_z, transpose,
};
use super::{Reading, SensorSource};
use crate::ClientError;

/// Earth's magnetic field in the world (ENU) frame, uT.
pub const EARTH_FIELD_UT: Vec3 = [0.0, 21.0, -43.5];

/// Mean Earth radius, metres (for the local flat-earth GPS track).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

const ACCEL_BIAS: Vec3 = [0.02, -0.015, 0.03];
const GYRO_DRIFT: Vec3 = [0.0021, -0.0013, 0.0008];
const MAG_BIAS: Vec3 = [12.5, -7.25, 4.0];

/// Parameters of the synthetic handset.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of the trajectory (phases, frequencies, walking direction).
    pub seed: u64,
    /// Add linear acceleration (walking bob, hand sway, centripetal). When
    /// false the accelerometer measures gravity only.
    pub linear_accel: bool,
    /// Where the walk starts: latitude, degrees.
    pub start_latitude_deg: f64,
    /// Where the walk starts: longitude, degrees.
    pub start_longitude_deg: f64,
    /// Altitude around which the walk varies, metres.
    pub altitude_m: f64,
    /// Walking speed, m/s.
    pub walking_speed_mps: f64,
    /// The handset lies still where the walk starts (a phone on a desk):
    /// time stands at the start, the gyroscope reads zero, the location
    /// does not move; readings are still stamped when they are taken.
    pub still: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            linear_accel: true,
            // Marienplatz, Munich.
            start_latitude_deg: 48.137_154,
            start_longitude_deg: 11.576_124,
            altitude_m: 519.0,
            walking_speed_mps: 1.4,
            still: false,
        }
    }
}

/// `amp * sin(omega * t + phase)`.
#[derive(Clone, Copy, Debug)]
struct Osc {
    amp: f64,
    omega: f64,
    phase: f64,
}

impl Osc {
    fn value(&self, t: f64) -> f64 {
        self.amp * (self.omega * t + self.phase).sin()
    }

    fn rate(&self, t: f64) -> f64 {
        self.amp * self.omega * (self.omega * t + self.phase).cos()
    }
}

/// splitmix64: a tiny deterministic generator for the trajectory
/// parameters.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        // 53 random mantissa bits.
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    /// An oscillator with amplitude `amp`, frequency around `hz` (+-25 %),
    /// random phase.
    fn osc(&mut self, amp: f64, hz: f64) -> Osc {
        Osc {
            amp,
            omega: TAU * hz * self.range(0.75, 1.25),
            phase: self.range(0.0, TAU),
        }
    }
}

/// The handset's state at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Motion {
    /// Device to world rotation.
    pub(crate) rotation: Mat3,
    /// Angular velocity, device frame, rad/s.
    pub(crate) omega_device: Vec3,
    /// Linear acceleration, world frame, m/s^2.
    pub(crate) linear_accel_world: Vec3,
}

/// The synthetic handset (see the module docs).
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    /// The clock time of the first sample: the trajectory starts there, so
    /// it is the same whatever the clock's epoch.
    origin_ns: Option<u64>,
    config: SyntheticConfig,
    radius_m: f64,
    /// +1 walks clockwise (turning right), -1 counter-clockwise.
    turn: f64,
    bearing0: f64,
    pitch0: f64,
    pitch: [Osc; 2],
    roll: [Osc; 2],
    yaw: [Osc; 2],
    sway: [Osc; 2],
    bob: Osc,
    altitude: Osc,
    light: Osc,
    weather: Osc,
}

impl SyntheticSource {
    /// A synthetic handset with the given parameters.
    #[must_use]
    pub fn new(config: SyntheticConfig) -> Self {
        let mut rng = SplitMix(config.seed);
        Self {
            origin_ns: None,
            radius_m: rng.range(120.0, 200.0),
            turn: if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 },
            bearing0: rng.range(0.0, TAU),
            pitch0: rng.range(0.45, 0.65),
            pitch: [rng.osc(0.12, 0.07), rng.osc(0.05, 0.23)],
            roll: [rng.osc(0.15, 0.05), rng.osc(0.04, 0.31)],
            yaw: [rng.osc(0.2, 0.04), rng.osc(0.05, 0.17)],
            sway: [rng.osc(0.15, 0.6), rng.osc(0.12, 0.45)],
            // Steps at about 1.8 Hz.
            bob: rng.osc(0.35, 1.8),
            altitude: rng.osc(1.5, 0.005),
            light: rng.osc(60.0, 0.02),
            weather: rng.osc(1.0, 0.001),
            config,
        }
    }

    /// The parameters.
    #[must_use]
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Curvature rate of the walk: d(bearing)/dt, rad/s.
    fn turn_rate(&self) -> f64 {
        self.turn * self.config.walking_speed_mps / self.radius_m
    }

    /// Walking direction, radians clockwise from north.
    fn bearing(&self, t: f64) -> f64 {
        self.bearing0 + self.turn_rate() * t
    }

    /// The handset's motion at `t` seconds.
    pub(crate) fn motion(&self, t: f64) -> Motion {
        let sum = |o: &[Osc; 2]| o[0].value(t) + o[1].value(t);
        let rate = |o: &[Osc; 2]| o[0].rate(t) + o[1].rate(t);

        // Heading of the screen's top = walking bearing + wobble; a compass
        // heading h is a rotation by -h about +z.
        let psi = -(self.bearing(t) + sum(&self.yaw));
        let psi_rate = -(self.turn_rate() + rate(&self.yaw));
        let theta = self.pitch0 + sum(&self.pitch);
        let theta_rate = rate(&self.pitch);
        let phi = sum(&self.roll);
        let phi_rate = rate(&self.roll);

        let (rz, rx, ry) = (rot_z(psi), rot_x(theta), rot_y(phi));
        let rotation = mul(&mul(&rz, &rx), &ry);
        // R = Rz Rx Ry  =>  w = Ry^T Rx^T [0,0,psi'] + Ry^T [theta',0,0] + [0,phi',0].
        let ry_t = transpose(&ry);
        let omega_device = add(
            add(
                mul_vec(&ry_t, mul_vec(&transpose(&rx), [0.0, 0.0, psi_rate])),
                mul_vec(&ry_t, [theta_rate, 0.0, 0.0]),
            ),
            [0.0, phi_rate, 0.0],
        );

        let linear_accel_world = if self.config.linear_accel {
            let b = self.bearing(t);
            let v = self.config.walking_speed_mps;
            // d/dt of v * [sin b, cos b].
            let centripetal = [
                v * self.turn_rate() * b.cos(),
                -v * self.turn_rate() * b.sin(),
                0.0,
            ];
            add(
                centripetal,
                [
                    self.sway[0].value(t),
                    self.sway[1].value(t),
                    self.bob.value(t),
                ],
            )
        } else {
            [0.0; 3]
        };
        Motion {
            rotation,
            omega_device,
            linear_accel_world,
        }
    }

    fn accel(m: &Motion) -> Vec3 {
        let specific_force = add(m.linear_accel_world, [0.0, 0.0, STANDARD_GRAVITY]);
        mul_vec(&transpose(&m.rotation), specific_force)
    }

    fn mag(m: &Motion) -> Vec3 {
        mul_vec(&transpose(&m.rotation), EARTH_FIELD_UT)
    }

    fn altitude(&self, t: f64) -> f64 {
        self.config.altitude_m + self.altitude.value(t)
    }

    /// The values of `kind` at `t` seconds; `None` for kinds this source
    /// does not simulate.
    /// Seconds since `origin_ns` on the trajectory (0 for a still handset).
    fn time(&self, now_ns: u64, origin_ns: u64) -> f64 {
        if self.config.still {
            0.0
        } else {
            seconds(now_ns.saturating_sub(origin_ns))
        }
    }

    pub(crate) fn values(&self, kind: SensorKind, t: f64) -> Option<Vec<f32>> {
        let mut m = self.motion(t);
        if self.config.still {
            m.omega_device = [0.0; 3];
            m.linear_accel_world = [0.0; 3];
        }
        let v3 = |v: Vec3| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let with_bias = |v: Vec3, bias: Vec3| {
            add(v, bias)
                .iter()
                .chain(bias.iter())
                .map(|&x| x as f32)
                .collect::<Vec<_>>()
        };
        Some(match kind {
            SensorKind::Accelerometer => v3(Self::accel(&m)),
            SensorKind::Gyroscope => v3(m.omega_device),
            SensorKind::Magnetometer => v3(Self::mag(&m)),
            SensorKind::Orientation => v3(math::orientation_from_rotation(&m.rotation)),
            SensorKind::AccelerometerUncalibrated => with_bias(Self::accel(&m), ACCEL_BIAS),
            SensorKind::GyroscopeUncalibrated => with_bias(m.omega_device, GYRO_DRIFT),
            SensorKind::MagnetometerUncalibrated => with_bias(Self::mag(&m), MAG_BIAS),
            SensorKind::Light => vec![(250.0 + self.light.value(t)) as f32],
            // Barometric formula (ISA troposphere) at the current altitude.
            SensorKind::Pressure => {
                let p = (1013.25 + 4.0 * self.weather.value(t))
                    * (1.0 - 2.255_77e-5 * self.altitude(t)).powf(5.255_88);
                vec![p as f32]
            }
            SensorKind::AmbientTemperature => vec![(21.5 + 0.5 * self.weather.value(t)) as f32],
            SensorKind::RelativeHumidity => vec![(45.0 - 3.0 * self.weather.value(t)) as f32],
            SensorKind::Proximity => vec![PROXIMITY_MAX_CM],
            SensorKind::HeartRate | SensorKind::Unspecified => return None,
        })
    }

    /// The location fix at `t` seconds.
    pub(crate) fn fix(&self, t: f64) -> Location {
        let v = if self.config.still {
            0.0
        } else {
            self.config.walking_speed_mps
        };
        let k = self.turn_rate();
        let b0 = self.bearing0;
        let b = self.bearing(t);
        // Integral of v * [sin b, cos b] (east, north) from 0 to t.
        let (east, north) = if k.abs() < 1e-12 {
            (v * t * b0.sin(), v * t * b0.cos())
        } else {
            (
                (v / k) * (b0.cos() - b.cos()),
                (v / k) * (b.sin() - b0.sin()),
            )
        };
        let lat0 = self.config.start_latitude_deg;
        let latitude_deg = lat0 + (north / EARTH_RADIUS_M).to_degrees();
        let longitude_deg = self.config.start_longitude_deg
            + (east / (EARTH_RADIUS_M * lat0.to_radians().cos())).to_degrees();
        Location {
            latitude_deg,
            longitude_deg: (longitude_deg + 540.0).rem_euclid(360.0) - 180.0,
            altitude_m: Some(self.altitude(t)),
            speed_mps: Some(v),
            bearing_deg: Some(b.to_degrees().rem_euclid(360.0)),
            accuracy_m: Some(3.9),
            satellites: 11,
            timestamp_ns: 0,
        }
    }
}

/// Max range of the synthetic proximity sensor (always "far").
const PROXIMITY_MAX_CM: f32 = 5.0;

/// The kinds [`SyntheticSource`] simulates, with their max rates.
const SYNTHETIC_KINDS: [(SensorKind, f32); 12] = [
    (SensorKind::Accelerometer, 400.0),
    (SensorKind::Gyroscope, 400.0),
    (SensorKind::Magnetometer, 100.0),
    (SensorKind::Orientation, 100.0),
    (SensorKind::AccelerometerUncalibrated, 400.0),
    (SensorKind::GyroscopeUncalibrated, 400.0),
    (SensorKind::MagnetometerUncalibrated, 100.0),
    (SensorKind::Light, 10.0),
    (SensorKind::Pressure, 25.0),
    (SensorKind::AmbientTemperature, 1.0),
    (SensorKind::RelativeHumidity, 1.0),
    (SensorKind::Proximity, 5.0),
];

fn seconds(now_ns: u64) -> f64 {
    now_ns as f64 / 1e9
}

impl SensorSource for SyntheticSource {
    fn capabilities(&self) -> Vec<SensorCapability> {
        SYNTHETIC_KINDS
            .iter()
            .map(|&(kind, max_rate_hz)| SensorCapability {
                kind: kind as i32,
                max_rate_hz,
                name: format!("vphone synthetic {}", super::kind_name(kind).to_lowercase()),
            })
            .collect()
    }

    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError> {
        let origin = *self.origin_ns.get_or_insert(now_ns);
        Ok(self
            .values(kind, self.time(now_ns, origin))
            .map(|values| Reading {
                timestamp_ns: now_ns,
                values,
            }))
    }

    fn location(&mut self, now_ns: u64) -> Result<Option<Location>, ClientError> {
        let origin = *self.origin_ns.get_or_insert(now_ns);
        Ok(Some(Location {
            timestamp_ns: now_ns,
            ..self.fix(self.time(now_ns, origin))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::math::{angle_between, exp_so3, norm, orientation_from_accel_mag};
    use super::*;

    fn still() -> SyntheticSource {
        SyntheticSource::new(SyntheticConfig {
            linear_accel: false,
            seed: 42,
            ..SyntheticConfig::default()
        })
    }

    fn vec3(v: &[f32]) -> Vec3 {
        [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])]
    }

    /// Difference of two angles in degrees, wrapped to [-180, 180).
    fn angle_diff(a: f64, b: f64) -> f64 {
        (a - b + 540.0).rem_euclid(360.0) - 180.0
    }

    fn times() -> impl Iterator<Item = f64> {
        (0..2000).map(|i| 1.0 + f64::from(i) * 0.37)
    }

    #[test]
    fn a_still_handset_reads_the_same_at_any_time_stamped_now() {
        let mut s = SyntheticSource::new(SyntheticConfig {
            still: true,
            ..SyntheticConfig::default()
        });
        let a = s.sample(SensorKind::Accelerometer, 1_000).unwrap().unwrap();
        let b = s
            .sample(SensorKind::Accelerometer, 60_000_000_000)
            .unwrap()
            .unwrap();
        assert_eq!(a.values, b.values);
        assert_eq!(b.timestamp_ns, 60_000_000_000);
        assert!((norm(vec3(&a.values)) - STANDARD_GRAVITY).abs() < 1e-4);
        let g = s
            .sample(SensorKind::Gyroscope, 5_000_000_000)
            .unwrap()
            .unwrap();
        assert_eq!(g.values, vec![0.0; 3]);
        let l0 = s.location(1_000).unwrap().unwrap();
        let l1 = s.location(60_000_000_000).unwrap().unwrap();
        assert_eq!(
            (l0.latitude_deg, l0.longitude_deg),
            (l1.latitude_deg, l1.longitude_deg)
        );
        assert_eq!(l1.speed_mps, Some(0.0));
    }

    #[test]
    fn at_rest_flat_reads_plus_g_on_z() {
        // The convention check behind all the others: identity rotation.
        let m = Motion {
            rotation: rot_z(0.0),
            omega_device: [0.0; 3],
            linear_accel_world: [0.0; 3],
        };
        let a = SyntheticSource::accel(&m);
        assert!((a[2] - STANDARD_GRAVITY).abs() < 1e-12 && a[0] == 0.0 && a[1] == 0.0);
        let mag = SyntheticSource::mag(&m);
        assert!(mag[1] > 0.0 && mag[2] < 0.0, "north and down: {mag:?}");
    }

    #[test]
    fn accelerometer_magnitude_is_g_without_linear_acceleration() {
        let s = still();
        for t in times() {
            let a = vec3(&s.values(SensorKind::Accelerometer, t).unwrap());
            assert!((norm(a) - STANDARD_GRAVITY).abs() < 1e-4, "t={t}: {a:?}");
        }
    }

    #[test]
    fn linear_acceleration_is_small() {
        let s = SyntheticSource::new(SyntheticConfig::default());
        let mut max_dev: f64 = 0.0;
        for t in times() {
            let a = vec3(&s.values(SensorKind::Accelerometer, t).unwrap());
            let dev = (norm(a) - STANDARD_GRAVITY).abs();
            max_dev = max_dev.max(dev);
            assert!(dev < 1.0, "t={t}: {a:?}");
        }
        assert!(max_dev > 0.05, "linear acceleration should be visible");
    }

    #[test]
    fn magnetometer_magnitude_is_constant() {
        let s = SyntheticSource::new(SyntheticConfig::default());
        let expected = norm(EARTH_FIELD_UT);
        assert!((expected - 48.3).abs() < 0.1);
        for t in times() {
            let m = vec3(&s.values(SensorKind::Magnetometer, t).unwrap());
            assert!((norm(m) - expected).abs() < 1e-4, "t={t}: {m:?}");
        }
    }

    #[test]
    fn integrating_the_gyroscope_reproduces_the_rotation() {
        let s = SyntheticSource::new(SyntheticConfig::default());
        let (t0, t1) = (3.0, 23.0);
        let dt = 0.001;
        let mut r = s.motion(t0).rotation;
        let mut t = t0;
        let mut travelled = 0.0;
        let steps = ((t1 - t0) / dt).round() as usize;
        for _ in 0..steps {
            // Midpoint rule on the gyroscope readings (as f32, like the wire).
            let w = vec3(&s.values(SensorKind::Gyroscope, t + dt / 2.0).unwrap());
            r = mul(&r, &exp_so3([w[0] * dt, w[1] * dt, w[2] * dt]));
            travelled += norm(w) * dt;
            t += dt;
        }
        let truth = s.motion(t1).rotation;
        let change = angle_between(&s.motion(t0).rotation, &truth).to_degrees();
        let err = angle_between(&r, &truth).to_degrees();
        assert!(
            travelled.to_degrees() > 60.0 && change > 3.0,
            "the handset should have rotated: {} degrees in all, {change} net",
            travelled.to_degrees()
        );
        assert!(err < 0.05, "integrated gyro off by {err} degrees");

        // The same through the orientation sensor's angles.
        let integrated = math::orientation_from_rotation(&r);
        let reported = s.values(SensorKind::Orientation, t1).unwrap();
        for i in 0..3 {
            let d = angle_diff(integrated[i], f64::from(reported[i]));
            assert!(d.abs() < 0.05, "angle {i}: {integrated:?} vs {reported:?}");
        }
    }

    #[test]
    fn orientation_matches_accelerometer_and_magnetometer() {
        let s = still();
        for t in times() {
            let a = vec3(&s.values(SensorKind::Accelerometer, t).unwrap());
            let m = vec3(&s.values(SensorKind::Magnetometer, t).unwrap());
            let o = s.values(SensorKind::Orientation, t).unwrap();
            let derived = orientation_from_accel_mag(a, m).unwrap();
            for i in 0..3 {
                let d = angle_diff(derived[i], f64::from(o[i]));
                assert!(d.abs() < 0.01, "t={t} angle {i}: {derived:?} vs {o:?}");
            }
            assert!((0.0..360.0).contains(&o[0]));
            assert!((-180.0..=180.0).contains(&o[1]));
            assert!((-90.0..=90.0).contains(&o[2]));
        }
    }

    #[test]
    fn the_phone_is_held_tilted_and_faces_the_walking_direction() {
        let s = SyntheticSource::new(SyntheticConfig::default());
        for t in times() {
            let o = s.values(SensorKind::Orientation, t).unwrap();
            // Top edge up by roughly 15..50 degrees: negative pitch.
            assert!((-55.0..-10.0).contains(&o[1]), "t={t}: {o:?}");
            let fix = s.fix(t);
            let d = angle_diff(f64::from(o[0]), fix.bearing_deg.unwrap());
            assert!(d.abs() < 30.0, "t={t}: azimuth {} bearing {:?}", o[0], fix);
        }
    }

    #[test]
    fn gps_track_moves_at_walking_speed_along_its_bearing() {
        let s = SyntheticSource::new(SyntheticConfig::default());
        let r = EARTH_RADIUS_M;
        for i in 0..600 {
            let t = f64::from(i) * 2.0;
            let (a, b) = (s.fix(t), s.fix(t + 1.0));
            let north = (b.latitude_deg - a.latitude_deg).to_radians() * r;
            let east = (b.longitude_deg - a.longitude_deg).to_radians()
                * r
                * a.latitude_deg.to_radians().cos();
            let dist = north.hypot(east);
            assert!((dist - 1.4).abs() < 0.01, "t={t}: moved {dist} m");
            let heading = east.atan2(north).to_degrees();
            let mid = s.fix(t + 0.5).bearing_deg.unwrap();
            assert!(angle_diff(heading, mid).abs() < 0.5, "{heading} vs {mid}");
            assert_eq!(a.speed_mps, Some(1.4));
            assert!((a.altitude_m.unwrap() - 519.0).abs() <= 1.5);
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let a = SyntheticSource::new(SyntheticConfig::default());
        let b = SyntheticSource::new(SyntheticConfig::default());
        let c = SyntheticSource::new(SyntheticConfig {
            seed: 2,
            ..SyntheticConfig::default()
        });
        for kind in [SensorKind::Accelerometer, SensorKind::Gyroscope] {
            assert_eq!(a.values(kind, 12.5), b.values(kind, 12.5));
            assert_ne!(a.values(kind, 12.5), c.values(kind, 12.5));
        }
    }

    #[test]
    fn every_advertised_kind_has_the_right_value_count() {
        let mut s = SyntheticSource::new(SyntheticConfig::default());
        for cap in s.capabilities() {
            let kind = SensorKind::try_from(cap.kind).unwrap();
            let r = s.sample(kind, 5_000_000_000).unwrap().unwrap();
            assert_eq!(Some(r.values.len()), kind.value_count(), "{kind:?}");
            assert!(r.values.iter().all(|v| v.is_finite()));
            assert_eq!(r.timestamp_ns, 5_000_000_000);
        }
        assert!(s.sample(SensorKind::HeartRate, 1).unwrap().is_none());
        let loc = s.location(7).unwrap().unwrap();
        assert_eq!(loc.timestamp_ns, 7);
        let p = s.sample(SensorKind::Pressure, 1).unwrap().unwrap().values[0];
        assert!((940.0..960.0).contains(&p), "pressure at 519 m: {p}");
        // Uncalibrated = calibrated + bias.
        let cal = s.sample(SensorKind::Gyroscope, 9).unwrap().unwrap().values;
        let unc = s
            .sample(SensorKind::GyroscopeUncalibrated, 9)
            .unwrap()
            .unwrap()
            .values;
        for i in 0..3 {
            assert!((unc[i] - unc[i + 3] - cal[i]).abs() < 1e-6);
        }
    }
}
