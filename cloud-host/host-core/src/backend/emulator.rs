//! The Android Emulator backend: launches the real emulator from the SDK for
//! a named AVD, headless, with KVM, its gRPC API on loopback with token
//! authentication, and its Bluetooth pointed at the host's netsim
//! PacketStreamer endpoint; waits for boot with visible progress, captures
//! its log, notices a crash and stops it cleanly.
//!
//! Without `-grpc PORT` the emulator binds its gRPC server to `[::1]` only and
//! turns authentication on; it advertises the port and token in its discovery
//! file `$XDG_RUNTIME_DIR/avd/running/pid_<PID>.ini`, which is how we find them.
//! The host gives each emulator it starts a private runtime directory
//! (`<data dir>/run/<phone>`, mode 0700, ours) as `XDG_RUNTIME_DIR` and reads
//! the discovery file only there, only if it and every directory above it in
//! that tree belong to the host's user and nobody else may write them: a
//! local user who could plant a discovery file (as in a shared `/tmp`) would
//! otherwise point the host at their own gRPC server and receive the phone
//! user's touches and text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{oneshot, watch};

use super::{BackendContext, BackendKind, BoxFuture, PhoneBackend, PhoneEndpoint, Progress};
use crate::HostError;
use crate::emu_client::EmulatorClient;
use crate::files::{denied, owned_by_us, private_dir};
use crate::registry::PhoneRecord;
use crate::status::PhoneStatus;

/// How to run one emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The Android SDK (contains `emulator/emulator`); `None`: found at
    /// start with [`find_sdk`] from the environment.
    pub sdk_root: Option<PathBuf>,
    /// The AVD to boot.
    pub avd: String,
    /// Where the AVDs are (`ANDROID_AVD_HOME` for the emulator); `None`
    /// leaves the emulator's own default.
    pub avd_home: Option<PathBuf>,
    /// The host's PacketStreamer endpoint (`host:port`) for Bluetooth.
    pub packet_streamer: String,
    /// Where the emulator's stdout and stderr go.
    pub log_path: PathBuf,
    /// The emulator's private `XDG_RUNTIME_DIR` (its discovery file goes
    /// under it); created 0700 at start.
    pub runtime_dir: PathBuf,
    /// How long a boot may take before it counts as failed.
    pub boot_timeout: Duration,
    /// Extra emulator arguments from the operator's config.
    pub extra_args: Vec<String>,
}

