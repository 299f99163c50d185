//! `vphonectl`: the operator CLI of a vphone host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand};
use sensor_proto::layout::{admin_token_path, default_data_dir, operator_addr_path};
use sensor_proto::operator as op;
use sensor_proto::operator::operator_client::OperatorClient;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const EXAMPLES: &str = "\
Examples:
  vphonectl phone list
  vphonectl phone create pixel --backend emulator --avd Pixel_7_API_34
  vphonectl phone create lab --size 1080x2400 --dpi 420
  vphonectl phone screenshot phone-1 --out screen.png
  vphonectl handset enroll --name alice-pixel --phone phone-1
  vphonectl handset revoke alice-pixel
  vphonectl session list --json
  vphonectl bt snoop phone-1 --out phone-1.btsnoop     (Ctrl-C stops; open in Wireshark)
  vphonectl completions bash > /etc/bash_completion.d/vphonectl

The host is found through its data dir (--data-dir, VPHONE_DATA_DIR, or the
default $XDG_DATA_HOME/vphone): it holds the operator address and the admin
token. --operator and --token-file name them explicitly instead.";

/// Operate a vphone host: phones, handsets, sessions.
#[derive(Debug, Parser)]
#[command(name = "vphonectl", version, after_help = EXAMPLES)]
struct Cli {
    /// The host's data dir (finds the operator address and admin token).
    #[arg(long, global = true, env = "VPHONE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Operator API address, host:port (default: from the data dir, else 127.0.0.1:4434).
    #[arg(long, global = true, env = "VPHONE_OPERATOR")]
    operator: Option<String>,
    /// File holding the admin token (default: `<data dir>/admin.token`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print listings as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, inspect, start, stop and delete phones.
    #[command(subcommand)]
    Phone(PhoneCmd),
    /// Enroll, list and revoke handsets.
    #[command(subcommand)]
    Handset(HandsetCmd),
    /// List and end live handset sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Bluetooth: capture a phone's HCI traffic.
    #[command(subcommand)]
    Bt(BtCmd),
    /// Host statistics.
    Stats,
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum PhoneCmd {
    /// Create a phone (started unless --no-start).
    Create(CreateArgs),
    /// List phones.
    List,
    /// Show one phone.
    Show {
        /// Phone name.
        name: String,
    },
    /// Start a phone.
    Start {
        /// Phone name.
        name: String,
    },
    /// Stop a phone.
    Stop {
        /// Phone name.
        name: String,
    },
    /// Delete a phone.
    Delete {
        /// Phone name.
        name: String,
        /// Stop it first if it is running.
        #[arg(long)]
        force: bool,
    },
    /// Save the phone's screen as a PNG file.
    Screenshot {
        /// Phone name.
        name: String,
        /// Where to write the PNG.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Phone name: letters, digits, '-', '_', '.'.
    name: String,
    /// Backend: sim (built-in software phone) or emulator (Android Emulator).
    #[arg(long, default_value = "sim", value_parser = ["sim", "emulator"])]
    backend: String,
    /// AVD to boot (emulator backend).
    #[arg(long)]
    avd: Option<String>,
    /// Screen size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "720x1280")]
    size: String,
    /// Screen density in dpi.
    #[arg(long, default_value_t = 320)]
    dpi: u32,
    /// Create it stopped.
    #[arg(long)]
    no_start: bool,
}

#[derive(Debug, Subcommand)]
enum HandsetCmd {
    /// Create a single-use enrollment string (and QR code) for a new handset.
    Enroll {
        /// Name the handset will have.
        #[arg(long)]
        name: Option<String>,
        /// A phone it may use (repeat; none = every phone).
        #[arg(long = "phone")]
        phones: Vec<String>,
        /// How long the enrollment string stays valid, in seconds.
        #[arg(long, default_value_t = 600)]
        ttl: u32,
        /// Print only the enrollment string.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List handsets.
    List {
        /// Include revoked handsets.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a handset (by name or fingerprint prefix); its sessions end.
    Revoke {
        /// Handset name or fingerprint (prefix of at least 6 characters).
        handset: String,
    },
}

#[derive(Debug, Subcommand)]
enum BtCmd {
    /// Capture the HCI traffic between a phone's Bluetooth stack and the
    /// handset radio lent to it, as a btsnoop file (Wireshark, tshark,
    /// btmon -r). Keys (LTKs, link keys, PINs, IRKs) are zeroed unless
    /// --unredacted is given. Runs until Ctrl-C (packets already on their
    /// way in the next 0.3 s are still written), --duration or --count.
    Snoop {
        /// The phone.
        phone: String,
        /// The btsnoop file to write.
        #[arg(long)]
        out: PathBuf,
        /// Keep keys in the capture (the host logs that you asked).
        #[arg(long)]
        unredacted: bool,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// List live sessions.
    List,
    /// End a session.
    Kick {
        /// Session id.
        id: String,
        /// Reason shown to the handset.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

type Client = OperatorClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone, Debug)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Exit codes (documented in --help of the README).
/// After Ctrl-C, `bt snoop` still writes the packets already on their way
/// for this long, so a capture stopped right after the traffic ends has all
/// of it.
const CAPTURE_DRAIN: std::time::Duration = std::time::Duration::from_millis(300);

const EXIT_FAIL: u8 = 1;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_AUTH: u8 = 4;
const EXIT_UNAVAILABLE: u8 = 5;

#[derive(Debug)]
struct CliError {
    code: u8,
    msg: String,
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: EXIT_FAIL,
            msg: format!("{e:#}"),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let code = match s.code() {
            Code::NotFound => EXIT_NOT_FOUND,
            Code::Unauthenticated | Code::PermissionDenied => EXIT_AUTH,
            Code::Unavailable => EXIT_UNAVAILABLE,
            _ => EXIT_FAIL,
        };
        Self {
            code,
            msg: s.message().to_owned(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vphonectl: cannot start: {e}");
            return ExitCode::from(EXIT_FAIL);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vphonectl: {}", e.msg);
            ExitCode::from(e.code)
        }
    }
}

async fn connect(cli: &Cli) -> Result<Client, CliError> {
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&|k| std::env::var(k).ok()));
    let addr = match &cli.operator {
        Some(a) => a.clone(),
        None => std::fs::read_to_string(operator_addr_path(&data_dir))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "127.0.0.1:4434".to_owned()),
    };
    let token_path = cli
        .token_file
        .clone()
        .unwrap_or_else(|| admin_token_path(&data_dir));
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| {
            format!(
                "cannot read the admin token {} (give --data-dir or --token-file; the host creates it at first start)",
                token_path.display()
            )
        })
        .map_err(|e| CliError {
            code: EXIT_AUTH,
            msg: format!("{e:#}"),
        })?;
    let bearer: MetadataValue<_> =
        format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| CliError {
                code: EXIT_AUTH,
                msg: format!("{} does not hold a valid token", token_path.display()),
            })?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow::anyhow!("invalid operator address {addr:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .map_err(|_| CliError {
            code: EXIT_UNAVAILABLE,
            msg: format!("cannot reach vphone-host at {addr}: is it running? (start it with `vphone-host serve`)"),
        })?;
    Ok(OperatorClient::with_interceptor(channel, Bearer(bearer)))
}

