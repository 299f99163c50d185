//! The crate's one error type.

/// What went wrong with a picture or the codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A screen size the codec or conversion cannot take.
    #[error("unsupported screen size {width}x{height}")]
    InvalidSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// An RGBA buffer does not match the stated size.
    #[error("RGBA buffer has {actual} bytes, expected {expected}")]
    BufferSize {
        /// `width * height * 4`.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// A setting is out of range; the message says which and why.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The H.264 codec failed (a corrupt stream, OpenH264 refusing).
    #[error("video: {0}")]
    Video(String),
    /// The Opus codec failed (a corrupt packet, libopus refusing).
    #[error("audio: {0}")]
    Audio(String),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    /// Writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MediaError {
    /// Whether the caller passed something wrong (as opposed to the codec
    /// or the OS failing).
    #[must_use]
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidSize { .. } | Self::BufferSize { .. } | Self::Invalid { .. }
        )
    }
}
