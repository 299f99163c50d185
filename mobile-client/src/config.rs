//! The companion's config directory: enrollment and settings.
//!
//! # Layout
//!
//! ```text
//! <config dir>/            mode 0700
//!   config.toml            mode 0600: host, pin, pending_token, handset_name
//!   identity/key.pem       the handset's private key (mode 0600)
//!   identity/cert.pem      its self-signed certificate
//! ```
//!
//! The config directory is `$XDG_CONFIG_HOME/vphone-companion`, else
//! `$HOME/.config/vphone-companion` ([`default_config_dir`]); the CLI lets
//! the user override it (`--config-dir`, `VPHONE_COMPANION_DIR`), so every
//! function here takes the directory as an argument.
//!
//! # Enrollment
//!
//! The operator runs `vphonectl handset enroll`, which prints one line:
//! `vphone://HOST:PORT?pin=<64 hex digits>&token=<token>`. [`enroll`] parses
//! it ([`Enrollment`]), creates the handset identity and writes
//! `config.toml` with the token as `pending_token`. The first successful
//! connection presents the token in `Hello.enrollment_token`; afterwards the
//! caller runs [`mark_token_used`] and the handset authenticates with its
//! certificate alone.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use device_bridge::{HandsetIdentity, Pin};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Name of the config file inside the config directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Name of the identity subdirectory inside the config directory.
pub const IDENTITY_DIR: &str = "identity";

/// Name of the companion's directory under the XDG config home.
pub const APP_DIR: &str = "vphone-companion";

/// Environment variable the CLI reads to override the config directory.
pub const CONFIG_DIR_ENV: &str = "VPHONE_COMPANION_DIR";

/// The default config directory, from the process environment.
///
/// # Errors
///
/// [`ClientError::NoConfigDir`] when neither an absolute
/// `$XDG_CONFIG_HOME` nor an absolute `$HOME` is set.
pub fn default_config_dir() -> Result<PathBuf, ClientError> {
    config_dir_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The config directory for the given values of `$XDG_CONFIG_HOME` and
/// `$HOME`: `$XDG_CONFIG_HOME/vphone-companion`, else
/// `$HOME/.config/vphone-companion`. As the XDG spec says, an empty or
/// relative `$XDG_CONFIG_HOME` is ignored.
///
/// # Errors
///
/// [`ClientError::NoConfigDir`] when neither gives an absolute path.
pub fn config_dir_from(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, ClientError> {
    if let Some(xdg) = xdg_config_home.map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join(APP_DIR));
    }
    match home.map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(".config").join(APP_DIR)),
        _ => Err(ClientError::NoConfigDir),
    }
}

/// A parsed enrollment string:
/// `vphone://HOST:PORT?pin=<64 hex>&token=<token>`.
///
/// Parsing is strict: the scheme must be `vphone` (any case), the address
/// must be `HOST:PORT` (`HOST` a DNS name, an IPv4 address or a bracketed
/// IPv6 address; `PORT` 1..=65535), `pin` and `token` must each appear
/// exactly once. A `pin` may carry a `sha256:` prefix. The token is opaque
/// but must be URL-safe (`A-Z a-z 0-9 - . _ ~`). Unknown parameters are
/// ignored (with a warning) so that newer hosts can add some. Surrounding
/// whitespace is trimmed.
///
/// `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// `HOST:PORT` of the host's QUIC endpoint, as given.
    pub host: String,
    /// The host's certificate fingerprint to pin.
    pub pin: Pin,
    /// The single-use enrollment token (secret until used).
    pub token: String,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("host", &self.host)
            .field("pin", &self.pin)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl FromStr for Enrollment {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
        if !scheme.eq_ignore_ascii_case("vphone") {
            // Only show the scheme: the rest holds the secret token.
            let found = if scheme.len() <= 32 { scheme } else { "" };
            return Err(ClientError::EnrollmentScheme {
                found: found.to_owned(),
            });
        }
        if rest.contains('#') {
            return Err(ClientError::EnrollmentMalformed {
                why: "unexpected `#` fragment".into(),
            });
        }
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let host = parse_address(authority)?;

        let mut pin = None;
        let mut token = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "pin" => &mut pin,
                "token" => &mut token,
                other => {
                    tracing::warn!(parameter = other, "ignoring unknown enrollment parameter");
                    continue;
                }
            };
            if slot.replace(value).is_some() {
                return Err(ClientError::EnrollmentMalformed {
                    why: format!("parameter `{key}` appears more than once"),
                });
            }
        }

        let pin = pin.ok_or(ClientError::EnrollmentMissingPin)?;
        let pin = parse_pin(pin)?;
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(ClientError::EnrollmentMissingToken)?;
        check_token(token)?;
        Ok(Self {
            host,
            pin,
            token: token.to_owned(),
        })
    }
}

