//! `vphone-companion`: lend this device's sensors, touches and keys (and,
//! with `--radio`, its Bluetooth radio) to a virtual phone and see its screen.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use device_bridge::SessionEnd;
use mobile_client::ClientError;
use mobile_client::config;
use mobile_client::radio::RadioOptions;
use mobile_client::session::{Companion, ConnectOptions};

const EXAMPLES: &str = "\
Examples:
  vphone-companion enroll 'vphone://203.0.113.5:4433?pin=…&token=…'
  vphone-companion connect --stats
  vphone-companion connect --view       (the default when a display is there)
  vphone-companion connect --phone lab --sensors replay:walk.sensors --duration 30
  vphone-companion connect --record session.h264 --save-frame last.png --duration 10
  vphone-companion connect --sensors iio --record-sensors desk.sensors
  vphone-companion radios                          (what this device could lend)
  vphone-companion connect --radio hci:0 --snoop handset.btsnoop
  vphone-companion connect --radio tcp:127.0.0.1:9002 --radio-policy strict.toml
  vphone-companion connect --audio-out heard.wav --mic synthetic:880 --duration 10
  vphone-companion connect --no-audio --no-clipboard

Sound: the phone's sound plays on this device's output (--audio-out auto, the
default: nothing if there is none). The microphone is never opened unless --mic
says so. The clipboard: the phone's copies arrive here (the viewer puts them on
this device's clipboard); a paste (Ctrl+V) in the viewer sets the phone's. Only a
paste sends, never every local copy: what you copy elsewhere stays yours.

Get an enrollment string from the host's operator: `vphonectl handset enroll`.
The config dir (--config-dir, VPHONE_COMPANION_DIR, or $XDG_CONFIG_HOME/vphone-companion)
holds the host address and pin, and this handset's key pair.

Exit codes: 3 not enrolled, 4 refused by the host, 5 host unreachable, 6 host key
mismatch, 7 the radio to lend (--radio) could not be opened.

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
    Connect(Box<ConnectArgs>),
    /// List the Bluetooth radios this device could lend (--radio) and the
    /// BLE peripherals nearby.
    #[command(after_help = RADIOS_HELP)]
    Radios {
        /// How long to scan for BLE peripherals (0: no scan).
        #[arg(long, value_name = "N", default_value_t = 5.0)]
        scan_seconds: f64,
    },
}