fn state_name(s: i32) -> &'static str {
    match op::PhoneState::try_from(s).unwrap_or(op::PhoneState::Unspecified) {
        op::PhoneState::Creating => "creating",
        op::PhoneState::Booting => "booting",
        op::PhoneState::Running => "running",
        op::PhoneState::Stopping => "stopping",
        op::PhoneState::Stopped => "stopped",
        op::PhoneState::Failed => "failed",
        op::PhoneState::Unspecified => "unknown",
    }
}

fn phone_json(p: &op::Phone) -> Value {
    let d = p.display.unwrap_or_default();
    json!({
        "name": p.name,
        "backend": if p.backend == op::Backend::Emulator as i32 { "emulator" } else { "sim" },
        "state": state_name(p.state),
        "desired_state": if p.desired_state == op::DesiredState::Running as i32 { "running" } else { "stopped" },
        "failure_reason": (!p.failure_reason.is_empty()).then_some(&p.failure_reason),
        "display": { "width": d.width_px, "height": d.height_px, "dpi": d.dpi },
        "avd": (!p.avd.is_empty()).then_some(&p.avd),
        "allowed_handsets": p.allowed_handsets,
        "created_at_unix_ms": p.created_at_unix_ms,
    })
}

fn print_phone(p: &op::Phone, as_json: bool) {
    if as_json {
        println!("{}", phone_json(p));
        return;
    }
    let d = p.display.unwrap_or_default();
    println!("name:     {}", p.name);
    println!(
        "backend:  {}",
        if p.backend == op::Backend::Emulator as i32 {
            "emulator"
        } else {
            "sim"
        }
    );
    println!("state:    {}", state_name(p.state));
    if !p.failure_reason.is_empty() {
        println!("reason:   {}", p.failure_reason);
    }
    println!("display:  {}x{} @ {} dpi", d.width_px, d.height_px, d.dpi);
    if !p.avd.is_empty() {
        println!("avd:      {}", p.avd);
    }
    println!(
        "handsets: {}",
        if p.allowed_handsets.is_empty() {
            "-".to_owned()
        } else {
            p.allowed_handsets.join(", ")
        }
    );
}

