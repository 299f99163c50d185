//! `vphone-companion`: lend this device's sensors, touches and keys to a
//! virtual phone and see its screen.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mobile_client::ClientError;
use mobile_client::config;
use mobile_client::session::{Companion, ConnectOptions};

const EXAMPLES: &str = "\
Examples:
  vphone-companion enroll 'vphone://203.0.113.5:4433?pin=…&token=…'
  vphone-companion connect --stats
  vphone-companion connect --phone lab --sensors replay:walk.sensors --duration 30
  vphone-companion connect --record session.h264 --save-frame last.png --duration 10
  vphone-companion connect --sensors iio --record-sensors desk.sensors

Get an enrollment string from the host's operator: `vphonectl handset enroll`.
The config dir (--config-dir, VPHONE_COMPANION_DIR, or $XDG_CONFIG_HOME/vphone-companion)
holds the host address and pin, and this handset's key pair.

Sensor recordings (--record-sensors, --sensors replay:FILE) are text, one sample per line:
  <t_ns> <KIND> v1 v2 v3       e.g. 1000000 ACCELEROMETER 0.1 0.2 9.8
  LOC <t_ns> lat lon alt speed bearing accuracy";

/// The vphone companion: drive a cloud phone from this device.
#[derive(Debug, Parser)]
#[command(name = "vphone-companion", version, after_help = EXAMPLES)]
struct Cli {
    /// Config dir [default: $XDG_CONFIG_HOME/vphone-companion].
    #[arg(long, global = true, env = "VPHONE_COMPANION_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enroll this device with a host, using the operator's one-line string.
    Enroll {
        /// The enrollment string (`vphone://HOST:PORT?pin=…&token=…`).
        enrollment: String,
        /// A name for this handset [default: the hostname].
        #[arg(long)]
        name: Option<String>,
    },
    /// Connect to the phone and stream until interrupted (or --duration).
    Connect(ConnectArgs),
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// The phone to drive [default: the first phone assigned to this handset].
    #[arg(long)]
    phone: Option<String>,
    /// Sensor source: synthetic, synthetic:SEED, replay:FILE, iio or iio:DIR.
    #[arg(long, default_value = "synthetic")]
    sensors: String,
    /// Also record the sampled sensors to FILE (replay it with --sensors replay:FILE).
    #[arg(long, value_name = "FILE")]
    record_sensors: Option<PathBuf>,
    /// Show the phone's screen in a window (not available in this build).
    #[arg(long, conflicts_with = "headless")]
    view: bool,
    /// No window (the default in this build).
    #[arg(long)]
    headless: bool,
    /// Record the received video as raw H.264 to FILE.
    #[arg(long, value_name = "FILE.h264")]
    record: Option<PathBuf>,
    /// Save the last frame as PNG when done.
    #[arg(long, value_name = "FILE.png")]
    save_frame: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Print live statistics every second.
    #[arg(long)]
    stats: bool,
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotEnrolled { .. } => 3,
        ClientError::Refused { .. } => 4,
        ClientError::Unreachable { .. } => 5,
        ClientError::PinMismatch { .. } => 6,
        _ => 1,
    }
}

async fn connect(dir: PathBuf, a: ConnectArgs) -> Result<(), ClientError> {
    if a.view {
        return Err(ClientError::Session(
            "the window viewer is not part of this build yet; run with --headless (and --save-frame or --record to see the screen)"
                .to_owned(),
        ));
    }
    let mut opts = ConnectOptions::new(dir);
    opts.phone = a.phone;
    opts.sensors = a.sensors.parse()?;
    opts.record_sensors = a.record_sensors;
    opts.record_h264 = a.record;
    opts.save_frame = a.save_frame;
    eprintln!("connecting…");
    let companion = Companion::connect(opts).await?;
    let r = companion.report();
    eprintln!(
        "connected to phone '{}' (session {})",
        r.phone, r.session_id
    );
    let deadline = a
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            () = until_deadline => break None,
            e = companion.ended() => break Some(e),
            _ = tick.tick() => {
                if a.stats {
                    let r = companion.report();
                    eprintln!(
                        "fps {:5.1} | {:7.1} kbit/s | glass-to-glass p50 {:6.1} ms p99 {:6.1} ms | sensors {} | rtt {} us",
                        r.fps, r.bitrate_bps / 1000.0, r.g2g_p50_ms, r.g2g_p99_ms, r.sensor_samples, r.rtt_us
                    );
                }
            }
        }
    };
    if let Some(e) = end {
        eprintln!("session ended by the host: {}", e.reason);
    }
    let r = companion.finish().await?;
    eprintln!(
        "done: {} frames ({} keyframes, {} decoded), {} sensor samples, glass-to-glass p50 {:.1} ms p99 {:.1} ms",
        r.frames, r.keyframes, r.decoded, r.sensor_samples, r.g2g_p50_ms, r.g2g_p99_ms
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = match cli.config_dir.map_or_else(config::default_config_dir, Ok) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vphone-companion: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    let res = match cli.cmd {
        Cmd::Enroll { enrollment, name } => {
            let name = name.unwrap_or_else(config::default_handset_name);
            config::enroll(&dir, &enrollment, &name).map(|(cfg, id)| {
                println!(
                    "enrolled as '{}' with host {} (config in {})",
                    cfg.handset_name,
                    cfg.host,
                    dir.display()
                );
                println!("this handset's fingerprint: {}", id.fingerprint());
                println!("next: vphone-companion connect");
            })
        }
        Cmd::Connect(a) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(connect(dir, a)),
            Err(e) => Err(ClientError::Session(format!(
                "cannot start the runtime: {e}"
            ))),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vphone-companion: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
