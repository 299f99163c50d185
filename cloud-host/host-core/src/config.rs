//! The host's configuration: built-in defaults, then a TOML file, then
//! environment variables, then command-line flags, each overriding the one
//! before.
//!
//! | setting | flag | environment | file key | default |
//! |---|---|---|---|---|
//! | data dir | `--data-dir` | `VPHONE_DATA_DIR` | `data_dir` | `$XDG_DATA_HOME/vphone` or `~/.local/share/vphone` |
//! | handset QUIC | `--quic-listen` | `VPHONE_QUIC_LISTEN` | `quic_listen` | `0.0.0.0:4433` |
//! | operator API | `--operator-listen` | `VPHONE_OPERATOR_LISTEN` | `operator_listen` | `127.0.0.1:4434` |
//! | operator API off loopback, without TLS | `--operator-insecure-listen` | `VPHONE_OPERATOR_INSECURE_LISTEN=1` | `operator_insecure_listen` | off: refused |
//! | phones' Bluetooth attach points | | | `attach_ip` | `127.0.0.2` (a port per phone) |
//! | netsim development listener | `--netsim-listen` | `VPHONE_NETSIM_LISTEN` | `netsim_listen` | off |
//! | address handsets dial | `--public-addr` | `VPHONE_PUBLIC_ADDR` | `public_addr` | `127.0.0.1:<quic port>` |
//! | resume window | | | `resume_window_secs` | 10 |
//! | emulator boot timeout | | | `boot_timeout_secs` | 600 |
//! | restarts after a crash | | | `restart_max` | 0 (mark Failed) |
//! | pace video to the path, adapt its bitrate | | | `video_adapt` | true |
//! | video frame-rate cap per session | | | `video_max_fps` | 60 |
//! | video encoder tuning: `screen` (fewest bytes) or `camera` (half the CPU and memory) | | | `video_tuning` | screen |
//! | sound to handsets: Opus bitrate, bit/s | | | `audio_bitrate` | 64000 |
//! | sound frame length, ms (10 or 20) | | | `audio_frame_ms` | 20 |
//! | browser handsets: WebTransport on the QUIC port, the page on the TCP port of the same number | `--no-web` | `VPHONE_WEB=0` | `web` | on |
//! | the page's HTTPS certificate chain and key (PEM; reloaded when the files change) | `--web-cert`, `--web-key` | `VPHONE_WEB_CERT`, `VPHONE_WEB_KEY` | `web_cert`, `web_key` | none: plain HTTP, a secure context only as `http://localhost` |
//! | the page's public URL in enrollment links | `--web-url` | `VPHONE_WEB_URL` | `web_url` | `https://<public addr>/` with a certificate, else `http://localhost:<port>/` |
//! | the registry: an SQLite file, or a PostgreSQL database a fleet shares | `--registry` | `VPHONE_REGISTRY` | `registry` | `<data dir>/registry.sqlite3` |
//! | this host's name in the registry | `--host-name` | `VPHONE_HOST_NAME` | `host_name` | the machine's host name |
//! | the most phones this host runs (0: none, a front door) | `--capacity` | `VPHONE_CAPACITY` | `capacity` | no limit |
//! | labels phones may ask a host for (`zone=a,gpu=yes`) | `--labels` | `VPHONE_LABELS` | `labels` | none |
//! | a fleet's shared keys (a mounted Secret): `cert.pem` + `key.pem`, the identity handsets pin, and `token.key`, the enrollment token key; read, never written | `--fleet-keys` | `VPHONE_FLEET_KEYS` | `fleet_keys` | the host's own, created in the data dir |
//! | the operator API's admin token, read from a file (a mounted Secret) | `--admin-token-file` | `VPHONE_ADMIN_TOKEN_FILE` | `admin_token_file` | `<data dir>/admin.token`, created at first start |
//! | on SIGTERM, seconds to keep serving while `/readyz` says "leaving" (a load balancer's health check drops the host first) | | `VPHONE_SHUTDOWN_DELAY_SECS` | `shutdown_delay_secs` | 0 |
//! | phone lease length, seconds, 2 to 3600 (a dead host's phones move after it) | | | `lease_secs` | 10 |
//! | extra emulator args (never `-avd`, `-grpc*`, `-ports`, `-packet-streamer-endpoint`) | | | `emulator_args` | none |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::HostError;
use crate::phones::RestartPolicy;

