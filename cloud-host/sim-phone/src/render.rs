//! Deterministic software renderer for the sim phone's "Sensor Lab" screen.
//!
//! [`Renderer::render`] turns a [`SceneState`] into tightly packed RGBA8888
//! pixels. Rendering is a pure function of the scene and the screen size: it
//! reads no clock, no random source and no global state, so the same scene
//! always gives bit-identical pixels (on the same build).
//!
//! # Layout
//!
//! The screen is designed on a 720×1280 grid of "design units" and scaled by
//! `min(width / 720, height / 1280)`; on portrait phones (aspect ≤ 9:16) the
//! layout therefore scales with the width. From top to bottom:
//!
//! * a status bar: clock (`HH:MM:SS UTC`), Bluetooth indicator
//!   (`BT: no radio` / `BT: radio` / `BT: <peer> (encrypted)`), battery glyph
//!   (with a bolt while charging) and percentage;
//! * the title "Sensor Lab" and the attached handset's name;
//! * a table of live sensor values (accelerometer, gyroscope, magnetometer,
//!   orientation with 2 decimals; GPS with 6-decimal latitude/longitude);
//! * a bubble level (see [`level_center_and_radius`] and [`bubble_center`]);
//! * a "Bluetooth" section (state, peer, address, link encryption) and the
//!   last key event;
//! * touch ripples, drawn last, on top of everything.
//!
//! Two colours are reserved so that tests can find elements by colour:
//! [`BUBBLE_RGB`] (only the level's bubble) and [`RIPPLE_RGB`] (only the solid
//! centre dot of touch ripples, plus translucent tints of it around the dot).

use host_core::HostError;
use std::collections::HashMap;
use std::fmt;

use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

use crate::geometry::*;
pub use crate::geometry::{
    bubble_center, bubble_radius, level_center_and_radius, ripple_dot_radius,
};
pub use crate::scene::{
    BUBBLE_RGB, BluetoothView, DEFAULT_HEIGHT, DEFAULT_WIDTH, Gps, LISTENED_SENSORS, MAX_DIMENSION,
    MIN_HEIGHT, MIN_WIDTH, RIPPLE_LIFETIME_MS, RIPPLE_RGB, Ripple, SceneState, SensorName,
    StatusClock, listened_sensors,
};

// ---------------------------------------------------------------------------
// Errors and PNG
// ---------------------------------------------------------------------------

/// Encodes RGBA as PNG (see [`vphone_media::encode_png`]).
///
/// # Errors
/// [`HostError::Media`].
pub fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Result<Vec<u8>, HostError> {
    Ok(vphone_media::encode_png(width, height, rgba)?)
}

// ---------------------------------------------------------------------------
// Colours and text sizes
// ---------------------------------------------------------------------------

type Rgb = [u8; 3];

const BG: Rgb = [16, 18, 24];
const STATUS_BG: Rgb = [32, 36, 47];
const TEXT: Rgb = [230, 233, 240];
const DIM: Rgb = [135, 143, 160];
const ACCENT: Rgb = [110, 180, 255];
const WARN: Rgb = [255, 170, 70];
const GOOD: Rgb = [120, 210, 150];
const DIVIDER: Rgb = [48, 54, 68];
const LEVEL_FACE: Rgb = [27, 31, 41];
const LEVEL_RING: Rgb = [130, 140, 160];
const LEVEL_GUIDE: Rgb = [66, 74, 92];
const BATTERY_OK: Rgb = [110, 190, 110];
const BATTERY_LOW: Rgb = [235, 80, 70];
const BOLT: Rgb = [250, 210, 60];

/// Text sizes, design units.
const STATUS_TEXT: f32 = 24.0;
const TITLE_TEXT: f32 = 52.0;
const SUBTITLE_TEXT: f32 = 22.0;
const TABLE_TEXT: f32 = 25.0;
const SECTION_TEXT: f32 = 30.0;
const BODY_TEXT: f32 = 24.0;