/// The emulator command line (without the binary), as launched.
pub fn command_line(cfg: &EmulatorConfig) -> Vec<String> {
    let mut a: Vec<String> = [
        "-avd",
        cfg.avd.as_str(),
        "-no-window",
        "-no-audio",
        "-no-boot-anim",
        "-no-snapshot",
        "-gpu",
        "swiftshader_indirect",
        "-accel",
        "on",
        // No `-grpc PORT`: that would bind every interface. Without it the
        // emulator listens on [::1] and requires its token.
        "-grpc-use-token",
        "-packet-streamer-endpoint",
        cfg.packet_streamer.as_str(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// Finds the Android SDK: `ANDROID_SDK_ROOT`, then `ANDROID_HOME`.
///
/// # Errors
/// [`HostError::Invalid`] explaining what to set when no SDK with an
/// emulator is found.
pub fn find_sdk(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, HostError> {
    for var in ["ANDROID_SDK_ROOT", "ANDROID_HOME"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            let root = PathBuf::from(v);
            if emulator_binary(&root).is_file() {
                return Ok(root);
            }
            return Err(HostError::Unavailable {
                what: "Android SDK",
                why: format!(
                    "{var}={} has no emulator/emulator; install it with `sdkmanager emulator`",
                    root.display()
                ),
            });
        }
    }
    Err(HostError::Unavailable {
        what: "Android SDK",
        why: "neither ANDROID_SDK_ROOT nor ANDROID_HOME is set; point one at an SDK with the emulator \
              installed, or use the sim backend (`--backend sim`)"
            .to_owned(),
    })
}

/// The emulator binary inside an SDK.
pub fn emulator_binary(sdk: &Path) -> PathBuf {
    sdk.join("emulator").join("emulator")
}

/// Checks that KVM can be used (the emulator is unusably slow without it).
///
/// # Errors
/// [`HostError::Invalid`] saying what is missing.
pub fn check_kvm(dev: &Path) -> Result<(), HostError> {
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(HostError::Unavailable {
            what: "KVM",
            why: format!(
                "{} does not exist: enable hardware virtualization (and nested virtualization in a VM)",
                dev.display()
            ),
        }),
        Err(e) => Err(HostError::Unavailable {
            what: "KVM",
            why: format!(
                "cannot open {}: {e}; add this user to the `kvm` group",
                dev.display()
            ),
        }),
    }
}

/// Parses an emulator discovery file (`key=value` lines).
pub fn parse_discovery(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// The discovery file of emulator `pid` under the private runtime dir
/// `runtime_dir`, once it exists: `Ok(None)` while it does not.
///
/// # Errors
/// [`HostError::Denied`] when the file or a directory between it and
/// `runtime_dir` is not the host user's own (another user's, a symlink,
/// writable by others): the host never uses what such a file says.
pub fn read_discovery(runtime_dir: &Path, pid: u32) -> Result<Option<Discovery>, HostError> {
    let running = runtime_dir.join("avd").join("running");
    let file = running.join(format!("pid_{pid}.ini"));
    let meta = match std::fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostError::io(format!("checking {}", file.display()), e)),
    };
    for dir in [runtime_dir.to_path_buf(), runtime_dir.join("avd"), running] {
        let m = std::fs::symlink_metadata(&dir)
            .map_err(|e| HostError::io(format!("checking {}", dir.display()), e))?;
        owned_by_us(&dir, &m)?;
    }
    owned_by_us(&file, &meta)?;
    if !meta.is_file() {
        return Err(denied(&file, "is not a regular file"));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| HostError::io(format!("reading {}", file.display()), e))?;
    let kv = parse_discovery(&text);
    Ok(Some(Discovery {
        grpc_port: kv.get("grpc.port").and_then(|p| p.parse().ok()),
        token: kv.get("grpc.token").cloned(),
    }))
}

/// Where emulator `pid`'s gRPC API answers on `port`: it binds `127.0.0.1`
/// when it can and `[::1]` otherwise (`qemu_setup_grpc`), and its
/// discovery file names only the port. Of the two, the one whose listening
/// socket the emulator process itself holds: never another process's
/// listener on the other address (another emulator's, another user's),
/// which would receive the token.
///
/// # Errors
/// [`HostError::Denied`] when the emulator holds no listener on the port.
pub fn grpc_address(port: u16, pid: u32) -> Result<std::net::SocketAddr, HostError> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .map(|ip| SocketAddr::new(ip, port))
    .find(|addr| crate::procnet::held_by(*addr, pid))
    .ok_or_else(|| {
        HostError::Denied(format!(
            "the emulator (pid {pid}) advertised gRPC port {port}, but does not listen on \
                 127.0.0.1 or [::1] there"
        ))
    })
}

/// Stops emulators a previous run of the host left running for this phone
/// (a host killed with `kill -9` cannot stop its children), and removes
/// the discovery files of dead ones. An emulator is ours to stop only when
/// its discovery file is in this phone's private runtime dir and the
/// process still runs with that dir as its `XDG_RUNTIME_DIR` (so a reused
/// pid is never signalled). Returns the pids it stopped.
pub async fn reap_leftovers(runtime_dir: &Path) -> Vec<u32> {
    let running = runtime_dir.join("avd").join("running");
    let Ok(entries) = std::fs::read_dir(&running) else {
        return Vec::new();
    };
    let want = {
        let mut v = b"XDG_RUNTIME_DIR=".to_vec();
        v.extend_from_slice(runtime_dir.as_os_str().as_encoded_bytes());
        v
    };
    let mut stopped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| {
            n.strip_prefix("pid_")?
                .strip_suffix(".ini")?
                .parse::<i32>()
                .ok()
        }) else {
            continue;
        };
        let ours = std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_slice()));
        if ours && let Some(p) = rustix::process::Pid::from_raw(pid) {
            tracing::warn!(pid, dir = %runtime_dir.display(), "stopping an emulator left running by an earlier host");
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() {
                if tokio::time::Instant::now() > deadline {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stopped.push(pid.unsigned_abs());
        }
        let _ = std::fs::remove_file(entry.path());
    }
    stopped
}

/// What a discovery file tells us. Its `Debug` never shows the token.
#[derive(Clone, Eq, PartialEq)]
pub struct Discovery {
    /// The gRPC port on loopback; `None` when the emulator runs no gRPC
    /// server (it starts none when given `-ports` without `-grpc`).
    pub grpc_port: Option<u16>,
    /// The gRPC bearer token.
    pub token: Option<String>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("grpc_port", &self.grpc_port)
            .field("token", &crate::secret::Redacted(self.token.is_some()))
            .finish()
    }
}

