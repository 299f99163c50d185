//! The real `vphone-companion` binary as a process: enrolled with an
//! enrollment string, then `connect --headless`, its log in a file the
//! test reads for what it said. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A headless companion process streaming to its phone.
#[derive(Debug)]
pub struct HeadlessCompanion {
    child: Child,
    log: PathBuf,
}

impl HeadlessCompanion {
    /// Enrolls a companion whose config lives in `dir/companion` with
    /// `enrollment` (a `vphone://` string), then starts
    /// `connect --headless --duration SECONDS`, logging at info to
    /// `dir/companion.log`.
    ///
    /// # Panics
    /// When enrolling fails (with its output) or the process cannot start.
    #[must_use]
    pub fn enroll_and_connect(dir: &Path, enrollment: &str, seconds: u32) -> Self {
        Self::enroll(dir, enrollment);
        Self::connect(dir, "companion", &[], seconds)
    }

    /// Enrolls the companion whose config lives in `dir/companion`.
    ///
    /// # Panics
    /// When enrolling fails (with its output).
    pub fn enroll(dir: &Path, enrollment: &str) {
        let enrolled = Command::new(vphone_testkit::binary("vphone-companion"))
            .arg("--config-dir")
            .arg(dir.join("companion"))
            .args(["enroll", enrollment.trim()])
            .output()
            .expect("run vphone-companion enroll");
        assert!(enrolled.status.success(), "{enrolled:?}");
    }

    /// Starts the companion enrolled in `dir/companion`:
    /// `connect --headless --duration SECONDS ARGS...`, logging at info to
    /// `dir/LOG.log`.
    ///
    /// # Panics
    /// When the process cannot start.
    #[must_use]
    pub fn connect(dir: &Path, log: &str, args: &[&str], seconds: u32) -> Self {
        let log = dir.join(format!("{log}.log"));
        let child = Command::new(vphone_testkit::binary("vphone-companion"))
            .arg("--config-dir")
            .arg(dir.join("companion"))
            .args(["connect", "--headless", "--duration", &seconds.to_string()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("companion log"))
            .spawn()
            .expect("start vphone-companion connect");
        Self { child, log }
    }

    /// What it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `what`; returns the log.
    ///
    /// # Panics
    /// When it has not said it within `within` (the log is printed).
    #[must_use]
    pub fn said(&self, what: &str, within: Duration) -> String {
        let t = Instant::now();
        loop {
            let text = self.log();
            if text.contains(what) {
                return text;
            }
            assert!(
                t.elapsed() < within,
                "the companion never said {what:?} within {within:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for HeadlessCompanion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