const RADIOS_HELP: &str = "\
Local adapters come from /sys/class/bluetooth and, where bluetoothd runs, from BlueZ
(name, address, powered). Each is lent with `connect --radio hci:N`. The BLE scan
(through BlueZ) shows which peripherals the phone will be able to reach through it.
`--radio tcp:HOST:PORT` lends an H4-over-TCP controller instead (bumble, RootCanal,
a rooted Android's HCI proxy).";

const RADIO_HELP: &str = "\
Lend a Bluetooth radio to the phone. The phone's own Bluetooth stack (in the cloud)
drives this controller over raw HCI: scanning, connecting, pairing and bonding happen
in the phone's stack and its keys stay there; this device relays HCI unchanged and
never decrypts anything. While lent, this device's own Bluetooth cannot use it.

SPEC: hci:N (Linux adapter N through the HCI user channel; where BlueZ runs it is
powered off first and on again afterwards; needs CAP_NET_ADMIN: run as root or
`sudo setcap cap_net_admin+ep $(which vphone-companion)`), tcp:HOST:PORT (an
H4-over-TCP controller: bumble, RootCanal, a rooted Android's HCI proxy),
tcp-listen:ADDR:PORT (wait for such a controller to connect) or unix:PATH.
`vphone-companion radios` lists the adapters.

Commands that could harm the controller or read other users' keys (vendor commands,
stored link keys, test modes, ...) are refused here and answered at once; see
--radio-policy.";

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// The phone to drive [default: the first phone assigned to this handset].
    #[arg(long)]
    phone: Option<String>,
    /// Sensor source: synthetic, synthetic:SEED, still (a handset lying on a desk), replay:FILE, iio or iio:DIR.
    #[arg(long, default_value = "synthetic")]
    sensors: String,
    /// Also record the sampled sensors to FILE (replay it with --sensors replay:FILE).
    #[arg(long, value_name = "FILE")]
    record_sensors: Option<PathBuf>,
    /// Show the phone's screen in a window: touches and keys go to the phone
    /// [default when built with the viewer and DISPLAY or WAYLAND_DISPLAY is set].
    #[arg(long, conflicts_with = "headless")]
    view: bool,
    /// No window, even when a display is there.
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
    /// Lend this Bluetooth radio to the phone: hci:N, tcp:HOST:PORT,
    /// tcp-listen:ADDR:PORT or unix:PATH.
    #[arg(long, value_name = "SPEC", long_help = RADIO_HELP)]
    radio: Option<String>,
    /// HCI command policy file (TOML) for the lent radio instead of the safe
    /// default, which refuses vendor commands, stored-link-key access, test
    /// and debug modes and rate-limits advertising and scan enables (README:
    /// "HCI policy files").
    #[arg(long, value_name = "FILE", requires = "radio")]
    radio_policy: Option<PathBuf>,
    /// Write a btsnoop capture (Wireshark opens it) of the HCI traffic with the
    /// lent radio. Keys (link keys, LTKs, IRKs, PINs) are zeroed unless
    /// --unredacted.
    #[arg(long, value_name = "FILE", requires = "radio")]
    snoop: Option<PathBuf>,
    /// Keep keys in clear in the --snoop capture (anyone with the file can
    /// then decrypt the recorded links).
    #[arg(long, requires = "snoop")]
    unredacted: bool,
    /// Where the phone's sound plays: auto (this device's output if it has
    /// one), device (the output, or an error), or FILE.wav (48 kHz mono,
    /// what this handset heard, in real time).
    #[arg(
        long,
        value_name = "auto|device|FILE.wav",
        default_value = "auto",
        conflicts_with = "no_audio"
    )]
    audio_out: mobile_client::audio::AudioOut,
    /// Ask for no sound at all (the host then sends none).
    #[arg(long)]
    no_audio: bool,
    /// The smallest delay of the sound's jitter buffer, ms; it grows under
    /// jitter and shrinks back.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=500))]
    audio_buffer: u32,
    /// The microphone sent into the phone: off, default (this device's),
    /// synthetic or synthetic:HZ (a tone) or wav:FILE (looped).
    #[arg(long, value_name = "SPEC", default_value = "off")]
    mic: mobile_client::audio::MicSpec,
    /// Do not carry the clipboard either way.
    #[arg(long)]
    no_clipboard: bool,
    /// Exit when the session is lost instead of reconnecting. By default a
    /// headless companion whose session is lost (the network stayed down
    /// past the resume window, the host restarted or shut down) connects
    /// again by itself, every 1 s backing off to 10 s, until it is back or
    /// stopped; files it writes (--record, --snoop, ...) get a -2, -3, ...
    /// suffix per new session.
    #[arg(long)]
    no_reconnect: bool,
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotEnrolled { .. } => 3,
        ClientError::Refused { .. } => 4,
        ClientError::Unreachable { .. } => 5,
        ClientError::PinMismatch { .. } => 6,
        ClientError::Radio { .. } => 7,
        _ => 1,
    }
}

/// How `connect` shows the screen.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Mode {
    Headless,
    View,
}

/// True when an X11 or Wayland display is there to open a window on.
fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// `--headless` wins; `--view` needs the viewer feature and a display; by
/// default a window opens when both are there.
fn choose_mode(
    view: bool,
    headless: bool,
    viewer_built: bool,
    display: bool,
) -> Result<Mode, ClientError> {
    if headless {
        return Ok(Mode::Headless);
    }
    if view {
        if !viewer_built {
            return Err(ClientError::Session(
                "this vphone-companion was built without the viewer (cargo feature `viewer`); \
                 run with --headless (and --save-frame or --record to see the screen)"
                    .to_owned(),
            ));
        }
        if !display {
            return Err(ClientError::Session(
                "--view needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set; \
                 run it in an X11 or Wayland session, or use --headless"
                    .to_owned(),
            ));
        }
        return Ok(Mode::View);
    }
    Ok(if viewer_built && display {
        Mode::View
    } else {
        Mode::Headless
    })
}

