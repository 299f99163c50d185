//! Child processes for tests and benchmarks: spawn with a log file, wait
//! until ready (a log line, a listening port), read the log, stop with
//! SIGTERM then SIGKILL. Every child is killed when its [`Proc`] drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A child process whose stdout and stderr go to a log file; killed when
/// dropped (or when the test ends), so nothing outlives its test.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages ("vphone-host", "controllers").
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `argv` in `dir`, with `env` set (`Some`) or removed (`None`),
    /// both output streams appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot start.
    pub fn spawn(
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

    /// Its process id (0 once reaped).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// How it ended, if it did.
    pub fn ended(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Waits for it to end; its exit code.
    ///
    /// # Errors
    /// When it is still running after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => Ok(s.code()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(_) => Err(format!("{} still running after {timeout:?}", self.name)),
        }
    }

    /// The log without ANSI colours.
    #[must_use]
    pub fn text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last `n` non-empty lines of the log, for error messages.
    #[must_use]
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
        format!("{} (log {})", tail, self.log.display())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if self.ended().is_some() {
            return;
        }
        signal(self.pid(), "TERM");
        if self.wait(grace).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.wait(Duration::from_secs(2)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.wait(Duration::from_secs(2)).await;
    }
}

/// Sends `sig` (`TERM`, `KILL`, `STOP`...) to `pid` with kill(1); a no-op
/// for pid 0.
pub fn signal(pid: u32, sig: &str) {
    if pid != 0 {
        let _ = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// `s` without ANSI colour and cursor sequences (Python loggers colour).
#[must_use]
pub fn strip_ansi(s: &str) -> String {
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
#[must_use]
pub fn listening(pid: u32, port: u16) -> bool {
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
///
/// # Errors
/// When the process ended first or the time ran out; the message ends
/// with the log's last lines.
pub async fn ready(
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
///
/// # Errors
/// When it cannot start or exits unsuccessfully.
pub fn sh(argv: &[&str]) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(strip_ansi("\x1b[1;32mok\x1b[0m done"), "ok done");
        assert_eq!(strip_ansi("plain [x]"), "plain [x]");
    }

    #[tokio::test]
    async fn a_child_is_ready_logged_and_stopped() {
        let dir = std::env::temp_dir().join(format!("testkit-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("child.log");
        let argv: Vec<String> = ["sh", "-c", "echo \"$GREETING\"; exec sleep 30"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut p = Proc::spawn("child", &argv, &dir, &[("GREETING", Some("hello"))], &log)
            .expect("spawn sh");
        ready("the greeting", Duration::from_secs(5), &mut p, |p| {
            p.text().contains("hello")
        })
        .await
        .expect("the child greets");
        assert!(p.tail(1).starts_with("hello"), "{}", p.tail(1));
        assert!(p.ended().is_none());
        p.stop(Duration::from_secs(2)).await;
        assert!(p.ended().is_some(), "SIGTERM ends it");
        // A child that ends before it is ready is reported, with its log.
        let argv: Vec<String> = ["sh", "-c", "echo boom; exit 3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut q = Proc::spawn("quitter", &argv, &dir, &[], &dir.join("q.log")).unwrap();
        let e = ready("never", Duration::from_secs(5), &mut q, |_| false)
            .await
            .unwrap_err();
        assert!(e.contains("quitter ended") && e.contains("boom"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
