//! The media pipelines. Video: phone frames (RGBA) to an H.264 Annex B
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
//! * [`VideoDecoder`]: Annex B access units back to RGBA ([`Picture`]).
//! * [`encode_png`] / [`save_png`]: pictures as PNG.
//!
//! # A pipeline
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn pipeline(
//! #     frames: tokio::sync::watch::Receiver<Option<Arc<vphone_media::Frame>>>,
//! # ) -> Result<(), vphone_media::MediaError> {
//! use vphone_media::{EncoderConfig, LatestFrame, VideoEncoder};
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
//! `cargo bench -p sim-phone --bench encoder` measures all of this.
//!
//! Shared by the host (encoding a phone's screen) and the handset
//! (decoding it); it knows nothing of sessions or phones.
//!
//! # Sound
//!
//! [`audio`]: 48 kHz mono PCM to Opus ([`audio::OpusEncoder`], with DTX)
//! and back ([`audio::OpusDecoder`], with loss concealment), plus the level
//! and dominant frequency of a sound and a tone generator, which the sim
//! phone and the tests use to tell the right sound came out.

pub mod audio;
mod decoder;
mod encoder;
mod error;
mod i420;
mod latest;
mod png_io;

pub use decoder::{Picture, VideoDecoder};
pub use encoder::{
    EncodedFrame, EncoderConfig, MAX_ENCODE_DIMENSION, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS,
    Tuning, VideoEncoder, nal_unit_types,
};
pub use error::MediaError;
pub use i420::I420Frame;
pub use latest::{LatestFrame, PulledFrame};
pub use png_io::{encode_png, save_png};

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
    pub rgba: bytes::Bytes,
}

#[cfg(test)]
mod tests;
