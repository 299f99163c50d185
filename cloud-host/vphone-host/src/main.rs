//! `vphone-host`: the vphone cloud host daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod demo;
use host_core::config::{ConfigLayer, HostConfig};
use host_core::daemon::Listeners;
use sim_phone::SimKind;
use vphone_operator::Enroller;
use vphone_operator::ServedHost;

/// jemalloc serves small allocations from a cache per thread, so the
/// real-time latency threads (QUIC, sensors, the sim phones' API) do not
/// queue on an allocator lock that a preempted low-priority video thread
/// holds (with glibc's shared arenas they did, up to 20 ms at 100
/// sessions). See ARCHITECTURE.md, "Data paths", "Threads".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXAMPLES: &str = "\
Examples:
  vphone-host serve                          # defaults: sim phone phone-1, operator on 127.0.0.1:4434
  vphone-host serve --data-dir /var/lib/vphone --public-addr phones.example.net:4433
  VPHONE_OPERATOR_LISTEN=127.0.0.1:9000 vphone-host serve --config /etc/vphone/host.toml
  export VPHONE_REGISTRY=postgres://vphone:PW@db/vphone     # a fleet (env: ps shows flags)
  vphone-host serve --host-name host-1 --capacity 4 --public-addr host-1.example.net:4433
  vphone-host gateway --host-name gateway --public-addr phones.example.net:4433
  vphone-host fleet-keys ./fleet-keys        # one key set for every gateway of a fleet
  vphone-host gateway --fleet-keys ./fleet-keys --admin-token-file ./fleet-keys/admin.token

Settings come from built-in defaults, then the TOML file given with --config,
then VPHONE_* environment variables, then flags. Operate the host with
`vphonectl` (it finds the operator address and admin token in the data dir).";

/// The vphone cloud host: virtual phones, handset sessions, Bluetooth bridge.
#[derive(Debug, Parser)]
#[command(name = "vphone-host", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the host until interrupted (Ctrl-C or SIGTERM).
    Serve(Box<ServeArgs>),
    /// A fleet's front door: a host that runs no phones (capacity 0) and
    /// answers every handset with a redirect to the host running its phone.
    /// Takes serve's options; needs --registry postgres://... shared with
    /// the hosts. Enroll handsets here so their strings name the front door.
    /// Several gateways behind one address share one --fleet-keys set.
    Gateway(Box<ServeArgs>),
    /// Write a new fleet key set into DIR for gateways (and hosts) to share,
    /// e.g. as a Kubernetes Secret: cert.pem + key.pem (the identity
    /// handsets pin), token.key (enrollment tokens), admin.token (the
    /// operator API). Never replaces an existing set.
    FleetKeys {
        /// Where to write the four files (created 0700).
        dir: PathBuf,
    },
    /// Everything on this machine, no setup: a host with a sim phone and an
    /// enrolled companion streaming synthetic sensors and scripted touches
    /// over QUIC on loopback; prints live stats, writes DIR/last-frame.png
    /// and DIR/session.h264.
    Demo {
        /// How long to stream.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Output directory.
        #[arg(long, default_value = "vphone-demo")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Data dir: registry, host identity, admin token, logs
    /// (default: $XDG_DATA_HOME/vphone or ~/.local/share/vphone).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// UDP address for handset QUIC connections (default: 0.0.0.0:4433).
    #[arg(long)]
    quic_listen: Option<SocketAddr>,
    /// Operator API and /metrics address (default: 127.0.0.1:4434).
    #[arg(long)]
    operator_listen: Option<SocketAddr>,
    /// Let the operator API listen off loopback although it has no TLS (the
    /// admin token then crosses the network in clear). Without it a
    /// non-loopback --operator-listen is refused: use `ssh -L` or a
    /// TLS-terminating proxy instead.
    #[arg(long)]
    operator_insecure_listen: bool,
    /// Development only: also serve the netsim PacketStreamer on this TCP
    /// address, where a stack names its phone (any process of this user can
    /// then attach as any phone). Off by default: each phone's stack has an
    /// attach point of its own. 127.0.0.1, ::1 and non-loopback addresses
    /// are refused (emulator guests reach them); use e.g. 127.0.0.2:4435.
    #[arg(long)]
    netsim_listen: Option<SocketAddr>,
    /// host:port that handsets dial, put in enrollment strings (default: 127.0.0.1 and the bound QUIC port).
    #[arg(long)]
    public_addr: Option<String>,
    /// Do not serve browser handsets (no WebTransport on the QUIC port, no
    /// page on the TCP port of the same number).
    #[arg(long)]
    no_web: bool,
    /// The browser handsets' page: its HTTPS certificate chain (PEM, from
    /// any CA; ACME in practice), reloaded when the file changes. Without
    /// it the page is plain HTTP, which a browser accepts only as
    /// http://localhost.
    #[arg(long, requires = "web_key")]
    web_cert: Option<PathBuf>,
    /// The private key of --web-cert (PEM).
    #[arg(long, requires = "web_cert")]
    web_key: Option<PathBuf>,
    /// The page's public URL, put in browser enrollment links (default:
    /// `https://PUBLIC-ADDR/` with --web-cert, else `http://localhost:PORT/`).
    #[arg(long)]
    web_url: Option<String>,
    /// The registry: a PostgreSQL database a fleet of hosts shares
    /// (postgres://USER:PASSWORD@HOST/DB), or an SQLite file (default:
    /// DATA-DIR/registry.sqlite3).
    #[arg(long)]
    registry: Option<String>,
    /// This host's name in the registry (default: the machine's host name;
    /// in Kubernetes, the pod's name).
    #[arg(long)]
    host_name: Option<String>,
    /// The most phones this host runs (default: no limit; 0: none).
    #[arg(long)]
    capacity: Option<u32>,
    /// Labels phones may ask a host for, e.g. zone=a,gpu=yes.
    #[arg(long)]
    labels: Option<String>,
    /// A fleet's shared keys (a directory, e.g. a mounted Secret, from
    /// `vphone-host fleet-keys`): present DIR/cert.pem + key.pem and mint
    /// with DIR/token.key instead of the data dir's own. Every gateway
    /// behind one address needs the same set.
    #[arg(long, value_name = "DIR")]
    fleet_keys: Option<PathBuf>,
    /// Read the operator API's admin token from FILE (e.g. a mounted
    /// Secret) instead of creating one in the data dir.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// TOML config file (keys: data_dir, quic_listen, operator_listen,
    /// operator_insecure_listen, netsim_listen, public_addr, web, web_cert,
    /// web_key, web_url, registry, host_name, capacity, labels, lease_secs,
    /// fleet_keys, admin_token_file, shutdown_delay_secs, resume_window_secs, boot_timeout_secs, restart_max, emulator_args,
    /// video_*, audio_*; see infra/host.toml.example).
    #[arg(long, env = "VPHONE_CONFIG")]
    config: Option<PathBuf>,
}

