//! Density benchmark (not a timed test): how many sim phones and live
//! sessions one host carries, what each costs, and how the cost grows.
//!
//! `cargo bench -p vphone-tests --bench density` steps N concurrent sim
//! phones (720x1280), each driven by a headless companion, through
//! `VPHONE_DENSITY_STEPS` (default `1,10,25`; the full ladder is
//! `1,10,25,50,100,200`) in a profile (`VPHONE_DENSITY_PROFILE`):
//!
//! * `idle`: phones on a static screen (their status-bar clock shows `HH:MM`
//!   as Android's does), a handset lying still (`--sensors still`) at 10 Hz,
//!   a touch per handset every `VPHONE_DENSITY_TOUCH_SECS` (default 30 s: an
//!   occasional touch) spread evenly over the handsets;
//!   `VPHONE_DENSITY_CLOCK=seconds` gives the phones the sim's default
//!   `HH:MM:SS` clock instead, so every screen changes once a second (files
//!   named `...-seconds`);
//! * `active`: synthetic motion at 100 Hz (the Sensor Lab moves), video
//!   capped at 30 fps.
//!
//! The host runs in this process (so its memory, threads and CPU are this
//! process's, read from /proc/self); the companions run in child processes
//! of this same binary, 25 per process, so the load generator is never
//! counted as the host. Both share the machine's cores: the host's CPU is
//! reported as its own share, and the companions' as theirs. The sim
//! phones' threads (`vphone-sim-*`: rendering and their API, what each
//! phone's emulator would spend on a real host) are counted apart from the
//! host's own CPU (screen feed, encoders, QUIC, sensors, operator API).
//!
//! The host allocates with jemalloc, as the `vphone-host` binary does (the
//! `vphone-tests` library sets it for every test and bench), and runs with
//! `MALLOC_ARENA_MAX=2` (for the glibc allocations of its C libraries:
//! openh264, opus, SQLite), as its systemd unit starts it (the bench re-runs
//! itself with it when unset).
//!
//! For each N: host resident memory (total, per idle phone with no
//! session, per session), threads and file descriptors, host CPU, sensor
//! -> applied p50/p99, sample -> received by the host p99 and received ->
//! applied p99 (the host's own part; each pooled over
//! every session's samples in the measured window), glass-to-glass p50/p99 (pooled over
//! every companion's frames in the window), frames the
//! companions skipped, and the operator API's `ListPhones` p50/p99 from a
//! loop beside the load. `VPHONE_DENSITY_TUNING` (`screen`, the default,
//! or `camera`) sets the host's `video_tuning`. It prints a table, writes
//! `density-PROFILE-TUNING[-seconds].json` and `.svg` (memory, CPU and latency
//! against N) to
//! `VPHONE_DENSITY_OUT` (default `target/tmp/density`), and stops stepping
//! after two steps in a row broke a goal (sensor p99 over 2 ms or API p99
//! over 50 ms; `VPHONE_DENSITY_KEEP_GOING=1` walks every step anyway) or
//! when not every session came up.
//! `VPHONE_DENSITY_SOAK=SECONDS` then holds the largest passing N (or
//! `VPHONE_DENSITY_SOAK_N`) that long and prints memory and descriptors
//! per minute.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mobile_client::session::{Companion, ConnectOptions};
use sensor_proto::bridge::TouchAction;
use sensor_proto::operator as op;
use sensor_proto::operator::operator_client::OperatorClient;
use vphone_tests::{TestHost, env_or, proc_cpu_seconds, touch};

/// Companions per load-generator process.
const PER_PROCESS: usize = 25;
/// How long the companions outlast the host's window, seconds: on a machine
/// far past full the host's own timers run late, and a window that outlives
/// its companions measures nothing. They stop timing frames when the
/// window would have ended.
const LOAD_MARGIN_SECS: f64 = 10.0;
/// How long each step measures, seconds (`VPHONE_DENSITY_SECONDS`).
const DEFAULT_SECONDS: f64 = 10.0;

/// A field of /proc/self/status, in kB for memory fields.
fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_mib() -> f64 {
    status_field("VmRSS:") as f64 / 1024.0
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// This process's CPU seconds (user + system).
fn cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/self/stat")
}

