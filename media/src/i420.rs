//! RGBA -> I420 (BT.601 limited range) in fixed point.

use std::fmt;

use openh264::formats::YUVSource;

use crate::MediaError;

/// A planar YUV 4:2:0 picture (Y plane, then U, then V; no row padding).
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// Rounds to 16.16 fixed point.
const fn fx(v: f64) -> i32 {
    if v < 0.0 {
        (v * 65536.0 - 0.5) as i32
    } else {
        (v * 65536.0 + 0.5) as i32
    }
}

// BT.601 (Kr = 0.299, Kb = 0.114), limited range: Y 16..235, U/V 16..240.
const KR: f64 = 0.299;
const KB: f64 = 0.114;
const YS: f64 = 219.0 / 255.0;
const CS: f64 = 224.0 / 255.0;
const Y_R: i32 = fx(YS * KR);
const Y_B: i32 = fx(YS * KB);
// Kg = 1 - Kr - Kb: chosen so the three sum exactly to 219/255 (white
// gives 235).
const Y_G: i32 = fx(YS) - Y_R - Y_B;
const U_R: i32 = fx(-CS * KR / (2.0 * (1.0 - KB)));
const U_B: i32 = fx(CS * 0.5);
// Zero-sum, so greys have exactly U = V = 128.
const U_G: i32 = -U_R - U_B;
const V_R: i32 = fx(CS * 0.5);
const V_B: i32 = fx(-CS * KB / (2.0 * (1.0 - KR)));
const V_G: i32 = -V_R - V_B;
/// Offset 16 plus rounding, for luma in 16.16.
const Y_OFF: i32 = (16 << 16) + (1 << 15);
/// Offset 128 plus rounding, for chroma from a sum of 4 pixels (16.16 << 2).
const C_OFF: i32 = (128 << 18) + (1 << 17);

#[inline(always)]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    // In 16..=235 for any 8-bit input, so the cast never truncates.
    ((Y_R * r + Y_G * g + Y_B * b + Y_OFF) >> 16) as u8
}

/// Per-row scratch for [`convert_row_pair`]: each column's contribution of
/// the two rows to U and V (16.16 fixed point).
struct ChromaScratch {
    u: Vec<i32>,
    v: Vec<i32>,
}

/// Converts one RGBA row (already cut to the encoded width) to luma.
#[inline(always)]
fn luma_row(src: &[u8], y: &mut [u8]) {
    let (px, _) = src.as_chunks::<4>();
    for (p, y) in px.iter().zip(y.iter_mut()) {
        let p = u32::from_le_bytes(*p);
        let c = |shift: u32| ((p >> shift) & 0xff) as i32;
        *y = luma(c(0), c(8), c(16));
    }
}

/// Converts one pair of RGBA rows (already cut to the encoded width).
///
/// Written for the autovectoriser (x86-64 baseline SSE2 included; about 3x
/// faster than a straightforward loop over 2x2 blocks): contiguous passes
/// over the pixels, loaded as `u32` with channels split by shifts and masks.
/// Luma row by row; then chroma: the two rows' channels are added in SWAR
/// form (R and B, G and A in 16-bit lanes), each column's contribution to U
/// and V goes to `scratch`, and a last pass adds column pairs. Chroma is
/// linear, so this equals converting each 2x2 block's channel sums.
#[inline(always)]
fn convert_row_pair(
    top: &[u8],
    bottom: &[u8],
    y_top: &mut [u8],
    y_bottom: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
    scratch: &mut ChromaScratch,
) {
    const LOW: u32 = 0x00ff_00ff;
    luma_row(top, y_top);
    luma_row(bottom, y_bottom);
    let (top, _) = top.as_chunks::<4>();
    let (bottom, _) = bottom.as_chunks::<4>();
    let columns = top
        .iter()
        .zip(bottom)
        .zip(scratch.u.iter_mut().zip(scratch.v.iter_mut()));
    for ((t, b), (cu, cv)) in columns {
        let (pt, pb) = (u32::from_le_bytes(*t), u32::from_le_bytes(*b));
        let rb = (pt & LOW) + (pb & LOW);
        let ga = ((pt >> 8) & LOW) + ((pb >> 8) & LOW);
        let (r, g, bl) = ((rb & 0x1ff) as i32, (ga & 0x1ff) as i32, (rb >> 16) as i32);
        *cu = U_R * r + U_G * g + U_B * bl;
        *cv = V_R * r + V_G * g + V_B * bl;
    }
    let (cu, _) = scratch.u.as_chunks::<2>();
    let (cv, _) = scratch.v.as_chunks::<2>();
    for ((cu, cv), (u, v)) in cu.iter().zip(cv).zip(u.iter_mut().zip(v.iter_mut())) {
        // In 16..=240 for any 8-bit input.
        *u = ((cu[0] + cu[1] + C_OFF) >> 18) as u8;
        *v = ((cv[0] + cv[1] + C_OFF) >> 18) as u8;
    }
}

