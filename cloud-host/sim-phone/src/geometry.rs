//! Where things are on the screen, in pixels, for any screen size: the
//! layout grid and the positions tests look for (the level, the bubble, the
//! ripple dot).

use crate::scene::*;

/// Width of the design grid, in design units.
pub(crate) const DESIGN_W: f32 = 720.0;
/// Height of the design grid, in design units.
pub(crate) const DESIGN_H: f32 = 1280.0;
/// Left/right margin of the content column, design units.
pub(crate) const MARGIN: f32 = 28.0;
/// Height of the status bar, design units.
pub(crate) const STATUS_BAR_H: f32 = 56.0;
/// Where the top block (status bar, title, sensor table) ends, design units.
pub(crate) const TOP_BLOCK_END: f32 = 470.0;
/// Height reserved at the bottom for the Bluetooth section and the key,
/// microphone and clipboard rows.
pub(crate) const BOTTOM_BLOCK_H: f32 = 362.0;
/// Radius of the level, design units (0.28 of the design width).
pub(crate) const LEVEL_RADIUS: f32 = 0.28 * DESIGN_W;
/// Bubble radius as a fraction of the level radius.
pub(crate) const BUBBLE_FRACTION: f32 = 0.17;
/// Radius of a ripple's solid dot, design units.
pub(crate) const RIPPLE_DOT: f32 = 12.0;
/// How far a ripple's ring grows over its lifetime, design units.
pub(crate) const RIPPLE_GROWTH: f32 = 64.0;

/// Pixels per design unit for a screen size.
pub(crate) fn scale_for(width: u32, height: u32) -> f32 {
    (width as f32 / DESIGN_W).min(height as f32 / DESIGN_H)
}

/// Where the Bluetooth section starts, design units from the top.
pub(crate) fn bottom_block_start(width: u32, height: u32) -> f32 {
    height as f32 / scale_for(width, height) - BOTTOM_BLOCK_H
}

/// Centre `(x, y)` and radius of the bubble level's ring, in screen pixels.
///
/// The level is centred horizontally, in the lower half of the screen,
/// between the sensor table and the Bluetooth section. Its radius is
/// `0.28 * width` on portrait screens (aspect ≤ 9:16).
pub fn level_center_and_radius(width: u32, height: u32) -> (f32, f32, f32) {
    let s = scale_for(width, height);
    let cy_units = (TOP_BLOCK_END + bottom_block_start(width, height)) / 2.0;
    (width as f32 / 2.0, cy_units * s, LEVEL_RADIUS * s)
}

/// Radius of the level's bubble in screen pixels.
pub fn bubble_radius(width: u32, height: u32) -> f32 {
    level_center_and_radius(width, height).2 * BUBBLE_FRACTION
}

/// Centre of the level's bubble in screen pixels for an accelerometer
/// reading (m/s², Android axes).
///
/// The bubble sits at `centre + (ax / 9.81, -ay / 9.81) * (R - r)` where `R`
/// is the level radius and `r` the bubble radius; the offset is clamped to
/// length `R - r` so the bubble stays inside the ring. Like a real spirit
/// level, the bubble moves toward the raised side: a positive x reading
/// (the phone's +x side up) moves it right, a positive y reading (the top of
/// the phone up) moves it up the screen. Non-finite readings count as 0.
pub fn bubble_center(width: u32, height: u32, accel: [f32; 3]) -> (f32, f32) {
    let (cx, cy, r) = level_center_and_radius(width, height);
    let travel = r - bubble_radius(width, height);
    let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
    let mut dx = finite(accel[0]) / GRAVITY;
    let mut dy = -finite(accel[1]) / GRAVITY;
    let len = dx.hypot(dy);
    if len > 1.0 {
        dx /= len;
        dy /= len;
    }
    (cx + dx * travel, cy + dy * travel)
}

/// Radius in screen pixels of a ripple's solid [`RIPPLE_RGB`] dot.
pub fn ripple_dot_radius(width: u32, height: u32) -> f32 {
    (RIPPLE_DOT * scale_for(width, height)).max(3.0)
}