/// Runs one Android Emulator process.
#[derive(Debug)]
pub struct EmulatorBackend {
    cfg: EmulatorConfig,
    stop_tx: Option<oneshot::Sender<()>>,
    exit_rx: Option<watch::Receiver<Option<String>>>,
}

impl EmulatorBackend {
    /// A backend for this configuration (nothing runs until `start`).
    pub fn new(cfg: EmulatorConfig) -> Self {
        Self {
            cfg,
            stop_tx: None,
            exit_rx: None,
        }
    }
}

/// The Android Emulator as a backend kind: one [`EmulatorBackend`] per
/// phone, its AVD from the phone's record.
///
/// By default it finds the SDK as the SDK's own tools do
/// (`ANDROID_SDK_ROOT`, then `ANDROID_HOME`) and leaves the emulator to
/// find AVDs where it looks (`ANDROID_AVD_HOME`, else `~/.android/avd`).
#[derive(Clone, Debug, Default)]
pub struct EmulatorKind {
    /// The SDK to run the emulator from, instead of the environment's.
    pub sdk_root: Option<PathBuf>,
    /// Where the AVDs are, given to the emulator as `ANDROID_AVD_HOME`.
    pub avd_home: Option<PathBuf>,
}

impl BackendKind for EmulatorKind {
    fn make(&self, record: &PhoneRecord, cfg: &BackendContext) -> Box<dyn PhoneBackend> {
        Box::new(EmulatorBackend::new(EmulatorConfig {
            sdk_root: self.sdk_root.clone(),
            avd: record.avd.clone().unwrap_or_default(),
            avd_home: self.avd_home.clone(),
            packet_streamer: cfg.packet_streamer.clone(),
            log_path: cfg
                .data_dir
                .join("logs")
                .join(format!("{}.log", record.name)),
            runtime_dir: cfg.data_dir.join("run").join(&record.name),
            boot_timeout: cfg.boot_timeout,
            extra_args: cfg.emulator_args.clone(),
        }))
    }

    fn check(&self, record: &PhoneRecord) -> Result<(), HostError> {
        check_avd_name(record.avd.as_deref().unwrap_or(""))
    }
}

/// Checks an AVD name as `avdmanager` makes them (letters, digits, `.`,
/// `_`, `-`), starting with a letter or digit: it becomes the emulator's
/// `-avd` argument and part of file names, so nothing else may pass (a name
/// like `-qemu` would be read as an option).
///
/// # Errors
/// [`HostError::Invalid`] saying what is wrong.
pub fn check_avd_name(avd: &str) -> Result<(), HostError> {
    let why = if avd.is_empty() {
        "an emulator phone needs an AVD name (--avd)".to_owned()
    } else if avd.len() > 128 {
        format!("the AVD name is {} bytes long; at most 128", avd.len())
    } else if !avd
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        format!("AVD name {avd:?} may only contain letters, digits, '.', '_' and '-'")
    } else if !avd.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        format!("AVD name {avd:?} must start with a letter or digit")
    } else {
        return Ok(());
    };
    Err(HostError::Invalid { what: "phone", why })
}

