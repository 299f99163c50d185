//! The host-side video pipeline: phone frames (RGBA) to an H.264 Annex B
//! stream for the handset, plus a decoder for tests and the handset.
//!
//! # Pieces
//!
//! * [`VideoEncoder`]: sans-IO (no tokio, no clocks): RGBA in,
//!   [`EncodedFrame`] (one Annex B access unit) out. Converts RGBA to I420
//!   ([`I420Frame::fill_from_rgba`], BT.601 limited range), enforces the
//!   frame-rate cap, inserts keyframes (periodically and on demand) and
//!   drives OpenH264 in its screen-content, low-latency mode.
//! * [`LatestFrame`]: the drop policy between a frame source (a
//!   [`tokio::sync::watch`] of frames, such as the sim phone's `frames()`) and the
//!   encoder. It never queues: a watch channel holds only the newest frame,
//!   so frames published while the encoder (or the network behind it) is
//!   busy are simply replaced and never encoded. It also paces pulls to the
//!   frame-rate cap *before* taking the frame, so the last frame of a burst
//!   (the final state of an animation) is always encoded, just a little later.
//! * [`VideoDecoder`]: Annex B access units back to RGBA.
//!
//! # A pipeline
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn pipeline(
//! #     frames: tokio::sync::watch::Receiver<Option<Arc<cloud_host::video::Frame>>>,
//! # ) -> Result<(), cloud_host::HostError> {
//! use cloud_host::video::{EncoderConfig, LatestFrame, VideoEncoder};
//!
//! // `frames`: a phone's screen images as they are produced.
//! let cfg = EncoderConfig::new(720, 1280);
//! let mut latest = LatestFrame::new(frames, cfg.max_fps);
//! let mut encoder = VideoEncoder::new(cfg)?;
//! while let Some(pulled) = latest.next().await {
//!     // Encoding takes milliseconds of CPU: keep it off the async workers.
//!     let (enc, result) = tokio::task::spawn_blocking(move || {
//!         let f = &pulled.frame;
//!         let r = encoder.encode_at(&f.rgba, f.timestamp_us, pulled.now_us, false);
//!         (encoder, r)
//!     })
//!     .await
//!     .expect("encoder task panicked");
//!     encoder = enc;
//!     if let Some(frame) = result? {
//!         // send frame.data on the QUIC video stream; while that send is
//!         // pending, newer frames replace older ones in the watch channel.
//!         # let _ = frame;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Bitrate while idle
//!
//! Frames are encoded only when the screen changed (the sim phone publishes
//! nothing while its screen is still, except the clock once a second), and a
//! P-frame for a small change is small (the sim phone's clock tick: about
//! 160 bytes on average at 720x1280), so an idle screen costs about
//! 1.3 kbit/s. The periodic keyframe ([`EncoderConfig::keyframe_interval_s`],
//! about 23 KiB each) then dominates: about 25 kbit/s at one every 10 s. On
//! a reliable transport, set it to 0 and call
//! [`VideoEncoder::request_keyframe`] when a viewer joins or loses data.
//! `cargo bench -p cloud-host --bench encoder` measures all of this.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig as H264Config, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use tokio::sync::watch;

use crate::HostError;

/// Largest encodable width or height (OpenH264 supports up to 3840x2160 in
/// either orientation).
pub const MAX_ENCODE_DIMENSION: u32 = 3840;

/// H.264 NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// H.264 NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// One screen image: what a phone's display produced.
#[derive(Debug)]
pub struct Frame {
    /// Increases by one per published frame, from 1.
    pub seq: u32,
    /// When it was rendered, Unix µs.
    pub timestamp_us: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Packed RGBA8888, top-down.
    pub rgba: sensor_proto::bytes::Bytes,
}

/// H.264 NAL unit type of an IDR (keyframe) slice.
pub const NAL_IDR: u8 = 5;
/// H.264 NAL unit type of a non-IDR slice (P-frame here).
pub const NAL_SLICE: u8 = 1;

// ---------------------------------------------------------------------------
// Configuration and output
// ---------------------------------------------------------------------------

/// How a [`VideoEncoder`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Width of the RGBA frames fed in, pixels. An odd width is cropped by
    /// one column for encoding (H.264 4:2:0 needs even sizes).
    pub width: u32,
    /// Height of the RGBA frames fed in, pixels. An odd height is cropped by
    /// one row for encoding.
    pub height: u32,
    /// Frame-rate cap, 1..=240: frames arriving faster are skipped (never
    /// queued); see [`VideoEncoder::encode_at`] for the exact rule.
    pub max_fps: u32,
    /// Target bitrate while the screen changes continuously, bit/s.
    pub bitrate_bps: u32,
    /// A keyframe (IDR with SPS/PPS) is inserted when this many seconds
    /// passed since the last one; 0 = only the first frame and on demand.
    pub keyframe_interval_s: u32,
}

