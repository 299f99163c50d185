//! Bluetooth benchmark (not a timed test): the raw HCI passthrough measured
//! with real Bluetooth stacks (bumble), on the testbed of `tests/bumble/`.
//!
//! `cargo bench -p vphone-tests --bench bluetooth` needs the release
//! binaries (`cargo build --release --bin vphone-host --bin vphone-companion
//! --bin vphonectl`; the bench does not build them, it stops with that
//! command when one is missing and warns when one is older than the
//! sources), the venv of `scripts/setup`, and root (`ip netns`, `tc`) for
//! part 2. It prints markdown tables:
//!
//! 1. `bumble-bench` paced GATT ping round trips and L2CAP throughput,
//!    four setups interleaved run by run: direct (the central on controller
//!    B over H4/TCP), direct over netsim (the central on controller B's own
//!    netsim gRPC port: the relayed setups' central transport, no relay),
//!    through vphone (host + QUIC + companion lending controller B) and
//!    through `bumble-hci-bridge` (the Python reference relay).
//! 2. scan -> connect -> pair -> encrypted read (`central.py` through vphone
//!    against `peripheral.py`) with 0, 50 and 100 ms of added round trip
//!    between host and handset: the handset side (controllers, peripheral,
//!    companion) runs in a network namespace behind a veth pair, delayed with
//!    `tc netem` on both ends, or, where the kernel has no netem, by a
//!    userspace UDP delay line on the same veth path (the bench says which).
//!    Passkey Entry (the default) and Numeric Comparison. The goal is timed
//!    from the initialised stack starting its scan to the encrypted value;
//!    the time from the central's process start (Python start-up and the
//!    stack's power-on added) is printed beside it.
//! 3. A PASS/MISS line per goal.
//!
//! Environment: `VPHONE_BENCH_QUICK=1` (one run per setup, RTTs 0 and
//! 100 ms), `VPHONE_BENCH_RUNS=N` (default 3), `VPHONE_BENCH_RTTS=0,50,100`,
//! `VPHONE_BENCH_PARTS=relays,flow`, `VPHONE_BENCH_DELAY=auto|netem|userspace`,
//! `VPHONE_BENCH_KEEP=1` (keep the logs; they are kept anyway when a run
//! failed).
//!
//! A run that fails (a child's output not matched, a timeout) is a failed
//! run in the tables, with its reason, and the bench goes on. Every child
//! is killed when the bench ends, and the namespace and veth pair are
//! deleted, also on a panic, Ctrl-C or SIGTERM.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::process::{Child, Command};
use vphone_tests::bumble::{PERIPHERAL, SECRET, Script, free_port, workspace};
use vphone_tests::flat_recording;

/// The root namespace's end of the veth pair.
const ROOT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The handset namespace's end.
const NS_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const PHONE: &str = "phone-1";
/// Central milestones reported for the flow, in order.
const MILESTONES: [&str; 5] = ["powered", "found", "connected", "paired", "value"];
const PAIRINGS: [&str; 2] = ["passkey", "numeric"];

// ---------------------------------------------------------------- settings

#[derive(Debug)]
struct Config {
    runs: usize,
    rtts: Vec<u32>,
    relays: bool,
    flow: bool,
    delay: String,
    keep: bool,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let quick = var("VPHONE_BENCH_QUICK").is_some_and(|v| v != "0");
        let runs = match var("VPHONE_BENCH_RUNS") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("VPHONE_BENCH_RUNS={v}: a positive number"))?,
            None if quick => 1,
            None => 3,
        };
        let rtts = match var("VPHONE_BENCH_RTTS") {
            Some(v) => v
                .split(',')
                .map(|x| x.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("VPHONE_BENCH_RTTS={v}: comma-separated milliseconds"))?,
            None if quick => vec![0, 100],
            None => vec![0, 50, 100],
        };
        let parts = var("VPHONE_BENCH_PARTS").unwrap_or_else(|| "relays,flow".into());
        let delay = var("VPHONE_BENCH_DELAY").unwrap_or_else(|| "auto".into());
        if !["auto", "netem", "userspace"].contains(&delay.as_str()) {
            return Err(format!(
                "VPHONE_BENCH_DELAY={delay}: auto, netem or userspace"
            ));
        }
        Ok(Self {
            runs,
            rtts,
            relays: parts.contains("relays"),
            flow: parts.contains("flow"),
            delay,
            keep: var("VPHONE_BENCH_KEEP").is_some_and(|v| v != "0"),
        })
    }
}

/// The programs the bench starts.
#[derive(Debug)]
struct Bins {
    host: PathBuf,
    companion: PathBuf,
    ctl: PathBuf,
    python: PathBuf,
    bench: PathBuf,
    bridge: PathBuf,
    notes: Vec<String>,
}

const BUILD: &str =
    "cargo build --release --bin vphone-host --bin vphone-companion --bin vphonectl";

impl Bins {
    fn find() -> Result<Self, String> {
        // The bench runs from target/release/deps; the binaries sit one up.
        let release = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
            .filter(|d| d.ends_with("release"))
            .unwrap_or_else(|| workspace().join("target/release"));
        let mut notes = Vec::new();
        let mut bin = |name: &str, crates: &[&str]| -> Result<PathBuf, String> {
            let path = release.join(name);
            let meta = std::fs::metadata(&path).map_err(|_| {
                format!(
                    "{} is missing: build the release binaries first: {BUILD}",
                    path.display()
                )
            })?;
            if let (Ok(built), Some((src, path_src))) = (meta.modified(), newest_source(crates))
                && built < src
            {
                notes.push(format!(
                    "WARNING: {} is older than {} (rebuild: {BUILD})",
                    path.display(),
                    path_src.display()
                ));
            }
            Ok(path)
        };
        // The source dirs each binary is built from (the host's demo embeds
        // the companion, so the host needs them all).
        let handset = [
            "bt-raw",
            "device-bridge",
            "media",
            "mobile-client",
            "sensor-proto",
        ];
        let all = [
            "bt-raw",
            "device-bridge",
            "media",
            "mobile-client",
            "sensor-proto",
            "cloud-host",
        ];
        let (host, companion, ctl) = (
            bin("vphone-host", &all)?,
            bin("vphone-companion", &handset)?,
            bin("vphonectl", &all)?,
        );
        let python = std::env::var_os("VPHONE_PYTHON")
            .map_or_else(|| workspace().join(".venv/bin/python"), PathBuf::from);
        if !python.exists() {
            return Err(format!(
                "{} is missing: run scripts/setup (it creates .venv with bumble), or set VPHONE_PYTHON",
                python.display()
            ));
        }
        let venv_bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
        let (bench, bridge) = (
            venv_bin.join("bumble-bench"),
            venv_bin.join("bumble-hci-bridge"),
        );
        for p in [&bench, &bridge] {
            if !p.exists() {
                return Err(format!("{} is missing: run scripts/setup", p.display()));
            }
        }
        Ok(Self {
            host,
            companion,
            ctl,
            python,
            bench,
            bridge,
            notes,
        })
    }
}

