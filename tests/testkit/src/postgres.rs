//! A throwaway PostgreSQL server for tests: its own cluster in a temporary
//! directory, on a free loopback port, stopped and deleted when dropped.
//! `initdb` refuses to run as root, so as root the server runs as the
//! `postgres` user (Debian's package creates it); `scripts/setup` installs
//! the package. Without PostgreSQL the test fails, or says `SKIPPED` when
//! `VPHONE_ALLOW_MISSING_TOOLS` is set (see [`crate::tools`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throwaway server.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Where Debian's (or a distribution's) server binaries are.
fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").is_file())
        .collect();
    // The newest version (the directory names are version numbers).
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().or_else(|| {
        let on_path = crate::tools::which("pg_ctl")?;
        on_path.parent().map(Path::to_path_buf)
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Starts a fresh server with a database `vphone`, or `None` (after
    /// `SKIPPED`) when PostgreSQL is missing and skipping is allowed.
    ///
    /// # Panics
    /// When PostgreSQL is missing and skipping is not allowed, or the
    /// server fails to start (its log is printed).
    #[must_use]
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            crate::tools::skip_or_fail(
                "PostgreSQL is not installed (scripts/setup installs Debian's postgresql)",
            );
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "vphone-pg-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(dir.join("data")).expect("create the cluster's directory");
        let port = free_port();
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        if as_postgres {
            // The postgres user must own the data dir and be able to reach it.
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&pg.dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres {}", pg.dir.display());
            set_mode(&pg.dir, 0o755);
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            pg.dir.join("data").display()
        );
        let log = pg.dir.join("data/server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "vphone",
            ],
        );
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// The server tool `tool` with `args`, as the `postgres` user when root.
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("data/server.log")).unwrap_or_default();
            panic!(
                "{tool} {args:?} failed: {}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The URL of database `vphone`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/vphone", self.port)
    }

    /// The URL of a new, empty database `name` on this server.
    #[must_use]
    pub fn database(&self, name: &str) -> String {
        self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's TCP port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}