impl PhoneBackend for EmulatorBackend {
    fn start(
        &mut self,
        progress: Progress,
        _status: watch::Receiver<PhoneStatus>,
    ) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>> {
        Box::pin(async move {
            let sdk = match &self.cfg.sdk_root {
                Some(root) => root.clone(),
                None => find_sdk(&|k| std::env::var(k).ok())?,
            };
            let bin = emulator_binary(&sdk);
            check_kvm(Path::new("/dev/kvm"))?;
            if let Some(dir) = self.cfg.log_path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| HostError::io(format!("creating {}", dir.display()), e))?;
            }
            let log = std::fs::File::create(&self.cfg.log_path).map_err(|e| {
                HostError::io(format!("creating {}", self.cfg.log_path.display()), e)
            })?;
            let log2 = log
                .try_clone()
                .map_err(|e| HostError::io("duplicating the log file", e))?;
            let args = command_line(&self.cfg);
            private_dir(&self.cfg.runtime_dir)?;
            for pid in reap_leftovers(&self.cfg.runtime_dir).await {
                progress(format!(
                    "stopped emulator pid {pid}, left running by an earlier host"
                ));
            }
            progress(format!("launching {} {}", bin.display(), args.join(" ")));
            let mut cmd = Command::new(&bin);
            cmd.args(&args)
                // Its discovery file (gRPC port and token) goes here, where
                // only the host's user can write.
                .env("XDG_RUNTIME_DIR", &self.cfg.runtime_dir);
            if let Some(home) = &self.cfg.avd_home {
                cmd.env("ANDROID_AVD_HOME", home);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| HostError::io(format!("starting {}", bin.display()), e))?;
            let pid = child.id().unwrap_or_default();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let (exit_tx, exit_rx) = watch::channel(None);
            let log_path = self.cfg.log_path.clone();
            tokio::spawn(async move {
                let reason = tokio::select! {
                    status = child.wait() => {
                        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                        let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                        Some(format!(
                            "emulator exited ({}); last log lines: {}; log: {}",
                            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                            log_path.display()
                        ))
                    }
                    _ = stop_rx => {
                        // Ask politely (SIGTERM lets it save state), then insist.
                        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
                        if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        None
                    }
                };
                let _ = exit_tx.send(reason);
            });
            self.stop_tx = Some(stop_tx);
            self.exit_rx = Some(exit_rx.clone());

            // Find the gRPC port and token.
            // Find the gRPC port and token, then wait for the boot: all of
            // it within the boot timeout, and reporting an exit at once.
            let started = tokio::time::Instant::now();
            let timeout = self.cfg.boot_timeout;
            let log = self.cfg.log_path.display().to_string();
            let exited = |reason: String| HostError::Unavailable {
                what: "emulator",
                why: reason,
            };
            let mut portless = None;
            let (port, token) = loop {
                match read_discovery(&self.cfg.runtime_dir, pid)? {
                    Some(Discovery {
                        grpc_port: Some(port),
                        token,
                    }) => break (port, token),
                    // Written whole once the server runs: give a write in
                    // progress a moment, then say what is wrong.
                    Some(_)
                        if *portless.get_or_insert_with(tokio::time::Instant::now)
                            + Duration::from_secs(2)
                            < tokio::time::Instant::now() =>
                    {
                        return Err(HostError::Unavailable {
                            what: "emulator",
                            why: format!(
                                "its discovery file pid_{pid}.ini names no gRPC port, so it runs no \
                                 gRPC server (is `-ports` among the emulator args?); see {log}"
                            ),
                        });
                    }
                    _ => {}
                }
                if let Some(reason) = exit_rx.borrow().clone() {
                    return Err(exited(reason));
                }
                if started.elapsed() > timeout {
                    return Err(HostError::Unavailable {
                        what: "emulator",
                        why: format!(
                            "no discovery file pid_{pid}.ini appeared in {}/avd/running within {}s; see {log}",
                            self.cfg.runtime_dir.display(),
                            timeout.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let addr = grpc_address(port, pid)?.to_string();
            progress(format!("emulator gRPC on {addr}; waiting for boot"));
            let boot = async {
                let client = EmulatorClient::connect(&addr, token.as_deref()).await?;
                let mut said = 0;
                client
                    .wait_booted_from(started, timeout, |t| {
                        let secs = t.as_secs();
                        if secs >= said + 10 {
                            said = secs - secs % 10;
                            progress(format!("booting… {said}s"));
                        }
                    })
                    .await
            };
            // The backend's own exit watch: resolves if the emulator dies.
            let gone = self.exited();
            tokio::select! {
                res = boot => {
                    res.map_err(|e| match e {
                        HostError::Unavailable { what, why } => HostError::Unavailable {
                            what,
                            why: format!("{why}; see {log}"),
                        },
                        e => e,
                    })?;
                }
                reason = gone => return Err(exited(reason)),
            }
            progress("booted".to_owned());
            Ok(PhoneEndpoint {
                grpc_addr: addr,
                token,
            })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            if let Some(tx) = self.stop_tx.take() {
                let _ = tx.send(());
            }
            if let Some(mut rx) = self.exit_rx.take() {
                // Wait for the process to be gone (the task sends on exit).
                let _ = tokio::time::timeout(Duration::from_secs(30), rx.changed()).await;
            }
            Ok(())
        })
    }

    fn exited(&self) -> BoxFuture<'static, String> {
        let rx = self.exit_rx.clone();
        Box::pin(async move {
            let Some(mut rx) = rx else {
                return std::future::pending().await;
            };
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_avd_name_cannot_become_an_option_or_a_path() {
        for ok in ["pixel_7", "Pixel_8_API_35", "a", "x86.64-test"] {
            assert!(check_avd_name(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "needs an AVD name"),
            ("-qemu", "must start with"),
            (".hidden", "must start with"),
            ("../other", "may only contain"),
            ("pixel 7", "may only contain"),
            ("pixel\n-wipe-data", "may only contain"),
        ] {
            let why = check_avd_name(bad).expect_err(bad).to_string();
            assert!(why.contains(says), "{bad:?}: {why}");
        }
        assert!(check_avd_name(&"a".repeat(129)).is_err());
    }

    fn cfg() -> EmulatorConfig {
        EmulatorConfig {
            sdk_root: Some(PathBuf::from("/sdk")),
            avd: "pixel_7".into(),
            avd_home: None,
            packet_streamer: "unix:/var/lib/vphone/bt/pixel.sock".into(),
            log_path: PathBuf::from("/tmp/x.log"),
            runtime_dir: PathBuf::from("/var/lib/vphone/run/pixel"),
            boot_timeout: Duration::from_secs(300),
            extra_args: vec!["-memory".into(), "4096".into()],
        }
    }

    #[test]
    fn command_line_is_headless_loopback_authenticated_and_bluetooth_bridged() {
        let a = command_line(&cfg());
        let s = a.join(" ");
        assert!(s.starts_with("-avd pixel_7 -no-window"), "{s}");
        assert!(
            s.contains("-packet-streamer-endpoint unix:/var/lib/vphone/bt/pixel.sock"),
            "{s}"
        );
        assert!(s.contains("-grpc-use-token"), "{s}");
        assert!(s.contains("-accel on"), "{s}");
        // Never `-grpc PORT`, which would listen on every interface.
        assert!(!a.iter().any(|x| x == "-grpc"), "{s}");
        assert!(s.ends_with("-memory 4096"), "{s}");
    }

    #[test]
    fn sdk_discovery_explains_what_is_missing() {
        let none = |_: &str| None;
        let e = find_sdk(&none).unwrap_err().to_string();
        assert!(e.contains("ANDROID_SDK_ROOT") && e.contains("sim"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let env = |k: &str| (k == "ANDROID_HOME").then(|| root.clone());
        let e = find_sdk(&env).unwrap_err().to_string();
        assert!(e.contains("sdkmanager emulator"), "{e}");
        std::fs::create_dir_all(dir.path().join("emulator")).unwrap();
        std::fs::write(dir.path().join("emulator/emulator"), "").unwrap();
        assert_eq!(find_sdk(&env).unwrap(), dir.path());
    }

    /// A runtime dir as the emulator leaves it: `avd/running` made 0700
    /// by the emulator, the file written with its umask.
    fn runtime_with_file(mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tmp.path().join("run").join("pixel");
        private_dir(&runtime).unwrap();
        let running = runtime.join("avd/running");
        std::fs::create_dir_all(&running).unwrap();
        for d in [runtime.join("avd"), running.clone()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let file = running.join("pid_4242.ini");
        std::fs::write(
            &file,
            "port.serial=5554\nport.adb=5555\navd.name=pixel_7\ngrpc.port=8554\ngrpc.token=s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        (tmp, runtime)
    }

    #[test]
    fn discovery_file_gives_port_and_token_from_the_private_runtime_dir() {
        let (_tmp, runtime) = runtime_with_file(0o600);
        assert_eq!(
            read_discovery(&runtime, 4242).unwrap(),
            Some(Discovery {
                grpc_port: Some(8554),
                token: Some("s3cr3t".into())
            })
        );
        assert_eq!(read_discovery(&runtime, 1).unwrap(), None, "not there yet");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&runtime).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // The emulator is told to write there, and only there.
        let env = cfg().runtime_dir;
        assert_eq!(env, PathBuf::from("/var/lib/vphone/run/pixel"));
    }

    #[test]
    fn a_discovery_file_others_could_have_written_is_never_used() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, runtime) = runtime_with_file(0o666);
        let e = read_discovery(&runtime, 4242).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Denied, "{e}");
        assert!(e.to_string().contains("may be written by others"), "{e}");

        let (_tmp, runtime) = runtime_with_file(0o600);
        let running = runtime.join("avd/running");
        std::fs::set_permissions(&running, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = read_discovery(&runtime, 4242).unwrap_err();
        assert!(e.to_string().contains("avd/running may be written"), "{e}");

        // A planted symlink to a file elsewhere.
        let (tmp, runtime) = runtime_with_file(0o600);
        let elsewhere = tmp.path().join("planted.ini");
        std::fs::write(&elsewhere, "grpc.port=9999\n").unwrap();
        let link = runtime.join("avd/running/pid_77.ini");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = read_discovery(&runtime, 77).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");

        // An existing runtime dir left open is closed again at start.
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&runtime).unwrap();
        let mode = std::fs::metadata(&runtime).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn missing_kvm_is_explained() {
        let e = check_kvm(Path::new("/nonexistent/kvm"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("enable hardware virtualization"), "{e}");
    }
}
