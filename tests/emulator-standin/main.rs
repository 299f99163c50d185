//! A stand-in for the Android Emulator, for tests: it keeps the emulator's
//! process contract at every point vphone's emulator backend touches, so
//! that backend runs in every test run on machines that cannot boot
//! Android. It is not shipped with the host.
//!
//! What it does, and where the real emulator's behaviour is documented:
//!
//! - **Command line.** Single-dash flags, `-avd NAME` or `@NAME`; an
//!   unknown flag ends it with an error and exit status 1 before anything
//!   starts (the emulator's option table, `android/cmdline-options.h` in
//!   AOSP `external/qemu`, and its launcher `android/emulator/main-emulator.cpp`).
//! - **AVDs.** Found as `<ANDROID_AVD_HOME>/<name>.ini` (`path=` names the
//!   `<name>.avd` directory; `ANDROID_USER_HOME/avd`, then
//!   `ANDROID_SDK_HOME/.android/avd`, then `~/.android/avd` when unset), the
//!   screen from its `config.ini` (`hw.lcd.width`, `hw.lcd.height`,
//!   `hw.lcd.density`); an unknown name is refused with "Unknown AVD name"
//!   (developer.android.com, "Start the emulator from the command line";
//!   `ANDROID_AVD_HOME` in "Environment variables").
//! - **gRPC.** Without `-grpc PORT` it listens on `[::1]` only, from port
//!   8554 up, and requires `authorization: Bearer <token>` on every call,
//!   answering `UNAUTHENTICATED` otherwise; `-grpc PORT` listens on every
//!   interface without authentication unless `-grpc-use-token` is given
//!   (`qemu_setup_grpc` in `android-qemu2-glue/qemu-setup.cpp`; the token
//!   check in `android/android-grpc/.../secure/BasicTokenAuth.cpp`). JWT
//!   (`-grpc-use-jwt`) is not modelled: vphone never asks for it, and the
//!   stand-in refuses it rather than pretend.
//! - **Discovery.** `pid_<PID>.ini` in `$XDG_RUNTIME_DIR/avd/running/`
//!   with `port.serial`, `port.adb`, `avd.name`, `avd.dir`, `avd.id`,
//!   `cmdline`, `grpc.port` and `grpc.token`, removed on a clean exit
//!   (`EmulatorAdvertisement` and `ConfigDirs::getDiscoveryDirectory` in
//!   AOSP `external/qemu`; the discovery readers in Android Studio and in
//!   `google/android-emulator-container-scripts`).
//! - **Boot.** `getStatus` says `booted: false` until the boot is done.
//! - **Bluetooth.** With `-packet-streamer-endpoint HOST:PORT` its chip
//!   attaches to netsim's `PacketStreamer` there, named after the AVD
//!   (see `chip.rs`; netsim's `packet_streamer.proto` and `startup.proto`).
//! - **Log.** `LEVEL   | message` lines on standard output.
//! - **One instance per AVD.** A second launch of a running AVD fails,
//!   unless every instance runs with `-read-only` (the emulator's
//!   `multiinstance.lock` in the AVD directory).
//! - **Exit.** SIGTERM or SIGINT: removes the discovery file and exits 0.
//!
//! Its screen, input and sensors are vphone's sim phone; the stand-in is
//! about the process contract. The AVD's `config.ini` may also carry
//! `standin.*` keys that make it misbehave on purpose (see
//! [`avd::Behaviour`]): boot slowly or never, exit early, crash after the
//! boot, advertise a wrong token, leave its discovery file writable by
//! others.