/// Pixel size of text for a design-unit size; integer so glyphs cache well.
fn text_px(units: f32, s: f32) -> u16 {
    (units * s).round().clamp(6.0, 512.0) as u16
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// The bundled monospace font (DejaVu Sans Mono, see assets/fonts/LICENSE-DejaVu.txt).
static FONT_MONO: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

/// A rasterized glyph: coverage bitmap plus placement metrics.
struct Glyph {
    xmin: i32,
    ymin: i32,
    width: usize,
    height: usize,
    advance: f32,
    coverage: Vec<u8>,
}

/// Monospace text drawing with a cache of rasterized glyphs.
struct TextPainter {
    font: &'static fontdue::Font,
    cache: HashMap<(char, u16), Glyph>,
}

/// The parsed font, shared by every renderer in the process: parsing keeps
/// every glyph's outline, 9 MiB that each phone used to hold a copy of.
static FONT: std::sync::OnceLock<Result<fontdue::Font, &'static str>> = std::sync::OnceLock::new();

impl TextPainter {
    fn new() -> Result<Self, HostError> {
        let font = FONT
            .get_or_init(|| fontdue::Font::from_bytes(FONT_MONO, fontdue::FontSettings::default()))
            .as_ref()
            .map_err(|e| HostError::Font(e))?;
        Ok(Self {
            font,
            cache: HashMap::new(),
        })
    }

    /// The cached glyph for `ch` at `px`; characters the font lacks are drawn as `?`.
    fn glyph(&mut self, ch: char, px: u16) -> &Glyph {
        let ch = if ch != '\u{0}' && !ch.is_control() && self.font.has_glyph(ch) {
            ch
        } else {
            '?'
        };
        let font = self.font;
        self.cache.entry((ch, px)).or_insert_with(|| {
            let (m, coverage) = font.rasterize(ch, f32::from(px));
            Glyph {
                xmin: m.xmin,
                ymin: m.ymin,
                width: m.width,
                height: m.height,
                advance: m.advance_width,
                coverage,
            }
        })
    }

    /// Advance width of one character cell at `px` (the font is monospace).
    fn advance(&mut self, px: u16) -> f32 {
        self.glyph('0', px).advance
    }

    /// Width in pixels of `text` at `px`.
    fn width(&mut self, text: &str, px: u16) -> f32 {
        text.chars().count() as f32 * self.advance(px)
    }

    /// How many characters fit in `max_width` pixels at `px`.
    fn chars_fitting(&mut self, max_width: f32, px: u16) -> usize {
        (max_width.max(0.0) / self.advance(px)).floor() as usize
    }

    /// Draws `text` with its baseline at `baseline`, starting at `x`.
    /// Returns the x just past the last character.
    fn draw(
        &mut self,
        pixmap: &mut Pixmap,
        text: &str,
        x: f32,
        baseline: f32,
        px: u16,
        rgb: Rgb,
    ) -> f32 {
        let (pw, ph) = (pixmap.width() as i32, pixmap.height() as i32);
        let data = pixmap.data_mut();
        let baseline = baseline.round() as i32;
        let mut pen = x;
        for ch in text.chars() {
            let g = self.glyph(ch, px);
            let left = pen.round() as i32 + g.xmin;
            let top = baseline - g.ymin - g.height as i32;
            blend_glyph(data, pw, ph, g, left, top, rgb);
            pen += g.advance;
        }
        pen
    }
}

/// Alpha-blends a glyph's coverage in colour `rgb` onto opaque RGBA pixels.
fn blend_glyph(data: &mut [u8], pw: i32, ph: i32, g: &Glyph, left: i32, top: i32, rgb: Rgb) {
    if g.width == 0 || g.height == 0 {
        return;
    }
    let x0 = left.max(0);
    let x1 = (left + g.width as i32).min(pw);
    let y0 = top.max(0);
    let y1 = (top + g.height as i32).min(ph);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    for y in y0..y1 {
        let row = &g.coverage[(y - top) as usize * g.width..][..g.width];
        let dst_row = &mut data[(y * pw + x0) as usize * 4..(y * pw + x1) as usize * 4];
        let cov = &row[(x0 - left) as usize..(x1 - left) as usize];
        for (px, &a) in dst_row.chunks_exact_mut(4).zip(cov) {
            match a {
                0 => {}
                255 => px[..3].copy_from_slice(&rgb),
                a => {
                    let a = u32::from(a);
                    for (d, &s) in px[..3].iter_mut().zip(&rgb) {
                        *d = ((u32::from(s) * a + u32::from(*d) * (255 - a) + 127) / 255) as u8;
                    }
                }
            }
        }
    }
}

/// `text` shortened to at most `max_chars` characters, ending in `…` if cut.
fn ellipsize(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    if max_chars == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

fn paint(rgb: Rgb, alpha: u8, anti_alias: bool) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(rgb[0], rgb[1], rgb[2], alpha);
    p.anti_alias = anti_alias;
    p
}

/// Fills a pixel-aligned rectangle (coordinates are rounded), no anti-aliasing.
fn fill_rect(pm: &mut Pixmap, x: f32, y: f32, w: f32, h: f32, rgb: Rgb) {
    let (l, t) = (x.round(), y.round());
    let (r, b) = ((x + w).round(), (y + h).round());
    if let Some(rect) = Rect::from_ltrb(l, t, r.max(l + 1.0), b.max(t + 1.0)) {
        pm.fill_rect(rect, &paint(rgb, 255, false), Transform::identity(), None);
    }
}

fn fill_circle(pm: &mut Pixmap, cx: f32, cy: f32, r: f32, rgb: Rgb, alpha: u8) {
    if let Some(path) = PathBuilder::from_circle(cx, cy, r) {
        pm.fill_path(
            &path,
            &paint(rgb, alpha, true),
            FillRule::Winding,
            Transform::identity(),
            None,
        );
    }
}

fn stroke_circle(pm: &mut Pixmap, cx: f32, cy: f32, r: f32, width: f32, rgb: Rgb, alpha: u8) {
    if let Some(path) = PathBuilder::from_circle(cx, cy, r) {
        let stroke = Stroke {
            width,
            ..Stroke::default()
        };
        pm.stroke_path(
            &path,
            &paint(rgb, alpha, true),
            &stroke,
            Transform::identity(),
            None,
        );
    }
}

/// Fills a polygon given in pixel coordinates.
fn fill_polygon(pm: &mut Pixmap, points: &[(f32, f32)], rgb: Rgb) {
    let mut pb = PathBuilder::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i == 0 {
            pb.move_to(x, y);
        } else {
            pb.line_to(x, y);
        }
    }
    pb.close();
    if let Some(path) = pb.finish() {
        pm.fill_path(
            &path,
            &paint(rgb, 255, true),
            FillRule::Winding,
            Transform::identity(),
            None,
        );
    }
}

// ---------------------------------------------------------------------------
// Renderer
// ---------------------------------------------------------------------------

/// Labels and units of the sensor table's rows.
const TABLE_ROWS: [(&str, &str); 4] = [
    ("Accel", "m/s²"),
    ("Gyro", "rad/s"),
    ("Mag", "µT"),
    ("Orient", "°"),
];

/// Baseline of sensor table row `i` (GPS is row 4), design units.
fn table_row_y(i: usize) -> f32 {
    256.0 + 40.0 * i as f32
}

/// Baseline of Bluetooth section row `i` below section start `b`, design units.
fn bt_row_y(b: f32, i: usize) -> f32 {
    b + 84.0 + 36.0 * i as f32
}

