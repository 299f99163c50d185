//! The testbed: bumble controllers, a release vphone host, a companion
//! lending a controller; free ports.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------- processes

/// Two distinct free TCP ports.
pub(crate) fn two_ports() -> (u16, u16) {
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
pub(crate) struct Ctx {
    pub(crate) bins: Bins,
    pub(crate) scripts: PathBuf,
    pub(crate) flat: PathBuf,
}

/// bumble's two linked virtual controllers, fresh ports; (process, A, B).
/// Two bumble controllers on one virtual radio: A on H4/TCP, B on H4/TCP
/// or, with `b_netsim`, on a netsim `PacketStreamer` port of its own.
pub(crate) async fn controllers(
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
pub(crate) struct Host {
    pub(crate) proc: Proc,
    pub(crate) data: PathBuf,
    pub(crate) netsim: SocketAddr,
    pub(crate) ctl: PathBuf,
}

impl Host {
    pub(crate) async fn start(
        ctx: &Ctx,
        dir: &Path,
        quic: SocketAddr,
        public: SocketAddr,
    ) -> Result<Self, String> {
        let data = dir.join("host-data");
        // The development listener: the bench drives a vphone-host binary and
        // names the phone; never 127.0.0.1, which emulator guests reach.
        let netsim = SocketAddr::from(([127, 0, 0, 2], free_port()));
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
    pub(crate) async fn ctl(&self, args: &[&str]) -> Result<String, String> {
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

    pub(crate) async fn sessions(&self) -> Vec<Value> {
        match self.ctl(&["--json", "session", "list"]).await {
            Ok(out) => match serde_json::from_str(&out) {
                Ok(Value::Array(v)) => v,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Enrolls handset `name` into `config`, as an operator and a person would.
    pub(crate) async fn enroll(&self, ctx: &Ctx, config: &Path, name: &str) -> Result<(), String> {
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
pub(crate) async fn lend(
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
