//! Minimal 3-D rotation math for the sensor sources (f64).
//!
//! Frames: the *world* frame is East-North-Up (x east, y magnetic north,
//! z up). The *device* frame is Android's: +x to the right of the screen,
//! +y up the screen, +z out of the screen. A rotation matrix `R` here maps
//! device coordinates to world coordinates (`v_world = R * v_device`), the
//! same matrix Android's `SensorManager.getRotationMatrix` returns: its rows
//! are East, North and Up expressed in device coordinates.

/// A 3-vector.
pub type Vec3 = [f64; 3];

/// A 3x3 matrix, row-major (`m[row][col]`).
pub type Mat3 = [[f64; 3]; 3];

/// Standard gravity, m/s^2.
pub const STANDARD_GRAVITY: f64 = 9.806_65;

pub(crate) fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(crate) fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(crate) fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn normalize(a: Vec3) -> Option<Vec3> {
    let n = norm(a);
    (n.is_finite() && n > 1e-12).then(|| scale(a, 1.0 / n))
}

pub(crate) fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

pub(crate) fn mul_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

pub(crate) fn transpose(m: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in m.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            out[j][i] = x;
        }
    }
    out
}

/// Rotation by `a` radians about +x (right-handed).
pub(crate) fn rot_x(a: f64) -> Mat3 {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

/// Rotation by `a` radians about +y (right-handed).
pub(crate) fn rot_y(a: f64) -> Mat3 {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

/// Rotation by `a` radians about +z (right-handed, counter-clockwise seen
/// from above).
pub(crate) fn rot_z(a: f64) -> Mat3 {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// `exp([w]x)`: the rotation by `|w|` radians about `w` (Rodrigues).
#[cfg(test)]
pub(crate) fn exp_so3(w: Vec3) -> Mat3 {
    let theta = norm(w);
    let k = [[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]];
    let k2 = mul(&k, &k);
    let (a, b) = if theta < 1e-9 {
        (1.0, 0.5)
    } else {
        (theta.sin() / theta, (1.0 - theta.cos()) / (theta * theta))
    };
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let id = if i == j { 1.0 } else { 0.0 };
            out[i][j] = id + a * k[i][j] + b * k2[i][j];
        }
    }
    out
}

/// The angle (radians) of the rotation `a^T b`, i.e. how far apart two
/// orientations are.
#[cfg(test)]
pub(crate) fn angle_between(a: &Mat3, b: &Mat3) -> f64 {
    let d = mul(&transpose(a), b);
    let trace = d[0][0] + d[1][1] + d[2][2];
    ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos()
}

/// Android's `TYPE_ORIENTATION` values (degrees) for a device-to-world
/// rotation: `[azimuth 0..360, pitch -180..180, roll -90..90]`.
///
/// This is the formula of AOSP's `OrientationSensor` (the framework's
/// virtual orientation sensor): azimuth is the compass heading of the
/// device's +y axis (0 north, 90 east), pitch is positive when the top edge
/// tilts down (the z axis moves toward +y), roll is positive when the right
/// edge tilts up (the x axis moves toward +z). Azimuth and pitch equal
/// `SensorManager.getOrientation`'s (in degrees) for moderate tilts; roll
/// has the opposite sign of `getOrientation`'s.
#[must_use]
pub fn orientation_from_rotation(r: &Mat3) -> [f64; 3] {
    let mut azimuth = (-r[1][0]).atan2(r[0][0]).to_degrees();
    if azimuth < 0.0 {
        azimuth += 360.0;
    }
    if azimuth >= 360.0 {
        azimuth -= 360.0;
    }
    let pitch = (-r[2][1]).atan2(r[2][2]).to_degrees();
    let roll = r[2][0].clamp(-1.0, 1.0).asin().to_degrees();
    [azimuth, pitch, roll]
}

/// Android's `SensorManager.getRotationMatrix`: the device-to-world
/// rotation from an accelerometer reading (device frame, including gravity)
/// and a magnetometer reading. `None` in free fall or when the field is
/// parallel to gravity.
#[must_use]
pub fn rotation_from_accel_mag(accel: Vec3, mag: Vec3) -> Option<Mat3> {
    let up = normalize(accel)?;
    let east = normalize(cross(mag, accel))?;
    let north = cross(up, east);
    Some([east, north, up])
}

/// [`orientation_from_rotation`] of [`rotation_from_accel_mag`].
#[must_use]
pub fn orientation_from_accel_mag(accel: Vec3, mag: Vec3) -> Option<[f64; 3]> {
    rotation_from_accel_mag(accel, mag).map(|r| orientation_from_rotation(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn documented_orientation_signs() {
        // Flat, facing north.
        let o = orientation_from_rotation(&rot_z(0.0));
        assert!(close(o[0], 0.0) && close(o[1], 0.0) && close(o[2], 0.0));
        // Turned to face east: a clockwise turn seen from above.
        let o = orientation_from_rotation(&rot_z(-std::f64::consts::FRAC_PI_2));
        assert!(close(o[0], 90.0), "{o:?}");
        // Top edge tilted down by 30 degrees: pitch +30.
        let o = orientation_from_rotation(&rot_x((-30f64).to_radians()));
        assert!(close(o[1], 30.0), "{o:?}");
        // Right edge tilted up by 20 degrees: roll +20.
        let o = orientation_from_rotation(&rot_y((-20f64).to_radians()));
        assert!(close(o[2], 20.0), "{o:?}");
        // Face down: pitch +-180.
        let o = orientation_from_rotation(&rot_x(std::f64::consts::PI));
        assert!(close(o[1].abs(), 180.0), "{o:?}");
    }

    #[test]
    fn rodrigues_matches_axis_rotations() {
        let a = 0.7;
        assert!(angle_between(&exp_so3([a, 0.0, 0.0]), &rot_x(a)) < 1e-6);
        assert!(angle_between(&exp_so3([0.0, a, 0.0]), &rot_y(a)) < 1e-6);
        assert!(angle_between(&exp_so3([0.0, 0.0, a]), &rot_z(a)) < 1e-6);
    }
}
