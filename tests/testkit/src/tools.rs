//! External tools the tests check outputs with (ffprobe, tshark) and the
//! privileges some need (root for namespaces). `scripts/test` installs and
//! runs everything, so a missing tool is a broken setup: the test fails,
//! unless `VPHONE_ALLOW_MISSING_TOOLS` is set, when it says `SKIPPED` and
//! returns early. A test never passes quietly without its check.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the caller allowed tests to skip for a missing tool.
fn skipping_allowed() -> bool {
    std::env::var_os("VPHONE_ALLOW_MISSING_TOOLS").is_some()
}

/// The path of `name` on `PATH`, or `None` (after printing `SKIPPED`) when
/// it is missing and skipping is allowed.
///
/// # Panics
/// When the tool is missing and `VPHONE_ALLOW_MISSING_TOOLS` is not set.
#[must_use]
pub fn require(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        skip_or_fail(&format!(
            "{name} is not installed (scripts/test installs it)"
        ));
    }
    found
}

/// The path of `name` on `PATH`.
#[must_use]
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `true` when running as root; otherwise `false` after printing
/// `SKIPPED`, when skipping is allowed.
///
/// # Panics
/// When not root and `VPHONE_ALLOW_MISSING_TOOLS` is not set.
#[must_use]
pub fn require_root(what: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        skip_or_fail(&format!("{what} needs root (CI runs as root)"));
    }
    root
}

/// Fails with `why`, or prints `SKIPPED` when skipping is allowed.
///
/// # Panics
/// When `VPHONE_ALLOW_MISSING_TOOLS` is not set.
pub fn skip_or_fail(why: &str) {
    assert!(
        skipping_allowed(),
        "{why}; set VPHONE_ALLOW_MISSING_TOOLS=1 to skip this test"
    );
    eprintln!("SKIPPED: {why}, and VPHONE_ALLOW_MISSING_TOOLS is set");
}

/// `codec,width,height` of `file`'s first video stream as ffprobe reads it,
/// with `,frames` (every frame decoded and counted) when `count_frames`.
///
/// # Panics
/// When ffprobe cannot run, fails, or prints anything on stderr (a decode
/// error in any frame).
#[must_use]
pub fn ffprobe_stream(ffprobe: &Path, file: &Path, count_frames: bool) -> String {
    let mut cmd = Command::new(ffprobe);
    cmd.args(["-v", "error", "-select_streams", "v:0"]);
    if count_frames {
        cmd.args([
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ]);
    } else {
        cmd.args(["-show_entries", "stream=codec_name,width,height"]);
    }
    let out = cmd
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ffprobe.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {stderr}",
        file.display()
    );
    assert!(
        stderr.trim().is_empty(),
        "ffprobe reported errors in {}: {stderr}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