impl EncoderConfig {
    /// Defaults for a `width`x`height` screen: 30 fps, 2 Mbit/s, a keyframe
    /// every 10 s.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            max_fps: 30,
            bitrate_bps: 2_000_000,
            keyframe_interval_s: 10,
        }
    }

    /// The size actually encoded: the input size rounded down to even.
    pub fn encoded_size(&self) -> (u32, u32) {
        (self.width & !1, self.height & !1)
    }

    fn validate(&self) -> Result<(), HostError> {
        let (w, h) = self.encoded_size();
        if w < 16
            || h < 16
            || w > MAX_ENCODE_DIMENSION
            || h > MAX_ENCODE_DIMENSION
            || w.min(h) > 2160
        {
            return Err(HostError::InvalidSize {
                width: self.width,
                height: self.height,
                supported: String::new(),
            });
        }
        if !(1..=240).contains(&self.max_fps) {
            return Err(HostError::Invalid {
                what: "max_fps",
                why: format!("{} is not 1..=240", self.max_fps),
            });
        }
        if !(10_000..=100_000_000).contains(&self.bitrate_bps) {
            return Err(HostError::Invalid {
                what: "bitrate_bps",
                why: format!("{} is not 10000..=100000000", self.bitrate_bps),
            });
        }
        Ok(())
    }
}

/// One encoded picture.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// One H.264 access unit in Annex B form (`00 00 00 01` start codes).
    /// A keyframe starts with SPS and PPS, so a decoder can join there.
    pub data: Vec<u8>,
    /// Whether this is an IDR picture (with SPS/PPS).
    pub keyframe: bool,
    /// Presentation time, µs since the first encoded frame's capture time;
    /// strictly increasing.
    pub pts_us: u64,
    /// The capture time passed to [`VideoEncoder::encode`], for latency
    /// measurement end to end.
    pub capture_time_us: u64,
    /// 0 for the first encoded frame, +1 per encoded frame (skipped frames
    /// take no number), so a receiver can detect a loss.
    pub seq: u64,
}

impl fmt::Debug for EncodedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedFrame")
            .field("bytes", &self.data.len())
            .field("nal_types", &nal_unit_types(&self.data))
            .field("keyframe", &self.keyframe)
            .field("pts_us", &self.pts_us)
            .field("capture_time_us", &self.capture_time_us)
            .field("seq", &self.seq)
            .finish()
    }
}

/// The NAL unit types (`nal_unit_type`, low 5 bits of the header byte) of
/// an Annex B stream, in order.
pub fn nal_unit_types(annexb: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut zeros = 0usize;
    let mut i = 0;
    while i < annexb.len() {
        let b = annexb[i];
        if b == 1 && zeros >= 2 {
            if let Some(&h) = annexb.get(i + 1) {
                types.push(h & 0x1f);
            }
            zeros = 0;
        } else if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        i += 1;
    }
    types
}