async fn start(dir: PathBuf, a: &ConnectArgs, session: u32) -> Result<Companion, ClientError> {
    let file = |p: &Option<PathBuf>| p.as_deref().map(|p| numbered(p, session));
    let mut opts = ConnectOptions::new(dir);
    opts.phone = a.phone.clone();
    opts.sensors = a.sensors.parse()?;
    opts.record_sensors = file(&a.record_sensors);
    opts.record_h264 = file(&a.record);
    opts.save_frame = file(&a.save_frame);
    opts.audio = mobile_client::audio::AudioOptions {
        out: (!a.no_audio).then(|| match &a.audio_out {
            mobile_client::audio::AudioOut::Wav(p) => {
                mobile_client::audio::AudioOut::Wav(numbered(p, session))
            }
            other => other.clone(),
        }),
        buffer_ms: a.audio_buffer,
        mic: a.mic.clone(),
    };
    opts.clipboard = !a.no_clipboard;
    if let Some(spec) = &a.radio {
        let spec = spec
            .parse()
            .map_err(|e: bt_raw::Error| ClientError::Radio {
                spec: spec.clone(),
                why: e.to_string(),
            })?;
        let mut r = RadioOptions::new(spec);
        r.policy_file = a.radio_policy.clone();
        r.snoop = file(&a.snoop);
        r.unredacted = a.unredacted;
        eprintln!("opening radio {}…", r.spec);
        opts.radio = Some(r);
    }
    eprintln!("connecting…");
    let companion = Companion::connect(opts).await?;
    let r = companion.report();
    eprintln!(
        "connected to phone '{}' (session {})",
        r.phone, r.session_id
    );
    if let Some(radio) = &r.radio {
        eprintln!("lending radio {} to the phone", radio.spec);
    }
    Ok(companion)
}

/// `path` for the `session`-th session of this run: itself for the first,
/// `NAME-2.EXT`, `NAME-3.EXT`, ... after reconnects, so no file is
/// overwritten.
fn numbered(path: &Path, session: u32) -> PathBuf {
    if session <= 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, path.extension()) {
        (Some(stem), Some(ext)) => format!("{stem}-{session}.{}", ext.to_string_lossy()),
        (Some(stem), None) => format!("{stem}-{session}"),
        (None, _) => format!("{session}"),
    };
    path.with_file_name(name)
}

/// Whether a session that ended with `code` is worth starting again: lost
/// to the network or to a host that went away (or handed its phone to
/// another host of the fleet: the front door finds it again), not ended on
/// purpose (kicked, revoked, phone stopped).
fn reconnectable(code: mobile_client::proto::AppErrorCode) -> bool {
    use mobile_client::proto::AppErrorCode as C;
    matches!(
        code,
        C::Shutdown | C::ResumeExpired | C::IdleTimeout | C::InternalError | C::Redirect
    )
}

/// Whether a failed connect may succeed later (host down or restarting,
/// the phone still held by the session that was lost, network trouble).
fn transient(e: &ClientError) -> bool {
    use mobile_client::proto::AppErrorCode as C;
    match e {
        ClientError::Unreachable { .. } | ClientError::Session(_) => true,
        ClientError::Refused { code, .. } => matches!(
            code,
            C::PhoneBusy | C::Shutdown | C::PhoneStopped | C::InternalError | C::IdleTimeout
        ),
        _ => false,
    }
}

/// Connects again after a lost session, backing off from 1 s to 10 s
/// between attempts. `None` when the person stopped it (ctrl-c, SIGTERM) or
/// `deadline` passed first.
async fn reconnect(
    dir: &Path,
    a: &ConnectArgs,
    session: u32,
    deadline: Option<Instant>,
) -> Result<Option<Companion>, ClientError> {
    let mut wait = Duration::from_secs(1);
    for attempt in 1u32.. {
        eprintln!(
            "vphone-companion: reconnecting in {} s (attempt {attempt}; ctrl-c to stop)",
            wait.as_secs()
        );
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(None),
            () = terminated() => return Ok(None),
            () = until_deadline => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        match start(dir.to_path_buf(), a, session).await {
            Ok(c) => {
                eprintln!("vphone-companion: reconnected (session {session} of this run)");
                return Ok(Some(c));
            }
            Err(e) if transient(&e) => {
                eprintln!("vphone-companion: reconnect failed: {e}");
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the attempts never run out")
}

/// The window's side of a session run with the viewer.
#[cfg(feature = "viewer")]
struct Window {
    handle: mobile_client::viewer::ViewerHandle,
    stats: tokio::sync::watch::Sender<Option<mobile_client::session::Report>>,
    closed: tokio::sync::oneshot::Receiver<()>,
}

#[cfg(feature = "viewer")]
impl Window {
    async fn closed(&mut self) {
        let _ = (&mut self.closed).await;
    }

    fn publish(&self, r: &mobile_client::session::Report) {
        let _ = self.stats.send(Some(r.clone()));
        self.handle.repaint();
    }

    fn close(&self) {
        self.handle.close();
    }
}

/// Without the viewer there is never a window.
#[cfg(not(feature = "viewer"))]
enum Window {}

#[cfg(not(feature = "viewer"))]
impl Window {
    async fn closed(&mut self) {
        match *self {}
    }

    fn publish(&self, _: &mobile_client::session::Report) {
        match *self {}
    }

    fn close(&self) {
        match *self {}
    }
}

/// Resolves on SIGTERM (on Unix), never elsewhere.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                return;
            }
            Err(e) => tracing::warn!("cannot watch SIGTERM: {e}"),
        }
    }
    std::future::pending::<()>().await;
}