/// Renders [`SceneState`]s into RGBA pixels. Holds the parsed font, a glyph
/// cache and a reusable pixel buffer; create one per screen and reuse it.
pub struct Renderer {
    width: u32,
    height: u32,
    /// Pixels per design unit.
    s: f32,
    /// Left edge of the 720-unit content column, pixels.
    ox: f32,
    pixmap: Pixmap,
    /// The scene-independent layer (see `draw_static`), RGBA.
    background: Pixmap,
    /// A 1x1 stand-in for `pixmap` once [`Renderer::render_owned`] has
    /// handed the frame over.
    placeholder: Pixmap,
    text: TextPainter,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("cached_glyphs", &self.text.cache.len())
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer for a `width`×`height` screen (at least
    /// [`MIN_WIDTH`]×[`MIN_HEIGHT`], at most [`MAX_DIMENSION`] per side).
    pub fn new(width: u32, height: u32) -> Result<Self, HostError> {
        if !(MIN_WIDTH..=MAX_DIMENSION).contains(&width)
            || !(MIN_HEIGHT..=MAX_DIMENSION).contains(&height)
        {
            return Err(HostError::InvalidSize {
                width,
                height,
                supported: String::new(),
            });
        }
        let pixmap = Pixmap::new(width, height).ok_or(HostError::Alloc { width, height })?;
        let s = scale_for(width, height);
        let mut renderer = Self {
            width,
            height,
            s,
            ox: (width as f32 - DESIGN_W * s) / 2.0,
            background: pixmap.clone(),
            pixmap,
            placeholder: Pixmap::new(1, 1).ok_or(HostError::Alloc {
                width: 1,
                height: 1,
            })?,
            text: TextPainter::new()?,
        };
        renderer.draw_static();
        renderer.background = renderer.pixmap.clone();
        Ok(renderer)
    }

    /// Screen width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Screen height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Draws `scene` and returns the frame: `width * height * 4` bytes of
    /// tightly packed, top-down RGBA8888, non-premultiplied, alpha always 255.
    ///
    /// Deterministic: the same scene gives bit-identical bytes.
    pub fn render(&mut self, scene: &SceneState) -> &[u8] {
        if self.pixmap.width() != self.width {
            // `render_owned` took the last buffer: a new one from the
            // background (the copy every frame starts with anyway).
            self.pixmap = self.background.clone();
        } else {
            self.pixmap
                .data_mut()
                .copy_from_slice(self.background.data());
        }
        self.draw_scene(scene);
        self.pixmap.data()
    }

    /// Like [`render`](Self::render), but hands over the pixel buffer
    /// itself: no copy out of the renderer, and between frames the renderer
    /// holds no frame-sized buffer but its background (the next frame
    /// starts from a copy of it).
    pub fn render_owned(&mut self, scene: &SceneState) -> Vec<u8> {
        let _ = self.render(scene);
        std::mem::replace(&mut self.pixmap, self.placeholder.clone()).take()
    }

    fn draw_scene(&mut self, scene: &SceneState) {
        self.draw_status_bar(scene);
        self.draw_session(scene);
        self.draw_sensor_values(scene);
        self.draw_bubble(scene);
        self.draw_bluetooth_and_key(scene);
        self.draw_ripples(scene);
        // Every pixel is opaque (the background is opaque and everything is
        // blended over it), so premultiplied and straight RGBA coincide.
    }

    /// Like [`render`](Self::render) but writes packed RGB888 (3 bytes per
    /// pixel, top-down) into `out`, replacing its contents.
    pub fn render_rgb(&mut self, scene: &SceneState, out: &mut Vec<u8>) {
        let rgba = self.render(scene);
        out.clear();
        out.reserve(rgba.len() / 4 * 3);
        for px in rgba.chunks_exact(4) {
            out.extend_from_slice(&px[..3]);
        }
    }

    /// Renders `scene` and encodes it as a PNG file.
    pub fn render_png(&mut self, scene: &SceneState) -> Result<Vec<u8>, HostError> {
        let (w, h) = (self.width, self.height);
        encode_png(w, h, self.render(scene))
    }

    // -- layout helpers ---------------------------------------------------

    /// Design-unit x to pixels.
    fn x(&self, units: f32) -> f32 {
        self.ox + units * self.s
    }

    /// Design-unit y to pixels.
    fn y(&self, units: f32) -> f32 {
        units * self.s
    }

    fn px(&self, units: f32) -> u16 {
        text_px(units, self.s)
    }

    fn draw_text(&mut self, text: &str, x: f32, baseline: f32, px: u16, rgb: Rgb) -> f32 {
        self.text.draw(&mut self.pixmap, text, x, baseline, px, rgb)
    }

    /// Draws `text` cut to fit between `x` and the right margin.
    fn draw_text_fit(&mut self, text: &str, x: f32, baseline: f32, px: u16, rgb: Rgb) -> f32 {
        let max = self.text.chars_fitting(self.x(DESIGN_W - MARGIN) - x, px);
        let text = ellipsize(text, max);
        self.draw_text(&text, x, baseline, px, rgb)
    }

    /// A horizontal divider across the content column at design-unit `y`.
    fn divider(&mut self, y: f32) {
        let (x, y) = (self.x(MARGIN), self.y(y));
        let w = (DESIGN_W - 2.0 * MARGIN) * self.s;
        let h = (2.0 * self.s).round().max(1.0);
        fill_rect(&mut self.pixmap, x, y, w, h, DIVIDER);
    }

    // -- static layer -----------------------------------------------------

    /// Draws everything that does not depend on the scene: backgrounds,
    /// title, labels, dividers and the level's face. Drawn once per
    /// renderer and copied at the start of every frame.
    fn draw_static(&mut self) {
        self.pixmap
            .fill(Color::from_rgba8(BG[0], BG[1], BG[2], 255));
        let (s, x0) = (self.s, self.x(MARGIN));
        let bar_h = self.y(STATUS_BAR_H);
        fill_rect(
            &mut self.pixmap,
            0.0,
            0.0,
            self.width as f32,
            bar_h,
            STATUS_BG,
        );

        // Title and divider.
        let title_px = self.px(TITLE_TEXT);
        self.draw_text("Sensor Lab", x0, self.y(122.0), title_px, ACCENT);
        self.divider(180.0);

        // Sensor table: header, labels, units.
        let px = self.px(TABLE_TEXT);
        let adv = self.text.advance(px);
        let header = format!("{:7}{:>9}{:>9}{:>9}", "", "x/azim", "y/pitch", "z/roll");
        self.draw_text(&header, x0, self.y(216.0), px, DIM);
        for (i, (label, unit)) in TABLE_ROWS.into_iter().enumerate() {
            let baseline = self.y(table_row_y(i));
            self.draw_text(label, x0, baseline, px, DIM);
            self.draw_text_fit(unit, x0 + 35.0 * adv, baseline, px, DIM);
        }
        self.draw_text("GPS", x0, self.y(table_row_y(4)), px, DIM);

        // Level face, crosshair, guides, ring and caption.
        let (w, h) = (self.width, self.height);
        let (cx, cy, r) = level_center_and_radius(w, h);
        let br = bubble_radius(w, h);
        let pm = &mut self.pixmap;
        fill_circle(pm, cx, cy, r, LEVEL_FACE, 255);
        let line = (2.0 * s).round().max(1.0);
        fill_rect(pm, cx - r, cy - line / 2.0, 2.0 * r, line, LEVEL_GUIDE);
        fill_rect(pm, cx - line / 2.0, cy - r, line, 2.0 * r, LEVEL_GUIDE);
        stroke_circle(pm, cx, cy, r * 0.5, line, LEVEL_GUIDE, 255);
        stroke_circle(pm, cx, cy, br + 3.0 * s, line, LEVEL_RING, 255);
        stroke_circle(pm, cx, cy, r, (4.0 * s).max(1.5), LEVEL_RING, 255);
        let px = self.px(BODY_TEXT * 0.85);
        let cap_w = self.text.width("LEVEL", px);
        self.draw_text("LEVEL", cx - cap_w / 2.0, cy - r - 10.0 * s, px, DIM);

        // Bluetooth section headings and the key row label.
        let b = bottom_block_start(w, h);
        self.divider(b);
        let section_px = self.px(SECTION_TEXT);
        self.draw_text("Bluetooth", x0, self.y(b + 44.0), section_px, ACCENT);
        let px = self.px(BODY_TEXT);
        for (i, label) in ["State", "Peer", "Address", "Link"].into_iter().enumerate() {
            self.draw_text(label, x0, self.y(bt_row_y(b, i)), px, DIM);
        }
        self.draw_text("Last key", x0, self.y(bt_row_y(b, 4) + 20.0), px, DIM);
        self.draw_text("Mic", x0, self.y(bt_row_y(b, 5) + 20.0), px, DIM);
        self.draw_text("Clipboard", x0, self.y(bt_row_y(b, 6) + 20.0), px, DIM);
    }

    // -- dynamic content --------------------------------------------------

    fn draw_status_bar(&mut self, scene: &SceneState) {
        let s = self.s;
        let px = self.px(STATUS_TEXT);
        let baseline = self.y(37.0);

        // Clock, left.
        let secs = scene.clock_unix_s.rem_euclid(86_400);
        let clock = match scene.clock_face {
            StatusClock::Seconds => format!(
                "{:02}:{:02}:{:02} UTC",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            ),
            StatusClock::Minutes => format!("{:02}:{:02} UTC", secs / 3600, secs / 60 % 60),
        };
        let clock_end = self.draw_text(&clock, self.x(MARGIN), baseline, px, TEXT);

        // Battery percentage, right-aligned.
        let pct = scene.battery_percent.min(100);
        let pct_text = format!("{pct}%");
        let right = self.x(DESIGN_W - MARGIN);
        let pct_x = right - self.text.width(&pct_text, px);
        self.draw_text(&pct_text, pct_x, baseline, px, TEXT);

        // Battery glyph left of the percentage.
        let (bw, bh) = (40.0 * s, 20.0 * s);
        let nub_w = (3.0 * s).max(1.0);
        let bx = (pct_x - 10.0 * s - nub_w - bw).round();
        let by = (self.y(STATUS_BAR_H / 2.0) - bh / 2.0).round();
        let t = (2.0 * s).round().max(1.0);
        let pm = &mut self.pixmap;
        fill_rect(pm, bx, by, bw, t, TEXT);
        fill_rect(pm, bx, by + bh - t, bw, t, TEXT);
        fill_rect(pm, bx, by, t, bh, TEXT);
        fill_rect(pm, bx + bw - t, by, t, bh, TEXT);
        fill_rect(pm, bx + bw, by + bh * 0.3, nub_w, bh * 0.4, TEXT);
        let inset = 2.0 * t;
        let inner_w = bw - 2.0 * inset;
        let fill_w = (inner_w * f32::from(pct) / 100.0).round();
        if fill_w >= 1.0 {
            let color = if pct <= 20 { BATTERY_LOW } else { BATTERY_OK };
            fill_rect(pm, bx + inset, by + inset, fill_w, bh - 2.0 * inset, color);
        }
        if scene.charging {
            let p = |fx: f32, fy: f32| (bx + bw * fx, by + bh * fy);
            fill_polygon(
                pm,
                &[
                    p(0.58, 0.08),
                    p(0.30, 0.56),
                    p(0.48, 0.56),
                    p(0.40, 0.94),
                    p(0.72, 0.44),
                    p(0.54, 0.44),
                    p(0.64, 0.08),
                ],
                BOLT,
            );
        }

        // Bluetooth indicator, right-aligned against the battery.
        let bt_right = bx - 22.0 * s;
        let bt_left = clock_end + 22.0 * s;
        let max_chars = self.text.chars_fitting(bt_right - bt_left, px);
        let (bt_text, color) = match &scene.bluetooth {
            BluetoothView::NoRadio => (ellipsize("BT: no radio", max_chars), DIM),
            BluetoothView::RadioAttached => (ellipsize("BT: radio", max_chars), TEXT),
            BluetoothView::Connected {
                peer_name,
                encrypted,
                ..
            } => {
                let suffix = if *encrypted {
                    " (encrypted)"
                } else {
                    " (plain)"
                };
                let room = max_chars.saturating_sub(4 + suffix.chars().count());
                let text = if room >= 4 {
                    format!("BT: {}{suffix}", ellipsize(peer_name, room))
                } else {
                    ellipsize(&format!("BT: {peer_name}"), max_chars)
                };
                (text, ACCENT)
            }
        };
        let bt_x = bt_right - self.text.width(&bt_text, px);
        self.draw_text(&bt_text, bt_x, baseline, px, color);
    }

    fn draw_session(&mut self, scene: &SceneState) {
        let px = self.px(SUBTITLE_TEXT);
        let (text, color) = match &scene.session {
            Some(name) => (format!("driven by {name}"), TEXT),
            None => ("no handset attached".to_owned(), DIM),
        };
        self.draw_text_fit(&text, self.x(MARGIN), self.y(160.0), px, color);
    }

    fn draw_sensor_values(&mut self, scene: &SceneState) {
        let px = self.px(TABLE_TEXT);
        // Values start after the 7-character label column.
        let vx = self.x(MARGIN) + 7.0 * self.text.advance(px);
        let rows = [scene.accel, scene.gyro, scene.mag, scene.orientation];
        for (i, v) in rows.into_iter().enumerate() {
            // Three 9-character columns; absurd values are cut, not spilled
            // into the unit column.
            let values = format!("{:>9.2}{:>9.2}{:>9.2}", v[0], v[1], v[2]);
            let values = ellipsize(&values, 27);
            self.draw_text(&values, vx, self.y(table_row_y(i)), px, TEXT);
        }
        let gps_y = self.y(table_row_y(4));
        match &scene.gps {
            None => {
                self.draw_text("no fix", vx, gps_y, px, DIM);
            }
            Some(g) => {
                let line1 = format!("lat {:.6}  lon {:.6}", g.lat, g.lon);
                self.draw_text_fit(&line1, vx, gps_y, px, TEXT);
                let line2 = format!("alt {:.1} m  {:.1} m/s  {:.0}°", g.alt, g.speed, g.bearing);
                self.draw_text_fit(&line2, vx, gps_y + 36.0 * self.s, px, TEXT);
            }
        }
    }

    fn draw_bubble(&mut self, scene: &SceneState) {
        let (w, h) = (self.width, self.height);
        let (bx, by) = bubble_center(w, h, scene.accel);
        fill_circle(
            &mut self.pixmap,
            bx,
            by,
            bubble_radius(w, h),
            BUBBLE_RGB,
            255,
        );
    }

    fn draw_bluetooth_and_key(&mut self, scene: &SceneState) {
        let b = bottom_block_start(self.width, self.height);
        let px = self.px(BODY_TEXT);
        // Values start after the 9-character label column.
        let vx = self.x(MARGIN) + 9.0 * self.text.advance(px);
        let (state, state_color, peer, address, link) = match &scene.bluetooth {
            BluetoothView::NoRadio => ("no radio attached", DIM, None, None, None),
            BluetoothView::RadioAttached => {
                ("radio attached, not connected", TEXT, None, None, None)
            }
            BluetoothView::Connected {
                peer_name,
                address,
                encrypted,
            } => (
                "connected",
                GOOD,
                Some(peer_name.as_str()),
                Some(address.as_str()),
                Some(*encrypted),
            ),
        };
        let values: [(&str, Rgb); 4] = [
            (state, state_color),
            (peer.unwrap_or("—"), if peer.is_some() { TEXT } else { DIM }),
            (
                address.unwrap_or("—"),
                if address.is_some() { TEXT } else { DIM },
            ),
            match link {
                None => ("—", DIM),
                Some(true) => ("encrypted", GOOD),
                Some(false) => ("NOT encrypted", WARN),
            },
        ];
        for (i, (value, color)) in values.into_iter().enumerate() {
            self.draw_text_fit(value, vx, self.y(bt_row_y(b, i)), px, color);
        }
        let key_y = self.y(bt_row_y(b, 4) + 20.0);
        match &scene.last_key {
            Some(key) => self.draw_text_fit(key, vx, key_y, px, TEXT),
            None => self.draw_text_fit("—", vx, key_y, px, DIM),
        };
        // The clipboard row starts after the longer "Clipboard" label.
        let cx = self.x(MARGIN) + 10.0 * self.text.advance(px);
        for (i, value, x) in [(5, &scene.mic, vx), (6, &scene.clipboard, cx)] {
            let y = self.y(bt_row_y(b, i) + 20.0);
            match value {
                // One line: a copied paragraph shows as its first words.
                Some(v) => self.draw_text_fit(&v.replace(['\n', '\r', '\t'], " "), x, y, px, TEXT),
                None => self.draw_text_fit("—", x, y, px, DIM),
            };
        }
    }

    fn draw_ripples(&mut self, scene: &SceneState) {
        let s = self.s;
        let dot = ripple_dot_radius(self.width, self.height);
        let pm = &mut self.pixmap;
        for r in scene.visible_ripples() {
            if !(r.x.is_finite() && r.y.is_finite()) {
                continue;
            }
            let t = r.age_ms as f32 / RIPPLE_LIFETIME_MS as f32;
            let fade = 1.0 - t;
            let radius = dot * 1.5 + t * RIPPLE_GROWTH * s;
            // Translucent tints only: alpha stays well below 255 so that the
            // disc and ring never produce exact RIPPLE_RGB on other colours.
            let disc_alpha = (60.0 * fade).round() as u8;
            let ring_alpha = (190.0 * fade).round() as u8;
            fill_circle(pm, r.x, r.y, radius, RIPPLE_RGB, disc_alpha);
            stroke_circle(
                pm,
                r.x,
                r.y,
                radius,
                (4.0 * s).max(1.5),
                RIPPLE_RGB,
                ring_alpha,
            );
            fill_circle(pm, r.x, r.y, dot, RIPPLE_RGB, 255);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::GRAVITY;

    fn demo_scene() -> SceneState {
        SceneState {
            clock_unix_s: 1_700_000_000,
            clock_face: StatusClock::Seconds,
            battery_percent: 87,
            charging: true,
            bluetooth: BluetoothView::Connected {
                peer_name: "Pixel 8 Pro".to_owned(),
                address: "AA:BB:CC:DD:EE:FF".to_owned(),
                encrypted: true,
            },
            accel: [1.23, -0.45, 9.71],
            gyro: [0.01, -0.02, 0.5],
            mag: [22.5, -5.25, -40.75],
            orientation: [123.45, -2.5, 7.25],
            gps: Some(Gps {
                lat: 52.520_008,
                lon: 13.404_954,
                alt: 34.5,
                speed: 1.25,
                bearing: 90.0,
            }),
            touches: vec![],
            last_key: Some("KEYCODE_A (29) down".to_owned()),
            session: Some("Pixel 8 Pro".to_owned()),
            mic: Some("-12 dBFS  880 Hz".to_owned()),
            clipboard: Some("copied text\nsecond line".to_owned()),
        }
    }

    /// Pixel coordinates of every pixel with exactly colour `rgb`.
    fn pixels_with(rgba: &[u8], width: u32, rgb: [u8; 3]) -> Vec<(u32, u32)> {
        rgba.chunks_exact(4)
            .enumerate()
            .filter(|(_, px)| px[..3] == rgb)
            .map(|(i, _)| (i as u32 % width, i as u32 / width))
            .collect()
    }

    /// Centroid (pixel centres) of every pixel with exactly colour `rgb`.
    fn centroid(rgba: &[u8], width: u32, rgb: [u8; 3]) -> Option<(f32, f32)> {
        let px = pixels_with(rgba, width, rgb);
        if px.is_empty() {
            return None;
        }
        let n = px.len() as f64;
        let sx: f64 = px.iter().map(|&(x, _)| f64::from(x) + 0.5).sum();
        let sy: f64 = px.iter().map(|&(_, y)| f64::from(y) + 0.5).sum();
        Some(((sx / n) as f32, (sy / n) as f32))
    }

    fn tilt(deg_x: f32, deg_y: f32) -> [f32; 3] {
        let (ax, ay) = (deg_x.to_radians().sin(), deg_y.to_radians().sin());
        let az = (1.0 - ax * ax - ay * ay).max(0.0).sqrt();
        [GRAVITY * ax, GRAVITY * ay, GRAVITY * az]
    }

    #[test]
    fn render_is_deterministic_across_instances() {
        let scene = demo_scene();
        let mut a = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let mut b = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let first = a.render(&scene).to_vec();
        // Render something else in between to exercise the glyph cache and
        // the reused pixmap.
        b.render(&SceneState::default());
        let second = b.render(&scene).to_vec();
        assert_eq!(first.len(), (DEFAULT_WIDTH * DEFAULT_HEIGHT * 4) as usize);
        assert!(first == second, "same scene rendered differently");
        assert!(first == a.render(&scene), "re-render differs");

        let mut other = scene.clone();
        other.accel = [3.0, 2.0, 8.9];
        assert!(
            first != b.render(&other),
            "different accel gave same pixels"
        );
    }

    #[test]
    fn owned_frames_match_borrowed_ones_and_rendering_goes_on() {
        let scene = demo_scene();
        let mut a = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let mut b = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let borrowed = a.render(&scene).to_vec();
        let owned = b.render_owned(&scene);
        assert!(owned == borrowed, "an owned frame differs");
        // After handing a buffer over, both kinds of render go on.
        assert!(b.render_owned(&scene) == borrowed);
        assert!(b.render(&SceneState::default()) != borrowed.as_slice());
        assert!(b.render(&scene) == borrowed.as_slice());
    }

    #[test]
    fn output_is_opaque_rgba() {
        let mut scene = demo_scene();
        scene.touches = vec![
            Ripple {
                x: 100.0,
                y: 200.0,
                age_ms: 0,
                id: 0,
            },
            Ripple {
                x: 400.0,
                y: 700.0,
                age_ms: 300,
                id: 1,
            },
            Ripple {
                x: 600.0,
                y: 1000.0,
                age_ms: 599,
                id: 2,
            },
        ];
        let mut r = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let px = r.render(&scene);
        assert!(px.chunks_exact(4).all(|p| p[3] == 255), "non-opaque pixel");
    }

    #[test]
    fn ripple_is_centred_on_touch() {
        let (w, h) = (DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let mut r = Renderer::new(w, h).unwrap();
        let base = demo_scene();
        assert!(
            pixels_with(r.render(&base), w, RIPPLE_RGB).is_empty(),
            "RIPPLE_RGB used without any ripple"
        );
        let dot = ripple_dot_radius(w, h);
        let positions = [
            (360.0, 640.0),
            (123.4, 456.7),
            (20.0, 20.0),    // top-left corner, over the status bar
            (700.0, 1262.0), // bottom-right corner
            (15.0, 700.0),   // left edge
            (706.0, 300.0),  // right edge, over the sensor table
            (360.0, 730.0),  // over the level and the bubble
        ];
        for (i, &(x, y)) in positions.iter().enumerate() {
            for age_ms in [0, 250, 590] {
                let mut scene = base.clone();
                scene.touches.push(Ripple {
                    x,
                    y,
                    age_ms,
                    id: i as i32,
                });
                let rgba = r.render(&scene);
                let at = ((y as u32 * w + x as u32) * 4) as usize;
                assert_eq!(
                    rgba[at..at + 3],
                    RIPPLE_RGB,
                    "no ripple colour at ({x}, {y})"
                );
                let n = pixels_with(rgba, w, RIPPLE_RGB).len() as f32;
                let area = std::f32::consts::PI * dot * dot;
                assert!(n > area * 0.6, "ripple at ({x}, {y}) too small: {n} px");
                let (cx, cy) = centroid(rgba, w, RIPPLE_RGB).unwrap();
                assert!(
                    (cx - x).abs() <= 2.0 && (cy - y).abs() <= 2.0,
                    "ripple at ({x}, {y}) age {age_ms} has centroid ({cx}, {cy})"
                );
            }
        }
    }

    #[test]
    fn expired_ripples_are_not_drawn() {
        let (w, h) = (DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let mut scene = demo_scene();
        scene.touches = vec![
            Ripple {
                x: 300.0,
                y: 300.0,
                age_ms: RIPPLE_LIFETIME_MS,
                id: 1,
            },
            Ripple {
                x: 500.0,
                y: 900.0,
                age_ms: 5_000,
                id: 2,
            },
        ];
        assert_eq!(scene.visible_ripples().count(), 0);
        let mut r = Renderer::new(w, h).unwrap();
        let with_expired = r.render(&scene).to_vec();
        assert!(pixels_with(&with_expired, w, RIPPLE_RGB).is_empty());
        scene.prune_ripples();
        assert!(scene.touches.is_empty());
        assert!(with_expired == r.render(&scene));
    }

    #[test]
    fn bubble_follows_gravity() {
        for (w, h) in [(DEFAULT_WIDTH, DEFAULT_HEIGHT), (360, 640)] {
            let mut r = Renderer::new(w, h).unwrap();
            let mut scene = demo_scene();
            let mut bubble_at = |accel: [f32; 3]| {
                scene.accel = accel;
                let c = centroid(r.render(&scene), w, BUBBLE_RGB).expect("bubble not drawn");
                let expected = bubble_center(w, h, accel);
                assert!(
                    (c.0 - expected.0).abs() <= 2.0 && (c.1 - expected.1).abs() <= 2.0,
                    "{w}x{h} accel {accel:?}: bubble centroid {c:?}, expected {expected:?}"
                );
                c
            };
            let flat = bubble_at([0.0, 0.0, GRAVITY]);
            let (lx, ly, _) = level_center_and_radius(w, h);
            assert!((flat.0 - lx).abs() <= 1.0 && (flat.1 - ly).abs() <= 1.0);

            let right = bubble_at(tilt(30.0, 0.0));
            assert!(
                right.0 > flat.0 + 10.0,
                "+x gravity: {right:?} vs flat {flat:?}"
            );
            assert!((right.1 - flat.1).abs() <= 1.0);

            let left = bubble_at(tilt(-30.0, 0.0));
            assert!(
                left.0 < flat.0 - 10.0,
                "-x gravity: {left:?} vs flat {flat:?}"
            );

            let up = bubble_at(tilt(0.0, 30.0));
            assert!(up.1 < flat.1 - 10.0, "+y gravity: {up:?} vs flat {flat:?}");
            assert!((up.0 - flat.0).abs() <= 1.0);

            // Strong readings are clamped to the ring.
            let pinned = bubble_at([50.0, 0.0, 0.0]);
            let (_, _, ring) = level_center_and_radius(w, h);
            let travel = ring - bubble_radius(w, h);
            assert!((pinned.0 - (lx + travel)).abs() <= 2.0, "{pinned:?}");
        }
    }

    #[test]
    fn bubble_center_geometry() {
        let (w, h) = (DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let (cx, cy, r) = level_center_and_radius(w, h);
        assert_eq!(cx, 360.0);
        assert!(cy > h as f32 / 2.0, "level not in lower half: {cy}");
        assert!((r - 0.28 * w as f32).abs() < 0.01);
        let half = bubble_center(w, h, [GRAVITY / 2.0, 0.0, 0.0]);
        let travel = r - bubble_radius(w, h);
        assert!((half.0 - (cx + travel / 2.0)).abs() < 1e-3 && half.1 == cy);
        let nan = bubble_center(w, h, [f32::NAN, f32::INFINITY, 0.0]);
        assert_eq!(nan, (cx, cy));
    }

    #[test]
    fn clock_second_changes_pixels_in_status_bar() {
        let (w, h) = (DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let mut r = Renderer::new(w, h).unwrap();
        let mut scene = demo_scene();
        let a = r.render(&scene).to_vec();
        scene.clock_unix_s += 1;
        let b = r.render(&scene).to_vec();
        let changed: Vec<usize> = a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .enumerate()
            .filter(|(_, (p, q))| p != q)
            .map(|(i, _)| i)
            .collect();
        assert!(!changed.is_empty(), "clock tick did not change the frame");
        let bar = (STATUS_BAR_H * scale_for(w, h)) as usize;
        assert!(changed.iter().all(|&i| (i / w as usize) < bar));
    }

    #[test]
    fn minutes_clock_turns_once_a_minute() {
        let mut r = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let mut scene = demo_scene();
        scene.clock_face = StatusClock::Minutes;
        scene.clock_unix_s = 86_400 * 7 + 3_600 * 13 + 60 * 7;
        let a = r.render(&scene).to_vec();
        scene.clock_unix_s += 59;
        assert!(
            a == r.render(&scene),
            "the minute clock moved within the minute"
        );
        scene.clock_unix_s += 1;
        assert!(a != r.render(&scene), "the minute clock did not turn");
        // And it is not the seconds face.
        scene.clock_unix_s -= 60;
        scene.clock_face = StatusClock::Seconds;
        assert!(a != r.render(&scene));
    }

    #[test]
    fn clock_format() {
        let mut r = Renderer::new(DEFAULT_WIDTH, DEFAULT_HEIGHT).unwrap();
        let mut scene = SceneState {
            clock_unix_s: 86_400 + 3_600 * 13 + 60 * 7 + 9,
            ..SceneState::default()
        };
        let a = r.render(&scene).to_vec();
        // Same time of day on another day, and via a negative timestamp.
        scene.clock_unix_s -= 86_400 * 3;
        assert!(a == r.render(&scene));
    }

    #[test]
    fn png_round_trip() {
        let (w, h) = (360, 640);
        let mut r = Renderer::new(w, h).unwrap();
        let rgba = r.render(&demo_scene()).to_vec();
        let png_bytes = encode_png(w, h, &rgba).unwrap();
        assert_eq!(png_bytes, r.render_png(&demo_scene()).unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w, h));
        assert_eq!(info.color_type, png::ColorType::Rgba);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert!(buf[..info.buffer_size()] == rgba[..]);

        assert!(matches!(
            encode_png(w, h, &rgba[4..]),
            Err(HostError::Media(
                vphone_media::MediaError::BufferSize { .. }
            ))
        ));
    }

    #[test]
    fn render_rgb_matches_rgba() {
        let mut r = Renderer::new(360, 640).unwrap();
        let rgba = r.render(&demo_scene()).to_vec();
        let mut rgb = Vec::new();
        r.render_rgb(&demo_scene(), &mut rgb);
        assert_eq!(rgb.len(), 360 * 640 * 3);
        assert!(
            rgb.chunks_exact(3)
                .zip(rgba.chunks_exact(4))
                .all(|(a, b)| a == &b[..3])
        );
    }

    #[test]
    fn other_sizes_render() {
        for (w, h) in [
            (360, 640),
            (MIN_WIDTH, MIN_HEIGHT),
            (1080, 1920),
            (1280, 720),
            (720, 1600),
        ] {
            let mut r = Renderer::new(w, h).unwrap();
            let mut scene = demo_scene();
            scene.bluetooth = BluetoothView::RadioAttached;
            scene.touches.push(Ripple {
                x: w as f32 / 2.0,
                y: h as f32 / 3.0,
                age_ms: 100,
                id: 0,
            });
            let rgba = r.render(&scene).to_vec();
            assert_eq!(rgba.len(), (w * h * 4) as usize, "{w}x{h}");
            assert!(rgba.chunks_exact(4).all(|p| p[3] == 255));
            // Some text was drawn: there are pixels in the text colour.
            assert!(!pixels_with(&rgba, w, TEXT).is_empty(), "{w}x{h}: no text");
            assert!(
                !pixels_with(&rgba, w, BUBBLE_RGB).is_empty(),
                "{w}x{h}: no bubble"
            );
            assert!(
                !pixels_with(&rgba, w, RIPPLE_RGB).is_empty(),
                "{w}x{h}: no ripple"
            );
            let (_, cy, r) = level_center_and_radius(w, h);
            assert!(
                cy - r > 0.0 && cy + r < h as f32,
                "{w}x{h}: level off screen"
            );
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        for (w, h) in [(0, 0), (239, 640), (720, 319), (MAX_DIMENSION + 1, 1280)] {
            assert!(
                matches!(Renderer::new(w, h), Err(HostError::InvalidSize { .. })),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn long_and_odd_strings_do_not_panic() {
        let mut r = Renderer::new(MIN_WIDTH, MIN_HEIGHT).unwrap();
        let long = "Ω≈ç√∫ 漢字 🙂 \u{0}\n\t".repeat(20);
        let scene = SceneState {
            bluetooth: BluetoothView::Connected {
                peer_name: long.clone(),
                address: long.clone(),
                encrypted: false,
            },
            accel: [f32::NAN, f32::INFINITY, -1e30],
            gyro: [f32::MAX, f32::MIN, -0.0],
            mag: [1e9, -1e9, 0.0],
            gps: Some(Gps {
                lat: -90.0,
                lon: -180.0,
                alt: -1e12,
                speed: f32::NAN,
                bearing: 1e9,
            }),
            touches: vec![Ripple {
                x: f32::NAN,
                y: -1e9,
                age_ms: 0,
                id: 0,
            }],
            last_key: Some(long.clone()),
            session: Some(long),
            battery_percent: 255,
            clock_unix_s: i64::MIN,
            ..SceneState::default()
        };
        assert_eq!(
            r.render(&scene).len(),
            (MIN_WIDTH * MIN_HEIGHT * 4) as usize
        );
    }

    #[test]
    fn renderer_can_move_between_threads() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let r = Renderer::new(MIN_WIDTH, MIN_HEIGHT).unwrap();
        assert_send(&r);
        assert!(format!("{r:?}").contains("Renderer"));
    }

    #[test]
    fn ellipsize_cuts_with_ellipsis() {
        assert_eq!(ellipsize("abcdef", 6), "abcdef");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abcdef", 0), "");
    }

    #[test]
    fn listened_sensor_table() {
        let sensors = listened_sensors();
        assert_eq!(sensors.len(), 5);
        for name in [
            SensorName::Accelerometer,
            SensorName::Gyroscope,
            SensorName::Magnetometer,
            SensorName::Orientation,
        ] {
            assert!(sensors.contains(&(name, 60)), "{name:?}");
        }
        assert!(sensors.contains(&(SensorName::Gps, 1)));
    }

    /// Prints the average frame time (no assertion; run with --nocapture).
    /// Set `SIM_SCREEN_PNG=/tmp/sim-screen.png` to also save demo screens.
    #[test]
    fn frame_time_and_optional_screenshot() {
        let (w, h) = (DEFAULT_WIDTH, DEFAULT_HEIGHT);
        let mut r = Renderer::new(w, h).unwrap();
        let mut scene = demo_scene();
        scene.touches = vec![
            Ripple {
                x: 200.0,
                y: 400.0,
                age_ms: 120,
                id: 0,
            },
            Ripple {
                x: 520.0,
                y: 1000.0,
                age_ms: 400,
                id: 1,
            },
        ];
        r.render(&scene); // warm the glyph cache
        let frames = 30;
        let start = std::time::Instant::now();
        for i in 0..frames {
            scene.clock_unix_s += 1;
            scene.accel[0] = (i as f32 * 0.3).sin() * 4.0;
            scene.gyro[2] = i as f32 * 0.01;
            r.render(&scene);
        }
        let per_frame = start.elapsed() / frames;
        eprintln!("sim screen {w}x{h}: {per_frame:?} per frame ({frames} frames)");

        if let Some(path) = std::env::var_os("SIM_SCREEN_PNG") {
            let path = std::path::PathBuf::from(path);
            std::fs::write(&path, r.render_png(&scene).unwrap()).unwrap();
            let mut small = Renderer::new(360, 640).unwrap();
            let mut plain = demo_scene();
            plain.bluetooth = BluetoothView::NoRadio;
            plain.gps = None;
            plain.charging = false;
            plain.battery_percent = 15;
            plain.session = None;
            plain.accel = tilt(-20.0, 25.0);
            plain.touches = vec![Ripple {
                x: 40.0,
                y: 600.0,
                age_ms: 0,
                id: 0,
            }];
            std::fs::write(
                path.with_extension("360x640.png"),
                small.render_png(&plain).unwrap(),
            )
            .unwrap();
            let mut tiny = Renderer::new(MIN_WIDTH, MIN_HEIGHT).unwrap();
            std::fs::write(
                path.with_extension("240x320.png"),
                tiny.render_png(&scene).unwrap(),
            )
            .unwrap();
        }
    }
}