// ---------------------------------------------------------------------------
// Colour conversion
// ---------------------------------------------------------------------------

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
    /// [`HostError::InvalidSize`] if a side is odd or zero.
    pub fn new(width: u32, height: u32) -> Result<Self, HostError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(HostError::InvalidSize {
                width,
                height,
                supported: String::new(),
            });
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
    /// [`HostError::BufferSize`] if `rgba` is not `src_width * src_height * 4`
    /// bytes, [`HostError::InvalidSize`] if the source size does not round
    /// down to this picture's size.
    pub fn fill_from_rgba(
        &mut self,
        rgba: &[u8],
        src_width: u32,
        src_height: u32,
    ) -> Result<(), HostError> {
        let (sw, sh) = (src_width as usize, src_height as usize);
        if sw & !1 != self.width || sh & !1 != self.height {
            return Err(HostError::InvalidSize {
                width: src_width,
                height: src_height,
                supported: String::new(),
            });
        }
        let expected = sw * sh * 4;
        if rgba.len() != expected {
            return Err(HostError::BufferSize {
                expected,
                actual: rgba.len(),
            });
        }
        let (w, h) = (self.width, self.height);
        let stride = sw * 4;
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
        for ((src, ys), (u, v)) in rows.zip(y_rows).zip(uv_rows) {
            let (top, bottom) = src.split_at(stride);
            let (y_top, y_bottom) = ys.split_at_mut(w);
            let (top, bottom) = (&top[..w * 4], &bottom[..w * 4]);
            convert_row_pair(top, bottom, y_top, y_bottom, u, v, &mut scratch);
        }
        Ok(())
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

fn video_err(what: &str, e: impl fmt::Display) -> HostError {
    HostError::Video(format!("{what}: {e}"))
}

fn build_encoder(cfg: &EncoderConfig, bitrate_bps: u32) -> Result<Encoder, HostError> {
    let h264 = H264Config::new()
        // Screen content: tuned for sharp text and static areas
        // (skip-heavy P-frames, screen-specific motion search).
        .usage_type(UsageType::ScreenContentRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(cfg.max_fps as f32))
        // Every frame we encode carries a change the viewer must see: the
        // rate controller may not drop it (the screen might then not
        // change again for a long time).
        .skip_frames(false)
        // Keyframes are driven by time in `VideoEncoder`, not by frame
        // count: frames are encoded only on change.
        .intra_frame_period(IntraFramePeriod::from_num_frames(0))
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        // Not supported for screen content (OpenH264 turns them off and
        // warns).
        .adaptive_quantization(false)
        .background_detection(false)
        .complexity(Complexity::Low)
        // One thread: the host runs many phones; parallelism is across them.
        .num_threads(1)
        .vui(VuiConfig::bt601());
    Encoder::with_api_config(OpenH264API::from_source(), h264)
        .map_err(|e| video_err("cannot create the H.264 encoder", e))
}

/// Encodes RGBA screen frames to H.264 (see the [module docs](self)).
///
/// Low latency by construction: Baseline profile (no B-frames, no
/// reordering: every input produces its own access unit at once), OpenH264's
/// screen-content real-time mode, one slice, one thread.
pub struct VideoEncoder {
    cfg: EncoderConfig,
    encoder: Encoder,
    /// Whether `encoder` has not produced a frame yet (its first is an IDR).
    fresh: bool,
    yuv: I420Frame,
    interval_us: u64,
    /// Theoretical arrival time of the next frame on the pacing clock
    /// (GCRA); frames are accepted up to half an interval before it.
    tat_us: Option<u64>,
    last_now_us: u64,
    last_keyframe_us: Option<u64>,
    keyframe_requested: bool,
    pending_bitrate: Option<u32>,
    base_capture_us: Option<u64>,
    last_pts_us: u64,
    seq: u64,
}

impl fmt::Debug for VideoEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoEncoder")
            .field("cfg", &self.cfg)
            .field("next_seq", &self.seq)
            .field("keyframe_requested", &self.keyframe_requested)
            .field("pending_bitrate", &self.pending_bitrate)
            .finish_non_exhaustive()
    }
}

impl VideoEncoder {
    /// Builds an encoder (OpenH264, compiled in).
    ///
    /// # Errors
    /// [`HostError::InvalidSize`] for a size below 16x16 or above what
    /// OpenH264 supports (3840x2160 either way), [`HostError::Invalid`] for
    /// an out-of-range frame rate or bitrate, [`HostError::Video`] if
    /// OpenH264 refuses.
    pub fn new(cfg: EncoderConfig) -> Result<Self, HostError> {
        cfg.validate()?;
        let (w, h) = cfg.encoded_size();
        Ok(Self {
            encoder: build_encoder(&cfg, cfg.bitrate_bps)?,
            fresh: true,
            yuv: I420Frame::new(w, h)?,
            interval_us: 1_000_000 / u64::from(cfg.max_fps),
            tat_us: None,
            last_now_us: 0,
            last_keyframe_us: None,
            keyframe_requested: false,
            pending_bitrate: None,
            base_capture_us: None,
            last_pts_us: 0,
            seq: 0,
            cfg,
        })
    }

    /// The configuration (with the current target bitrate).
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// The size of the encoded pictures (input size rounded down to even).
    pub fn encoded_size(&self) -> (u32, u32) {
        self.cfg.encoded_size()
    }