fn parse_size(s: &str) -> Result<(u32, u32), CliError> {
    let bad = || CliError {
        code: 2,
        msg: format!("invalid --size {s:?}: expected WIDTHxHEIGHT, e.g. 720x1280"),
    };
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Cmd::Completions { shell } = &cli.cmd {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "vphonectl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let mut c = connect(&cli).await?;
    let as_json = cli.json;
    match cli.cmd {
        Cmd::Completions { .. } => {}
        Cmd::Phone(PhoneCmd::Create(a)) => {
            let (w, h) = parse_size(&a.size)?;
            let p = c
                .create_phone(op::CreatePhoneRequest {
                    name: a.name,
                    backend: if a.backend == "emulator" {
                        op::Backend::Emulator
                    } else {
                        op::Backend::Sim
                    } as i32,
                    display: Some(op::DisplaySpec {
                        width_px: w,
                        height_px: h,
                        dpi: a.dpi,
                    }),
                    avd: a.avd.unwrap_or_default(),
                    allowed_handsets: Vec::new(),
                    start: !a.no_start,
                })
                .await?
                .into_inner();
            print_phone(&p, as_json);
        }
        Cmd::Phone(PhoneCmd::List) => {
            let phones = c
                .list_phones(op::ListPhonesRequest {})
                .await?
                .into_inner()
                .phones;
            if as_json {
                println!("{}", Value::Array(phones.iter().map(phone_json).collect()));
            } else {
                println!(
                    "{:<20} {:<9} {:<9} {:<11} REASON",
                    "NAME", "BACKEND", "STATE", "SIZE"
                );
                for p in &phones {
                    let d = p.display.unwrap_or_default();
                    println!(
                        "{:<20} {:<9} {:<9} {:<11} {}",
                        p.name,
                        if p.backend == op::Backend::Emulator as i32 {
                            "emulator"
                        } else {
                            "sim"
                        },
                        state_name(p.state),
                        format!("{}x{}", d.width_px, d.height_px),
                        p.failure_reason
                    );
                }
            }
        }
        Cmd::Phone(PhoneCmd::Show { name }) => {
            let p = c
                .get_phone(op::GetPhoneRequest { name })
                .await?
                .into_inner();
            print_phone(&p, as_json);
        }
        Cmd::Phone(PhoneCmd::Start { name }) => {
            let p = c
                .start_phone(op::StartPhoneRequest { name })
                .await?
                .into_inner();
            print_phone(&p, as_json);
        }
        Cmd::Phone(PhoneCmd::Stop { name }) => {
            let p = c
                .stop_phone(op::StopPhoneRequest { name, force: false })
                .await?
                .into_inner();
            print_phone(&p, as_json);
        }
        Cmd::Phone(PhoneCmd::Delete { name, force }) => {
            c.delete_phone(op::DeletePhoneRequest {
                name: name.clone(),
                force,
            })
            .await?;
            if !as_json {
                println!("deleted phone '{name}'");
            }
        }
        Cmd::Phone(PhoneCmd::Screenshot { name, out }) => {
            let s = c
                .get_screenshot(op::GetScreenshotRequest {
                    name,
                    max_width: 0,
                    max_height: 0,
                })
                .await?
                .into_inner();
            std::fs::write(&out, &s.png).with_context(|| format!("writing {}", out.display()))?;
            if as_json {
                println!(
                    "{}",
                    json!({"path": out, "width": s.width, "height": s.height})
                );
            } else {
                println!("wrote {} ({}x{})", out.display(), s.width, s.height);
            }
        }
        Cmd::Handset(HandsetCmd::Enroll {
            name,
            phones,
            ttl,
            quiet,
        }) => {
            let r = c
                .enroll_handset(op::EnrollHandsetRequest {
                    name,
                    allowed_phones: phones,
                    ttl_seconds: ttl,
                })
                .await?
                .into_inner();
            if quiet {
                println!("{}", r.enrollment);
            } else if as_json {
                println!(
                    "{}",
                    json!({"enrollment": r.enrollment, "expires_at_unix_ms": r.expires_at_unix_ms, "host_pin": r.host_pin})
                );
            } else {
                println!("{}", r.enrollment);
                if let Some(code) = qr(&r.enrollment) {
                    println!("{code}");
                }
                println!(
                    "Single use, valid for {ttl}s. On the handset: vphone-companion enroll '<the string above>'"
                );
            }
        }
        Cmd::Handset(HandsetCmd::List { all }) => {
            let hs = c
                .list_handsets(op::ListHandsetsRequest {
                    include_revoked: all,
                })
                .await?
                .into_inner()
                .handsets;
            if as_json {
                let v: Vec<Value> = hs
                    .iter()
                    .map(|h| {
                        json!({
                            "name": h.name, "fingerprint": h.fingerprint,
                            "state": if h.state == op::HandsetState::Revoked as i32 { "revoked" } else { "enrolled" },
                            "allowed_phones": h.allowed_phones,
                            "enrolled_at_unix_ms": h.enrolled_at_unix_ms, "last_seen_unix_ms": h.last_seen_unix_ms,
                        })
                    })
                    .collect();
                println!("{}", Value::Array(v));
            } else {
                println!("{:<20} {:<9} {:<18} PHONES", "NAME", "STATE", "FINGERPRINT");
                for h in &hs {
                    println!(
                        "{:<20} {:<9} {:<18} {}",
                        h.name,
                        if h.state == op::HandsetState::Revoked as i32 {
                            "revoked"
                        } else {
                            "enrolled"
                        },
                        h.fingerprint.chars().take(16).collect::<String>(),
                        if h.allowed_phones.is_empty() {
                            "(all)".to_owned()
                        } else {
                            h.allowed_phones.join(",")
                        }
                    );
                }
            }
        }
        Cmd::Handset(HandsetCmd::Revoke { handset }) => {
            let h = c
                .revoke_handset(op::RevokeHandsetRequest { handset })
                .await?
                .into_inner();
            if !as_json {
                println!("revoked handset '{}' ({})", h.name, h.fingerprint);
            }
        }
        Cmd::Session(SessionCmd::List) => {
            let ss = c
                .list_sessions(op::ListSessionsRequest {})
                .await?
                .into_inner()
                .sessions;
            if as_json {
                let v: Vec<Value> = ss
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id, "handset": s.handset_name, "handset_fingerprint": s.handset_fingerprint,
                            "phone": s.phone, "remote_addr": s.remote_addr, "started_at_unix_ms": s.started_at_unix_ms,
                            "resumed_count": s.resumed_count, "bytes_up": s.bytes_up, "bytes_down": s.bytes_down,
                            "frames_sent": s.frames_sent, "radio_lent": s.radio_lent, "rtt_us": s.rtt_us,
                        })
                    })
                    .collect();
                println!("{}", Value::Array(v));
            } else {
                println!(
                    "{:<26} {:<16} {:<16} {:<22} RADIO",
                    "ID", "HANDSET", "PHONE", "REMOTE"
                );
                for s in &ss {
                    println!(
                        "{:<26} {:<16} {:<16} {:<22} {}",
                        s.id,
                        s.handset_name,
                        s.phone,
                        s.remote_addr,
                        if s.radio_lent { "lent" } else { "-" }
                    );
                }
            }
        }
        Cmd::Session(SessionCmd::Kick { id, reason }) => {
            c.kick_session(op::KickSessionRequest {
                id: id.clone(),
                reason,
            })
            .await?;
            if !as_json {
                println!("ended session {id}");
            }
        }
        Cmd::Bt(BtCmd::Snoop {
            phone,
            out,
            unredacted,
            duration,
            count,
        }) => {
            let n = snoop(&mut c, phone, &out, unredacted, duration, count).await?;
            if as_json {
                println!(
                    "{}",
                    json!({"path": out, "packets": n, "redacted": !unredacted})
                );
            } else {
                eprintln!();
                println!("wrote {} ({n} packets)", out.display());
            }
        }
        Cmd::Stats => {
            let s = c
                .get_host_stats(op::GetHostStatsRequest {})
                .await?
                .into_inner();
            if as_json {
                println!(
                    "{}",
                    json!({"phones": s.phones, "phones_running": s.phones_running, "handsets": s.handsets,
                           "sessions": s.sessions, "sessions_connected": s.sessions_connected,
                           "uptime_ms": s.uptime_ms, "version": s.version, "bytes_up": s.bytes_up, "bytes_down": s.bytes_down})
                );
            } else {
                println!("version:   {}", s.version);
                println!("uptime:    {}s", s.uptime_ms / 1000);
                println!("phones:    {} ({} running)", s.phones, s.phones_running);
                println!("handsets:  {}", s.handsets);
                println!(
                    "sessions:  {} ({} connected)",
                    s.sessions, s.sessions_connected
                );
                println!("traffic:   {} B up, {} B down", s.bytes_up, s.bytes_down);
            }
        }
    }
    Ok(())
}