/// The effective host configuration.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct HostConfig {
    /// Where the registry, identity, tokens and logs live.
    pub data_dir: PathBuf,
    /// UDP address for handset QUIC connections.
    pub quic_listen: SocketAddr,
    /// TCP address of the operator gRPC API and `/metrics`. Loopback only,
    /// unless [`HostConfig::operator_insecure_listen`] (see
    /// [`HostConfig::check_operator_listen`]).
    pub operator_listen: SocketAddr,
    /// Accept a non-loopback `operator_listen`, although the API speaks
    /// plain HTTP/2 and the admin token would cross the network in clear.
    pub operator_insecure_listen: bool,
    /// TCP address of the netsim `PacketStreamer` development listener,
    /// where a stack's `ChipInfo` names its phone (bumble tools, manual
    /// testing; any process of the host's user may attach as any phone).
    /// Off by default: phones' stacks attach through their own attach
    /// points. Never an address an emulator guest reaches (see
    /// [`crate::bluetooth::check_attach_ip`]).
    pub netsim_listen: Option<SocketAddr>,
    /// The loopback address phones' Bluetooth attach points listen on, a
    /// port per phone (never 127.0.0.1, which guests reach).
    pub attach_ip: std::net::Ipv4Addr,
    /// `host:port` put in enrollment strings: where handsets connect.
    /// `None`: `127.0.0.1` (or the QUIC listen address when it is not the
    /// unspecified one) with the QUIC port actually bound.
    pub public_addr: Option<String>,
    /// How long a dropped handset may take to resume its session.
    pub resume_window: Duration,
    /// How long an emulator boot may take.
    pub boot_timeout: Duration,
    /// What happens when a phone dies.
    pub restart: RestartPolicy,
    /// Extra arguments for every emulator.
    pub emulator_args: Vec<String>,
    /// Pace each session's video to what its path carries and adapt the
    /// encoder's bitrate (on by default; off only to measure without it).
    pub video_adapt: bool,
    /// Most video frames per second a session sends (1..=120).
    pub video_max_fps: u32,
    /// The video encoder's tuning: fewest bytes (`screen`) or half the CPU
    /// and memory per session (`camera`).
    pub video_tuning: crate::video::Tuning,
    /// Opus bitrate of the phones' sound, bits per second.
    pub audio_bitrate: u32,
    /// Length of a sound frame, ms (10 or 20).
    pub audio_frame_ms: u32,
    /// Serve browser handsets (WebTransport beside `vphone/1` on the QUIC
    /// port, the page on the TCP port of the same number).
    pub web: bool,
    /// The page's certificate chain (PEM), from any CA.
    pub web_cert: Option<PathBuf>,
    /// The page's private key (PEM).
    pub web_key: Option<PathBuf>,
    /// The page's public base URL for enrollment links.
    pub web_url: Option<String>,
    /// The registry (`None`: `<data dir>/registry.sqlite3`).
    pub registry: Option<String>,
    /// This host's name in the registry (`None`: the machine's).
    pub host_name: Option<String>,
    /// The most phones this host runs.
    pub capacity: u32,
    /// Labels phones may ask for, `zone=a,gpu=yes`.
    pub labels: String,
    /// How long a phone lease lasts unless renewed.
    pub lease: Duration,
    /// A directory with the fleet's shared identity (`cert.pem`, `key.pem`)
    /// and enrollment token key (`token.key`), used instead of the data
    /// dir's own; every front door of a fleet presents the same key, so
    /// handsets enrolled at one are served by any (`None`: the host's own).
    pub fleet_keys: Option<PathBuf>,
    /// The admin token's file (`None`: `<data dir>/admin.token`, created at
    /// first start).
    pub admin_token_file: Option<PathBuf>,
    /// On SIGTERM, how long to keep serving, not ready, before stopping.
    pub shutdown_delay: Duration,
}