fn config(a: ServeArgs) -> anyhow::Result<HostConfig> {
    let env = |k: &str| std::env::var(k).ok();
    let file = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", p.display()))?;
            ConfigLayer::from_toml(p, &text)?
        }
        None => ConfigLayer::default(),
    };
    let flags = ConfigLayer {
        data_dir: a.data_dir,
        quic_listen: a.quic_listen,
        operator_listen: a.operator_listen,
        operator_insecure_listen: a.operator_insecure_listen.then_some(true),
        netsim_listen: a.netsim_listen,
        public_addr: a.public_addr,
        web: a.no_web.then_some(false),
        web_cert: a.web_cert,
        web_key: a.web_key,
        web_url: a.web_url,
        registry: a.registry,
        host_name: a.host_name,
        capacity: a.capacity,
        labels: a.labels,
        fleet_keys: a.fleet_keys,
        admin_token_file: a.admin_token_file,
        ..ConfigLayer::default()
    };
    Ok(file
        .overridden_by(ConfigLayer::from_env(&env)?)
        .overridden_by(flags)
        .resolve(&env))
}

async fn serve(cfg: HostConfig) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    let host = ServedHost::start(&cfg, listeners, SimKind::default().backends()).await?;
    eprintln!("vphone-host {} ready", env!("CARGO_PKG_VERSION"));
    eprintln!("  data dir:     {}", cfg.data_dir.display());
    eprintln!(
        "  operator API: {} (admin token in {})",
        host.operator_addr,
        cfg.admin_token_file
            .clone()
            .unwrap_or_else(|| vphone_operator::admin_token_path(&cfg.data_dir))
            .display()
    );
    eprintln!("  metrics:      http://{}/metrics", host.operator_addr);
    eprintln!(
        "  bluetooth:    each phone's stack attaches on {}, a port of its own{}",
        cfg.attach_ip,
        host.netsim_addr
            .map(|a| format!("; DEVELOPMENT listener on {a} (a stack names its phone)"))
            .unwrap_or_default()
    );
    eprintln!(
        "  host pin:     {}{}",
        host.enroller.pin(),
        cfg.fleet_keys
            .as_ref()
            .map(|d| format!(" (the fleet's, from {})", d.display()))
            .unwrap_or_default()
    );
    eprintln!(
        "  handsets:     udp {}; enrollment strings point at {} (set --public-addr for other machines)",
        host.quic_addr,
        cfg.public_addr_for(host.quic_addr)
    );
    eprintln!(
        "  enroll one:   vphonectl --data-dir {} handset enroll",
        cfg.data_dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if !cfg.shutdown_delay.is_zero() {
        // Not ready from now on: a load balancer's health check takes this
        // host out before it stops answering.
        host.begin_leaving();
        eprintln!(
            "leaving: /readyz says so; serving {} s more (shutdown_delay_secs; a second signal stops now)",
            cfg.shutdown_delay.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(cfg.shutdown_delay) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    eprintln!("shutting down");
    host.shutdown().await;
    Ok(())
}

async fn demo(seconds: f64, out: PathBuf) -> anyhow::Result<()> {
    let r = demo::run(demo::DemoOptions {
        seconds,
        out,
        live_stats: true,
    })
    .await?;
    let c = &r.companion;
    println!("demo finished: {seconds:.0}s of phone-1 streamed to a companion over QUIC");
    println!(
        "  video:            {} frames ({} keyframes, {} decoded, {} skipped), {:.1} fps, {:.1} kbit/s at the end",
        c.frames,
        c.keyframes,
        c.decoded,
        c.skipped,
        c.fps,
        c.bitrate_bps / 1000.0
    );
    println!(
        "  glass-to-glass:   p50 {:.1} ms, p99 {:.1} ms",
        c.g2g_p50_ms, c.g2g_p99_ms
    );
    println!(
        "  sensors:          {} samples sent; applied in the phone p50 {:.2} ms, p99 {:.2} ms",
        c.sensor_samples, r.sensor_latency_ms.0, r.sensor_latency_ms.1
    );
    println!("  input:            {} touches and keys", r.taps);
    if let Some(a) = &c.audio {
        println!(
            "  sound:            {} frames played, {} concealed; phone -> handset p50 {:.1} ms, p99 {:.1} ms; {:.0} kB",
            a.jitter.played,
            a.jitter.concealed,
            a.latency_p50_ms,
            a.latency_p99_ms,
            a.bytes_received as f64 / 1000.0
        );
        println!("  microphone:       {} frames sent", a.mic_frames_sent);
    }
    match &r.mic {
        Some(m) => println!(
            "  the phone heard:  {} at {:.0} dBFS",
            m.hz.map_or_else(|| "silence".to_owned(), |hz| format!("{hz:.0} Hz")),
            m.level_dbfs
        ),
        None => println!("  the phone heard:  nothing"),
    }
    match &r.clipboard {
        Some(text) => println!(
            "  clipboard:        the phone copied {} characters, received here",
            text.chars().count()
        ),
        None => println!("  clipboard:        nothing copied on the phone"),
    }
    println!(
        "  wrote:            {}, {} ({} frames) and {} (what the handset heard)",
        r.last_frame.display(),
        r.video.display(),
        c.recorded_frames,
        r.audio.display()
    );
    Ok(())
}

fn fleet_keys(dir: &std::path::Path) -> anyhow::Result<()> {
    let pin = host_core::enroll::create_fleet_keys(dir)?;
    println!("wrote a fleet key set to {}", dir.display());
    println!("  pin:   {pin} (every handset enrolled at a front door with this set pins it)");
    println!("  files: cert.pem, key.pem, token.key, admin.token (keep them secret; back them up:");
    println!("         losing key.pem means enrolling every handset again)");
    println!("use it:");
    println!(
        "  vphone-host gateway --fleet-keys {0} --admin-token-file {0}/admin.token ...",
        dir.display()
    );
    println!("  kubectl -n vphone create secret generic vphone-fleet-keys \\");
    println!(
        "    --from-file={0}/cert.pem --from-file={0}/key.pem --from-file={0}/token.key",
        dir.display()
    );
    println!(
        "  kubectl -n vphone create secret generic vphone-admin --from-file={}/admin.token",
        dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if matches!(cli.cmd, Cmd::Demo { .. }) {
                    "warn"
                } else {
                    "info"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vphone-host: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match cli.cmd {
        Cmd::Serve(a) => config(*a).and_then(|cfg| rt.block_on(serve(cfg))),
        Cmd::Gateway(a) => config(*a)
            .and_then(|mut cfg| {
                anyhow::ensure!(
                    cfg.registry.is_some(),
                    "a gateway needs the fleet's registry: --registry postgres://USER:PASSWORD@HOST/DB \
                     (or VPHONE_REGISTRY)"
                );
                cfg.capacity = 0;
                Ok(cfg)
            })
            .and_then(|cfg| rt.block_on(serve(cfg))),
        Cmd::Demo { seconds, out } => rt.block_on(demo(seconds, out)),
        Cmd::FleetKeys { dir } => fleet_keys(&dir),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vphone-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}