/// This process's threads counted by name, most first (`name x count`).
fn thread_names() -> String {
    let mut by_name: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("comm")) {
                *by_name.entry(c.trim().to_owned()).or_default() += 1;
            }
        }
    }
    let mut v: Vec<_> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.iter()
        .map(|(n, c)| format!("{n} x {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds of the processes `pids` (the load generators), summed.
fn pids_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| proc_cpu_seconds(format!("/proc/{pid}/stat")))
        .sum()
}

/// CPU seconds of this process's sim-phone threads (`vphone-sim-*`: the
/// stand-in for the phones' own emulators), by thread id.
fn sim_cpu_seconds() -> std::collections::HashMap<u64, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !name.starts_with("vphone-sim-") {
            continue;
        }
        if let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.insert(tid, proc_cpu_seconds(t.path().join("stat")));
        }
    }
    out
}

/// CPU seconds the sim-phone threads spent since `before`.
fn sim_cpu_since(before: &std::collections::HashMap<u64, f64>) -> f64 {
    sim_cpu_seconds()
        .iter()
        .map(|(tid, now)| now - before.get(tid).copied().unwrap_or(0.0))
        .sum()
}

/// `v` with `decimals` decimals, or `none` when it is not a number.
fn fixed_or(v: f64, decimals: usize, none: &str) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        none.to_owned()
    }
}

fn quantile(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    device_bridge::stats::quantile(v, p).unwrap_or(0) as f64
}

/// The `p` quantile of `v` (µs) in ms, NaN when `v` is empty (nothing to
/// time, not a latency of 0).
fn quantile_ms_or_nan(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        quantile(v, p) / 1000.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Idle,
    Active,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
        }
    }

    fn sensor_hz(self) -> u32 {
        match self {
            Self::Idle => 10,
            Self::Active => 100,
        }
    }
}

/// One step's figures.
#[derive(Clone, Debug, Default)]
struct Step {
    n: usize,
    rss_mib: f64,
    phone_mib: f64,
    session_mib: f64,
    threads: u64,
    fds: usize,
    /// The host's own CPU, cores (the process minus the sim phones).
    host_cpu: f64,
    /// The sim phones' CPU (rendering, their API), cores: what the
    /// phones' emulators would spend on a real host.
    sim_cpu: f64,
    /// The load generators' CPU (the companions: QUIC, decoding), cores.
    load_cpu: f64,
    sensor_p50_ms: f64,
    sensor_p99_ms: f64,
    /// Sample -> received by the host's router, p99 (the handset and
    /// network part of the sensor latency).
    recv_p99_ms: f64,
    /// Received by the router -> applied in the phone, p99: the host's
    /// (and the phone's) part, per applied sample.
    host_p99_ms: f64,
    /// Glass-to-glass p50 and p99, ms; NaN when no frame was decoded in
    /// the window (an idle screen nobody touched).
    g2g_p50_ms: f64,
    g2g_p99_ms: f64,
    frames: u64,
    skipped: u64,
    api_p50_ms: f64,
    api_p99_ms: f64,
    sessions_up: usize,
}

impl Step {
    /// The idle goals: sensor p99 under 2 ms, API p99 under 50 ms, every
    /// session up.
    fn goals_met(&self) -> bool {
        self.sensor_p99_ms < 2.0 && self.api_p99_ms < 50.0 && self.sessions_up == self.n
    }

    fn json(&self) -> String {
        format!(
            "{{\"n\":{},\"rss_mib\":{:.1},\"per_idle_phone_mib\":{:.2},\"per_session_mib\":{:.2},\"threads\":{},\"fds\":{},\"host_cpu\":{:.3},\"sim_phones_cpu\":{:.3},\"handsets_cpu\":{:.3},\"sensor_p50_ms\":{:.3},\"sensor_p99_ms\":{:.3},\"sensor_received_p99_ms\":{:.3},\"sensor_in_host_p99_ms\":{:.3},\"g2g_p50_ms\":{},\"g2g_p99_ms\":{},\"frames\":{},\"skipped\":{},\"api_p50_ms\":{:.2},\"api_p99_ms\":{:.2},\"sessions_up\":{}}}",
            self.n,
            self.rss_mib,
            self.phone_mib,
            self.session_mib,
            self.threads,
            self.fds,
            self.host_cpu,
            self.sim_cpu,
            self.load_cpu,
            self.sensor_p50_ms,
            self.sensor_p99_ms,
            self.recv_p99_ms,
            self.host_p99_ms,
            fixed_or(self.g2g_p50_ms, 1, "null"),
            fixed_or(self.g2g_p99_ms, 1, "null"),
            self.frames,
            self.skipped,
            self.api_p50_ms,
            self.api_p99_ms,
            self.sessions_up
        )
    }
}

