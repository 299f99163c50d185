//! The handset's video side: H.264 decoding to RGBA (the `vphone-media`
//! decoder the host's tests use too), recording the received stream as a
//! raw `.h264` (Annex B) file, and saving a frame as PNG.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ClientError;

pub use vphone_media::{Picture, VideoDecoder};

/// Writes a picture as a PNG file.
///
/// # Errors
/// [`ClientError::Video`] naming what failed.
pub fn save_png(path: &Path, pic: &Picture) -> Result<(), ClientError> {
    vphone_media::save_png(path, pic).map_err(ClientError::from)
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