/// Values a layer may set (every field optional).
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// See [`HostConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`HostConfig::quic_listen`].
    pub quic_listen: Option<SocketAddr>,
    /// See [`HostConfig::operator_listen`].
    pub operator_listen: Option<SocketAddr>,
    /// See [`HostConfig::operator_insecure_listen`].
    pub operator_insecure_listen: Option<bool>,
    /// See [`HostConfig::netsim_listen`].
    pub netsim_listen: Option<SocketAddr>,
    /// See [`HostConfig::attach_ip`].
    pub attach_ip: Option<std::net::Ipv4Addr>,
    /// See [`HostConfig::public_addr`].
    pub public_addr: Option<String>,
    /// Seconds; see [`HostConfig::resume_window`].
    pub resume_window_secs: Option<u64>,
    /// Seconds; see [`HostConfig::boot_timeout`].
    pub boot_timeout_secs: Option<u64>,
    /// Restarts allowed after a crash (0 = mark Failed).
    pub restart_max: Option<u32>,
    /// See [`HostConfig::emulator_args`].
    pub emulator_args: Option<Vec<String>>,
    /// See [`HostConfig::video_adapt`].
    pub video_adapt: Option<bool>,
    /// See [`HostConfig::video_max_fps`].
    pub video_max_fps: Option<u32>,
    /// See [`HostConfig::video_tuning`]: `screen` or `camera`.
    #[serde(default, deserialize_with = "tuning")]
    pub video_tuning: Option<crate::video::Tuning>,
    /// See [`HostConfig::audio_bitrate`].
    pub audio_bitrate: Option<u32>,
    /// See [`HostConfig::audio_frame_ms`].
    pub audio_frame_ms: Option<u32>,
    /// See [`HostConfig::web`].
    pub web: Option<bool>,
    /// See [`HostConfig::web_cert`].
    pub web_cert: Option<PathBuf>,
    /// See [`HostConfig::web_key`].
    pub web_key: Option<PathBuf>,
    /// See [`HostConfig::web_url`].
    pub web_url: Option<String>,
    /// See [`HostConfig::registry`].
    pub registry: Option<String>,
    /// See [`HostConfig::host_name`].
    pub host_name: Option<String>,
    /// See [`HostConfig::capacity`].
    pub capacity: Option<u32>,
    /// See [`HostConfig::labels`].
    pub labels: Option<String>,
    /// Seconds; see [`HostConfig::lease`].
    pub lease_secs: Option<u64>,
    /// See [`HostConfig::fleet_keys`].
    pub fleet_keys: Option<PathBuf>,
    /// See [`HostConfig::admin_token_file`].
    pub admin_token_file: Option<PathBuf>,
    /// Seconds, at most 300; see [`HostConfig::shutdown_delay`].
    pub shutdown_delay_secs: Option<u64>,
}

impl ConfigLayer {
    /// Parses a TOML config file's text.
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the file and the problem.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, HostError> {
        toml::from_str(text).map_err(|e| HostError::Invalid {
            what: "config file",
            why: format!("{}: {e}", path.display()),
        })
    }

