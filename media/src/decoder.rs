//! H.264 decoding to RGBA.

use std::fmt;

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;

use crate::MediaError;
use crate::encoder::video_err;

// ---------------------------------------------------------------------------

/// One decoded picture.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Packed RGBA8888, top-down.
    pub rgba: Vec<u8>,
}

/// Decodes Annex B H.264 access units to RGBA (OpenH264; BT.601 limited
/// range, matching [`VideoEncoder`](crate::VideoEncoder)).
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
    /// [`MediaError::Video`] if OpenH264 refuses.
    pub fn new() -> Result<Self, MediaError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| video_err("cannot create the H.264 decoder", e))?;
        Ok(Self { decoder })
    }

    /// Decodes one access unit (e.g. [`EncodedFrame::data`](crate::EncodedFrame::data); several NAL
    /// units with start codes). Returns the picture (RGBA, tightly packed,
    /// top-down, alpha 255), or `None` if the data completed no picture
    /// (e.g. parameter sets only).
    ///
    /// # Errors
    /// [`MediaError::Video`] for a corrupt stream or P-frames without a
    /// preceding keyframe.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<Picture>, MediaError> {
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
        Ok(Some(Picture {
            width: w as u32,
            height: h as u32,
            rgba,
        }))
    }
}
