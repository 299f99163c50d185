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
    /// Something the host will not trust or do (a file another user could
    /// have written, ...); the message says what and why.
    #[error("refused: {0}")]
    Denied(String),
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
    /// Something the request needs cannot serve it now: KVM or the SDK is
    /// missing, a phone failed or is still booting, the manager stopped.
    /// Retrying later, or after the operator fixes the host, may succeed.
    #[error("{what} unavailable: {why}")]
    Unavailable {
        /// What is unavailable.
        what: &'static str,
        /// Why, and where a person can act, what to do.
        why: String,
    },
    /// The host broke its own expectations (a thread ended early, a listener
    /// was taken twice, the OS refused randomness). Not the caller's fault.
    #[error("internal error in {what}: {why}")]
    Internal {
        /// Which part failed.
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
    Registry(sqlx::Error),
    /// The filesystem holding the registry is full: the write was refused
    /// whole (SQLite rolls it back) and nothing changed.
    #[error(
        "registry: the disk holding the data dir is full, so nothing was written; \
         free space there and retry ({0})"
    )]
    StorageFull(sqlx::Error),
    /// The registry's filesystem refuses writes (mounted read-only, or
    /// remounted so after an I/O error).
    #[error(
        "registry: the data dir is read-only (a read-only volume, or a filesystem the kernel \
         remounted read-only after an I/O error), so nothing was written; make it writable and \
         retry ({0})"
    )]
    StorageReadOnly(sqlx::Error),
    /// An enrollment token was refused.
    #[error("enrollment token {0}")]
    Token(&'static str),
    /// A picture or the video codec failed.
    #[error(transparent)]
    Media(#[from] vphone_media::MediaError),
}

/// What kind of failure a [`HostError`] is: who can act on it. The operator
/// API's status code, the CLI's exit code and log levels follow the kind,
/// not the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; sending it again will fail again.
    BadInput,
    /// Something named does not exist.
    NotFound,
    /// Something with this name already exists.
    AlreadyExists,
    /// The request is valid but the current state does not allow it.
    Conflict,
    /// A credential was refused.
    Denied,
    /// A dependency (KVM, the SDK, a phone, the manager) cannot serve now.
    Unavailable,
    /// The host's own fault.
    Internal,
}

impl HostError {
    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid { .. } | Self::InvalidSize { .. } | Self::BufferSize { .. } => {
                ErrorKind::BadInput
            }
            Self::Media(m) if m.is_bad_input() => ErrorKind::BadInput,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Token(_) | Self::Denied(_) => ErrorKind::Denied,
            Self::Unavailable { .. } | Self::StorageFull(_) | Self::StorageReadOnly(_) => {
                ErrorKind::Unavailable
            }
            Self::Alloc { .. }
            | Self::Font(_)
            | Self::Png(_)
            | Self::Demo(_)
            | Self::Internal { .. }
            | Self::Io { .. }
            | Self::Registry(_)
            | Self::Media(_) => ErrorKind::Internal,
        }
    }

    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<sqlx::Error> for HostError {
    /// A full disk (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`) is
    /// [`HostError::StorageFull`] and a read-only one (`SQLITE_READONLY`,
    /// `read_only_sql_transaction`) [`HostError::StorageReadOnly`], each
    /// saying so and what to do; a PostgreSQL server out of reach is
    /// [`HostError::Unavailable`]; every other failure is
    /// [`HostError::Registry`].
    fn from(e: sqlx::Error) -> Self {
        let db = e.as_database_error();
        let sqlite =
            db.is_some_and(|d| d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some());
        let code = db.and_then(|d| d.code()).map(|c| c.into_owned());
        // SQLite gives its (extended) result code as a number, the primary
        // code its low byte (13 full, 8 read-only); PostgreSQL a SQLSTATE.
        let primary = code
            .as_deref()
            .filter(|_| sqlite)
            .and_then(|c| c.parse::<u32>().ok())
            .map(|n| n & 0xff);
        match (primary, code.as_deref()) {
            (Some(13), _) => Self::StorageFull(e),
            (Some(8), _) => Self::StorageReadOnly(e),
            (None, Some("53100")) if !sqlite => Self::StorageFull(e),
            (None, Some("25006")) if !sqlite => Self::StorageReadOnly(e),
            _ if matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ) =>
            {
                Self::Unavailable {
                    what: "registry",
                    why: format!("the database is out of reach: {e}"),
                }
            }
            _ => Self::Registry(e),
        }
    }
}

impl From<HostError> for tonic::Status {
    fn from(e: HostError) -> Self {
        use tonic::Code;
        let code = match e.kind() {
            ErrorKind::BadInput => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::Conflict => Code::FailedPrecondition,
            ErrorKind::Denied => Code::PermissionDenied,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Internal => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