/// The sound line of `--stats` and the final summary.
fn audio_line(a: &mobile_client::audio::AudioStats) -> String {
    let j = &a.jitter;
    let mut line = format!(
        "sound {} | buffer {:.0} ms (target {:.0}) | phone-to-ear p50 {:.1} ms p99 {:.1} ms | played {} concealed {} late {} skipped {}",
        if a.playback { "on" } else { "off" },
        a.buffer_ms,
        a.target_ms,
        a.latency_p50_ms,
        a.latency_p99_ms,
        j.played,
        j.concealed,
        j.late,
        j.skipped,
    );
    if a.mic_frames_sent > 0 || a.microphone {
        line.push_str(&format!(" | mic sent {}", a.mic_frames_sent));
    }
    if let Some(why) = &a.microphone_refused {
        line.push_str(&format!(" | microphone refused: {why}"));
    }
    line
}

/// The radio lines of `--stats` and the final summary.
fn radio_line(r: &mobile_client::radio::RadioStats) -> String {
    let mut line = format!(
        "radio {} | to radio {} pkts ({} B) | from radio {} pkts ({} B) | denied {} | queued for credits {} (now {}, peak {})",
        r.spec,
        r.packets_to_radio,
        r.bytes_to_radio,
        r.packets_from_radio,
        r.bytes_from_radio,
        r.denied_commands,
        r.queued_for_credits,
        r.queue_len,
        r.queue_peak,
    );
    if r.snoop_records > 0 {
        line.push_str(&format!(" | snoop {} records", r.snoop_records));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!(" | FAILED: {e}"));
    }
    line
}

/// Streams until ctrl-c or SIGTERM, --duration, the host ending the session
/// or the window closing; then closes the window and finishes the session.
async fn drive(
    companion: Companion,
    a: &ConnectArgs,
    mut window: Option<Window>,
    deadline: Option<Instant>,
) -> Result<Option<SessionEnd>, ClientError> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0u64;
    let mut radio_failed = false;
    let mut connections = companion.session().stats().connections;
    let end = loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let window_closed = async {
            match window.as_mut() {
                Some(w) => w.closed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            () = terminated() => break None,
            () = until_deadline => break None,
            () = window_closed => break None,
            e = companion.ended() => break Some(e),
            _ = tick.tick() => {
                ticks += 1;
                let r = companion.report();
                if let Some(w) = window.as_ref() {
                    w.publish(&r);
                }
                if a.stats && ticks % 2 == 1 {
                    eprintln!(
                        "fps {:5.1} | {:7.1} kbit/s | glass-to-glass p50 {:6.1} ms p99 {:6.1} ms | sensors {} | rtt {} us",
                        r.fps, r.bitrate_bps / 1000.0, r.g2g_p50_ms, r.g2g_p99_ms, r.sensor_samples, r.rtt_us
                    );
                    if let Some(radio) = &r.radio {
                        eprintln!("{}", radio_line(radio));
                    }
                    if let Some(audio) = &r.audio {
                        eprintln!("{}", audio_line(audio));
                    }
                }
                let now = companion.session().stats().connections;
                if now > connections {
                    connections = now;
                    eprintln!("vphone-companion: the connection was lost; the session resumed on a new one");
                }
                if let Some(e) = r.radio.as_ref().and_then(|x| x.error.as_ref())
                    && !radio_failed
                {
                    radio_failed = true;
                    eprintln!("vphone-companion: the lent radio failed: {e}; the phone no longer has Bluetooth");
                }
            }
        }
    };
    if let Some(w) = window.as_ref() {
        w.close();
    }
    if let Some(e) = &end {
        if e.by_peer {
            eprintln!("session ended by the host: {}", e.reason);
        } else {
            // This side closed it: a protocol error it found in the host's
            // data, or the resume window ran out.
            eprintln!(
                "vphone-companion ended the session ({:?}): {}",
                e.code, e.reason
            );
        }
    }
    let r = companion.finish().await?;
    eprintln!(
        "done: {} frames ({} keyframes, {} decoded), {} sensor samples, glass-to-glass p50 {:.1} ms p99 {:.1} ms",
        r.frames, r.keyframes, r.decoded, r.sensor_samples, r.g2g_p50_ms, r.g2g_p99_ms
    );
    if let Some(radio) = &r.radio {
        eprintln!("{}", radio_line(radio));
    }
    if let Some(audio) = &r.audio {
        eprintln!("{}", audio_line(audio));
    }
    Ok(end)
}