fn parse_pin(pin: &str) -> Result<Pin, ClientError> {
    let hex = pin
        .strip_prefix("sha256:")
        .or_else(|| pin.strip_prefix("SHA256:"))
        .unwrap_or(pin);
    if hex.is_empty() {
        return Err(ClientError::EnrollmentBadPin {
            why: "empty".into(),
        });
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::EnrollmentBadPin {
            why: format!(
                "expected 64 hex digits, got {} characters{}",
                hex.len(),
                if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " including non-hex ones"
                }
            ),
        });
    }
    hex.parse::<Pin>()
        .map_err(|e| ClientError::EnrollmentBadPin { why: e.to_string() })
}

fn check_token(token: &str) -> Result<(), ClientError> {
    if token.len() > 4096 {
        return Err(ClientError::EnrollmentBadToken {
            why: "longer than 4096 characters",
        });
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(ClientError::EnrollmentBadToken {
            why: "contains characters that are not URL-safe (A-Z a-z 0-9 - . _ ~)",
        });
    }
    Ok(())
}

/// Validates `HOST:PORT` and returns it unchanged.
fn parse_address(authority: &str) -> Result<String, ClientError> {
    let bad = |why: &'static str| ClientError::EnrollmentBadAddress {
        address: authority.to_owned(),
        why,
    };
    if authority.is_empty() {
        return Err(bad("empty"));
    }
    if authority.contains('@') {
        return Err(bad("user info (`@`) is not allowed"));
    }
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed `[` in IPv6 address"))?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address inside `[...]`"))?;
        after
            .strip_prefix(':')
            .ok_or_else(|| bad("missing `:PORT`"))?
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("missing `:PORT`"))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if host.contains(':') {
            return Err(bad(
                "IPv6 addresses must be written in brackets: [ADDR]:PORT",
            ));
        }
        let labels_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if host.len() > 253 || !labels_ok {
            return Err(bad("host is not a valid DNS name or IPv4 address"));
        }
        port
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("port is not a number"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be 1..=65535")),
        Ok(_) => Ok(authority.to_owned()),
    }
}

/// The companion's saved configuration (`config.toml`).
///
/// `Debug` does not show the pending token.
#[derive(Clone, PartialEq, Eq)]
pub struct CompanionConfig {
    /// `HOST:PORT` of the host's QUIC endpoint.
    pub host: String,
    /// The host certificate fingerprint to pin.
    pub pin: Pin,
    /// The enrollment token, until the first successful connection has used
    /// it ([`mark_token_used`]).
    pub pending_token: Option<String>,
    /// The handset's name, sent in `Hello.handset_name`.
    pub handset_name: String,
}

impl fmt::Debug for CompanionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompanionConfig")
            .field("host", &self.host)
            .field("pin", &self.pin)
            .field(
                "pending_token",
                &self.pending_token.as_ref().map(|_| "<redacted>"),
            )
            .field("handset_name", &self.handset_name)
            .finish()
    }
}

/// On-disk form of [`CompanionConfig`].
#[derive(Serialize, Deserialize)]
struct ConfigFile {
    host: String,
    pin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_token: Option<String>,
    handset_name: String,
}

const FILE_HEADER: &str = "# vphone companion configuration, written by `vphone-companion enroll`.\n\
# pending_token is a secret until the first connection has used it.\n";