/// The newest Rust, proto or manifest file of `crates`.
fn newest_source(crates: &[&str]) -> Option<(SystemTime, PathBuf)> {
    fn walk(dir: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, best);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "proto" || x == "toml")
                && let Ok(t) = e.metadata().and_then(|m| m.modified())
                && best.as_ref().is_none_or(|(b, _)| t > *b)
            {
                *best = Some((t, p));
            }
        }
    }
    let mut best = None;
    for c in crates {
        walk(&workspace().join(c), &mut best);
    }
    best
}

// ---------------------------------------------------------------- processes

/// A child process whose stdout and stderr go to a log file; killed on drop.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &str,
        argv: &[String],
        dir: &Path,
        env: &[(&str, Option<&str>)],
        log: &Path,
    ) -> Result<Self, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {name} ({}): {e}", argv[0]))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// How it ended, if it did.
    fn ended(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => Ok(s.code()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(_) => Err(format!("{} still running after {timeout:?}", self.name)),
        }
    }

    /// The log without ANSI colours.
    fn text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last lines of the log, for error messages.
    fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
        format!("{} (log {})", tail, self.log.display())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        if self.ended().is_some() {
            return;
        }
        signal(self.pid(), "TERM");
        if self.wait(grace).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.wait(Duration::from_secs(2)).await;
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.wait(Duration::from_secs(2)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    if pid != 0 {
        let _ = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether something in `pid`'s network namespace listens on TCP `port`
/// (read from /proc, so nothing connects to the one-host bumble servers).
fn listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.len() > 3
                    && c[3] == "0A"
                    && c[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

/// Polls `ready` until it holds, the process ends or `timeout` passes.
async fn ready(
    what: &str,
    timeout: Duration,
    p: &mut Proc,
    mut ready: impl FnMut(&Proc) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready(p) {
            return Ok(());
        }
        if let Some(status) = p.ended() {
            return Err(format!(
                "{} ended ({status}) before {what}: {}",
                p.name,
                p.tail(4)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} within {timeout:?}: {}", p.tail(4)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a short command to completion; its stdout, or an error with stderr.
fn sh(argv: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn free_udp(ip: IpAddr) -> Result<SocketAddr, String> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("a free UDP port on {ip}: {e}"))
}

/// Two distinct free TCP ports.
fn two_ports() -> (u16, u16) {
    let a = free_port();
    loop {
        let b = free_port();
        if b != a {
            return (a, b);
        }
    }
}

// ---------------------------------------------------------------- testbed

/// Shared by every run.
#[derive(Debug)]
struct Ctx {
    bins: Bins,
    scripts: PathBuf,
    flat: PathBuf,
}

/// `argv` run inside the namespace when there is one.
fn in_ns(ns: Option<&Netns>, argv: Vec<String>) -> Vec<String> {
    match ns {
        Some(ns) => ["ip", "netns", "exec", &ns.name]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(argv)
            .collect(),
        None => argv,
    }
}

/// bumble's two linked virtual controllers, fresh ports; (process, A, B).
/// Two bumble controllers on one virtual radio: A on H4/TCP, B on H4/TCP
/// or, with `b_netsim`, on a netsim `PacketStreamer` port of its own.
async fn controllers(
    ctx: &Ctx,
    ns: Option<&Netns>,
    dir: &Path,
    b_netsim: bool,
) -> Result<(Proc, u16, u16), String> {
    let (a, b) = two_ports();
    let argv = in_ns(
        ns,
        vec![
            ctx.bins.python.display().to_string(),
            "-m".into(),
            "bumble.apps.controllers".into(),
            format!("tcp-server:127.0.0.1:{a}"),
            if b_netsim {
                format!("android-netsim:127.0.0.1:{b},mode=controller")
            } else {
                format!("tcp-server:127.0.0.1:{b}")
            },
        ],
    );
    let mut p = Proc::spawn("controllers", &argv, dir, &[], &dir.join("controllers.log"))?;
    let pid = p.pid();
    ready(
        "controllers listening",
        Duration::from_secs(20),
        &mut p,
        |_| listening(pid, a) && listening(pid, b),
    )
    .await?;
    Ok((p, a, b))
}

/// A `vphone-host serve` with its own data dir.
#[derive(Debug)]
struct Host {
    proc: Proc,
    data: PathBuf,
    netsim: SocketAddr,
    ctl: PathBuf,
}

impl Host {
    async fn start(
        ctx: &Ctx,
        dir: &Path,
        quic: SocketAddr,
        public: SocketAddr,
    ) -> Result<Self, String> {
        let data = dir.join("host-data");
        let netsim = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let operator = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let argv: Vec<String> = vec![
            ctx.bins.host.display().to_string(),
            "serve".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--quic-listen".into(),
            quic.to_string(),
            "--operator-listen".into(),
            operator.to_string(),
            "--netsim-listen".into(),
            netsim.to_string(),
            "--public-addr".into(),
            public.to_string(),
        ];
        let proc = Proc::spawn("vphone-host", &argv, dir, &[], &dir.join("host.log"))?;
        let mut host = Self {
            proc,
            data,
            netsim,
            ctl: ctx.bins.ctl.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(out) = host.ctl(&["--json", "phone", "list"]).await
                && let Ok(Value::Array(phones)) = serde_json::from_str::<Value>(&out)
                && phones
                    .iter()
                    .any(|p| p["name"] == PHONE && p["state"] == "running")
            {
                return Ok(host);
            }
            if let Some(s) = host.proc.ended() {
                return Err(format!("vphone-host ended ({s}): {}", host.proc.tail(5)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{PHONE} not running within 60 s: {}",
                    host.proc.tail(5)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `vphonectl --data-dir D args...`; its stdout.
    async fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let run = Command::new(&self.ctl)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .map_err(|_| format!("vphonectl {} timed out", args.join(" ")))?
            .map_err(|e| format!("vphonectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "vphonectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    async fn sessions(&self) -> Vec<Value> {
        match self.ctl(&["--json", "session", "list"]).await {
            Ok(out) => match serde_json::from_str(&out) {
                Ok(Value::Array(v)) => v,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Enrolls handset `name` into `config`, as an operator and a person would.
    async fn enroll(&self, ctx: &Ctx, config: &Path, name: &str) -> Result<(), String> {
        let out = self
            .ctl(&[
                "handset", "enroll", "--name", name, "--phone", PHONE, "--quiet",
            ])
            .await?;
        let string = out
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("vphone://"))
            .ok_or(format!("no enrollment string in {out:?}"))?;
        let out = Command::new(&ctx.bins.companion)
            .arg("--config-dir")
            .arg(config)
            .args(["enroll", string, "--name", name])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("vphone-companion enroll: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "vphone-companion enroll: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// A companion lending controller B (`radio_port`) to phone-1, started and
/// waited for until the host reports its new session with the radio lent;
/// the session's JSON (with the host's QUIC RTT estimate).
async fn lend(
    ctx: &Ctx,
    host: &Host,
    ns: Option<&Netns>,
    config: &Path,
    radio_port: u16,
    dir: &Path,
) -> Result<(Proc, Value), String> {
    let before: HashSet<String> = host
        .sessions()
        .await
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let argv = in_ns(
        ns,
        vec![
            ctx.bins.companion.display().to_string(),
            "--config-dir".into(),
            config.display().to_string(),
            "connect".into(),
            "--headless".into(),
            "--phone".into(),
            PHONE.into(),
            // A phone lying still: the screen (and the video) stays quiet.
            "--sensors".into(),
            format!("replay:{}", ctx.flat.display()),
            "--radio".into(),
            format!("tcp:127.0.0.1:{radio_port}"),
        ],
    );
    let mut p = Proc::spawn(
        "vphone-companion",
        &argv,
        dir,
        &[],
        &dir.join("companion.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = host.sessions().await.into_iter().find(|s| {
            s["phone"] == PHONE
                && s["radio_lent"] == true
                && s["id"].as_str().is_some_and(|id| !before.contains(id))
        });
        if let Some(s) = fresh {
            return Ok((p, s));
        }
        if let Some(status) = p.ended() {
            return Err(format!("vphone-companion ended ({status}): {}", p.tail(4)));
        }
        if Instant::now() > deadline {
            return Err(format!("the radio was not lent within 20 s: {}", p.tail(4)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- part 1

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Direct,
    /// The central on the controller too, but over the controller's own
    /// netsim (gRPC) port: the central's transport of the relayed setups
    /// without a relay, so the ratio to it is what the relays add.
    DirectNetsim,
    Vphone,
    Bridge,
}

impl Setup {
    const ALL: [Self; 4] = [Self::Direct, Self::DirectNetsim, Self::Vphone, Self::Bridge];
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectNetsim => "direct over netsim",
            Self::Vphone => "vphone",
            Self::Bridge => "bumble-hci-bridge",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Ping,
    L2cap,
}

#[derive(Debug, Default)]
struct Measured {
    /// min, max, average (ms) from `@@@ RTTs`.
    rtt: Option<(f64, f64, f64)>,
    /// Per-packet RTTs (ms).
    rtts: Vec<f64>,
    /// Central send throughput, bytes/s.
    bps: Option<f64>,
}

#[derive(Debug)]
struct RelayRun {
    setup: Setup,
    scenario: Scenario,
    round: usize,
    result: Result<Measured, String>,
}

/// The number right after `key` in `line`.
fn num_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn parse_ping(text: &str) -> Option<Measured> {
    let line = text.lines().find(|l| l.contains("@@@ RTTs: min="))?;
    let rtt = (
        num_after(line, "min=")?,
        num_after(line, "max=")?,
        num_after(line, "average=")?,
    );
    let rtts = text
        .lines()
        .filter(|l| l.contains("<<< Received ACK ["))
        .filter_map(|l| num_after(l, ", RTT="))
        .collect();
    Some(Measured {
        rtt: Some(rtt),
        rtts,
        bps: None,
    })
}

fn parse_l2cap(text: &str) -> Option<Measured> {
    let line = text
        .lines()
        .find(|l| l.contains("@@@ Received ACK. Speed: average="))?;
    Some(Measured {
        bps: Some(num_after(line, "average=")?),
        ..Measured::default()
    })
}

async fn relay_run(
    ctx: &Ctx,
    host: &Host,
    config: &Path,
    setup: Setup,
    scenario: Scenario,
    dir: &Path,
) -> Result<Measured, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let b_netsim = setup == Setup::DirectNetsim;
    let (mut ctl, a, b) = controllers(ctx, None, dir, b_netsim).await?;
    let bench = ctx.bins.bench.display().to_string();
    let role = |args: &[&str], end: &[String]| -> Vec<String> {
        std::iter::once(bench.clone())
            .chain(args.iter().map(|s| (*s).to_owned()))
            .chain(end.iter().cloned())
            .collect()
    };
    let (periph_args, central_args, timeout): (&[&str], &[&str], u64) = match scenario {
        Scenario::Ping => (
            &["--scenario", "pong"],
            &["--scenario", "ping", "-c", "50", "--pace", "50"],
            40,
        ),
        Scenario::L2cap => (
            &["--mode", "l2cap-server", "--scenario", "receive"],
            &["--mode", "l2cap-client", "--scenario", "send", "-c", "200"],
            60,
        ),
    };
    let mut periph = Proc::spawn(
        "bench peripheral",
        &role(
            periph_args,
            &["peripheral".into(), format!("tcp-client:127.0.0.1:{a}")],
        ),
        dir,
        &[],
        &dir.join("peripheral.log"),
    )?;
    ready("advertising", Duration::from_secs(20), &mut periph, |p| {
        p.text().contains("Waiting for connection")
    })
    .await?;
    let mut relay = None;
    let transport = match setup {
        Setup::Direct => format!("tcp-client:127.0.0.1:{b}"),
        Setup::DirectNetsim => format!("android-netsim:127.0.0.1:{b},name=bench"),
        Setup::Vphone => {
            let (p, _) = lend(ctx, host, None, config, b, dir).await?;
            relay = Some(p);
            format!("android-netsim:{},name={PHONE}", host.netsim)
        }
        Setup::Bridge => {
            let port = free_port();
            let argv = vec![
                ctx.bins.bridge.display().to_string(),
                format!("android-netsim:127.0.0.1:{port},mode=controller"),
                format!("tcp-client:127.0.0.1:{b}"),
            ];
            // Its netsim.ini goes to TMPDIR: the run's dir, not /tmp.
            let tmp = dir.display().to_string();
            let env = [("TMPDIR", Some(tmp.as_str())), ("XDG_RUNTIME_DIR", None)];
            let mut p = Proc::spawn(
                "bumble-hci-bridge",
                &argv,
                dir,
                &env,
                &dir.join("bridge.log"),
            )?;
            let pid = p.pid();
            ready("bridge listening", Duration::from_secs(20), &mut p, |_| {
                listening(pid, port)
            })
            .await?;
            relay = Some(p);
            format!("android-netsim:127.0.0.1:{port},name=bench")
        }
    };
    let mut central = Proc::spawn(
        "bench central",
        &role(central_args, &["central".into(), transport]),
        dir,
        &[],
        &dir.join("central.log"),
    )?;
    let code = central.wait(Duration::from_secs(timeout)).await;
    let text = central.text();
    let parsed = match scenario {
        Scenario::Ping => parse_ping(&text),
        Scenario::L2cap => parse_l2cap(&text),
    };
    // The bench peripheral leaves by itself about 1 s after the central.
    if periph.wait(Duration::from_secs(4)).await.is_err() {
        periph.kill().await;
    }
    if let Some(mut r) = relay {
        r.stop(Duration::from_secs(5)).await;
    }
    ctl.kill().await;
    match (code, parsed) {
        (Ok(Some(0)), Some(m)) => Ok(m),
        (Ok(code), None) => Err(format!(
            "central exited ({code:?}) without its result line: {}",
            central.tail(3)
        )),
        (Ok(code), Some(_)) => Err(format!("central exit code {code:?}: {}", central.tail(3))),
        (Err(e), _) => Err(format!("{e}: {}", central.tail(3))),
    }
}

// ---------------------------------------------------------------- part 2

/// The handset's network namespace and its veth pair; deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
    veth: String,
    peer: String,
}

impl Netns {
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let subnet = format!("{ROOT_IP}/24");
        if !sh(&["ip", "-o", "addr", "show", "to", &subnet])?
            .trim()
            .is_empty()
        {
            return Err(format!(
                "{subnet} is already in use on this machine (`ip -o addr show to {subnet}`): \
                 a namespace left by another run? delete it first"
            ));
        }
        let ns = Self {
            name: format!("vphb-{pid}"),
            veth: format!("vphb{pid}a"),
            peer: format!("vphb{pid}b"),
        };
        sh(&["ip", "netns", "add", &ns.name])?;
        // From here on, dropping `ns` removes whatever was made.
        let (n, v, p) = (ns.name.as_str(), ns.veth.as_str(), ns.peer.as_str());
        let root = format!("{ROOT_IP}/24");
        let inner = format!("{NS_IP}/24");
        sh(&["ip", "link", "add", v, "type", "veth", "peer", "name", p])?;
        sh(&["ip", "link", "set", p, "netns", n])?;
        sh(&["ip", "addr", "add", &root, "dev", v])?;
        sh(&["ip", "link", "set", v, "up"])?;
        sh(&["ip", "-n", n, "addr", "add", &inner, "dev", p])?;
        sh(&["ip", "-n", n, "link", "set", p, "up"])?;
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `tc qdisc <verb> ... netem delay <one_way>` on both ends.
    fn netem(&self, verb: &str, one_way_us: u64) -> Result<(), String> {
        let delay = format!("{one_way_us}us");
        sh(&[
            "tc", "qdisc", verb, "dev", &self.veth, "root", "netem", "delay", &delay,
        ])?;
        sh(&[
            "ip", "netns", "exec", &self.name, "tc", "qdisc", verb, "dev", &self.peer, "root",
            "netem", "delay", &delay,
        ])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = sh(&["ip", "link", "del", &self.veth]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A userspace UDP delay line: datagrams from clients to `listen` go to
/// `upstream`, and replies come back, each held `one_way` in each direction
/// (std threads and `thread::sleep`, sub-millisecond precise, order kept).
#[derive(Debug)]
struct DelayLine {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

type Datagram = (Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>);

impl DelayLine {
    fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way_us: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let tick = Some(Duration::from_millis(100));
        let front = Arc::new(UdpSocket::bind(listen)?);
        front.set_read_timeout(tick)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Datagram>();
        let s = stop.clone();
        let sender = std::thread::spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok((due, socket, to, data)) => {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let _ = socket.send_to(&data, to);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if !s.load(Ordering::Relaxed) => {}
                    Err(_) => break,
                }
            }
        });
        let s = stop.clone();
        let listener = std::thread::spawn(move || {
            let delay =
                |d: &AtomicU64| Instant::now() + Duration::from_micros(d.load(Ordering::Relaxed));
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut threads = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let due = delay(&one_way_us);
                let back = if let Some(b) = backs.get(&client) {
                    b.clone()
                } else {
                    // One upstream socket per client, as a NAT would.
                    let Ok(b) = UdpSocket::bind(SocketAddr::new(upstream.ip(), 0)) else {
                        continue;
                    };
                    let _ = b.set_read_timeout(tick);
                    let b = Arc::new(b);
                    let (b2, f2, tx2, s2, d2) = (
                        b.clone(),
                        front.clone(),
                        tx.clone(),
                        s.clone(),
                        one_way_us.clone(),
                    );
                    threads.push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !s2.load(Ordering::Relaxed) {
                            if let Ok((n, from)) = b2.recv_from(&mut buf)
                                && from == upstream
                            {
                                let _ =
                                    tx2.send((delay(&d2), f2.clone(), client, buf[..n].to_vec()));
                            }
                        }
                    }));
                    backs.insert(client, b.clone());
                    b
                };
                let _ = tx.send((due, back, upstream, buf[..n].to_vec()));
            }
            for t in threads {
                let _ = t.join();
            }
        });
        Ok(Self {
            addr,
            stop,
            threads: vec![listener, sender],
        })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How the round trip is added between host and handset.
#[derive(Debug)]
enum Delay {
    Netem,
    Userspace {
        one_way_us: Arc<AtomicU64>,
        /// In front of the host's QUIC port; the handsets dial it.
        _line: DelayLine,
        /// The same delay in front of the probe's echo.
        probe: DelayLine,
    },
}

/// A UDP echo in the root namespace (the probe's far end); stops on drop.
#[derive(Debug)]
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start(ip: IpAddr) -> Result<Self, String> {
        let s = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| format!("echo socket: {e}"))?;
        let addr = s.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PINGER: &str = r"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
target = (sys.argv[1], int(sys.argv[2]))
try:  # warm-up (neighbour discovery, first-packet costs), not counted
    s.sendto(b'warm-up', target)
    s.recvfrom(64)
except socket.timeout:
    pass
out = []
for i in range(int(sys.argv[3])):
    t = time.perf_counter()
    s.sendto(b'probe %d' % i, target)
    try:
        s.recvfrom(64)
        out.append('%.3f' % ((time.perf_counter() - t) * 1000))
    except socket.timeout:
        out.append('lost')
    time.sleep(0.02)
print(' '.join(out))
";

/// UDP round trips (ms) from inside the namespace to `target` in the root one.
async fn probe(ctx: &Ctx, ns: &Netns, target: SocketAddr) -> Result<Vec<f64>, String> {
    let run = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&ctx.bins.python)
        .args([
            "-c",
            PINGER,
            &target.ip().to_string(),
            &target.port().to_string(),
            "10",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| "the probe timed out".to_owned())?
        .map_err(|e| format!("probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.is_empty() {
        return Err(format!(
            "probe printed {text:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(v)
}

#[derive(Debug)]
struct Flow {
    /// Seconds from central start, per MILESTONES.
    t: [f64; 5],
    /// The host's QUIC RTT estimate for the companion's session (ms).
    quic_rtt_ms: Option<f64>,
}

#[derive(Debug)]
struct FlowRun {
    rtt: u32,
    pairing: &'static str,
    result: Result<Flow, String>,
}

async fn flow_run(
    ctx: &Ctx,
    host: &Host,
    ns: &Netns,
    config: &Path,
    pairing: &str,
    dir: &Path,
) -> Result<Flow, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (mut ctl, a, b) = controllers(ctx, Some(ns), dir, false).await?;
    let mut args = in_ns(
        Some(ns),
        vec![
            ctx.bins.python.display().to_string(),
            "peripheral.py".into(),
            "--transport".into(),
            format!("tcp-client:127.0.0.1:{a}"),
            "--pairing".into(),
            pairing.into(),
        ],
    );
    let program = PathBuf::from(args.remove(0));
    let mut periph = Script::try_spawn(
        "peripheral",
        &program,
        &args,
        &ctx.scripts,
        &dir.join("peripheral.log"),
    )?;
    periph.until("advertising", Duration::from_secs(20)).await?;
    let (mut companion, session) = lend(ctx, host, Some(ns), config, b, dir).await?;
    // The QUIC RTT estimate after the handshake and the first exchanges.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = session["id"].clone();
    let quic_rtt_ms = host
        .sessions()
        .await
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or(session)["rtt_us"]
        .as_f64()
        .map(|us| us / 1000.0);
    let args: Vec<String> = vec![
        "central.py".into(),
        "--transport".into(),
        format!("android-netsim:{},name={PHONE}", host.netsim),
        "--target".into(),
        PERIPHERAL.into(),
        "--pairing".into(),
        pairing.into(),
        "--timeout".into(),
        "40".into(),
    ];
    let mut central = Script::try_spawn(
        "central",
        &ctx.bins.python,
        &args,
        &ctx.scripts,
        &dir.join("central.log"),
    )?;
    let done = central.until("done", Duration::from_secs(45)).await;
    let code = central.try_wait(Duration::from_secs(10)).await;
    companion.stop(Duration::from_secs(5)).await;
    drop(periph);
    ctl.kill().await;
    done?;
    let seen = central.seen();
    let at = |event: &str| {
        seen.iter()
            .find(|l| l.event() == event)
            .and_then(|l| l.json["t"].as_f64())
    };
    let value = seen.iter().find(|l| l.event() == "value");
    if value.is_none_or(|v| v.json["value"] != SECRET) {
        return Err(format!("wrong value: {:?}", value.map(|v| &v.json)));
    }
    if pairing == "numeric" && at("compare_numbers").is_none() {
        return Err("paired without Numeric Comparison".into());
    }
    if pairing == "passkey" && at("compare_numbers").is_some() {
        return Err("paired with Numeric Comparison, not Passkey Entry".into());
    }
    let mut t = [0.0; 5];
    for (slot, m) in t.iter_mut().zip(MILESTONES) {
        *slot = at(m).ok_or(format!("no {m} event"))?;
    }
    match code {
        Ok(Some(0)) => Ok(Flow { t, quic_rtt_ms }),
        other => Err(format!("central exit {other:?} after done")),
    }
}

// ---------------------------------------------------------------- statistics

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Nearest-rank percentile, `p` in 0..=1.
fn pct(v: &[f64], p: f64) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    (n > 0).then(|| s[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs started, and how many of them started while a compiler ran.
static RUNS: AtomicUsize = AtomicUsize::new(0);
static BUSY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Called as each run starts: counts it, and whether a compiler runs.
fn note_run() {
    RUNS.fetch_add(1, Ordering::Relaxed);
    if compilers() > 0 {
        BUSY_RUNS.fetch_add(1, Ordering::Relaxed);
    }
}

fn compilers() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "rustc")
                })
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- main

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot watch SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    // Dropping `run` (a signal) kills every child and deletes the namespace.
    let code = tokio::select! {
        code = run() => code,
        _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: cleaned up"); 130 }
        _ = term.recv() => { eprintln!("terminated: cleaned up"); 143 }
    };
    std::process::exit(code);
}

async fn run() -> i32 {
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let bins = match Bins::find() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let scratch = match tempfile::Builder::new().prefix("vphone-btbench-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: a scratch dir: {e}");
            return 1;
        }
    };
    let flat = flat_recording(scratch.path());
    let ctx = Ctx {
        bins,
        scripts: workspace().join("tests/bumble"),
        flat,
    };
    let (load0, rustc0) = (loadavg(), compilers());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let head = git_head();

    println!("# vphone Bluetooth benchmark\n");
    println!(
        "- **What**: (1) `bumble-bench` paced GATT ping (`--scenario ping -c 50 --pace 50` vs `pong`) and L2CAP throughput \
         (`--mode l2cap-client --scenario send -c 200` vs `l2cap-server --scenario receive`), direct on controller B \
         (H4/TCP, and over the controller's own netsim port) vs through vphone (host netsim port, name={PHONE}; companion lending controller B over QUIC on loopback) vs through \
         `bumble-hci-bridge` (the Python reference relay); fresh controllers per run, {} run(s) per setup, setups interleaved. \
         (2) `central.py` scan -> connect -> pair (LE SC) -> encrypted read against `peripheral.py`, the central as {PHONE}'s \
         stack through vphone, with {:?} ms of added round trip between host and handset, Passkey Entry and Numeric \
         Comparison, median of {} run(s); the goal timed from scan start (`powered`) to the value, the time from central process start shown too.",
        cfg.runs, cfg.rtts, cfg.runs
    );
    println!(
        "- **Machine**: {cores} cores, load average {load0} at start, {rustc0} rustc process(es) running at start. \
         The machine is shared: another engineer's builds and tests may run at the same time and add noise."
    );
    println!(
        "- **Binaries**: {} (and vphone-companion, vphonectl), git {head}; bumble from {}.",
        ctx.bins.host.display(),
        ctx.bins.python.display()
    );
    for n in &ctx.bins.notes {
        println!("- {n}");
    }
    println!();

    let mut relays = Vec::new();
    if cfg.relays {
        relays = part_relays(&ctx, &cfg, scratch.path()).await;
    }
    let mut flow = FlowReport::default();
    if cfg.flow {
        flow = part_flow(&ctx, &cfg, scratch.path()).await;
    }

    summary(&cfg, &relays, &flow);
    println!(
        "\nload average {} at the end; a rustc process was running at the start of {} of {} runs, {} at the end.",
        loadavg(),
        BUSY_RUNS.load(Ordering::Relaxed),
        RUNS.load(Ordering::Relaxed),
        compilers()
    );
    let failed = relays.iter().any(|r| r.result.is_err())
        || flow.runs.iter().any(|r| r.result.is_err())
        || flow.error.is_some();
    if failed || cfg.keep {
        let kept = scratch.keep();
        println!("logs kept in {}", kept.display());
    }
    0
}

fn git_head() -> String {
    sh(&[
        "git",
        "-C",
        &workspace().display().to_string(),
        "rev-parse",
        "--short",
        "HEAD",
    ])
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|_| "?".into())
}

async fn part_relays(ctx: &Ctx, cfg: &Config, scratch: &Path) -> Vec<RelayRun> {
    let mut runs = Vec::new();
    let dir = scratch.join("relays");
    let _ = std::fs::create_dir_all(&dir);
    let host = async {
        let quic = free_udp(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let host = Host::start(ctx, &dir, quic, quic).await?;
        let config = dir.join("companion");
        host.enroll(ctx, &config, "bench-relays").await?;
        Ok::<_, String>((host, config))
    }
    .await;
    let (host, config) = match host {
        Ok(h) => h,
        Err(e) => {
            println!("## 1. Relays\n\nFAILED to start the host: {e}\n");
            return runs;
        }
    };
    let total = cfg.runs * Setup::ALL.len() * 2;
    for round in 0..cfg.runs {
        for setup in Setup::ALL {
            for scenario in [Scenario::Ping, Scenario::L2cap] {
                let n = runs.len() + 1;
                let name = format!("{n:02}-{}-{scenario:?}", setup.name()).to_lowercase();
                note_run();
                let result =
                    relay_run(ctx, &host, &config, setup, scenario, &dir.join(&name)).await;
                let shown = match &result {
                    Ok(m) => match (m.rtt, m.bps) {
                        (Some((_, _, avg)), _) => format!("RTT avg {avg:.2} ms"),
                        (_, Some(bps)) => format!("{:.1} kB/s", bps / 1000.0),
                        _ => "?".into(),
                    },
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{n}/{total}] {} {scenario:?} round {}: {shown}",
                    setup.name(),
                    round + 1
                );
                runs.push(RelayRun {
                    setup,
                    scenario,
                    round,
                    result,
                });
            }
        }
    }
    drop(host);
    print_relays(cfg, &runs);
    runs
}

/// Per setup: (ok ping runs, avg, min, max, p50, p99, per-packet count,
/// ok l2cap runs, mean kB/s, min kB/s, max kB/s).
#[derive(Debug, Default)]
struct SetupStats {
    ping_ok: usize,
    avg: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    packets: usize,
    l2cap_ok: usize,
    kbps: Option<f64>,
    kbps_min: Option<f64>,
    kbps_max: Option<f64>,
}

fn stats(runs: &[RelayRun], setup: Setup) -> SetupStats {
    let ok = |sc: Scenario| {
        runs.iter()
            .filter(move |r| r.setup == setup && r.scenario == sc)
            .filter_map(|r| r.result.as_ref().ok())
    };
    let pings: Vec<(f64, f64, f64)> = ok(Scenario::Ping).filter_map(|m| m.rtt).collect();
    let all: Vec<f64> = ok(Scenario::Ping)
        .flat_map(|m| m.rtts.iter().copied())
        .collect();
    let kbps: Vec<f64> = ok(Scenario::L2cap)
        .filter_map(|m| m.bps)
        .map(|b| b / 1000.0)
        .collect();
    SetupStats {
        ping_ok: pings.len(),
        avg: mean(&pings.iter().map(|p| p.2).collect::<Vec<_>>()),
        min: pings.iter().map(|p| p.0).reduce(f64::min),
        max: pings.iter().map(|p| p.1).reduce(f64::max),
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        packets: all.len(),
        l2cap_ok: kbps.len(),
        kbps: mean(&kbps),
        kbps_min: kbps.iter().copied().reduce(f64::min),
        kbps_max: kbps.iter().copied().reduce(f64::max),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn print_relays(cfg: &Config, runs: &[RelayRun]) {
    let direct = stats(runs, Setup::Direct);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 1. bumble-bench: direct vs through vphone vs through bumble-hci-bridge (loopback, 0 ms added RTT)\n"
    );
    let _ = writeln!(
        out,
        "| setup | ping runs ok | RTT avg (ms) | RTT min | RTT max | RTT p50 | RTT p99 | RTT avg x direct | L2CAP runs ok | throughput (kB/s) | min-max | throughput x direct |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for setup in Setup::ALL {
        let s = stats(runs, setup);
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {} | {} | {} | {} | {}x | {}/{} | {} | {}-{} | {}x |",
            setup.name(),
            s.ping_ok,
            cfg.runs,
            f(s.avg, 2),
            f(s.min, 2),
            f(s.max, 2),
            f(s.p50, 2),
            f(s.p99, 2),
            f(ratio(s.avg, direct.avg), 2),
            s.l2cap_ok,
            cfg.runs,
            f(s.kbps, 1),
            f(s.kbps_min, 1),
            f(s.kbps_max, 1),
            f(ratio(s.kbps, direct.kbps), 2),
        );
    }
    let _ = writeln!(
        out,
        "\np50/p99 over every `<<< Received ACK [i], RTT=` line of the setup's runs ({} / {} / {} / {} packets); \
         avg = mean of the runs' `@@@ RTTs` averages, min/max over the runs; throughput = the central's \
         `Speed: average` (bytes sent / time to the receiver's ACK, 200 x 500 B), mean of the runs.\n",
        stats(runs, Setup::Direct).packets,
        stats(runs, Setup::DirectNetsim).packets,
        stats(runs, Setup::Vphone).packets,
        stats(runs, Setup::Bridge).packets,
    );
    let _ = writeln!(
        out,
        "The central's own transport differs: `tcp-client` (H4 over TCP) direct, `android-netsim` (gRPC, \
         Python grpcio) direct over netsim, through vphone and through the bridge, so both relays also carry the cost of the \
         central's gRPC transport; `direct over netsim` is that transport with no relay.\n"
    );
    let _ = writeln!(out, "Per run (in the order run):\n");
    let _ = writeln!(
        out,
        "| round | setup | ping RTT avg / min / max (ms) | L2CAP (kB/s) |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for round in 0..cfg.runs {
        for setup in Setup::ALL {
            let cell = |sc: Scenario| {
                runs.iter()
                    .find(|r| r.round == round && r.setup == setup && r.scenario == sc)
                    .map_or("-".to_owned(), |r| match &r.result {
                        Ok(m) => match (m.rtt, m.bps) {
                            (Some((mn, mx, avg)), _) => format!("{avg:.2} / {mn:.2} / {mx:.2}"),
                            (_, Some(b)) => format!("{:.1}", b / 1000.0),
                            _ => "?".into(),
                        },
                        Err(_) => "FAILED".into(),
                    })
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                round + 1,
                setup.name(),
                cell(Scenario::Ping),
                cell(Scenario::L2cap)
            );
        }
    }
    let failures: Vec<&RelayRun> = runs.iter().filter(|r| r.result.is_err()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for r in failures {
            if let Err(e) = &r.result {
                let _ = writeln!(
                    out,
                    "- {} {:?} round {}: {e}",
                    r.setup.name(),
                    r.scenario,
                    r.round + 1
                );
            }
        }
    }
    println!("{out}");
}

#[derive(Debug, Default)]
struct FlowReport {
    runs: Vec<FlowRun>,
    /// RTT -> (probe RTTs in ms).
    probes: Vec<(u32, Result<Vec<f64>, String>)>,
    mode: String,
    error: Option<String>,
}

async fn part_flow(ctx: &Ctx, cfg: &Config, scratch: &Path) -> FlowReport {
    let mut report = FlowReport::default();
    let dir = scratch.join("flow");
    let _ = std::fs::create_dir_all(&dir);
    // Declared first: dropped last, after every process in it is gone.
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            report.error = Some(format!(
                "cannot create the handset namespace (needs root, iproute2): {e}"
            ));
            print_flow(cfg, &report);
            return report;
        }
    };
    let setup = async {
        let quic = free_udp(IpAddr::V4(ROOT_IP))?;
        let echo = Echo::start(IpAddr::V4(ROOT_IP)).await?;
        let mut netem_error = None;
        let delay = if cfg.delay == "userspace" {
            None
        } else {
            match ns.netem("add", 0) {
                Ok(()) => Some(Delay::Netem),
                Err(e) if cfg.delay == "netem" => return Err(e),
                Err(e) => {
                    netem_error = Some(e);
                    None
                }
            }
        };
        let (delay, public) = match delay {
            Some(d) => (d, quic),
            None => {
                let one_way_us = Arc::new(AtomicU64::new(0));
                let line = DelayLine::start(SocketAddr::new(IpAddr::V4(ROOT_IP), 0), quic, one_way_us.clone())
                    .map_err(|e| format!("delay line: {e}"))?;
                let probe = DelayLine::start(SocketAddr::new(IpAddr::V4(ROOT_IP), 0), echo.addr, one_way_us.clone())
                    .map_err(|e| format!("delay line: {e}"))?;
                let public = line.addr;
                (
                    Delay::Userspace {
                        one_way_us,
                        _line: line,
                        probe,
                    },
                    public,
                )
            }
        };
        let mode = match (&delay, netem_error) {
            (Delay::Netem, _) => format!(
                "`tc qdisc ... netem delay RTT/2` on both veth ends ({} in the root namespace, {} in {})",
                ns.veth, ns.peer, ns.name
            ),
            (Delay::Userspace { .. }, Some(e)) => format!(
                "**tc netem is not available here** ({e}; this kernel is built without CONFIG_NET_SCH_NETEM \
                 and loads no modules), so the bench adds the delay itself: a userspace UDP delay line on \
                 {ROOT_IP} holding every datagram of the host <-> handset QUIC path RTT/2 in each direction; \
                 the handset side still sits in namespace {} behind the veth pair",
                ns.name
            ),
            (Delay::Userspace { .. }, None) => format!(
                "a userspace UDP delay line on {ROOT_IP} (VPHONE_BENCH_DELAY=userspace), RTT/2 each way; handset side in namespace {}",
                ns.name
            ),
        };
        let host = Host::start(ctx, &dir, quic, public).await?;
        let config = dir.join("companion");
        host.enroll(ctx, &config, "bench-flow").await?;
        Ok::<_, String>((echo, delay, mode, host, config))
    }
    .await;
    let (echo, delay, mode, host, config) = match setup {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            print_flow(cfg, &report);
            return report;
        }
    };
    report.mode = mode;
    let set_rtt = |rtt: u32| -> Result<SocketAddr, String> {
        let one_way = u64::from(rtt) * 500;
        match &delay {
            Delay::Netem => {
                ns.netem("change", one_way)?;
                Ok(echo.addr)
            }
            Delay::Userspace {
                one_way_us, probe, ..
            } => {
                one_way_us.store(one_way, Ordering::Relaxed);
                Ok(probe.addr)
            }
        }
    };
    // Verify the delay before measuring with it.
    for &rtt in &cfg.rtts {
        let probed = match set_rtt(rtt) {
            Ok(target) => probe(ctx, &ns, target).await,
            Err(e) => Err(e),
        };
        eprintln!("added RTT {rtt} ms: probe {probed:?}");
        report.probes.push((rtt, probed));
    }
    let total = cfg.runs * cfg.rtts.len() * PAIRINGS.len();
    for round in 0..cfg.runs {
        for &rtt in &cfg.rtts {
            if let Err(e) = set_rtt(rtt) {
                for pairing in PAIRINGS {
                    report.runs.push(FlowRun {
                        rtt,
                        pairing,
                        result: Err(e.clone()),
                    });
                }
                continue;
            }
            for pairing in PAIRINGS {
                let n = report.runs.len() + 1;
                let run_dir = dir.join(format!("{n:02}-{rtt}ms-{pairing}"));
                note_run();
                let result = flow_run(ctx, &host, &ns, &config, pairing, &run_dir).await;
                let shown = match &result {
                    Ok(fl) => format!(
                        "value at {:.2} s (QUIC RTT {} ms)",
                        fl.t[4],
                        f(fl.quic_rtt_ms, 1)
                    ),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{n}/{total}] {rtt} ms {pairing} round {}: {shown}",
                    round + 1
                );
                report.runs.push(FlowRun {
                    rtt,
                    pairing,
                    result,
                });
            }
        }
    }
    drop(host);
    drop(delay);
    drop(echo);
    drop(ns);
    print_flow(cfg, &report);
    report
}

fn flow_values<'a>(report: &'a FlowReport, rtt: u32, pairing: &str) -> (Vec<&'a Flow>, usize) {
    let runs: Vec<&FlowRun> = report
        .runs
        .iter()
        .filter(|r| r.rtt == rtt && r.pairing == pairing)
        .collect();
    let ok = runs.iter().filter_map(|r| r.result.as_ref().ok()).collect();
    (ok, runs.len())
}

/// The flow the goal names: from the initialised stack starting its scan
/// (`powered`) to the encrypted value.
fn scan_to_read(fl: &&Flow) -> f64 {
    fl.t[4] - fl.t[0]
}

fn print_flow(cfg: &Config, report: &FlowReport) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 2. scan -> connect -> pair -> encrypted read through vphone, with added host <-> handset RTT\n"
    );
    if let Some(e) = &report.error {
        let _ = writeln!(out, "FAILED: {e}\n");
        println!("{out}");
        return;
    }
    let _ = writeln!(out, "Delay: {}.\n", report.mode);
    let _ = writeln!(
        out,
        "Delay check (10 UDP round trips, after one warm-up, from a socket in the handset namespace to an echo in the root namespace, through the same delay):\n"
    );
    let _ = writeln!(
        out,
        "| added RTT (ms) | measured min (ms) | median | max | lost |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (rtt, p) in &report.probes {
        match p {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "| {rtt} | {} | {} | {} | {} |",
                    f(v.iter().copied().reduce(f64::min), 2),
                    f(median(v), 2),
                    f(v.iter().copied().reduce(f64::max), 2),
                    10usize.saturating_sub(v.len())
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {rtt} | FAILED: {e} | | | |");
            }
        }
    }
    let base: HashMap<&str, Option<f64>> = PAIRINGS
        .iter()
        .map(|p| {
            let (ok, _) = flow_values(report, 0, p);
            (*p, median(&ok.iter().map(scan_to_read).collect::<Vec<_>>()))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nMedian seconds from central start (process start, so Python's start-up and the stack's power-on, one command round trip each, are in `powered`), of the runs that succeeded. \
         **scan -> read** = `value` - `powered`: the flow the goal names, from the initialised stack starting its scan to the encrypted value:\n"
    );
    let _ = writeln!(
        out,
        "| added RTT (ms) | pairing | runs ok | QUIC RTT (ms) | powered | found | connected | paired | value | scan -> read | scan -> read per run | extra vs 0 ms (RTTs) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &rtt in &cfg.rtts {
        for pairing in PAIRINGS {
            let (ok, n) = flow_values(report, rtt, pairing);
            let col = |i: usize| median(&ok.iter().map(|fl| fl.t[i]).collect::<Vec<_>>());
            let quic = median(
                &ok.iter()
                    .filter_map(|fl| fl.quic_rtt_ms)
                    .collect::<Vec<_>>(),
            );
            let per_run = report
                .runs
                .iter()
                .filter(|r| r.rtt == rtt && r.pairing == pairing)
                .map(|r| match &r.result {
                    Ok(fl) => format!("{:.2}", scan_to_read(&fl)),
                    Err(_) => "FAILED".into(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let flow = median(&ok.iter().map(scan_to_read).collect::<Vec<_>>());
            let extra = match (flow, base.get(pairing).copied().flatten()) {
                (Some(v), Some(b)) if rtt > 0 => {
                    format!("{:.2} s ({:.0})", v - b, (v - b) * 1000.0 / f64::from(rtt))
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {rtt} | {pairing} | {}/{n} | {} | {} | {} | {} | {} | {} | **{}** | {per_run} | {extra} |",
                ok.len(),
                f(quic, 1),
                f(col(0), 2),
                f(col(1), 2),
                f(col(2), 2),
                f(col(3), 2),
                f(col(4), 2),
                f(flow, 2),
            );
        }
    }
    let failures: Vec<&FlowRun> = report.runs.iter().filter(|r| r.result.is_err()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for r in failures {
            if let Err(e) = &r.result {
                let _ = writeln!(out, "- {} ms {}: {e}", r.rtt, r.pairing);
            }
        }
    }
    println!("{out}");
}

fn summary(cfg: &Config, relays: &[RelayRun], flow: &FlowReport) {
    println!("## Goals\n");
    if cfg.relays {
        let d = stats(relays, Setup::Direct);
        let v = stats(relays, Setup::Vphone);
        let rtt = ratio(v.avg, d.avg);
        let tput = ratio(v.kbps, d.kbps);
        let complete =
            v.ping_ok == cfg.runs && v.l2cap_ok == cfg.runs && d.ping_ok > 0 && d.l2cap_ok > 0;
        let pass =
            complete && rtt.is_some_and(|r| r <= 1.2) && tput.is_some_and(|r| r >= 1.0 / 1.2);
        println!(
            "- **{}** through vphone within 1.2x of direct at 0 ms added RTT: ping RTT avg {} vs {} ms ({}x, p50 {}x), \
             L2CAP {} vs {} kB/s ({}x direct; 1.2x slower = {}x){}",
            if pass { "PASS" } else { "MISS" },
            f(v.avg, 2),
            f(d.avg, 2),
            f(rtt, 2),
            f(ratio(v.p50, d.p50), 2),
            f(v.kbps, 1),
            f(d.kbps, 1),
            f(tput, 2),
            f(Some(1.0 / 1.2), 2),
            if complete {
                ""
            } else {
                "; not every run succeeded"
            }
        );
        // Not the goal (it names direct), but the part of the gap a relay
        // adds: the same central transport with and without one.
        let n = stats(relays, Setup::DirectNetsim);
        let b = stats(relays, Setup::Bridge);
        println!(
            "- (for reading the gap) the same central transport (netsim gRPC) with no relay: ping RTT avg {} ms; \
             vphone adds {}x ({} ms), bumble-hci-bridge {}x; L2CAP vphone {}x, bumble-hci-bridge {}x of it",
            f(n.avg, 2),
            f(ratio(v.avg, n.avg), 2),
            f(v.avg.zip(n.avg).map(|(v, n)| v - n), 2),
            f(ratio(b.avg, n.avg), 2),
            f(ratio(v.kbps, n.kbps), 2),
            f(ratio(b.kbps, n.kbps), 2),
        );
    }
    if cfg.flow {
        if !cfg.rtts.contains(&100) {
            println!(
                "- **MISS** at 100 ms RTT the whole flow under 8 s: not measured (VPHONE_BENCH_RTTS)"
            );
        }
        for pairing in PAIRINGS.iter().filter(|_| cfg.rtts.contains(&100)) {
            let (ok, n) = flow_values(flow, 100, pairing);
            let values: Vec<f64> = ok.iter().map(scan_to_read).collect();
            let med = median(&values);
            let worst = values.iter().copied().reduce(f64::max);
            let from_start = median(&ok.iter().map(|fl| fl.t[4]).collect::<Vec<_>>());
            // Every run, not just the median, must make it.
            let pass = n > 0 && ok.len() == n && worst.is_some_and(|m| m < 8.0);
            println!(
                "- **{}** at 100 ms RTT the whole flow (scan -> connect -> pair -> read) under 8 s, {pairing}: \
                 median {} s, worst {} s, {}/{n} runs ok (from central process start, with Python start-up and \
                 stack power-on: median {} s)",
                if pass { "PASS" } else { "MISS" },
                f(med, 2),
                f(worst, 2),
                ok.len(),
                f(from_start, 2),
            );
        }
    }
}