    /// Reads the `VPHONE_*` environment variables through `env`.
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the variable that does not parse.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, HostError> {
        fn addr(
            env: &dyn Fn(&str) -> Option<String>,
            k: &'static str,
        ) -> Result<Option<SocketAddr>, HostError> {
            env(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse().map_err(|_| HostError::Invalid {
                        what: "environment",
                        why: format!("{k}={v:?} is not an address like 127.0.0.1:4434"),
                    })
                })
                .transpose()
        }
        fn flag(
            env: &dyn Fn(&str) -> Option<String>,
            k: &'static str,
        ) -> Result<Option<bool>, HostError> {
            match env(k).as_deref() {
                None | Some("") => Ok(None),
                Some("1" | "true" | "yes") => Ok(Some(true)),
                Some("0" | "false" | "no") => Ok(Some(false)),
                Some(v) => Err(HostError::Invalid {
                    what: "environment",
                    why: format!("{k}={v:?} is not 1 or 0"),
                }),
            }
        }
        fn path(env: &dyn Fn(&str) -> Option<String>, k: &'static str) -> Option<PathBuf> {
            env(k).filter(|v| !v.is_empty()).map(PathBuf::from)
        }
        /// A number of `unit`: phones, seconds.
        fn number<T: std::str::FromStr>(
            env: &dyn Fn(&str) -> Option<String>,
            k: &'static str,
            unit: &str,
        ) -> Result<Option<T>, HostError> {
            env(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse().map_err(|_| HostError::Invalid {
                        what: "environment",
                        why: format!("{k}={v:?} is not a number of {unit}"),
                    })
                })
                .transpose()
        }
        Ok(Self {
            data_dir: path(env, "VPHONE_DATA_DIR"),
            quic_listen: addr(env, "VPHONE_QUIC_LISTEN")?,
            operator_listen: addr(env, "VPHONE_OPERATOR_LISTEN")?,
            operator_insecure_listen: flag(env, "VPHONE_OPERATOR_INSECURE_LISTEN")?,
            netsim_listen: addr(env, "VPHONE_NETSIM_LISTEN")?,
            public_addr: env("VPHONE_PUBLIC_ADDR").filter(|v| !v.is_empty()),
            web: flag(env, "VPHONE_WEB")?,
            web_cert: path(env, "VPHONE_WEB_CERT"),
            web_key: path(env, "VPHONE_WEB_KEY"),
            web_url: env("VPHONE_WEB_URL").filter(|v| !v.is_empty()),
            registry: env("VPHONE_REGISTRY").filter(|v| !v.is_empty()),
            host_name: env("VPHONE_HOST_NAME").filter(|v| !v.is_empty()),
            capacity: number(env, "VPHONE_CAPACITY", "phones")?,
            labels: env("VPHONE_LABELS").filter(|v| !v.is_empty()),
            fleet_keys: path(env, "VPHONE_FLEET_KEYS"),
            admin_token_file: path(env, "VPHONE_ADMIN_TOKEN_FILE"),
            shutdown_delay_secs: number(env, "VPHONE_SHUTDOWN_DELAY_SECS", "seconds")?,
            ..Self::default()
        })
    }

    /// `other`'s values win where set.
    pub fn overridden_by(self, other: Self) -> Self {
        Self {
            data_dir: other.data_dir.or(self.data_dir),
            quic_listen: other.quic_listen.or(self.quic_listen),
            operator_listen: other.operator_listen.or(self.operator_listen),
            operator_insecure_listen: other
                .operator_insecure_listen
                .or(self.operator_insecure_listen),
            netsim_listen: other.netsim_listen.or(self.netsim_listen),
            attach_ip: other.attach_ip.or(self.attach_ip),
            public_addr: other.public_addr.or(self.public_addr),
            resume_window_secs: other.resume_window_secs.or(self.resume_window_secs),
            boot_timeout_secs: other.boot_timeout_secs.or(self.boot_timeout_secs),
            restart_max: other.restart_max.or(self.restart_max),
            emulator_args: other.emulator_args.or(self.emulator_args),
            video_adapt: other.video_adapt.or(self.video_adapt),
            video_max_fps: other.video_max_fps.or(self.video_max_fps),
            video_tuning: other.video_tuning.or(self.video_tuning),
            audio_bitrate: other.audio_bitrate.or(self.audio_bitrate),
            audio_frame_ms: other.audio_frame_ms.or(self.audio_frame_ms),
            web: other.web.or(self.web),
            web_cert: other.web_cert.or(self.web_cert),
            web_key: other.web_key.or(self.web_key),
            web_url: other.web_url.or(self.web_url),
            registry: other.registry.or(self.registry),
            host_name: other.host_name.or(self.host_name),
            capacity: other.capacity.or(self.capacity),
            labels: other.labels.or(self.labels),
            lease_secs: other.lease_secs.or(self.lease_secs),
            fleet_keys: other.fleet_keys.or(self.fleet_keys),
            admin_token_file: other.admin_token_file.or(self.admin_token_file),
            shutdown_delay_secs: other.shutdown_delay_secs.or(self.shutdown_delay_secs),
        }
    }

    /// Fills every unset value with its default.
    pub fn resolve(self, env: &dyn Fn(&str) -> Option<String>) -> HostConfig {
        let quic_listen = self
            .quic_listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4433)));
        HostConfig {
            data_dir: self.data_dir.unwrap_or_else(|| default_data_dir(env)),
            quic_listen,
            operator_listen: self
                .operator_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4434))),
            operator_insecure_listen: self.operator_insecure_listen.unwrap_or(false),
            netsim_listen: self.netsim_listen,
            attach_ip: self
                .attach_ip
                .unwrap_or(crate::bluetooth::DEFAULT_ATTACH_IP),
            public_addr: self.public_addr,
            resume_window: Duration::from_secs(self.resume_window_secs.unwrap_or(10)),
            boot_timeout: Duration::from_secs(self.boot_timeout_secs.unwrap_or(600)),
            restart: match self.restart_max.unwrap_or(0) {
                0 => RestartPolicy::Never,
                n => RestartPolicy::OnFailure(n),
            },
            emulator_args: self.emulator_args.unwrap_or_default(),
            video_adapt: self.video_adapt.unwrap_or(true),
            video_max_fps: self.video_max_fps.unwrap_or(60),
            video_tuning: self.video_tuning.unwrap_or_default(),
            audio_bitrate: self.audio_bitrate.unwrap_or(64_000),
            audio_frame_ms: self.audio_frame_ms.unwrap_or(20),
            web: self.web.unwrap_or(true),
            web_cert: self.web_cert,
            web_key: self.web_key,
            web_url: self.web_url,
            registry: self.registry,
            host_name: self.host_name,
            capacity: self.capacity.unwrap_or(u32::MAX),
            labels: self.labels.unwrap_or_default(),
            lease: self.lease_secs.map_or(crate::lease::DEFAULT_LEASE, |s| {
                Duration::from_secs(s.clamp(2, 3600))
            }),
            fleet_keys: self.fleet_keys,
            admin_token_file: self.admin_token_file,
            shutdown_delay: Duration::from_secs(self.shutdown_delay_secs.unwrap_or(0).min(300)),
        }
    }
}