    /// Makes the next encoded frame a keyframe (IDR with SPS/PPS), e.g. when
    /// a viewer joins or reports loss. Survives skipped frames.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate. OpenH264's safe API has no cheap runtime
    /// rate change, so the new rate takes effect at the next keyframe (the
    /// encoder is rebuilt there, which costs nothing extra because the
    /// keyframe resets the reference anyway). Call
    /// [`request_keyframe`](Self::request_keyframe) too to apply it now.
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a rate outside 10 kbit/s..100 Mbit/s.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), HostError> {
        EncoderConfig {
            bitrate_bps,
            ..self.cfg
        }
        .validate()?;
        self.pending_bitrate = Some(bitrate_bps);
        Ok(())
    }

    /// The earliest pacing-clock time (`now_us` of
    /// [`encode_at`](Self::encode_at), the capture time for
    /// [`encode`](Self::encode)) at which a frame is accepted; `None` if any
    /// time is.
    pub fn next_slot_us(&self) -> Option<u64> {
        self.tat_us
            .map(|tat| tat.saturating_sub(self.interval_us / 2))
    }

    /// Encodes one RGBA frame captured at `capture_time_us` (any µs clock,
    /// e.g. [`Frame::timestamp_us`]); the capture time is also the pacing
    /// clock. Same as [`encode_at`](Self::encode_at) with
    /// `now_us = capture_time_us`.
    ///
    /// # Errors
    /// See [`encode_at`](Self::encode_at).
    pub fn encode(
        &mut self,
        rgba: &[u8],
        capture_time_us: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, HostError> {
        self.encode_at(rgba, capture_time_us, capture_time_us, force_keyframe)
    }

    /// Encodes one frame of tightly packed, top-down RGBA8888 at the
    /// configured size, captured at `capture_time_us`, offered at `now_us`
    /// on the pacing clock (a µs clock that does not jump; use one clock for
    /// all calls).
    ///
    /// Returns `Ok(None)` when the frame is skipped by the frame-rate cap:
    /// `now_us` is before [`next_slot_us`](Self::next_slot_us). This is a
    /// GCRA (leaky bucket): accepted frames are `1 / max_fps` apart on
    /// average and at least half an interval apart, so a jittery source at
    /// `max_fps` is not thinned while a faster one is capped.
    /// Skipped frames are dropped, not queued; a caller that might have
    /// skipped the *last* change must offer the newest frame again at the
    /// next slot (what [`LatestFrame`] does). If the pacing clock jumps back
    /// by more than one interval, pacing and the keyframe timer restart.
    ///
    /// The frame is a keyframe if `force_keyframe` is set, a keyframe was
    /// requested ([`request_keyframe`](Self::request_keyframe)) or is due
    /// ([`EncoderConfig::keyframe_interval_s`]), or it is the first.
    ///
    /// # Errors
    /// [`HostError::BufferSize`] if `rgba` is not `width * height * 4` bytes;
    /// [`HostError::Video`] if OpenH264 fails.
    pub fn encode_at(
        &mut self,
        rgba: &[u8],
        capture_time_us: u64,
        now_us: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, HostError> {
        let expected = self.cfg.width as usize * self.cfg.height as usize * 4;
        if rgba.len() != expected {
            return Err(HostError::BufferSize {
                expected,
                actual: rgba.len(),
            });
        }
        self.keyframe_requested |= force_keyframe;
        if now_us.saturating_add(self.interval_us) < self.last_now_us {
            // The pacing clock went back: start over rather than stall.
            self.tat_us = None;
            if self.last_keyframe_us.is_some() {
                self.last_keyframe_us = Some(now_us);
            }
        }
        if self.next_slot_us().is_some_and(|slot| now_us < slot) {
            return Ok(None);
        }

        let keyframe_due = self.cfg.keyframe_interval_s > 0
            && self.last_keyframe_us.is_some_and(|k| {
                now_us.saturating_sub(k) >= u64::from(self.cfg.keyframe_interval_s) * 1_000_000
            });
        let want_idr = self.keyframe_requested || keyframe_due;
        if want_idr && let Some(bps) = self.pending_bitrate.take() {
            self.encoder = build_encoder(&self.cfg, bps)?;
            self.cfg.bitrate_bps = bps;
            self.fresh = true;
        }
        if want_idr && !self.fresh {
            self.encoder.force_intra_frame();
        }

        self.yuv
            .fill_from_rgba(rgba, self.cfg.width, self.cfg.height)?;
        let base = *self.base_capture_us.get_or_insert(capture_time_us);
        let mut pts_us = capture_time_us.saturating_sub(base);
        if self.seq > 0 && pts_us <= self.last_pts_us {
            pts_us = self.last_pts_us + 1;
        }
        let stream = self
            .encoder
            .encode_at(&self.yuv, openh264::Timestamp::from_millis(pts_us / 1000))
            .map_err(|e| video_err("H.264 encoding failed", e))?;
        let frame_type = stream.frame_type();
        let data = stream.to_vec();
        if data.is_empty() || frame_type == FrameType::Skip {
            // Not expected with frame skipping off; the slot stays free and
            // a requested keyframe stays requested.
            return Ok(None);
        }
        let keyframe = frame_type == FrameType::IDR;

        self.fresh = false;
        self.tat_us = Some(self.tat_us.unwrap_or(now_us).max(now_us) + self.interval_us);
        self.last_now_us = now_us;
        if keyframe {
            self.keyframe_requested = false;
            self.last_keyframe_us = Some(now_us);
        }
        let seq = self.seq;
        self.seq += 1;
        self.last_pts_us = pts_us;
        Ok(Some(EncodedFrame {
            data,
            keyframe,
            pts_us,
            capture_time_us,
            seq,
        }))
    }
}

// ---------------------------------------------------------------------------
// Drop policy
// ---------------------------------------------------------------------------

/// A frame taken by [`LatestFrame::next`].
#[derive(Clone, Debug)]
pub struct PulledFrame {
    /// The newest frame at the time it was taken.
    pub frame: Arc<Frame>,
    /// When it was taken, µs on a monotonic clock starting at the
    /// [`LatestFrame`]'s creation: pass it as `now_us` to
    /// [`VideoEncoder::encode_at`].
    pub now_us: u64,
}

/// Takes the newest frame from a watch channel, at most `max_fps` times a
/// second, dropping (never queueing) the frames in between.
///
/// [`next`](Self::next) waits for a frame it has not returned yet, then
/// waits until `1 / max_fps` after the previous take, *then* takes the
/// newest frame. Frames published in between are replaced in the channel
/// and never seen: a slow consumer (encoder or network) costs frame rate,
/// never queueing delay or memory. Because it waits before taking, the final frame
/// of a burst is always returned, and an encoder paced with the returned
/// `now_us` at the same `max_fps` never skips it.
#[derive(Debug)]
pub struct LatestFrame {
    rx: watch::Receiver<Option<Arc<Frame>>>,
    min_interval: Duration,
    origin: Instant,
    last_take: Option<Instant>,
}

impl LatestFrame {
    /// Wraps a frame channel (a phone's screen images, e.g. the sim
    /// phone's `frames()`); the frame in it now, if any, is returned first.
    pub fn new(mut rx: watch::Receiver<Option<Arc<Frame>>>, max_fps: u32) -> Self {
        rx.mark_changed();
        Self {
            rx,
            min_interval: Duration::from_micros(1_000_000 / u64::from(max_fps.max(1))),
            origin: Instant::now(),
            last_take: None,
        }
    }

    /// Waits for the next frame to encode (see the type docs). `None` once
    /// the sender is gone and its last frame was returned. Cancel-safe: a
    /// dropped call loses nothing.
    pub async fn next(&mut self) -> Option<PulledFrame> {
        loop {
            self.rx.changed().await.ok()?;
            // Until the frame is taken, keep it "unseen": if this future is
            // dropped while pacing, the next call still returns it.
            self.rx.mark_changed();
            if let Some(last) = self.last_take {
                tokio::time::sleep_until((last + self.min_interval).into()).await;
            }
            let Some(frame) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            let now = Instant::now();
            self.last_take = Some(now);
            return Some(PulledFrame {
                frame,
                now_us: now.duration_since(self.origin).as_micros() as u64,
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------

/// Decodes Annex B H.264 access units to RGBA (OpenH264; BT.601 limited
/// range, matching [`VideoEncoder`]).
pub struct VideoDecoder {
    decoder: Decoder,
}

impl fmt::Debug for VideoDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoDecoder").finish_non_exhaustive()
    }
}

impl VideoDecoder {
    /// A decoder waiting for a keyframe.
    ///
    /// # Errors
    /// [`HostError::Video`] if OpenH264 refuses.
    pub fn new() -> Result<Self, HostError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| video_err("cannot create the H.264 decoder", e))?;
        Ok(Self { decoder })
    }

    /// Decodes one access unit (e.g. [`EncodedFrame::data`]; several NAL
    /// units with start codes). Returns the picture as `(width, height,
    /// rgba)` (tightly packed, top-down, alpha 255), or `None` if the data
    /// completed no picture (e.g. parameter sets only).
    ///
    /// # Errors
    /// [`HostError::Video`] for a corrupt stream or P-frames without a
    /// preceding keyframe.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<(u32, u32, Vec<u8>)>, HostError> {
        let Some(yuv) = self
            .decoder
            .decode(annexb)
            .map_err(|e| video_err("H.264 decoding failed", e))?
        else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let mut rgba = vec![0; yuv.rgba8_len()];
        yuv.write_rgba8(&mut rgba);
        Ok(Some((w as u32, h as u32, rgba)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba_image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut out = Vec::with_capacity((w * h * 4) as usize);
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = f(x, y);
                out.extend_from_slice(&[r, g, b, 255]);
            }
        }
        out
    }

    /// Reference conversion in floating point (BT.601 limited range).
    fn reference_yuv(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
        let y = 16.0 + 219.0 * (0.299 * r + 0.587 * g + 0.114 * b) / 255.0;
        let u = 128.0 + 224.0 * (-0.168_736 * r - 0.331_264 * g + 0.5 * b) / 255.0;
        let v = 128.0 + 224.0 * (0.5 * r - 0.418_688 * g - 0.081_312 * b) / 255.0;
        (y, u, v)
    }

    #[test]
    fn video_rgba_to_i420_known_colours() {
        // 2x2 blocks: red, green / blue, white / black, grey.
        let colours: [[u8; 3]; 6] = [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
            [0, 0, 0],
            [128, 128, 128],
        ];
        // Expected (Y, U, V) from BT.601 limited-range tables.
        let expected: [(u8, u8, u8); 6] = [
            (81, 90, 240),
            (145, 54, 34),
            (41, 240, 110),
            (235, 128, 128),
            (16, 128, 128),
            (126, 128, 128),
        ];
        let (w, h) = (4u32, 6u32);
        let rgba = rgba_image(w, h, |x, y| colours[((y / 2) * 2 + x / 2) as usize]);
        let mut yuv = I420Frame::new(w, h).unwrap();
        yuv.fill_from_rgba(&rgba, w, h).unwrap();
        for (i, &(ey, eu, ev)) in expected.iter().enumerate() {
            let (bx, by) = (i % 2, i / 2);
            for dy in 0..2 {
                for dx in 0..2 {
                    let got = yuv.y_plane()[(by * 2 + dy) * w as usize + bx * 2 + dx];
                    assert!(got.abs_diff(ey) <= 2, "block {i}: Y {got} != {ey}");
                }
            }
            let got_u = yuv.u_plane()[by * (w as usize / 2) + bx];
            let got_v = yuv.v_plane()[by * (w as usize / 2) + bx];
            assert!(got_u.abs_diff(eu) <= 2, "block {i}: U {got_u} != {eu}");
            assert!(got_v.abs_diff(ev) <= 2, "block {i}: V {got_v} != {ev}");
        }
        // Exact at the range ends and for greys.
        assert_eq!(yuv.y_plane()[2 * w as usize + 2], 235);
        assert_eq!(yuv.y_plane()[4 * w as usize], 16);
        assert_eq!((yuv.u_plane()[5], yuv.v_plane()[5]), (128, 128));
    }

    #[test]
    fn video_rgba_to_i420_matches_float_reference() {
        // A deterministic pseudo-random image; every sample within ±1 of
        // the rounded floating-point conversion.
        let (w, h) = (64u32, 32u32);
        let mut state = 0x1234_5678u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state & 0xff) as u8
        };
        let px: Vec<[u8; 3]> = (0..w * h).map(|_| [next(), next(), next()]).collect();
        let rgba = rgba_image(w, h, |x, y| px[(y * w + x) as usize]);
        let mut yuv = I420Frame::new(w, h).unwrap();
        yuv.fill_from_rgba(&rgba, w, h).unwrap();
        let at = |x: u32, y: u32| {
            let [r, g, b] = px[(y * w + x) as usize];
            (f64::from(r), f64::from(g), f64::from(b))
        };
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = at(x, y);
                let want = reference_yuv(r, g, b).0.round();
                let got = f64::from(yuv.y_plane()[(y * w + x) as usize]);
                assert!((got - want).abs() <= 1.0, "Y({x},{y}) {got} vs {want}");
            }
        }
        for by in 0..h / 2 {
            for bx in 0..w / 2 {
                let mut s = (0.0, 0.0, 0.0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (r, g, b) = at(bx * 2 + dx, by * 2 + dy);
                    s = (s.0 + r / 4.0, s.1 + g / 4.0, s.2 + b / 4.0);
                }
                let (_, u, v) = reference_yuv(s.0, s.1, s.2);
                let i = (by * w / 2 + bx) as usize;
                let (gu, gv) = (f64::from(yuv.u_plane()[i]), f64::from(yuv.v_plane()[i]));
                assert!((gu - u.round()).abs() <= 1.0, "U({bx},{by}) {gu} vs {u}");
                assert!((gv - v.round()).abs() <= 1.0, "V({bx},{by}) {gv} vs {v}");
            }
        }
    }

    #[test]
    fn video_odd_source_is_cropped() {
        let (w, h) = (5u32, 3u32);
        // The last column and row are red, the rest white: after cropping
        // to 4x2 nothing red remains.
        let rgba = rgba_image(w, h, |x, y| {
            if x == 4 || y == 2 {
                [255, 0, 0]
            } else {
                [255, 255, 255]
            }
        });
        let mut yuv = I420Frame::new(4, 2).unwrap();
        yuv.fill_from_rgba(&rgba, w, h).unwrap();
        assert!(yuv.y_plane().iter().all(|&y| y == 235));
        assert!(yuv.u_plane().iter().chain(yuv.v_plane()).all(|&c| c == 128));
        // Wrong buffer sizes and sizes that do not round to the picture fail.
        assert!(matches!(
            yuv.fill_from_rgba(&rgba[4..], w, h),
            Err(HostError::BufferSize { .. })
        ));
        assert!(matches!(
            yuv.fill_from_rgba(&rgba, 3, 5),
            Err(HostError::InvalidSize { .. })
        ));
        assert!(I420Frame::new(3, 2).is_err());
    }

    #[test]
    fn video_nal_unit_types_parses_both_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 9, 0, 0, 1, 0x68, 7, 0, 0, 0, 1, 0x65, 0, 0, 3, 1,
        ];
        assert_eq!(nal_unit_types(&data), vec![NAL_SPS, NAL_PPS, NAL_IDR]);
        assert!(nal_unit_types(&[1, 2, 3]).is_empty());
    }

    fn grey_frame(w: u32, h: u32, shade: u8) -> Vec<u8> {
        rgba_image(w, h, |x, y| {
            if (x / 16 + y / 16) % 2 == 0 {
                [shade, shade, shade]
            } else {
                [20, 40, 60]
            }
        })
    }

    #[test]
    fn video_fps_cap_skips_frames_arriving_too_fast() {
        let (w, h) = (64, 64);
        let mut cfg = EncoderConfig::new(w, h);
        cfg.max_fps = 30;
        let mut enc = VideoEncoder::new(cfg).unwrap();
        let mut encoded = Vec::new();
        for i in 0..100u64 {
            let rgba = grey_frame(w, h, (i * 2) as u8);
            if let Some(f) = enc.encode(&rgba, 1_000_000 + i * 1_000, false).unwrap() {
                encoded.push(f);
            }
        }
        assert!(
            (3..=4).contains(&encoded.len()),
            "{} frames encoded in 100 ms at 30 fps",
            encoded.len()
        );
        let seqs: Vec<u64> = encoded.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, (0..encoded.len() as u64).collect::<Vec<_>>());
        assert_eq!(encoded[0].pts_us, 0);
        assert!(encoded.windows(2).all(|p| p[1].pts_us > p[0].pts_us));
        assert!(
            encoded
                .windows(2)
                .all(|p| p[1].capture_time_us - p[0].capture_time_us >= 33_000 / 2)
        );
    }

    #[test]
    fn video_fps_cap_tolerates_jitter_at_the_cap() {
        // A 30 fps source with ±5 ms jitter is not thinned by a 30 fps cap.
        let (w, h) = (32, 32);
        let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
        let mut n = 0;
        for i in 0..60u64 {
            let jitter = if i % 2 == 0 { 5_000 } else { 0 };
            let t = i * 33_334 + jitter;
            let rgba = grey_frame(w, h, i as u8);
            n += usize::from(enc.encode(&rgba, t, false).unwrap().is_some());
        }
        assert_eq!(n, 60);
    }

    #[test]
    fn video_keyframes_first_forced_requested_and_periodic() {
        let (w, h) = (64, 48);
        let mut cfg = EncoderConfig::new(w, h);
        cfg.keyframe_interval_s = 2;
        let mut enc = VideoEncoder::new(cfg).unwrap();
        let t = std::cell::Cell::new(0u64);
        let step = |enc: &mut VideoEncoder, force: bool, dt: u64| {
            t.set(t.get() + dt);
            let rgba = grey_frame(w, h, (t.get() / 10_000) as u8);
            enc.encode(&rgba, t.get(), force).unwrap().unwrap()
        };
        let first = step(&mut enc, false, 0);
        assert!(first.keyframe);
        assert_eq!(
            &nal_unit_types(&first.data)[..3],
            &[NAL_SPS, NAL_PPS, NAL_IDR]
        );
        assert!(first.data.starts_with(&[0, 0, 0, 1, 0x67]));
        assert_eq!(first.data[5], 66, "profile_idc: Baseline");
        let p = step(&mut enc, false, 100_000);
        assert!(!p.keyframe);
        assert_eq!(nal_unit_types(&p.data), vec![NAL_SLICE]);
        let forced = step(&mut enc, true, 100_000);
        assert!(forced.keyframe);
        assert!(nal_unit_types(&forced.data).contains(&NAL_IDR));
        assert!(nal_unit_types(&forced.data).starts_with(&[NAL_SPS, NAL_PPS]));
        assert!(!step(&mut enc, false, 100_000).keyframe);
        enc.request_keyframe();
        // A requested keyframe survives a frame skipped by the cap.
        assert!(
            enc.encode(&grey_frame(w, h, 1), t.get() + 1, false)
                .unwrap()
                .is_none()
        );
        assert!(step(&mut enc, false, 100_000).keyframe);
        assert!(!step(&mut enc, false, 1_000_000).keyframe);
        // 2 s after the last keyframe: periodic keyframe.
        assert!(step(&mut enc, false, 1_000_000).keyframe);
        // A new bitrate applies at the next keyframe.
        enc.set_bitrate(500_000).unwrap();
        assert_eq!(enc.config().bitrate_bps, 2_000_000);
        assert!(!step(&mut enc, false, 100_000).keyframe);
        assert_eq!(enc.config().bitrate_bps, 2_000_000);
        let k = step(&mut enc, true, 100_000);
        assert!(k.keyframe && nal_unit_types(&k.data).starts_with(&[NAL_SPS, NAL_PPS]));
        assert_eq!(enc.config().bitrate_bps, 500_000);
        assert!(enc.set_bitrate(1).is_err());
    }

    #[test]
    fn video_encoder_rejects_bad_input() {
        assert!(matches!(
            VideoEncoder::new(EncoderConfig::new(8, 8)),
            Err(HostError::InvalidSize { .. })
        ));
        let mut cfg = EncoderConfig::new(64, 64);
        cfg.max_fps = 0;
        assert!(matches!(
            VideoEncoder::new(cfg),
            Err(HostError::Invalid { .. })
        ));
        let mut enc = VideoEncoder::new(EncoderConfig::new(64, 64)).unwrap();
        assert!(matches!(
            enc.encode(&[0; 16], 0, false),
            Err(HostError::BufferSize { .. })
        ));
    }

    #[test]
    fn video_odd_size_round_trips_cropped() {
        let (w, h) = (67u32, 45u32);
        let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
        assert_eq!(enc.encoded_size(), (66, 44));
        let rgba = grey_frame(w, h, 200);
        let f = enc.encode(&rgba, 0, false).unwrap().unwrap();
        let mut dec = VideoDecoder::new().unwrap();
        let (dw, dh, out) = dec.decode(&f.data).unwrap().unwrap();
        assert_eq!((dw, dh), (66, 44));
        assert_eq!(out.len(), 66 * 44 * 4);
    }

    #[test]
    fn video_decoder_needs_a_keyframe() {
        let (w, h) = (64u32, 64u32);
        let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
        let _key = enc
            .encode(&grey_frame(w, h, 10), 0, false)
            .unwrap()
            .unwrap();
        let p = enc
            .encode(&grey_frame(w, h, 90), 100_000, false)
            .unwrap()
            .unwrap();
        let mut dec = VideoDecoder::new().unwrap();
        // A P-frame alone decodes to nothing or fails, never to a picture.
        assert!(!matches!(dec.decode(&p.data), Ok(Some(_))));
    }

    #[test]
    fn video_types_can_move_to_worker_threads() {
        fn send<T: Send + 'static>() {}
        send::<VideoEncoder>();
        send::<VideoDecoder>();
        send::<EncodedFrame>();
        send::<LatestFrame>();
    }

    #[test]
    fn video_pacing_clock_jumping_back_restarts_pacing() {
        let (w, h) = (32, 32);
        let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
        let rgba = grey_frame(w, h, 50);
        assert!(enc.encode(&rgba, 10_000_000, false).unwrap().is_some());
        assert!(enc.encode(&rgba, 10_001_000, false).unwrap().is_none());
        // 5 s back: accepted at once instead of stalling for 5 s.
        let f = enc.encode(&rgba, 5_000_000, false).unwrap().unwrap();
        assert!(f.pts_us > 0, "pts stays increasing: {f:?}");
        assert!(enc.encode(&rgba, 5_001_000, false).unwrap().is_none());
    }

    #[tokio::test]
    async fn video_latest_frame_is_cancel_safe() {
        let frame = |seq| {
            Some(Arc::new(Frame {
                seq,
                timestamp_us: 0,
                width: 2,
                height: 2,
                rgba: vec![0; 16].into(),
            }))
        };
        let (tx, rx) = watch::channel(frame(1));
        let mut latest = LatestFrame::new(rx, 10);
        assert_eq!(latest.next().await.unwrap().frame.seq, 1);
        tx.send_replace(frame(2));
        // Cancelled while pacing (100 ms between takes at 10 fps)...
        let early = tokio::time::timeout(Duration::from_millis(10), latest.next()).await;
        assert!(early.is_err());
        drop(tx);
        // ...the frame is still delivered, even after the sender is gone.
        assert_eq!(latest.next().await.unwrap().frame.seq, 2);
        assert!(latest.next().await.is_none());
    }

    #[tokio::test]
    async fn video_latest_frame_paces_and_keeps_the_last_frame() {
        let (tx, rx) = watch::channel(None);
        let mk = |seq: u32| {
            Some(Arc::new(Frame {
                seq,
                timestamp_us: u64::from(seq) * 1_000,
                width: 32,
                height: 32,
                rgba: grey_frame(32, 32, seq as u8).into(),
            }))
        };
        tx.send_replace(mk(1));
        let mut latest = LatestFrame::new(rx, 30);
        let producer = tokio::spawn(async move {
            let start = Instant::now();
            for seq in 2..=100 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.send_replace(mk(seq));
            }
            // 1 ms sleeps overrun on a loaded machine: the bound below
            // uses the span the frames really covered.
            let span = start.elapsed();
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(tx);
            span
        });
        let mut enc = VideoEncoder::new(EncoderConfig::new(32, 32)).unwrap();
        let mut seen = Vec::new();
        while let Some(p) = latest.next().await {
            let f = &p.frame;
            let out = enc
                .encode_at(&f.rgba, f.timestamp_us, p.now_us, false)
                .unwrap();
            assert!(out.is_some(), "encoder skipped paced frame {}", f.seq);
            seen.push((f.seq, p.now_us));
        }
        let span = producer.await.unwrap();
        assert_eq!(seen[0].0, 1, "the frame present at creation comes first");
        assert_eq!(seen.last().unwrap().0, 100, "the final frame is delivered");
        assert!(seen.windows(2).all(|p| p[1].1 - p[0].1 >= 33_000));
        // ~100+ ms of 1 ms frames at 30 fps: a handful, not 100 (one per
        // 33 ms of the span, plus the first and the last).
        let most = span.as_millis() as usize / 33 + 2;
        assert!(
            seen.len() <= most,
            "{} frames taken from {span:?} of frames; at most {most} at 30 fps",
            seen.len()
        );
    }
}