mod args;
mod avd;
mod chip;
mod log;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use sim_phone::{SimPhone, SimPhoneConfig};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Where the file names of the guest-HCI port go in the AVD directory.
const HCI_PORT_FILE: &str = "standin-hci.port";
/// How many launches of this AVD there were (for `standin.crash_launches`).
const LAUNCHES_FILE: &str = "standin.launches";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match args::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("please use -help for a list of valid options");
            return ExitCode::from(1);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let home = avd::home(&env);
    if opts.version {
        println!("Android emulator version 35.0.0.0 (vphone test stand-in)");
        return ExitCode::SUCCESS;
    }
    if opts.list_avds {
        for name in avd::list(&home) {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(name) = opts.avd.clone() else {
        log::fatal(
            "No AVD specified. Use '@foo' or '-avd foo' to launch a virtual device named 'foo'",
        );
        return ExitCode::from(1);
    };
    if opts.use_jwt {
        log::fatal("-grpc-use-jwt: JWT authentication is not modelled by this stand-in");
        return ExitCode::from(1);
    }
    let found = avd::find(&home, &name).and_then(|a| {
        let b = avd::Behaviour::from_config(&a.config)?;
        Ok((a, b))
    });
    let (avd, behaviour) = match found {
        Ok(x) => x,
        Err(e) => {
            log::error(&e);
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let res = match runtime {
        Ok(rt) => rt.block_on(run(opts, avd, behaviour)),
        Err(e) => Err(e.into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::fatal(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// The directory the discovery file goes in: `$XDG_RUNTIME_DIR/avd/running`
/// (else `/tmp/android-$USER/avd/running`).
fn discovery_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(format!(
            "/tmp/android-{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
        )),
    }
    .join("avd")
    .join("running")
}

/// Counts this launch of the AVD; returns its number (1 for the first).
fn count_launch(dir: &Path) -> Result<u32> {
    let file = dir.join(LAUNCHES_FILE);
    let n = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(&file, n.to_string()).with_context(|| format!("writing {}", file.display()))?;
    Ok(n)
}

/// Binds the gRPC port: `-grpc PORT` on every interface; else the first
/// free port from 8554 (the console port + 3000) on 127.0.0.1, or on
/// `[::1]` where 127.0.0.1 has it taken.
fn bind_grpc(fixed: Option<u16>) -> Result<std::net::TcpListener> {
    if let Some(port) = fixed {
        return std::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
            .with_context(|| format!("cannot bind gRPC port {port}"));
    }
    for port in 8554..8554 + 1000 {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            if let Ok(l) = std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
                return Ok(l);
            }
        }
    }
    anyhow::bail!("no free gRPC port from 8554 to 9553")
}

/// 64 random bytes in base64 (88 characters): the emulator's token.
fn emulator_token() -> Result<String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Writes the discovery file as the emulator does: in one go, then
/// `chmod` to `mode` (the emulator's is 01600), its directory made 0700.
fn advertise(path: &Path, lines: &[(&str, String)], mode: u32) -> Result<()> {
    let dir = path.parent().context("discovery path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("closing {}", dir.display()))?;
    let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

async fn run(opts: args::Options, avd: avd::Avd, b: avd::Behaviour) -> Result<()> {
    let started = Instant::now();
    let launch = count_launch(&avd.dir)?;
    log::info(&format!(
        "Android emulator version 35.0.0.0 (vphone test stand-in), AVD '{}', launch {launch}",
        avd.name
    ));
    if b.exit_early {
        anyhow::bail!("the AVD's system image is missing (standin.exit_early)");
    }
    // One instance per AVD unless -read-only, held until the process ends.
    let lock = std::fs::File::create(avd.dir.join("multiinstance.lock"))?;
    if !opts.read_only && lock.try_lock().is_err() {
        anyhow::bail!(
            "Another emulator instance is running. Please close it or run all emulators with \
             -read-only flag."
        );
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let (width, height, dpi) = avd::screen(&avd.config);
    // Without `-grpc PORT` token and JWT authentication are both on; with
    // it, only what `-grpc-use-*` asks for. The token is accepted only with
    // `-grpc-use-token`; JWTs never (no keys are ever published), so
    // without the token flag no call is accepted.
    let token = emulator_token()?;
    let auth = opts.grpc_port.is_none() || opts.use_token || opts.use_jwt;
    let phone = SimPhone::start(SimPhoneConfig {
        width,
        height,
        dpi,
        auth_token: auth.then(|| token.clone()),
    })?;
    phone.set_booted(false);

    let listener = bind_grpc(opts.grpc_port)?;
    let grpc = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let serving = phone.clone();
    tokio::spawn(async move {
        let res = match TcpListener::from_std(listener) {
            Ok(l) => serving.serve(l, std::future::pending()).await,
            Err(e) => Err(host_core::HostError::io("registering the gRPC port", e)),
        };
        if let Err(e) = res {
            log::fatal(&format!("gRPC server failed: {e}"));
            std::process::exit(1);
        }
    });
    log::info(&format!(
        "Started GRPC server at {grpc}, security: {}, auth: {}",
        if opts.grpc_port.is_some() {
            "Insecure"
        } else {
            "Local"
        },
        if opts.use_token {
            "+token"
        } else if auth {
            "+jwt"
        } else {
            "none"
        }
    ));

    if let Some(endpoint) = opts.packet_streamer.clone() {
        let guest = TcpListener::bind("127.0.0.1:0").await?;
        let port = guest.local_addr()?.port();
        std::fs::write(avd.dir.join(HCI_PORT_FILE), port.to_string())?;
        log::info(&format!("guest Bluetooth HCI (H4) on 127.0.0.1:{port}"));
        tokio::spawn(chip::run(endpoint, avd.name.clone(), guest));
    }

    let pid = std::process::id();
    let running = discovery_dir();
    let discovery = running.join(format!("pid_{pid}.ini"));
    let private = running.join(pid.to_string());
    let serial = 5554;
    let mut lines = vec![
        ("port.serial", serial.to_string()),
        ("port.adb", (serial + 1).to_string()),
        ("emulator.build", "0".to_owned()),
        ("emulator.version", "35.0.0.0".to_owned()),
        ("avd.id", avd.name.clone()),
        ("avd.dir", avd.dir.display().to_string()),
        ("cmdline", opts.all.join(" ")),
        (
            "avd.name",
            avd.config
                .get("avd.ini.displayname")
                .cloned()
                .unwrap_or_else(|| avd.name.clone()),
        ),
        ("grpc.port", grpc.port().to_string()),
    ];
    if opts.use_token {
        let advertised = if b.wrong_token {
            emulator_token()?
        } else {
            token
        };
        lines.push(("grpc.token", advertised));
    }
    if opts.grpc_port.is_none() || opts.use_jwt {
        // Where clients would publish their JWT keys; none ever are.
        let jwks = private.join("jwks").join(format!("{pid:08x}-standin"));
        std::fs::create_dir_all(&jwks)?;
        lines.push((
            "grpc.jwk_active",
            jwks.join("active.jwk").display().to_string(),
        ));
        lines.push(("grpc.jwks", jwks.display().to_string()));
    }
    advertise(&discovery, &lines, b.discovery_mode)?;
    log::info(&format!("Advertising in: {}", discovery.display()));
    let shut_down = || {
        log::info("Shutting down: signal received");
        let _ = std::fs::remove_file(&discovery);
        let _ = std::fs::remove_dir_all(&private);
        Ok(())
    };

    let booting = async {
        match b.boot {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = booting => {}
        _ = term.recv() => return shut_down(),
        _ = int.recv() => return shut_down(),
    }
    phone.set_booted(true);
    log::info(&format!(
        "Boot completed in {} ms",
        started.elapsed().as_millis()
    ));

    let crash = b
        .crash_after_boot
        .filter(|_| b.crash_launches.is_none_or(|n| launch <= n));
    let crashing = async {
        match crash {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = crashing => {
            log::fatal("emulator: crashed (standin.crash_after_boot_ms)");
            std::process::abort();
        }
        _ = term.recv() => shut_down(),
        _ = int.recv() => shut_down(),
    }
}