/// Load-generator mode: `density --loadgen SECONDS PROFILE DIR...` runs a
/// companion per config dir for SECONDS and prints one line per companion:
/// `g2g <frames> <skipped> <latency_us...>` (the glass-to-glass
/// latencies of the frames decoded from 3 s after the start until
/// [`LOAD_MARGIN_SECS`] before the end: the host's window).
fn loadgen(args: &[String]) {
    let secs: f64 = args[0].parse().expect("seconds");
    let active = args[1] == "active";
    let touch_secs = env_or::<f64>("VPHONE_DENSITY_TOUCH_SECS", 30.0).max(0.1);
    let dirs: Vec<PathBuf> = args[2..].iter().map(PathBuf::from).collect();
    // Each handset would have its own CPU: the generator's network workers
    // run at real-time priority (where permitted), so the host's video
    // threads on the same two cores do not delay the handsets' sensor
    // samples on their way out; decoding stays at normal priority.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| {
            let _ = device_bridge::latency_thread_priority();
        })
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut companions = Vec::new();
        for d in &dirs {
            let mut o = ConnectOptions::new(d.clone());
            o.sensors = if active {
                mobile_client::sensors::SourceSpec::Synthetic { seed: 9 }
            } else {
                mobile_client::sensors::SourceSpec::Still
            };
            // Every companion here comes from 127.0.0.1: past the host's
            // per-source rate (10 new connections/s, bursts of 20) it is
            // refused before TLS; a handset tries again a little later.
            let mut tries = 0u32;
            loop {
                match Companion::connect(o.clone()).await {
                    Ok(c) => {
                        companions.push(c);
                        break;
                    }
                    Err(_) if tries < 20 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(tries))).await;
                    }
                    Err(e) => {
                        eprintln!("loadgen: {} did not connect: {e}", d.display());
                        break;
                    }
                }
            }
        }
        println!("connected {}", companions.len());
        // The parent says when every load generator has connected.
        // (Read off the runtime's one worker: the sessions keep running.)
        let _ = tokio::task::spawn_blocking(|| {
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)
        })
        .await;
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        // The host measures from 3 s after the start: so do these, until
        // its window ends.
        let settle = start + Duration::from_secs(3);
        let window_end = start + Duration::from_secs_f64((secs - LOAD_MARGIN_SECS).max(3.0));
        let mut settled = false;
        let mut measured: Option<Vec<(u64, u64, Vec<u64>)>> = None;
        // Each companion's frames, frames skipped and glass-to-glass so far.
        let snapshot = |companions: &[Companion]| -> Vec<(u64, u64, Vec<u64>)> {
            companions
                .iter()
                .map(|c| {
                    let r = c.report();
                    (r.frames, r.skipped, c.take_video_latencies())
                })
                .collect()
        };
        // A touch per handset every `touch_secs`, spread over the interval.
        let every = Duration::from_secs_f64(touch_secs / companions.len().max(1) as f64);
        let mut next_touch = start;
        let mut i = 0usize;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if !settled && now >= settle {
                for c in &companions {
                    c.take_video_latencies();
                }
                settled = true;
            }
            if measured.is_none() && now >= window_end {
                measured = Some(snapshot(&companions));
            }
            if now >= next_touch {
                if !companions.is_empty() {
                    let c = &companions[i % companions.len()];
                    let (x, y) = (100.0 + (i % 5) as f32 * 100.0, 400.0);
                    let _ = c.input().send(touch(TouchAction::Down, x, y)).await;
                    let _ = c.input().send(touch(TouchAction::Up, x, y)).await;
                    i += 1;
                }
                // After a stall, no burst of the touches missed.
                next_touch = (next_touch + every).max(Instant::now());
            }
            // Wake for whichever comes first: the next touch, the settle
            // mark, the window's end, the end.
            let mut wake = next_touch.min(end);
            if !settled {
                wake = wake.min(settle);
            }
            if measured.is_none() {
                wake = wake.min(window_end);
            }
            tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
        }
        let measured = measured.unwrap_or_else(|| snapshot(&companions));
        for (frames, skipped, lat) in measured {
            println!(
                "g2g {frames} {skipped} {}",
                lat.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
            );
        }
        for c in companions {
            let _ = c.finish().await;
        }
    });
}