impl I420Frame {
    /// A black-initialised (all zero) picture of an even `width`x`height`.
    ///
    /// # Errors
    /// [`MediaError::InvalidSize`] if a side is odd or zero.
    pub fn new(width: u32, height: u32) -> Result<Self, MediaError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(MediaError::InvalidSize { width, height });
        }
        let (w, h) = (width as usize, height as usize);
        Ok(Self {
            width: w,
            height: h,
            data: vec![0; w * h * 3 / 2],
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width as u32
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height as u32
    }

    /// The Y plane (`width * height` bytes).
    pub fn y_plane(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    /// The U (Cb) plane (`width/2 * height/2` bytes).
    pub fn u_plane(&self) -> &[u8] {
        let n = self.width * self.height;
        &self.data[n..n + n / 4]
    }

    /// The V (Cr) plane (`width/2 * height/2` bytes).
    pub fn v_plane(&self) -> &[u8] {
        let n = self.width * self.height;
        &self.data[n + n / 4..]
    }

    /// Fills the picture from tightly packed, top-down RGBA8888 of
    /// `src_width`x`src_height` (alpha ignored), BT.601 limited range with
    /// integer arithmetic. Each 2x2 block gives four Y samples and one U and
    /// V from the block's average colour.
    ///
    /// The source may be one column and/or one row larger than the picture
    /// (an odd-sized screen): the extra right column / bottom row is cropped.
    ///
    /// # Errors
    /// [`MediaError::BufferSize`] if `rgba` is not `src_width * src_height * 4`
    /// bytes, [`MediaError::InvalidSize`] if the source size does not round
    /// down to this picture's size.
    pub fn fill_from_rgba(
        &mut self,
        rgba: &[u8],
        src_width: u32,
        src_height: u32,
    ) -> Result<(), MediaError> {
        self.check_source(rgba, src_width, src_height)?;
        self.convert_pairs(rgba, src_width as usize, |_, _| true);
        Ok(())
    }

    fn check_source(&self, rgba: &[u8], src_width: u32, src_height: u32) -> Result<(), MediaError> {
        let (sw, sh) = (src_width as usize, src_height as usize);
        if sw & !1 != self.width || sh & !1 != self.height {
            return Err(MediaError::InvalidSize {
                width: src_width,
                height: src_height,
            });
        }
        let expected = sw * sh * 4;
        if rgba.len() != expected {
            return Err(MediaError::BufferSize {
                expected,
                actual: rgba.len(),
            });
        }
        Ok(())
    }

    /// Converts the row pairs of a checked source for which `convert(index,
    /// the pair's source bytes)` says so; returns how many.
    fn convert_pairs(
        &mut self,
        rgba: &[u8],
        src_width: usize,
        mut convert: impl FnMut(usize, &[u8]) -> bool,
    ) -> usize {
        let (w, h) = (self.width, self.height);
        let stride = src_width * 4;
        let (y_plane, chroma) = self.data.split_at_mut(w * h);
        let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
        let rows = rgba.chunks_exact(2 * stride).take(h / 2);
        let y_rows = y_plane.chunks_exact_mut(2 * w);
        let uv_rows = u_plane
            .chunks_exact_mut(w / 2)
            .zip(v_plane.chunks_exact_mut(w / 2));
        let mut scratch = ChromaScratch {
            u: vec![0; w],
            v: vec![0; w],
        };
        let mut converted = 0;
        for (i, ((src, ys), (u, v))) in rows.zip(y_rows).zip(uv_rows).enumerate() {
            if !convert(i, src) {
                continue;
            }
            converted += 1;
            let (top, bottom) = src.split_at(stride);
            let (y_top, y_bottom) = ys.split_at_mut(w);
            let (top, bottom) = (&top[..w * 4], &bottom[..w * 4]);
            convert_row_pair(top, bottom, y_top, y_bottom, u, v, &mut scratch);
        }
        converted
    }
}

impl I420Frame {
    /// As [`I420Frame::fill_from_rgba`], converting only the row pairs whose
    /// pixels changed since the last call with the same `hashes` (a hash per
    /// row pair, kept by the caller; empty or of another length converts
    /// everything). A phone's screen often changes in a few rows (its
    /// clock); hashing a row pair costs a fraction of converting it.
    /// Returns how many row pairs were converted.
    ///
    /// # Errors
    /// As [`I420Frame::fill_from_rgba`].
    pub fn fill_changed_from_rgba(
        &mut self,
        rgba: &[u8],
        src_width: u32,
        src_height: u32,
        hashes: &mut Vec<u64>,
    ) -> Result<usize, MediaError> {
        use std::hash::Hasher as _;
        self.check_source(rgba, src_width, src_height)?;
        let pairs = self.height / 2;
        let all = hashes.len() != pairs;
        if all {
            hashes.clear();
            hashes.resize(pairs, 0);
        }
        Ok(self.convert_pairs(rgba, src_width as usize, |i, src| {
            let mut hasher = rustc_hash::FxHasher::default();
            hasher.write(src);
            let hash = hasher.finish();
            let changed = all || hashes[i] != hash;
            hashes[i] = hash;
            changed
        }))
    }
}

impl YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        self.y_plane()
    }

    fn u(&self) -> &[u8] {
        self.u_plane()
    }

    fn v(&self) -> &[u8] {
        self.v_plane()
    }
}

// ---------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------
