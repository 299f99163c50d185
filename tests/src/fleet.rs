//! A fleet on one machine: real `vphone-host` processes sharing a throwaway
//! PostgreSQL registry, each with its own data dir, name, loopback address
//! and ports, and a
//! TCP proxy that can cut one host off the registry (a partition).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use host_core::registry::{Lease, Registry, Target};

/// One `vphone-host serve` process of the fleet; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct FleetHost {
    /// Its name in the registry.
    pub name: String,
    /// Its data dir (`vphonectl --data-dir` reaches its operator API).
    pub dir: PathBuf,
    /// Its QUIC address, on a loopback address of its own (127.0.0.11,
    /// 127.0.0.12, ... in the order hosts start in this process), which it
    /// also registers as its public address.
    pub quic: SocketAddr,
    /// The admin token's file when it was given one (`--admin-token-file`).
    token_file: Option<PathBuf>,
    child: Option<Child>,
}

/// What a fleet host is started with.
#[derive(Clone, Debug)]
pub struct HostSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// The registry URL it uses.
    pub registry: &'a str,
    /// The most phones it runs.
    pub capacity: u32,
    /// Lease length, seconds.
    pub lease_secs: u64,
    /// More `vphone-host` arguments (`--fleet-keys DIR`, ...).
    pub args: Vec<String>,
}

impl FleetHost {
    /// Starts a host under `root/NAME` and waits for its operator API.
    ///
    /// # Panics
    /// When it does not come up within 20 s (its log is printed).
    #[must_use]
    pub fn start(root: &Path, spec: &HostSpec<'_>) -> Self {
        let dir = root.join(spec.name);
        std::fs::create_dir_all(&dir).expect("data dir");
        let quic: SocketAddr = std::net::UdpSocket::bind((own_loopback_ip(), 0))
            .and_then(|s| s.local_addr())
            .expect("free UDP port");
        let config = root.join(format!("{}.toml", spec.name));
        std::fs::write(&config, format!("lease_secs = {}\n", spec.lease_secs)).expect("config");
        let _ = std::fs::remove_file(dir.join("operator.addr"));
        let log = std::fs::File::create(root.join(format!("{}.log", spec.name))).expect("log");
        let child = Command::new(vphone_testkit::binary("vphone-host"))
            // A host without phones is a front door: `vphone-host gateway`.
            .arg(if spec.capacity == 0 {
                "gateway"
            } else {
                "serve"
            })
            .arg("--data-dir")
            .arg(&dir)
            .args(["--operator-listen", "127.0.0.1:0", "--no-web"])
            .args(["--quic-listen", &quic.to_string()])
            .args(["--public-addr", &quic.to_string()])
            .args(["--registry", spec.registry, "--host-name", spec.name])
            .args(["--capacity", &spec.capacity.to_string()])
            .arg("--config")
            .arg(&config)
            .args(&spec.args)
            .env("RUST_LOG", "info,host_core::phones=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vphone-host");
        let token_file = spec
            .args
            .iter()
            .position(|a| a == "--admin-token-file")
            .and_then(|i| spec.args.get(i + 1))
            .map(PathBuf::from);
        let host = Self {
            name: spec.name.to_owned(),
            dir,
            quic,
            token_file,
            child: Some(child),
        };
        let t = Instant::now();
        while !host.dir.join("operator.addr").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{} did not come up: {}",
                spec.name,
                host.log(root)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    /// Its log so far.
    #[must_use]
    pub fn log(&self, root: &Path) -> String {
        std::fs::read_to_string(root.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for it to exit (a clean shutdown).
    ///
    /// # Panics
    /// When it does not exit within 15 s.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            vphone_testkit::process::signal(c.id(), "TERM");
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "{} did not stop",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `vphonectl --data-dir DIR ARGS...`: its stdout, or its stderr as the
    /// error.
    ///
    /// # Errors
    /// The command's stderr when it fails.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut ctl = Command::new(vphone_testkit::binary("vphonectl"));
        ctl.arg("--data-dir").arg(&self.dir);
        if let Some(t) = &self.token_file {
            ctl.arg("--token-file").arg(t);
        }
        let o = ctl.args(args).output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    /// How many of its phones are in lifecycle `state`, from `/metrics`
    /// (which answers from the phone actor alone, also while the registry
    /// is out of reach).
    #[must_use]
    pub fn phones_in(&self, state: &str) -> Option<u32> {
        use std::io::{Read, Write};
        let addr = std::fs::read_to_string(self.dir.join("operator.addr")).ok()?;
        let mut tcp = std::net::TcpStream::connect(addr.trim()).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).ok()?;
        let want = format!("vphone_phones{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The phones of its live handset sessions (`session list --json`).
    ///
    /// # Panics
    /// When `vphonectl` fails or prints no JSON list.
    #[must_use]
    pub fn sessions(&self) -> Vec<String> {
        let listed = self
            .ctl(&["--json", "session", "list"])
            .unwrap_or_else(|e| panic!("{}: session list: {e}", self.name));
        let v: serde_json::Value = serde_json::from_str(&listed)
            .unwrap_or_else(|e| panic!("{}: session list: {e}: {listed}", self.name));
        v.as_array()
            .unwrap_or_else(|| panic!("{}: session list is no list: {listed}", self.name))
            .iter()
            .map(|s| s["phone"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A phone's lifecycle state on this host (`phone show --json`).
    #[must_use]
    pub fn phone_state(&self, phone: &str) -> Option<String> {
        let out = self.ctl(&["--json", "phone", "show", phone]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["state"].as_str().map(str::to_owned)
    }
}

impl Drop for FleetHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The next loopback address for a host of this process: 127.0.0.11 up to
/// 127.0.0.250, then round again (127.0.0.2 is the phones' Bluetooth
/// attach address).
fn own_loopback_ip() -> std::net::Ipv4Addr {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 240;
    std::net::Ipv4Addr::new(127, 0, 0, 11 + n)
}

/// The registry as the test reads it (its own connection).
///
/// # Panics
/// When it cannot connect.
#[must_use]
pub fn registry(url: &str) -> Registry {
    Registry::connect(&Target::Postgres(url.to_owned())).expect("registry")
}

/// The live leases (unexpired) at the registry's now, by phone.
///
/// # Panics
/// When the registry cannot be read.
#[must_use]
pub fn live_leases(registry: &Registry) -> Vec<Lease> {
    let now = host_core::unix_ms();
    registry
        .leases()
        .expect("leases")
        .into_iter()
        .filter(|l| l.expires_at_ms > now)
        .collect()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what`
/// after `within`.
///
/// # Panics
/// When `within` passes.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP proxy to `target` on a free loopback port whose traffic can be
/// cut both ways while connections stay open (a partition, not a reset).
#[derive(Debug)]
pub struct CuttableProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

impl CuttableProxy {
    /// Starts forwarding to `target`.
    ///
    /// # Panics
    /// When it cannot bind.
    #[must_use]
    pub fn start(target: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, c.clone()));
                tokio::spawn(pump(sr, cw, c.clone()));
            }
        });
        Self { addr, cut, _rt: rt }
    }

    /// Drops every byte from now on (both ways), keeping connections open
    /// and accepting new ones that go nowhere.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
