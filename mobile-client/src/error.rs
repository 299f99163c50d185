//! The crate's single error type.

use std::path::PathBuf;

use sensor_proto::bridge::AppErrorCode;

/// Everything that can go wrong in the handset library.
///
/// Messages never contain the enrollment token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host refused the session; the reason is the host's own words.
    #[error("the host refused this handset ({code:?}): {reason}")]
    Refused {
        /// Why, as the bridge's stable code (e.g. `Revoked`): match on it,
        /// never on the text.
        code: AppErrorCode,
        /// The host's explanation.
        reason: String,
    },
    /// The host presented a different key than the one pinned at enrollment.
    #[error(
        "host key pin mismatch: enrolled with {expected}, the host at this address presented {actual}; \
         if the host was reinstalled, enroll again"
    )]
    PinMismatch {
        /// The pinned fingerprint.
        expected: String,
        /// What the host presented.
        actual: String,
    },
    /// Nothing answered at the host address.
    #[error("host unreachable at {host}: {why} (is vphone-host running and is UDP allowed?)")]
    Unreachable {
        /// The address dialled.
        host: String,
        /// What failed.
        why: String,
    },
    /// The session failed after it was established.
    #[error("session: {0}")]
    Session(String),
    /// Video decoding or recording failed.
    #[error("video: {0}")]
    Video(String),
    /// Sound: the output, the microphone or a WAV file failed.
    #[error("audio: {0}")]
    Audio(String),

    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set (absolute), so there is
    /// no default config directory.
    #[error(
        "no config directory: set XDG_CONFIG_HOME or HOME, or pass --config-dir / VPHONE_COMPANION_DIR"
    )]
    NoConfigDir,

    /// The config directory holds no `config.toml`.
    #[error("not enrolled (no {}): run `vphone-companion enroll <string>`", dir.join(crate::config::CONFIG_FILE).display())]
    NotEnrolled {
        /// The config directory that was searched.
        dir: PathBuf,
    },

    /// `config.toml` exists but is unusable.
    #[error("bad config file {}: {why}", path.display())]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// The enrollment string does not start with `vphone://`.
    #[error("enrollment string must start with `vphone://` (found scheme `{found}`)")]
    EnrollmentScheme {
        /// The scheme that was found (empty if none).
        found: String,
    },

    /// The enrollment string has no `pin=` parameter.
    #[error("enrollment string has no `pin=` parameter")]
    EnrollmentMissingPin,

    /// The `pin=` parameter is not 64 hex digits.
    #[error("enrollment pin is not a host fingerprint (64 hex digits): {why}")]
    EnrollmentBadPin {
        /// Why the pin was rejected.
        why: String,
    },

    /// The enrollment string has no (or an empty) `token=` parameter.
    #[error("enrollment string has no `token=` parameter")]
    EnrollmentMissingToken,

    /// The `token=` parameter holds characters that are not URL-safe.
    #[error("enrollment token is malformed: {why}")]
    EnrollmentBadToken {
        /// Why the token was rejected (never the token itself).
        why: &'static str,
    },

    /// The `HOST:PORT` part is not a valid address.
    #[error("bad host address `{address}` in enrollment string: {why}")]
    EnrollmentBadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// Anything else wrong with the enrollment string's structure
    /// (duplicate parameters, a fragment, ...).
    #[error("malformed enrollment string: {why}")]
    EnrollmentMalformed {
        /// What is wrong.
        why: String,
    },

    /// The handset identity (key pair + certificate) could not be loaded or
    /// created.
    #[error("handset identity in {}: {source}", dir.display())]
    Identity {
        /// The identity directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: device_bridge::BridgeError,
    },

    /// No usable IIO sensor under the given sysfs root.
    #[error(
        "no IIO sensors found under {} (is this a phone or laptop with sensors? try --sensors synthetic)",
        root.display()
    )]
    NoIioSensors {
        /// The sysfs directory that was scanned.
        root: PathBuf,
    },

    /// An IIO sysfs attribute could not be read or parsed.
    #[error("IIO attribute {}: {why}", path.display())]
    Iio {
        /// The attribute file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },

    /// A sensor recording line could not be parsed.
    #[error("{source_name}:{line}: {why}")]
    Recording {
        /// The file name (or another label for the input).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        why: String,
    },

    /// A sensor source specification (`--sensors`) is not understood.
    #[error(
        "unknown sensor source `{spec}` (expected `synthetic`, `synthetic:SEED`, `still`, `replay:FILE` or `iio[:SYSFS_DIR]`)"
    )]
    BadSourceSpec {
        /// The specification as given.
        spec: String,
    },

    /// The radio to lend could not be opened, or its policy file or capture
    /// is unusable.
    #[error("radio {spec}: {why}")]
    Radio {
        /// The radio spec as given (`tcp:HOST:PORT`, `hci:N`, ...).
        spec: String,
        /// What went wrong and what to do about it.
        why: String,
    },

    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

impl From<vphone_media::MediaError> for ClientError {
    fn from(e: vphone_media::MediaError) -> Self {
        Self::Video(e.to_string())
    }
}