fn connect(dir: PathBuf, a: ConnectArgs) -> Result<(), ClientError> {
    let mode = choose_mode(
        a.view,
        a.headless,
        cfg!(feature = "viewer"),
        display_available(),
    )?;
    let rt = mobile_client::session::runtime()?;
    match mode {
        Mode::Headless => rt.block_on(async {
            let deadline = a
                .duration
                .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
            let mut session = 1;
            let mut companion = start(dir.clone(), &a, session).await?;
            loop {
                let end = drive(companion, &a, None, deadline).await?;
                match end {
                    Some(end) if !a.no_reconnect && reconnectable(end.code) => {}
                    _ => return Ok(()),
                }
                session += 1;
                match reconnect(&dir, &a, session, deadline).await? {
                    Some(c) => companion = c,
                    None => return Ok(()),
                }
            }
        }),
        #[cfg(feature = "viewer")]
        Mode::View => view(&rt, dir, a),
        #[cfg(not(feature = "viewer"))]
        Mode::View => unreachable!("choose_mode never picks the viewer without the feature"),
    }
}

/// The window on this (main) thread, the session on the runtime's threads.
#[cfg(feature = "viewer")]
fn view(rt: &tokio::runtime::Runtime, dir: PathBuf, a: ConnectArgs) -> Result<(), ClientError> {
    use mobile_client::viewer::{self, Viewer, ViewerHandle};

    let companion = rt.block_on(start(dir, &a, 1))?;
    let handle = ViewerHandle::new();
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(Some(companion.report()));
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let welcome = companion.session().welcome();
    let phone_size = welcome
        .display
        .map(|d| (d.width_px, d.height_px))
        .filter(|&(w, h)| w > 0 && h > 0);
    let v = Viewer {
        title: format!("vphone — {}", welcome.phone_name),
        phone_size,
        input: companion.input(),
        pictures: companion.pictures(),
        stats: stats_rx,
        handle: handle.clone(),
        paste: None,
        phone_clipboard: None,
    };
    let mut v = v;
    if !a.no_clipboard {
        let (paste_tx, mut paste_rx) = tokio::sync::mpsc::channel::<String>(4);
        let session = companion.session().clone();
        rt.spawn(async move {
            while let Some(text) = paste_rx.recv().await {
                if let Err(e) = mobile_client::session::send_clipboard(&session, &text).await {
                    eprintln!("vphone-companion: the paste did not reach the phone: {e}");
                }
            }
        });
        v.paste = Some(paste_tx);
        v.phone_clipboard = Some(companion.clipboard());
    }
    // Redraw as soon as a picture is decoded.
    let mut pictures = companion.pictures();
    let repaint = handle.clone();
    rt.spawn(async move {
        while pictures.changed().await.is_ok() {
            repaint.repaint();
        }
    });
    let window = Window {
        handle,
        stats: stats_tx,
        closed: closed_rx,
    };
    // The window shows one session: when it is lost, the companion says so
    // and ends (only a headless companion reconnects by itself).
    let deadline = a
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let session =
        rt.spawn(async move { drive(companion, &a, Some(window), deadline).await.map(drop) });
    let shown = viewer::run(v);
    let _ = closed_tx.send(());
    let finished = rt
        .block_on(session)
        .map_err(|e| ClientError::Session(format!("the session task failed: {e}")))
        .and_then(|r| r);
    shown.and(finished)
}

