//! The crate's one error type, and its mapping to gRPC status codes.

/// Everything that can go wrong in the cloud host. Messages say what failed
/// and, where a person can act, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The requested screen size is outside the supported range.
    #[error("unsupported screen size {width}x{height}{supported}")]
    InvalidSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// What is supported, as ` (supported: ...)`, or empty.
        supported: String,
    },
    /// The pixel buffer could not be allocated.
    #[error("cannot allocate a {width}x{height} pixmap")]
    Alloc {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// The bundled font could not be parsed.
    #[error("cannot parse bundled font: {0}")]
    Font(&'static str),
    /// An RGBA buffer does not match the stated size.
    #[error("RGBA buffer has {actual} bytes, expected {expected}")]
    BufferSize {
        /// `width * height * 4`.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    /// A phone, handset or session with this name already exists.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// "phone", "handset"...
        kind: &'static str,
        /// The duplicate name.
        name: String,
    },
    /// The request is valid but the current state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// The demo's companion failed.
    #[error("demo companion: {0}")]
    Demo(String),
    /// A request was invalid; the message says which field and why.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something named does not exist.
    #[error("{kind} '{name}' not found")]
    NotFound {
        /// "phone", "handset", "session"...
        kind: &'static str,
        /// The name that was looked up.
        name: String,
    },
    /// The registry database failed.
    #[error("registry: {0}")]
    Registry(#[from] rusqlite::Error),
    /// An enrollment token was refused.
    #[error("enrollment token {0}")]
    Token(&'static str),
    /// A picture or the video codec failed.
    #[error(transparent)]
    Media(#[from] vphone_media::MediaError),
}

impl HostError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<HostError> for tonic::Status {
    fn from(e: HostError) -> Self {
        use tonic::Code;
        let code = match &e {
            HostError::NotFound { .. } => Code::NotFound,
            HostError::AlreadyExists { .. } => Code::AlreadyExists,
            HostError::Conflict(_) => Code::FailedPrecondition,
            HostError::Invalid { .. }
            | HostError::InvalidSize { .. }
            | HostError::BufferSize { .. } => Code::InvalidArgument,
            HostError::Token(_) => Code::PermissionDenied,
            HostError::Media(m) if m.is_bad_input() => Code::InvalidArgument,
            _ => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