pub use sensor_proto::layout::default_data_dir;

/// `video_tuning = "screen" | "camera"`, refused with the choices otherwise.
fn tuning<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::video::Tuning>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

impl HostConfig {
    /// Where the registry lives: `registry`, or the SQLite file in the
    /// data dir.
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a value that is neither a `postgres://`
    /// URL nor a file path.
    pub fn registry_target(&self) -> Result<crate::registry::Target, HostError> {
        match &self.registry {
            Some(r) => crate::registry::Target::parse(r),
            None => Ok(crate::registry::Target::Sqlite(
                self.data_dir.join("registry.sqlite3"),
            )),
        }
    }

    /// This host's name in the registry: `host_name`, or the machine's.
    ///
    /// # Errors
    /// [`HostError::Invalid`] when it is not a valid name.
    pub fn host_name(&self) -> Result<String, HostError> {
        let name = match &self.host_name {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|n| n.trim().to_owned())
                .map_err(|e| HostError::io("reading the machine's host name", e))?,
        };
        crate::registry::validate_name("host name", &name)?;
        Ok(name)
    }

    /// A host on 127.0.0.1 with every port chosen by the OS, keeping its
    /// state in `data_dir` (tests, the demo).
    #[must_use]
    pub fn loopback(data_dir: PathBuf) -> Self {
        let any = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        ConfigLayer {
            data_dir: Some(data_dir),
            quic_listen: any,
            operator_listen: any,
            ..ConfigLayer::default()
        }
        .resolve(&|_| None)
    }

    /// Whether the operator API may listen where it is configured to. It
    /// speaks plain HTTP/2 (gRPC and `/metrics`) with a bearer admin token,
    /// so an address other machines reach is refused unless the operator
    /// accepted that with [`HostConfig::operator_insecure_listen`].
    ///
    /// # Errors
    /// [`HostError::Invalid`] saying why and what to do instead.
    pub fn check_operator_listen(&self) -> Result<(), HostError> {
        let addr = self.operator_listen;
        if addr.ip().is_loopback() {
            return Ok(());
        }
        if self.operator_insecure_listen {
            tracing::warn!(
                %addr,
                "the operator API listens off loopback WITHOUT TLS: the admin token and every \
                 operator request cross the network in clear (--operator-insecure-listen)"
            );
            return Ok(());
        }
        Err(HostError::Invalid {
            what: "operator API address",
            why: format!(
                "{addr} is refused: the operator API speaks plain HTTP/2 and its admin token \
                 would cross the network in clear; keep it on loopback and reach it through \
                 `ssh -L 4434:127.0.0.1:4434 HOST` or a TLS-terminating proxy, or accept the \
                 risk with --operator-insecure-listen"
            ),
        })
    }

    /// Checks the browser handset settings: a certificate needs its key and
    /// the other way round; the URL must be http(s).
    ///
    /// # Errors
    /// [`HostError::Invalid`] saying what is missing.
    pub fn check_web(&self) -> Result<(), HostError> {
        match (&self.web_cert, &self.web_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(HostError::Invalid {
                    what: "web certificate",
                    why: "--web-cert and --web-key go together (the page's certificate chain and \
                          its private key, PEM)"
                        .into(),
                });
            }
            _ => {}
        }
        if let Some(url) = &self.web_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(HostError::Invalid {
                what: "web_url",
                why: format!(
                    "{url:?}: use the page's address, like https://phones.example.com:4433/"
                ),
            });
        }
        Ok(())
    }

    /// The page's base URL for enrollment links (ends with `/`).
    #[must_use]
    pub fn web_url_for(&self, public_addr: &str, port: u16) -> String {
        let mut url = match (&self.web_url, &self.web_cert) {
            (Some(u), _) => u.clone(),
            (None, Some(_)) => format!("https://{public_addr}/"),
            (None, None) => format!("http://localhost:{port}/"),
        };
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    }

    /// The origins the page is served from, which alone may open browser
    /// sessions: the page URL's, and the development ones on loopback
    /// (`http://localhost:PORT`, and the `127.0.0.1` one without a
    /// certificate only there).
    #[must_use]
    pub fn web_origins(&self, public_addr: &str, port: u16) -> Vec<String> {
        let url = self.web_url_for(public_addr, port);
        let origin = url
            .split_once("://")
            .map(|(scheme, rest)| {
                let host = rest.split('/').next().unwrap_or_default();
                let default_port = if scheme == "https" { ":443" } else { ":80" };
                format!("{scheme}://{}", host.trim_end_matches(default_port))
            })
            .unwrap_or_default();
        let mut origins = vec![origin];
        for dev in [
            format!("http://localhost:{port}"),
            format!("https://localhost:{port}"),
        ] {
            if !origins.contains(&dev) {
                origins.push(dev);
            }
        }
        origins
    }

    /// Checks the media settings: the frame-rate cap, and the sound's
    /// against what Opus takes.
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the setting.
    pub fn check_media(&self) -> Result<(), HostError> {
        if !(1..=120).contains(&self.video_max_fps) {
            return Err(HostError::Invalid {
                what: "video_max_fps",
                why: format!("{}; use 1..120", self.video_max_fps),
            });
        }
        if !vphone_media::audio::FRAME_MS.contains(&self.audio_frame_ms) {
            return Err(HostError::Invalid {
                what: "audio_frame_ms",
                why: format!("{} ms; use 10 or 20", self.audio_frame_ms),
            });
        }
        if !(6_000..=510_000).contains(&self.audio_bitrate) {
            return Err(HostError::Invalid {
                what: "audio_bitrate",
                why: format!(
                    "{} bit/s; Opus takes 6000..510000 (64000 is plenty for a phone's sound)",
                    self.audio_bitrate
                ),
            });
        }
        Ok(())
    }

    /// Checks the extra emulator arguments: the flags that decide where the
    /// emulator's gRPC API listens and how it authenticates, which AVD it
    /// runs and where its Bluetooth attaches are the host's to set (`-grpc
    /// 8554` would open an unauthenticated API on every interface; `-ports`
    /// turns the API off).
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the flag.
    pub fn check_emulator_args(&self) -> Result<(), HostError> {
        const HOSTS: &[&str] = &[
            "-avd",
            "-grpc",
            "-grpc-use-token",
            "-grpc-use-jwt",
            "-grpc-tls-key",
            "-grpc-tls-cer",
            "-grpc-tls-ca",
            "-grpc-allowlist",
            "-packet-streamer-endpoint",
            "-ports",
            "-port",
        ];
        match self
            .emulator_args
            .iter()
            .find(|a| HOSTS.contains(&a.as_str()) || a.starts_with('@'))
        {
            Some(flag) => Err(HostError::Invalid {
                what: "emulator_args",
                why: format!(
                    "{flag} is set by the host for every emulator (its AVD, its gRPC API on \
                     loopback with a token, its Bluetooth attach point); remove it"
                ),
            }),
            None => Ok(()),
        }
    }

    /// The address for enrollment strings, given the bound QUIC address.
    pub fn public_addr_for(&self, bound: SocketAddr) -> String {
        self.public_addr.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                format!("127.0.0.1:{}", bound.port())
            } else {
                bound.to_string()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_no_configuration() {
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        let c = ConfigLayer::default().resolve(&env);
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/vphone"));
        assert_eq!(c.quic_listen.to_string(), "0.0.0.0:4433");
        assert_eq!(c.operator_listen.to_string(), "127.0.0.1:4434");
        assert!(c.check_operator_listen().is_ok());
        assert_eq!(
            c.netsim_listen, None,
            "the development listener is off by default"
        );
        assert_eq!(c.public_addr, None);
        assert_eq!(c.resume_window, Duration::from_secs(10));
        assert_eq!(c.restart, RestartPolicy::Never);
    }

    #[test]
    fn file_then_env_then_flags_override_in_that_order() {
        let file = ConfigLayer::from_toml(
            Path::new("host.toml"),
            "data_dir = \"/file\"\noperator_listen = \"127.0.0.1:1111\"\nnetsim_listen = \"127.0.0.1:2222\"\nrestart_max = 3\n",
        )
        .unwrap();
        let env_fn = |k: &str| match k {
            "VPHONE_OPERATOR_LISTEN" => Some("127.0.0.1:3333".to_owned()),
            "VPHONE_DATA_DIR" => Some("/env".to_owned()),
            _ => None,
        };
        let env = ConfigLayer::from_env(&env_fn).unwrap();
        let flags = ConfigLayer {
            data_dir: Some(PathBuf::from("/flag")),
            ..ConfigLayer::default()
        };
        let c = file
            .overridden_by(env)
            .overridden_by(flags)
            .resolve(&|_| None);
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.operator_listen.to_string(), "127.0.0.1:3333");
        assert_eq!(c.netsim_listen.unwrap().to_string(), "127.0.0.1:2222");
        assert_eq!(c.restart, RestartPolicy::OnFailure(3));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../../../infra/host.toml.example");
        let c = ConfigLayer::from_toml(Path::new("host.toml.example"), text).unwrap();
        assert_eq!(c.quic_listen.map(|a| a.port()), Some(4433));
        assert_eq!(c.restart_max, Some(0));
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = ConfigLayer::from_toml(Path::new("h.toml"), "colour = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("h.toml") && e.contains("unknown field"), "{e}");
        let env = |k: &str| (k == "VPHONE_QUIC_LISTEN").then(|| "nowhere".to_owned());
        let e = ConfigLayer::from_env(&env).unwrap_err().to_string();
        assert!(e.contains("VPHONE_QUIC_LISTEN"), "{e}");
    }

    #[test]
    fn media_settings_are_checked_with_a_reason() {
        let with = |toml: &str| {
            ConfigLayer::from_toml(Path::new("h.toml"), toml)
                .unwrap()
                .resolve(&|_| None)
        };
        let d = with("");
        assert_eq!((d.audio_bitrate, d.audio_frame_ms), (64_000, 20));
        assert!(d.check_media().is_ok());
        assert!(with("audio_frame_ms = 10").check_media().is_ok());
        let e = with("audio_frame_ms = 15").check_media().unwrap_err();
        assert!(e.to_string().contains("10 or 20"), "{e}");
        assert!(with("video_max_fps = 0").check_media().is_err());
        assert_eq!(
            with("video_tuning = \"camera\"").video_tuning,
            crate::video::Tuning::Camera
        );
        assert_eq!(d.video_tuning, crate::video::Tuning::Screen);
        let e = ConfigLayer::from_toml(Path::new("h.toml"), "video_tuning = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`screen` or `camera`"), "{e}");
        let e = with("audio_bitrate = 1000000").check_media().unwrap_err();
        assert!(e.to_string().contains("6000..510000"), "{e}");
    }

    #[test]
    fn an_operator_api_off_loopback_needs_the_insecure_flag() {
        for addr in ["0.0.0.0:4434", "192.0.2.7:4434", "[::]:4434"] {
            let layer = ConfigLayer {
                operator_listen: Some(addr.parse().unwrap()),
                ..ConfigLayer::default()
            };
            let e = layer.clone().resolve(&|_| None).check_operator_listen();
            let why = e.expect_err(addr).to_string();
            assert!(
                why.contains("in clear") && why.contains("--operator-insecure-listen"),
                "{why}"
            );
            let env = |k: &str| (k == "VPHONE_OPERATOR_INSECURE_LISTEN").then(|| "1".to_owned());
            let accepted = layer.overridden_by(ConfigLayer::from_env(&env).unwrap());
            assert!(
                accepted.resolve(&|_| None).check_operator_listen().is_ok(),
                "{addr}"
            );
        }
        for addr in ["127.0.0.1:4434", "127.0.0.9:1", "[::1]:4434"] {
            let c = ConfigLayer {
                operator_listen: Some(addr.parse().unwrap()),
                ..ConfigLayer::default()
            }
            .resolve(&|_| None);
            assert!(c.check_operator_listen().is_ok(), "{addr}");
        }
    }

    #[test]
    fn emulator_args_cannot_take_over_what_the_host_sets() {
        let with = |args: &[&str]| HostConfig {
            emulator_args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..ConfigLayer::default().resolve(&|_| None)
        };
        assert!(
            with(&["-memory", "4096", "-no-snapshot-save"])
                .check_emulator_args()
                .is_ok()
        );
        for bad in [
            &["-grpc", "8554"][..],
            &["-ports", "5554,5555"],
            &["@other"],
            &["-grpc-use-jwt"],
        ] {
            let e = with(bad).check_emulator_args().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadInput);
            assert!(e.to_string().contains(bad[0]), "{e}");
        }
        let bad = |k: &str| (k == "VPHONE_OPERATOR_INSECURE_LISTEN").then(|| "maybe".to_owned());
        assert!(ConfigLayer::from_env(&bad).is_err());
    }

    #[test]
    fn browser_sessions_come_only_from_the_pages_origins() {
        let mut cfg = HostConfig::loopback(PathBuf::from("/tmp/x"));
        assert_eq!(
            cfg.web_origins("127.0.0.1:4433", 4433),
            ["http://localhost:4433", "https://localhost:4433"]
        );
        cfg.web_cert = Some(PathBuf::from("c.pem"));
        cfg.web_key = Some(PathBuf::from("k.pem"));
        assert_eq!(
            cfg.web_origins("phones.example.com:4433", 4433)[0],
            "https://phones.example.com:4433"
        );
        cfg.web_url = Some("https://phones.example.com/".into());
        assert_eq!(
            cfg.web_origins("phones.example.com:4433", 4433)[0],
            "https://phones.example.com"
        );
        cfg.web_url = Some("https://phones.example.com:443/vphone/".into());
        assert_eq!(
            cfg.web_origins("x:1", 4433)[0],
            "https://phones.example.com"
        );
    }
}