struct Load {
    children: Vec<Child>,
}

impl Load {
    /// Starts the companions for `dirs`, [`PER_PROCESS`] per child, and
    /// waits until every child says how many connected.
    fn start(dirs: &[PathBuf], secs: f64, profile: Profile) -> (Self, usize) {
        let exe = std::env::current_exe().expect("bench executable");
        let mut children = Vec::new();
        for chunk in dirs.chunks(PER_PROCESS) {
            let child = Command::new(&exe)
                .arg("--loadgen")
                .arg(format!("{secs}"))
                .arg(profile.name())
                .args(chunk)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("load generator");
            children.push(child);
        }
        let mut up = 0;
        for c in &mut children {
            use std::io::BufRead as _;
            let out = c.stdout.as_mut().expect("stdout");
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            up += line
                .strip_prefix("connected ")
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
        }
        // Every child has connected all of its companions: all start the
        // load together, so their runs cover the host's measured window.
        for c in &mut children {
            use std::io::Write as _;
            if let Some(stdin) = c.stdin.as_mut() {
                let _ = stdin.write_all(b"go\n");
                let _ = stdin.flush();
            }
        }
        (Self { children }, up)
    }

    /// The children's process ids.
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Waits for the children. Per companion: frames, skipped, and the glass-to-glass latencies
    /// (µs) of the measured window.
    fn finish(self) -> Vec<(u64, u64, Vec<u64>)> {
        let mut out = Vec::new();
        for c in self.children {
            let o = c.wait_with_output().expect("load generator output");
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let f: Vec<u64> = l
                    .strip_prefix("g2g ")
                    .map(|r| {
                        r.split_whitespace()
                            .filter_map(|v| v.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                if let [frames, skipped, ref lat @ ..] = f[..] {
                    out.push((frames, skipped, lat.to_vec()));
                }
            }
        }
        out
    }
}

/// `ListPhones` in a loop until `stop`; its latencies, µs.
async fn api_loop(
    addr: std::net::SocketAddr,
    token: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<u64> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("operator API");
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("token header");
    let mut client = OperatorClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", token.clone());
        Ok(r)
    });
    let mut lat = Vec::new();
    while !*stop.borrow() {
        let t = Instant::now();
        if client.list_phones(op::ListPhonesRequest {}).await.is_ok() {
            lat.push(t.elapsed().as_micros() as u64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lat
}

/// One curve of a panel: its legend, colour and the value it plots.
type Curve = (
    &'static str,
    plotters::style::RGBColor,
    Box<dyn Fn(&Step) -> f64>,
);

fn plot(steps: &[Step], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((3, 1));
    let max_n = steps.iter().map(|s| s.n).max().unwrap_or(1) as f64;
    let series: [(&str, &str, Vec<Curve>); 3] = [
        (
            "host memory (MiB)",
            "MiB",
            vec![("resident", BLUE, Box::new(|s: &Step| s.rss_mib))],
        ),
        (
            "CPU (cores)",
            "cores",
            vec![
                ("host", RED, Box::new(|s: &Step| s.host_cpu)),
                ("sim phones", MAGENTA, Box::new(|s: &Step| s.sim_cpu)),
                (
                    "handsets (load generator)",
                    BLACK,
                    Box::new(|s: &Step| s.load_cpu),
                ),
            ],
        ),
        (
            "latency (ms)",
            "ms",
            vec![
                ("sensor p99", GREEN, Box::new(|s: &Step| s.sensor_p99_ms)),
                (
                    "glass-to-glass p50",
                    MAGENTA,
                    Box::new(|s: &Step| s.g2g_p50_ms),
                ),
                ("operator API p99", BLACK, Box::new(|s: &Step| s.api_p99_ms)),
            ],
        ),
    ];
    for (area, (title, unit, lines)) in areas.iter().zip(series) {
        let max_y = lines
            .iter()
            .flat_map(|(_, _, f)| steps.iter().map(f))
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("phones with a live session (N)")
            .y_desc(unit)
            .draw()?;
        for (name, colour, f) in lines {
            // A step with no value (no frame decoded) has no point.
            let pts: Vec<(f64, f64)> = steps
                .iter()
                .map(|s| (s.n as f64, f(s)))
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--loadgen") {
        return loadgen(&args[1..]);
    }
    // Measure the host as infra/systemd/vphone-host.service runs it: with
    // two malloc arenas (glibc reads this only at start, hence the re-run).
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let exe = std::env::current_exe().expect("bench executable");
        let status = Command::new(exe)
            .args(&args)
            .env("MALLOC_ARENA_MAX", "2")
            .status()
            .expect("re-running with MALLOC_ARENA_MAX=2");
        std::process::exit(status.code().unwrap_or(1));
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let secs = env_or::<f64>("VPHONE_DENSITY_SECONDS", DEFAULT_SECONDS);
    let profile = match std::env::var("VPHONE_DENSITY_PROFILE").as_deref() {
        Ok("active") => Profile::Active,
        _ => Profile::Idle,
    };
    let steps: Vec<usize> = std::env::var("VPHONE_DENSITY_STEPS")
        .unwrap_or_else(|_| "1,10,25".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let out = PathBuf::from(
        std::env::var("VPHONE_DENSITY_OUT")
            .unwrap_or_else(|_| format!("{}/density", env!("CARGO_TARGET_TMPDIR"))),
    );
    std::fs::create_dir_all(&out).expect("output dir");
    let max_fps = if profile == Profile::Active { 30 } else { 60 };
    let tuning_name =
        std::env::var("VPHONE_DENSITY_TUNING").unwrap_or_else(|_| "screen".to_owned());
    let tuning: host_core::video::Tuning = tuning_name.parse().expect("VPHONE_DENSITY_TUNING");
    let clock = match std::env::var("VPHONE_DENSITY_CLOCK").as_deref() {
        Ok("seconds") => sim_phone::StatusClock::Seconds,
        Ok("minutes") | Err(_) => sim_phone::StatusClock::Minutes,
        Ok(other) => panic!("VPHONE_DENSITY_CLOCK={other}: expected minutes or seconds"),
    };
    // (JSON value, as printed, file name suffix)
    let (clock_json, clock_name, clock_suffix) = match clock {
        sim_phone::StatusClock::Seconds => (
            "seconds",
            "HH:MM:SS (every screen changes once a second)",
            "-seconds",
        ),
        sim_phone::StatusClock::Minutes => ("minutes", "HH:MM", ""),
    };
    let mut th = TestHost::start_configured(
        |c| {
            c.video_max_fps = max_fps;
            c.video_tuning = tuning;
        },
        |b| b,
    )
    .await;
    let rss_base = rss_mib();
    let mut phones = 1usize; // phone-1
    let mut handsets: Vec<PathBuf> = Vec::new();
    let mut results: Vec<Step> = Vec::new();
    let listen = |th: &TestHost, name: &str| {
        if let Some(sim) = th.sims.phone(name) {
            sim.set_status_clock(clock);
            sim.set_listening(
                ["acceleration", "gyroscope", "magnetic_field", "orientation"]
                    .iter()
                    .map(|n| ((*n).to_owned(), profile.sensor_hz()))
                    .collect(),
            );
        }
    };
    listen(&th, "phone-1");
    println!(
        "density, {} profile, video tuning {tuning_name}, 720x1280 sim phones with a \
         {clock_name} clock, a touch per handset every {:.0} s, {secs:.0} s per step; host in \
         this process, companions in child processes ({PER_PROCESS} each)",
        profile.name(),
        env_or::<f64>("VPHONE_DENSITY_TOUCH_SECS", 30.0)
    );
    for &n in &steps {
        // Phones first, idle, to price a phone without a session.
        while phones < n {
            phones += 1;
            let name = format!("phone-{phones}");
            th.add_sim_phone(&name).await;
            listen(&th, &name);
        }
        while handsets.len() < n {
            let i = handsets.len() + 1;
            let h = th.enroll(&format!("load-{i}"), &[&format!("phone-{i}")]);
            handsets.push(h.dir);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_phones = rss_mib();
        let step_started_ms = host_core::unix_ms();
        // The companions outlast the window (3 s settle + the window) by a
        // margin: on a machine far past full the host's own timers run late,
        // and a window that outlives its companions measures nothing.
        let (load, up) = Load::start(&handsets, secs + 3.0 + LOAD_MARGIN_SECS, profile);
        // Settle: first keyframes, sensors applied.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_sessions_start = rss_mib();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let api = tokio::spawn(api_loop(
            th.host.operator_addr,
            th.host.admin_token.clone(),
            stop_rx,
        ));
        // Only the samples recorded while measuring count.
        let counts0: std::collections::HashMap<String, (usize, usize, usize)> = th
            .host
            .sessions
            .ids()
            .into_iter()
            .filter_map(|id| {
                let l = th.host.sessions.sensor_latency_samples(&id)?;
                Some((id, (l.received.len(), l.applied.len(), l.in_host.len())))
            })
            .collect();
        let cpu0 = cpu_seconds();
        let sim0 = sim_cpu_seconds();
        let load0 = pids_cpu_seconds(&load.pids());
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let sim_cpu = sim_cpu_since(&sim0) / elapsed;
        let load_cpu = (pids_cpu_seconds(&load.pids()) - load0) / elapsed;
        let host_cpu = (cpu_seconds() - cpu0) / elapsed - sim_cpu;
        let _ = stop_tx.send(true);
        let mut api_lat = api.await.unwrap_or_default();
        let rss_sessions = rss_mib().max(rss_sessions_start);
        let threads = status_field("Threads:");
        let fd_count = fds();
        let ids = th.host.sessions.ids();
        // Pooled over every session (each log holds far fewer than its
        // 8192 samples in one step, so a start count marks the window).
        let mut applied = Vec::new();
        let mut received = Vec::new();
        let mut in_host = Vec::new();
        for id in &ids {
            if let Some(l) = th.host.sessions.sensor_latency_samples(id) {
                let (r0, a0, h0) = counts0.get(id).copied().unwrap_or((0, 0, 0));
                received.extend_from_slice(l.received.get(r0..).unwrap_or(&[]));
                applied.extend_from_slice(l.applied.get(a0..).unwrap_or(&[]));
                in_host.extend_from_slice(l.in_host.get(h0..).unwrap_or(&[]));
            }
        }
        let companions = load.finish();
        let mut g2g: Vec<u64> = companions
            .iter()
            .flat_map(|c| c.2.iter().copied())
            .collect();
        let step = Step {
            n,
            rss_mib: rss_sessions,
            phone_mib: (rss_phones - rss_base) / (phones - 1).max(1) as f64,
            session_mib: (rss_sessions - rss_phones) / n as f64,
            threads,
            fds: fd_count,
            host_cpu,
            sim_cpu,
            load_cpu,
            sensor_p50_ms: quantile(&mut applied, 0.5) / 1000.0,
            sensor_p99_ms: quantile(&mut applied, 0.99) / 1000.0,
            recv_p99_ms: quantile(&mut received, 0.99) / 1000.0,
            host_p99_ms: quantile(&mut in_host, 0.99) / 1000.0,
            g2g_p50_ms: quantile_ms_or_nan(&mut g2g, 0.5),
            g2g_p99_ms: quantile_ms_or_nan(&mut g2g, 0.99),
            frames: companions.iter().map(|c| c.0).sum(),
            skipped: companions.iter().map(|c| c.1).sum(),
            api_p50_ms: quantile(&mut api_lat, 0.5) / 1000.0,
            api_p99_ms: quantile(&mut api_lat, 0.99) / 1000.0,
            // Live at the end of the window (a saturated host loses some).
            sessions_up: up.min(ids.len()),
        };
        eprintln!("{}", step.json());
        if step.sessions_up < n {
            // Why the host ended the sessions it lost (its session audit).
            let mut why: std::collections::BTreeMap<String, usize> = Default::default();
            for r in th.host.registry.sessions(10 * n).unwrap_or_default() {
                if r.started_at_ms >= step_started_ms && r.ended_at_ms.is_some() {
                    *why.entry(r.end_reason.unwrap_or_default()).or_default() += 1;
                }
            }
            println!("sessions that ended during step {n}, by the host's reason: {why:?}");
        }
        results.push(step);
        // Let the sessions end before the next step connects again.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Past the knee once: two steps in a row over a goal, or sessions
        // the host could not carry, end the ladder.
        let broke = |s: &Step| !s.goals_met();
        let last = &results[results.len() - 1];
        if last.sessions_up < n {
            println!(
                "only {} of {n} sessions came up; not stepping further",
                last.sessions_up
            );
            break;
        }
        let keep_going = std::env::var_os("VPHONE_DENSITY_KEEP_GOING").is_some();
        if !keep_going && results.len() >= 2 && results[results.len() - 2..].iter().all(broke) {
            println!("goals broke at two steps in a row; not stepping further");
            break;
        }
    }
    println!();
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>10} {:>8} {:>5} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6}",
        "N",
        "up",
        "RSS MiB",
        "MiB/phn",
        "MiB/sess",
        "threads",
        "fds",
        "host CPU",
        "sim CPU",
        "hs CPU",
        "sens p50",
        "sens p99",
        "recv p99",
        "host p99",
        "g2g p50",
        "g2g p99",
        "skipped",
        "API p50",
        "API p99",
        "goals"
    );
    for s in &results {
        println!(
            "{:>5} {:>6} {:>9.0} {:>9.1} {:>10.1} {:>8} {:>5} {:>7.0}% {:>6.0}% {:>6.0}% {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>9} {:>8} {:>9.1} {:>9.1} {:>6}",
            s.n,
            s.sessions_up,
            s.rss_mib,
            s.phone_mib,
            s.session_mib,
            s.threads,
            s.fds,
            s.host_cpu * 100.0,
            s.sim_cpu * 100.0,
            s.load_cpu * 100.0,
            s.sensor_p50_ms,
            s.sensor_p99_ms,
            s.recv_p99_ms,
            s.host_p99_ms,
            fixed_or(s.g2g_p50_ms, 1, "-"),
            fixed_or(s.g2g_p99_ms, 1, "-"),
            s.skipped,
            s.api_p50_ms,
            s.api_p99_ms,
            if s.goals_met() { "met" } else { "broke" }
        );
    }
    if let Some(first) = results.first() {
        let last = &results[results.len() - 1];
        println!(
            "per session at N = {} vs N = {}: host CPU {:.2}x, sensor p99 {:.2}x",
            last.n,
            first.n,
            (last.host_cpu / last.n as f64) / (first.host_cpu / first.n as f64).max(1e-9),
            last.sensor_p99_ms / first.sensor_p99_ms.max(1e-9)
        );
    }
    println!(
        "goals (idle): 100 sessions with sensor p99 < 2 ms, operator API p99 < 50 ms, < 30 MiB per phone+session"
    );
    let json = format!(
        "{{\"profile\":\"{}\",\"tuning\":\"{tuning_name}\",\"clock\":\"{clock_json}\",\"seconds\":{secs},\"steps\":[{}]}}\n",
        profile.name(),
        results.iter().map(Step::json).collect::<Vec<_>>().join(",")
    );
    let json_path = out.join(format!(
        "density-{}-{tuning_name}{clock_suffix}.json",
        profile.name()
    ));
    std::fs::write(&json_path, json).expect("writing the JSON");
    let svg = out.join(format!(
        "density-{}-{tuning_name}{clock_suffix}.svg",
        profile.name()
    ));
    match plot(&results, &svg) {
        Ok(()) => println!("wrote {} and {}", json_path.display(), svg.display()),
        Err(e) => println!("wrote {}; the plot failed: {e}", json_path.display()),
    }

    let soak = env_or::<f64>("VPHONE_DENSITY_SOAK", 0.0);
    if soak > 0.0 && !handsets.is_empty() {
        // `VPHONE_DENSITY_SOAK_N` holds that many instead of the largest
        // N that met the goals.
        let n = std::env::var("VPHONE_DENSITY_SOAK_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                results
                    .iter()
                    .filter(|s| s.goals_met())
                    .map(|s| s.n)
                    .max()
                    .unwrap_or(1)
            })
            .min(handsets.len());
        println!("soak: {n} sessions for {soak:.0} s; memory and descriptors per minute");
        let (load, up) = Load::start(&handsets[..n], soak + LOAD_MARGIN_SECS, profile);
        println!(
            "{:>6} {:>9} {:>6} {:>8} {:>9}",
            "minute", "RSS MiB", "fds", "threads", "sessions"
        );
        let t0 = Instant::now();
        let mut minute = 0;
        while t0.elapsed().as_secs_f64() < soak {
            tokio::time::sleep(Duration::from_secs(60).min(Duration::from_secs_f64(soak))).await;
            minute += 1;
            println!(
                "{minute:>6} {:>9.1} {:>6} {:>8} {:>9}",
                rss_mib(),
                fds(),
                status_field("Threads:"),
                th.host.sessions.ids().len()
            );
        }
        println!("threads by name at the end: {}", thread_names());
        println!(
            "soak: {up} sessions came up, {} live at the end",
            th.host.sessions.ids().len()
        );
        let _ = load.finish();
    }
    th.shutdown().await;
}