impl CompanionConfig {
    /// Loads `dir/config.toml`.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotEnrolled`] if the file does not exist,
    /// [`ClientError::BadConfig`] if it cannot be parsed,
    /// [`ClientError::Io`] for other file system errors.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotEnrolled {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(ClientError::io("reading", path, e)),
        };
        let bad = |why: String| ClientError::BadConfig {
            path: path.clone(),
            why,
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let pin = parse_pin(&file.pin).map_err(|e| bad(format!("pin: {e}")))?;
        parse_address(&file.host).map_err(|e| bad(format!("host: {e}")))?;
        if let Some(token) = &file.pending_token {
            check_token(token).map_err(|e| bad(format!("pending_token: {e}")))?;
        }
        warn_if_readable_by_others(&path, file.pending_token.is_some());
        Ok(Self {
            host: file.host,
            pin,
            pending_token: file.pending_token.filter(|t| !t.is_empty()),
            handset_name: file.handset_name,
        })
    }

    /// Writes `dir/config.toml` atomically (temporary file in `dir`, fsync,
    /// rename) with mode 0600, creating `dir` (mode 0700) if needed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        create_private_dir(dir)?;
        let file = ConfigFile {
            host: self.host.clone(),
            pin: self.pin.to_string(),
            pending_token: self.pending_token.clone(),
            handset_name: self.handset_name.clone(),
        };
        let body = toml::to_string(&file).map_err(|e| ClientError::BadConfig {
            path: dir.join(CONFIG_FILE),
            why: format!("cannot serialise: {e}"),
        })?;
        write_atomically(
            &dir.join(CONFIG_FILE),
            format!("{FILE_HEADER}{body}").as_bytes(),
        )
    }
}

/// Loads the config in `dir` (see [`CompanionConfig::load`]).
///
/// # Errors
///
/// See [`CompanionConfig::load`]; notably [`ClientError::NotEnrolled`].
pub fn load(dir: &Path) -> Result<CompanionConfig, ClientError> {
    CompanionConfig::load(dir)
}

/// Loads (or, on first use, creates) the handset identity in
/// `dir/identity`.
///
/// # Errors
///
/// [`ClientError::Identity`].
pub fn load_identity(dir: &Path) -> Result<HandsetIdentity, ClientError> {
    let id_dir = dir.join(IDENTITY_DIR);
    create_private_dir(dir)?;
    HandsetIdentity::load_or_create(&id_dir).map_err(|source| ClientError::Identity {
        dir: id_dir,
        source,
    })
}

/// Enrolls this handset: parses `enrollment` (the line `vphonectl handset
/// enroll` printed), creates (or keeps) the handset identity in
/// `dir/identity` and writes `dir/config.toml` with the token pending.
/// Enrolling again replaces the host, pin, token and name but keeps the
/// identity.
///
/// # Errors
///
/// The `Enrollment*` variants of [`ClientError`] for a bad string (nothing
/// is written then), [`ClientError::InvalidArgument`] for a name that breaks
/// [`sensor_proto::names::check_handset_name`],
/// [`ClientError::Identity`], [`ClientError::Io`].
pub fn enroll(
    dir: &Path,
    enrollment: &str,
    handset_name: &str,
) -> Result<(CompanionConfig, HandsetIdentity), ClientError> {
    let parsed: Enrollment = enrollment.parse()?;
    let handset_name = handset_name.trim();
    // The host applies the same rule; checking here says so before anything
    // is written.
    sensor_proto::names::check_handset_name(handset_name)
        .map_err(|e| ClientError::InvalidArgument(format!("{e} (use --name NAME)")))?;
    let identity = load_identity(dir)?;
    let config = CompanionConfig {
        host: parsed.host,
        pin: parsed.pin,
        pending_token: Some(parsed.token),
        handset_name: handset_name.to_owned(),
    };
    config.save(dir)?;
    tracing::info!(
        dir = %dir.display(),
        host = %config.host,
        fingerprint = %identity.fingerprint(),
        "enrolled; the token will be used on the first connection"
    );
    Ok((config, identity))
}

