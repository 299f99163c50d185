//! The handset's video side: H.264 decoding (OpenH264) to RGBA, recording
//! the received stream as a raw `.h264` (Annex B) file, and saving a frame
//! as PNG.

use std::io::Write;
use std::path::{Path, PathBuf};

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;

use crate::ClientError;

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

/// Decodes Annex B access units.
pub struct VideoDecoder {
    decoder: Decoder,
}

impl std::fmt::Debug for VideoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VideoDecoder")
    }
}

impl VideoDecoder {
    /// A decoder waiting for a keyframe.
    ///
    /// # Errors
    /// [`ClientError::Video`] if OpenH264 cannot start.
    pub fn new() -> Result<Self, ClientError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| ClientError::Video(format!("cannot create the H.264 decoder: {e}")))?;
        Ok(Self { decoder })
    }

    /// Decodes one access unit; `None` when it completed no picture.
    ///
    /// # Errors
    /// [`ClientError::Video`] for a corrupt stream.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<Picture>, ClientError> {
        let yuv = self
            .decoder
            .decode(annexb)
            .map_err(|e| ClientError::Video(format!("H.264 decoding failed: {e}")))?;
        Ok(yuv.map(|yuv| {
            let (w, h) = yuv.dimensions();
            let mut rgba = vec![0; yuv.rgba8_len()];
            yuv.write_rgba8(&mut rgba);
            Picture {
                width: w as u32,
                height: h as u32,
                rgba,
            }
        }))
    }
}

/// Writes a picture as a PNG file.
///
/// # Errors
/// [`ClientError::Io`] or [`ClientError::Video`].
pub fn save_png(path: &Path, pic: &Picture) -> Result<(), ClientError> {
    let io = |source| ClientError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), pic.width, pic.height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| ClientError::Video(format!("PNG header: {e}")))?;
    w.write_image_data(&pic.rgba)
        .map_err(|e| ClientError::Video(format!("PNG data: {e}")))?;
    w.finish()
        .map_err(|e| ClientError::Video(format!("PNG: {e}")))
}

/// Appends received access units to a raw H.264 file that players and
/// `ffprobe` read. Writing starts at the first keyframe so the file always
/// decodes from its start.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    started: bool,
    frames: u64,
}

impl Recorder {
    /// Creates (truncates) `path`.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn create(path: &Path) -> Result<Self, ClientError> {
        let file = std::fs::File::create(path).map_err(|source| ClientError::Io {
            what: "creating",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
            started: false,
            frames: 0,
        })
    }

    /// Appends one access unit.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn write(&mut self, annexb: &[u8], keyframe: bool) -> Result<(), ClientError> {
        self.started |= keyframe;
        if !self.started {
            return Ok(());
        }
        self.frames += 1;
        self.out
            .write_all(annexb)
            .map_err(|source| ClientError::Io {
                what: "writing",
                path: self.path.clone(),
                source,
            })
    }

    /// Frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes the file.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn finish(mut self) -> Result<u64, ClientError> {
        self.out.flush().map_err(|source| ClientError::Io {
            what: "writing",
            path: self.path.clone(),
            source,
        })?;
        Ok(self.frames)
    }
}
