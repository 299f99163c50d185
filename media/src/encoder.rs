//! The H.264 encoder: settings, keyframes, the fps cap and bitrate.

use std::fmt;

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig as H264Config, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};

use crate::MediaError;

use crate::I420Frame;

/// Largest encodable width or height (OpenH264 supports up to 3840x2160 in
/// either orientation).
pub const MAX_ENCODE_DIMENSION: u32 = 3840;

/// H.264 NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// H.264 NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// One screen image: what a phone's display produced.
/// H.264 NAL unit type of an IDR (keyframe) slice.
pub const NAL_IDR: u8 = 5;
/// H.264 NAL unit type of a non-IDR slice (P-frame here).
pub const NAL_SLICE: u8 = 1;

// ---------------------------------------------------------------------------
// Configuration and output
// ---------------------------------------------------------------------------

/// What the encoder is tuned for: bytes or CPU.
///
/// Measured on a 720x1280 sim phone (a touch ripple, 400 frames; see the
/// README's Density section): `Screen` 7.7 ms and 453 bytes per frame,
/// 22 MiB per encoder; `Camera` 3.6 ms and 2474 bytes per frame, 11 MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tuning {
    /// OpenH264's screen-content mode: the fewest bytes for text and flat
    /// areas (skip-heavy P-frames, a hash-based motion search over every
    /// frame), at about twice the CPU and memory of `Camera`.
    #[default]
    Screen,
    /// OpenH264's camera mode: half the CPU and memory per session, about
    /// five times the bytes for a small change; for hosts packed with
    /// sessions on fast links.
    Camera,
}

impl std::str::FromStr for Tuning {
    type Err = MediaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "screen" => Ok(Self::Screen),
            "camera" => Ok(Self::Camera),
            _ => Err(MediaError::Invalid {
                what: "video tuning",
                why: format!("`{s}`; use `screen` or `camera`"),
            }),
        }
    }
}

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
    /// Bytes or CPU.
    pub tuning: Tuning,
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
            tuning: Tuning::Screen,
        }
    }

    /// The size actually encoded: the input size rounded down to even.
    pub fn encoded_size(&self) -> (u32, u32) {
        (self.width & !1, self.height & !1)
    }

    fn validate(&self) -> Result<(), MediaError> {
        let (w, h) = self.encoded_size();
        if w < 16
            || h < 16
            || w > MAX_ENCODE_DIMENSION
            || h > MAX_ENCODE_DIMENSION
            || w.min(h) > 2160
        {
            return Err(MediaError::InvalidSize {
                width: self.width,
                height: self.height,
            });
        }
        if !(1..=240).contains(&self.max_fps) {
            return Err(MediaError::Invalid {
                what: "max_fps",
                why: format!("{} is not 1..=240", self.max_fps),
            });
        }
        if !(10_000..=100_000_000).contains(&self.bitrate_bps) {
            return Err(MediaError::Invalid {
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

pub(crate) fn video_err(what: &str, e: impl fmt::Display) -> MediaError {
    MediaError::Video(format!("{what}: {e}"))
}

fn build_encoder(cfg: &EncoderConfig, bitrate_bps: u32) -> Result<Encoder, MediaError> {
    let h264 = H264Config::new()
        // Screen content: tuned for sharp text and static areas
        // (skip-heavy P-frames, screen-specific motion search).
        .usage_type(match cfg.tuning {
            Tuning::Screen => UsageType::ScreenContentRealTime,
            Tuning::Camera => UsageType::CameraVideoRealTime,
        })
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
        // Camera tuning: blocks that did not change are found before the
        // motion search and coded as skipped, so a still screen whose
        // clock ticks costs 0.74x the encoder time and half the bits
        // (`--bench encoder`, row (c)); small changes still reach the
        // viewer (test `small_changes_on_a_still_screen_reach_the_viewer`).
        .background_detection(cfg.tuning == Tuning::Camera)
        .complexity(Complexity::Low)
        // One thread: the host runs many phones; parallelism is across them.
        .num_threads(1)
        .vui(VuiConfig::bt601());
    Encoder::with_api_config(OpenH264API::from_source(), h264)
        .map_err(|e| video_err("cannot create the H.264 encoder", e))
}

/// Encodes RGBA screen frames to H.264 (see the [crate docs](crate)).
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
    /// A hash per row pair of the last screen converted into `yuv`.
    row_hashes: Vec<u64>,
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
    /// [`MediaError::InvalidSize`] for a size below 16x16 or above what
    /// OpenH264 supports (3840x2160 either way), [`MediaError::Invalid`] for
    /// an out-of-range frame rate or bitrate, [`MediaError::Video`] if
    /// OpenH264 refuses.
    pub fn new(cfg: EncoderConfig) -> Result<Self, MediaError> {
        cfg.validate()?;
        let (w, h) = cfg.encoded_size();
        Ok(Self {
            encoder: build_encoder(&cfg, cfg.bitrate_bps)?,
            fresh: true,
            yuv: I420Frame::new(w, h)?,
            row_hashes: Vec::new(),
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
    /// [`MediaError::Invalid`] for a rate outside 10 kbit/s..100 Mbit/s.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), MediaError> {
        EncoderConfig {
            bitrate_bps,
            ..self.cfg
        }
        .validate()?;
        self.pending_bitrate = Some(bitrate_bps);
        Ok(())
    }

    /// The bitrate [`set_bitrate`](Self::set_bitrate) asked for that waits
    /// for the next keyframe, if any.
    pub fn pending_bitrate(&self) -> Option<u32> {
        self.pending_bitrate
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
    /// e.g. [`Frame::timestamp_us`](crate::Frame::timestamp_us)); the capture time is also the pacing
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
    ) -> Result<Option<EncodedFrame>, MediaError> {
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
    /// next slot (what [`LatestFrame`](crate::LatestFrame) does). If the pacing clock jumps back
    /// by more than one interval, pacing and the keyframe timer restart.
    ///
    /// The frame is a keyframe if `force_keyframe` is set, a keyframe was
    /// requested ([`request_keyframe`](Self::request_keyframe)) or is due
    /// ([`EncoderConfig::keyframe_interval_s`]), or it is the first.
    ///
    /// # Errors
    /// [`MediaError::BufferSize`] if `rgba` is not `width * height * 4` bytes;
    /// [`MediaError::Video`] if OpenH264 fails.
    pub fn encode_at(
        &mut self,
        rgba: &[u8],
        capture_time_us: u64,
        now_us: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, MediaError> {
        let expected = self.cfg.width as usize * self.cfg.height as usize * 4;
        if rgba.len() != expected {
            return Err(MediaError::BufferSize {
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

        self.yuv.fill_changed_from_rgba(
            rgba,
            self.cfg.width,
            self.cfg.height,
            &mut self.row_hashes,
        )?;
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