/// Drops the pending enrollment token after the first successful
/// connection used it. A no-op if there is none.
///
/// # Errors
///
/// See [`CompanionConfig::load`] and [`CompanionConfig::save`].
pub fn mark_token_used(dir: &Path) -> Result<CompanionConfig, ClientError> {
    let mut config = CompanionConfig::load(dir)?;
    if config.pending_token.take().is_some() {
        config.save(dir)?;
        tracing::info!("enrollment token used; removed it from the config");
    }
    Ok(config)
}

/// A default handset name: the host name of this machine, else
/// `"vphone handset"`.
#[must_use]
pub fn default_handset_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "vphone handset".to_owned())
}

fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| ClientError::io("creating directory", dir, e))
}

/// Writes `path` via a temporary file in the same directory and a rename,
/// so readers see the old or the new content, never a mix.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .map_err(|e| ClientError::io("creating", &tmp, e))?;
        // A stale temporary file from a crashed run may have other bits.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| ClientError::io("setting permissions of", &tmp, e))?;
        }
        file.write_all(contents)
            .map_err(|e| ClientError::io("writing", &tmp, e))?;
        file.sync_all()
            .map_err(|e| ClientError::io("syncing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ClientError::io("renaming into place", path, e))
    })();
    if result.is_err() {
        // Best effort: do not leave a copy of the secret behind.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Persist the rename itself.
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not fsync directory");
    }
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, has_secret: bool) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path)
        && has_secret
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "config file holding the enrollment token is accessible by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _has_secret: bool) {}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn line(rest: &str) -> String {
        format!("vphone://{rest}")
    }

    #[test]
    fn parses_a_good_enrollment_string() {
        let s = line(&format!(
            "host.example:4433?pin={PIN}&token=vpe1.abc-DEF_12~"
        ));
        let e: Enrollment = s.parse().unwrap();
        assert_eq!(e.host, "host.example:4433");
        assert_eq!(e.pin.to_string(), PIN);
        assert_eq!(e.token, "vpe1.abc-DEF_12~");
        // Order of parameters, whitespace, trailing slash, sha256 prefix,
        // IPv4, IPv6 and upper-case scheme are fine.
        for ok in [
            format!("  vphone://10.0.0.1:1/?token=t&pin={PIN}\n"),
            format!("VPHONE://[::1]:65535?pin=sha256:{PIN}&token=t"),
            format!("vphone://h:9?pin={}&token=t&future=1", PIN.to_uppercase()),
        ] {
            let e: Enrollment = ok.parse().unwrap_or_else(|err| panic!("{ok}: {err}"));
            assert_eq!(e.pin.to_string(), PIN);
            assert_eq!(e.token, "t");
        }
    }

    #[test]
    fn rejects_bad_enrollment_strings_specifically() {
        type Check = fn(&ClientError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (
                format!("https://h:1?pin={PIN}&token=t"),
                |e| matches!(e, ClientError::EnrollmentScheme { found } if found == "https"),
            ),
            (format!("h:1?pin={PIN}&token=t"), |e| {
                matches!(e, ClientError::EnrollmentScheme { .. })
            }),
            (line("h:1?token=t"), |e| {
                matches!(e, ClientError::EnrollmentMissingPin)
            }),
            (line("h:1?pin=abcd&token=t"), |e| {
                matches!(e, ClientError::EnrollmentBadPin { .. })
            }),
            (line(&format!("h:1?pin={}&token=t", "zz".repeat(32))), |e| {
                matches!(e, ClientError::EnrollmentBadPin { .. })
            }),
            (line(&format!("h:1?pin={PIN}")), |e| {
                matches!(e, ClientError::EnrollmentMissingToken)
            }),
            (line(&format!("h:1?pin={PIN}&token=")), |e| {
                matches!(e, ClientError::EnrollmentMissingToken)
            }),
            (line(&format!("h:1?pin={PIN}&token=a%20b")), |e| {
                matches!(e, ClientError::EnrollmentBadToken { .. })
            }),
            (line(&format!("h?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("h:0?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("h:99999?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!(":1?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("::1:4433?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("[nope]:1?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("bad host:1?pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentBadAddress { .. })
            }),
            (line(&format!("h:1?pin={PIN}&pin={PIN}&token=t")), |e| {
                matches!(e, ClientError::EnrollmentMalformed { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<Enrollment>().unwrap_err();
            assert!(check(&err), "{input}: unexpected error {err:?}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let secret = "vpe1.supersecret";
        let e: Enrollment = line(&format!("h:1?pin={PIN}&token={secret}"))
            .parse()
            .unwrap();
        assert!(!format!("{e:?}").contains("supersecret"));
        for bad in [
            format!("nope://h:1?pin={PIN}&token={secret}"),
            format!("vphone://h?pin={PIN}&token={secret}"),
            format!("vphone://h:1?pin=12&token={secret}"),
            format!("vphone://h:1?pin={PIN}&token={secret}!"),
        ] {
            let err = bad.parse::<Enrollment>().unwrap_err();
            assert!(!err.to_string().contains("supersecret"), "{err}");
            assert!(!format!("{err:?}").contains("supersecret"), "{err:?}");
        }
    }

    #[test]
    fn config_dir_follows_xdg() {
        assert_eq!(
            config_dir_from(Some("/x".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/x/vphone-companion")
        );
        assert_eq!(
            config_dir_from(None, Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.config/vphone-companion")
        );
        // Empty or relative XDG_CONFIG_HOME is ignored.
        assert_eq!(
            config_dir_from(Some("".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.config/vphone-companion")
        );
        assert_eq!(
            config_dir_from(Some("rel".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.config/vphone-companion")
        );
        assert!(matches!(
            config_dir_from(None, None),
            Err(ClientError::NoConfigDir)
        ));
    }

    #[test]
    fn enroll_load_and_consume_token() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("companion");

        let err = load(&dir).unwrap_err();
        assert!(matches!(err, ClientError::NotEnrolled { .. }));
        assert!(
            err.to_string()
                .contains("run `vphone-companion enroll <string>`"),
            "{err}"
        );

        let s = line(&format!("127.0.0.1:4433?pin={PIN}&token=vpe1.t0k"));
        let (cfg, identity) = enroll(&dir, &s, " Pixel of Alice ").unwrap();
        assert_eq!(cfg.handset_name, "Pixel of Alice");
        assert_eq!(cfg.pending_token.as_deref(), Some("vpe1.t0k"));
        assert!(dir.join("identity").join("key.pem").is_file());
        assert_eq!(load(&dir).unwrap(), cfg);
        // Identity is stable across loads and re-enrollment.
        assert_eq!(
            load_identity(&dir).unwrap().fingerprint(),
            identity.fingerprint()
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.join(CONFIG_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let used = mark_token_used(&dir).unwrap();
        assert_eq!(used.pending_token, None);
        let reloaded = load(&dir).unwrap();
        assert_eq!(reloaded.pending_token, None);
        assert_eq!(reloaded.host, "127.0.0.1:4433");
        let text = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        assert!(!text.contains("vpe1.t0k"), "{text}");
        // Idempotent.
        assert_eq!(mark_token_used(&dir).unwrap(), reloaded);

        let (again, identity2) =
            enroll(&dir, &line(&format!("other:1?pin={PIN}&token=second")), "x").unwrap();
        assert_eq!(identity2.fingerprint(), identity.fingerprint());
        assert_eq!(again.host, "other:1");
        assert_eq!(load(&dir).unwrap().pending_token.as_deref(), Some("second"));
    }

    #[test]
    fn bad_enrollment_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        assert!(enroll(&dir, "vphone://h:1?token=t", "n").is_err());
        assert!(!dir.exists());
        assert!(matches!(
            enroll(&dir, &line(&format!("h:1?pin={PIN}&token=t")), "  "),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn corrupt_config_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CONFIG_FILE), "host = 3\n").unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(matches!(err, ClientError::BadConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("config.toml"), "{err}");

        fs::write(
            tmp.path().join(CONFIG_FILE),
            "host = \"h:1\"\npin = \"12\"\nhandset_name = \"n\"\n",
        )
        .unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("pin"), "{err}");
    }
}
