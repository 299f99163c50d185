//! The Bluetooth testbed: bumble's virtual controllers on one virtual radio,
//! the encrypted-characteristic peripheral and the central (the phone's
//! stack) from `tests/bumble/`, and helpers to run vphone's binaries.
//!
//! ```text
//! central (android-netsim, name=PHONE) ──gRPC──► vphone-host netsim server
//! vphone-host ──QUIC──► companion --radio tcp:127.0.0.1:B ──H4/TCP──► controller B
//! controller B ◄── bumble virtual link ──► controller A ◄──H4/TCP── peripheral
//! ```
//!
//! Every script prints one JSON object per line; [`Script`] collects them
//! with the host-side arrival time so tests can measure delays.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv's Python (`VPHONE_PYTHON`, else `<workspace>/.venv/bin/python`).
///
/// # Panics
/// When it is missing, saying how to create it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("VPHONE_PYTHON")
        .map_or_else(|| workspace().join(".venv/bin/python"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it creates .venv with bumble), or set VPHONE_PYTHON",
        path.display()
    );
    path
}

pub use vphone_testkit::binary;

/// A free TCP port on 127.0.0.1.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A line of a script's output and when the test saw it.
#[derive(Clone, Debug)]
pub struct Line {
    /// The JSON object.
    pub json: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Line {
    /// The `event` field.
    pub fn event(&self) -> &str {
        self.json["event"].as_str().unwrap_or("")
    }
}

/// A child process (killed on drop) whose stdout JSON lines are collected.
#[derive(Debug)]
pub struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Line>,
    seen: Vec<Line>,
}

impl Script {
    /// Starts `program args` in `dir`, stdin piped, stdout collected,
    /// stderr to `log`.
    ///
    /// # Panics
    /// When it cannot start.
    pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path, log: &Path) -> Self {
        Self::try_spawn(name, program, args, dir, log).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::spawn`], with an error instead of a panic when the log file
    /// cannot be created or the program cannot start.
    pub fn try_spawn(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        log: &Path,
    ) -> Result<Self, String> {
        let log = std::fs::File::create(log)
            .map_err(|e| format!("creating {name}'s log {}: {e}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {name} ({}): {e}", program.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let json = serde_json::from_str(&l).unwrap_or(Value::String(l));
                if tx
                    .send(Line {
                        json,
                        at: Instant::now(),
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for the event `event`; panics with everything seen when an
    /// `error` event comes first, the script ends, or `timeout` passes.
    pub async fn expect(&mut self, event: &str, timeout: Duration) -> Line {
        self.until(event, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::expect`] without the panic: the error says what happened
    /// instead (an `error` event, the script ended, or the timeout) and
    /// what the script printed.
    pub async fn until(&mut self, event: &str, timeout: Duration) -> Result<Line, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.event() == event {
                        return Ok(line);
                    }
                    if line.event() == "error" {
                        return Err(format!(
                            "{}: {} while waiting for {event}",
                            self.name, line.json
                        ));
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "{} ended while waiting for {event}; it printed {:?}",
                        self.name,
                        self.events()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{}: no {event} within {timeout:?}; it printed {:?}",
                        self.name,
                        self.events()
                    ));
                }
            }
        }
    }

    /// Every line seen so far (also those [`Self::expect`] skipped).
    pub fn seen(&self) -> &[Line] {
        &self.seen
    }

    fn events(&self) -> Vec<String> {
        self.seen.iter().map(|l| l.json.to_string()).collect()
    }

    /// Writes a command line to the script's stdin.
    ///
    /// # Panics
    /// When stdin is closed.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writing to the script");
        stdin.flush().await.expect("flushing the script's stdin");
    }

    /// Waits for the process to exit; its exit code.
    ///
    /// # Panics
    /// When it does not exit within `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        self.try_wait(timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::wait`] without the panic: its exit code (`None` when a
    /// signal ended it), or why it could not be had.
    pub async fn try_wait(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.code()),
            Ok(Err(e)) => Err(format!("waiting for {}: {e}", self.name)),
            Err(_) => Err(format!("{} did not exit within {timeout:?}", self.name)),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `signal` (e.g. "KILL", "INT") to the process.
    ///
    /// # Panics
    /// When `kill` cannot run.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }
}

/// Two linked bumble controllers and the peripheral on controller A.
#[derive(Debug)]
pub struct Testbed {
    controllers: Script,
    /// The peripheral (`EncPeripheral`, F1:F1:F1:F1:F1:F1).
    pub peripheral: Script,
    /// Controller B's H4/TCP port: the handset's radio.
    pub radio_port: u16,
    dir: PathBuf,
}

/// The peripheral's advertised name.
pub const PERIPHERAL: &str = "EncPeripheral";
/// The characteristic's value.
pub const SECRET: &str = "secret-value";

impl Testbed {
    /// Starts the controllers and the peripheral (advertising) in `dir`.
    ///
    /// Each controller serves one host at a time, so the ports are not
    /// probed: the peripheral's own connection shows the controllers are up.
    ///
    /// # Panics
    /// When they do not come up within 20 s.
    pub async fn start(dir: &Path) -> Self {
        let (a, b) = (free_port(), free_port());
        let controllers = Script::spawn(
            "controllers",
            &python(),
            &[
                "-m".into(),
                "bumble.apps.controllers".into(),
                format!("tcp-server:127.0.0.1:{a}"),
                format!("tcp-server:127.0.0.1:{b}"),
            ],
            dir,
            &dir.join("controllers.log"),
        );
        // The controllers app needs a moment to import bumble and listen;
        // the peripheral retries until it can connect.
        let scripts = workspace().join("tests/bumble");
        let mut peripheral = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while peripheral.is_none() {
            assert!(
                Instant::now() < deadline,
                "bumble controllers never came up"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut p = Script::spawn(
                "peripheral",
                &python(),
                &[
                    "peripheral.py".into(),
                    "--transport".into(),
                    format!("tcp-client:127.0.0.1:{a}"),
                ],
                &scripts,
                &dir.join("peripheral.log"),
            );
            match tokio::time::timeout(Duration::from_secs(10), p.lines.recv()).await {
                Ok(Some(l)) if l.event() == "advertising" => peripheral = Some(p),
                _ => {}
            }
        }
        Self {
            controllers,
            peripheral: peripheral.expect("peripheral"),
            radio_port: b,
            dir: dir.to_path_buf(),
        }
    }

    /// `--radio` spec of the handset's controller.
    pub fn radio_spec(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.radio_port)
    }

    /// Starts the central as a phone's Bluetooth stack on `stack` (the
    /// phone's attach point, `unix:<path>`, or any bumble transport), with
    /// extra `args` (`--hold`, `--vendor-probe`).
    pub fn central(&self, stack: &str, args: &[&str]) -> Script {
        let mut a = vec![
            "central.py".to_owned(),
            "--transport".to_owned(),
            stack.to_owned(),
            "--target".to_owned(),
            PERIPHERAL.to_owned(),
        ];
        a.extend(args.iter().map(|s| (*s).to_owned()));
        let n = std::fs::read_dir(&self.dir).map_or(0, Iterator::count);
        Script::spawn(
            "central",
            &python(),
            &a,
            &workspace().join("tests/bumble"),
            &self.dir.join(format!("central-{n}.log")),
        )
    }

    /// Whether the controllers process still runs.
    pub fn controllers_alive(&mut self) -> bool {
        self.controllers.child.try_wait().ok().flatten().is_none()
    }
}
