//! What to run (environment variables) and the release binaries it runs.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------- settings

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) runs: usize,
    pub(crate) rtts: Vec<u32>,
    pub(crate) relays: bool,
    pub(crate) flow: bool,
    pub(crate) delay: String,
    pub(crate) keep: bool,
}

impl Config {
    pub(crate) fn from_env() -> Result<Self, String> {
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
pub(crate) struct Bins {
    pub(crate) host: PathBuf,
    pub(crate) companion: PathBuf,
    pub(crate) ctl: PathBuf,
    pub(crate) python: PathBuf,
    pub(crate) bench: PathBuf,
    pub(crate) bridge: PathBuf,
    pub(crate) notes: Vec<String>,
}

pub(crate) const BUILD: &str =
    "cargo build --release --bin vphone-host --bin vphone-companion --bin vphonectl";

impl Bins {
    pub(crate) fn find() -> Result<Self, String> {
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
pub(crate) fn newest_source(crates: &[&str]) -> Option<(SystemTime, PathBuf)> {
    pub(crate) fn walk(dir: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
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