/// `vphone-companion radios`.
fn radios(scan_seconds: f64) -> Result<(), ClientError> {
    if !(0.0..=600.0).contains(&scan_seconds) {
        return Err(ClientError::InvalidArgument(
            "--scan-seconds must be between 0 and 600".to_owned(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Session(format!("cannot start the runtime: {e}")))?;
    use mobile_client::adapters;
    let scan = Duration::from_secs_f64(scan_seconds);
    let report = rt.block_on(async {
        let mut report = adapters::list_adapters(Path::new(adapters::SYSFS_BLUETOOTH)).await;
        if adapters::can_scan(&report, scan) {
            eprintln!("scanning for BLE peripherals for {scan_seconds} s…");
        }
        adapters::scan_into(&mut report, scan).await;
        report
    });
    print!("{report}");
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
        Cmd::Connect(a) => connect(dir, *a),
        Cmd::Radios { scan_seconds } => radios(scan_seconds),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vphone-companion: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_session_is_started_again_an_ended_one_is_not() {
        use mobile_client::proto::AppErrorCode as C;
        for code in [C::Shutdown, C::ResumeExpired, C::IdleTimeout, C::Redirect] {
            assert!(reconnectable(code), "{code:?}");
        }
        for code in [
            C::NoError,
            C::Kicked,
            C::Revoked,
            C::NotAssigned,
            C::PhoneStopped,
        ] {
            assert!(!reconnectable(code), "{code:?}");
        }
        let refused = |code| ClientError::Refused {
            code,
            reason: String::new(),
        };
        assert!(
            transient(&refused(C::PhoneBusy)),
            "the lost session still holds the phone"
        );
        assert!(transient(&ClientError::Unreachable {
            host: "h:1".into(),
            why: "timed out".into()
        }));
        assert!(!transient(&refused(C::Revoked)));
        assert!(!transient(&ClientError::PinMismatch {
            expected: "a".into(),
            actual: "b".into()
        }));
    }

    #[test]
    fn files_of_later_sessions_get_numbers() {
        let p = Path::new("/tmp/rec.h264");
        assert_eq!(numbered(p, 1), p);
        assert_eq!(numbered(p, 2), Path::new("/tmp/rec-2.h264"));
        assert_eq!(numbered(Path::new("snoop"), 3), Path::new("snoop-3"));
        assert_eq!(numbered(Path::new("a.b.log"), 2), Path::new("a.b-2.log"));
    }

    #[test]
    fn radio_flags_parse_and_depend_on_each_other() {
        let cli = Cli::try_parse_from([
            "vphone-companion",
            "connect",
            "--radio",
            "hci:0",
            "--radio-policy",
            "p.toml",
            "--snoop",
            "h.btsnoop",
            "--unredacted",
        ])
        .unwrap();
        let Cmd::Connect(a) = cli.cmd else {
            panic!("connect expected")
        };
        assert_eq!(a.radio.as_deref(), Some("hci:0"));
        assert!(a.unredacted);
        for bad in [
            &["connect", "--snoop", "h.btsnoop"][..],
            &["connect", "--radio-policy", "p.toml"],
            &["connect", "--radio", "tcp:h:1", "--unredacted"],
        ] {
            let args = std::iter::once("vphone-companion").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["vphone-companion", "radios"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Radios { scan_seconds } if scan_seconds == 5.0));
    }

    #[test]
    fn the_window_is_the_default_only_with_a_display_and_the_viewer() {
        // (view, headless, viewer built, display)
        assert_eq!(choose_mode(false, false, true, true).unwrap(), Mode::View);
        assert_eq!(
            choose_mode(false, false, true, false).unwrap(),
            Mode::Headless
        );
        assert_eq!(
            choose_mode(false, false, false, true).unwrap(),
            Mode::Headless
        );
        assert_eq!(
            choose_mode(false, true, true, true).unwrap(),
            Mode::Headless
        );
        assert_eq!(choose_mode(true, false, true, true).unwrap(), Mode::View);
        let e = choose_mode(true, false, true, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DISPLAY") && e.contains("--headless"), "{e}");
        let e = choose_mode(true, false, false, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("viewer"), "{e}");
    }
}