/// Streams `phone`'s HCI capture into a btsnoop file; returns the packets
/// written.
async fn snoop(
    c: &mut Client,
    phone: String,
    out: &std::path::Path,
    unredacted: bool,
    duration: Option<f64>,
    count: Option<u64>,
) -> Result<u64, CliError> {
    use bt_raw::btsnoop::{Direction, SnoopWriter};
    use std::io::Write as _;
    let mut stream = c
        .stream_bt_snoop(op::StreamBtSnoopRequest {
            phone: phone.clone(),
            unredacted,
        })
        .await?
        .into_inner();
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let file = std::io::BufWriter::new(file);
    // The host already redacted; the writer redacts again unless asked not to.
    let mut w = if unredacted {
        SnoopWriter::unredacted(file)
    } else {
        SnoopWriter::new(file)
    }
    .with_context(|| format!("writing {}", out.display()))?;
    // The header goes out at once: the file is a valid (empty) capture.
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "capturing {phone}'s Bluetooth HCI into {} ({}); Ctrl-C stops",
        out.display(),
        if unredacted {
            "UNREDACTED: keys in clear"
        } else {
            "keys redacted"
        }
    );
    let mut deadline = duration
        .map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs_f64(s.max(0.0)));
    let (mut n, mut dropped) = (0u64, 0u64);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        if count.is_some_and(|max| n >= max) {
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            m = stream.message() => m?,
            () = sleep => break,
            _ = &mut ctrl_c, if !interrupted => {
                // Keep what is already on its way (the host sends each
                // packet as it relays it), then stop.
                interrupted = true;
                let grace = tokio::time::Instant::now() + CAPTURE_DRAIN;
                deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                continue;
            }
        };
        let Some(r) = msg else { break };
        dropped += r.dropped_before;
        let Ok(pkt) = bt_raw::H4Packet::parse(r.h4.to_vec()) else {
            continue;
        };
        let dir = if r.direction == op::SnoopDirection::HostToController as i32 {
            Direction::HostToController
        } else {
            Direction::ControllerToHost
        };
        w.write(dir, &pkt, i64::try_from(r.timestamp_us).unwrap_or(i64::MAX))
            .with_context(|| format!("writing {}", out.display()))?;
        n += 1;
        if n % 100 == 0 {
            w.flush()
                .with_context(|| format!("writing {}", out.display()))?;
            eprint!("\r{n} packets");
            let _ = std::io::stderr().flush();
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    if dropped > 0 {
        eprintln!("warning: the host dropped {dropped} packets (this capture was too slow)");
    }
    Ok(n)
}
