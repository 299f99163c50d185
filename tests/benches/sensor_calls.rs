//! The sensor path's per-call cost: the host applies every sensor sample to
//! its phone with one unary `setSensor` call (the Android Emulator's API has
//! no other way), so at 100 idle sessions (four sensors at 10 Hz each) a
//! host makes 4000 calls a second. This bench measures one call's CPU on
//! each side and its latency with the host's `EmulatorClient`, when each
//! phone's sensors are sampled in step (the handset's sampler takes every
//! sensor of one rate at the same tick and sends them as one batch, so the
//! host's calls for one instant leave together) against the baseline, run
//! in the same process, of sensors each on a clock of its own.
//!
//! Each phone is a real sim phone serving its gRPC API on a thread of its
//! own (`vphone-sim-api`, as the sim backend runs it, with its display
//! thread); each phone's client runs on a thread of its own
//! (`vphone-sensors`, as a session's sensor loop does), with one HTTP/2
//! connection that its four sensors' callers share; every sensor's calls
//! are paced at a fixed rate; phones are out of step with each other. CPU
//! is read per thread from /proc, so the client's and the phone's parts
//! are apart.
//!
//! `cargo bench -p vphone-tests --bench sensor_calls`
//! (`VPHONE_SENSOR_PHONES`, default 10; `VPHONE_SENSOR_HZ`, default 50;
//! `VPHONE_BENCH_SECONDS`, default 5).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_core::emu_client::EmulatorClient;
use host_core::threads::{Priority, spawn_on_own_runtime, spawn_until_dropped};
use sensor_proto::emulator::sensor_value::SensorType;
use sim_phone::{SimPhone, SimPhoneConfig};
use vphone_tests::{env_or, threads_cpu_seconds};

const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
const SENSORS: [SensorType; 4] = [
    SensorType::Acceleration,
    SensorType::Gyroscope,
    SensorType::MagneticField,
    SensorType::Orientation,
];

/// CPU seconds of the sim phones: their API threads and their display
/// threads (every `setSensor` wakes the display, which redraws if the
/// picture changed).
fn phone_cpu() -> f64 {
    threads_cpu_seconds("vphone-sim-api") + threads_cpu_seconds("vphone-sim-disp")
}

/// A sim phone serving its API on a thread of its own; its address.
fn start_phone() -> anyhow::Result<(SimPhone, String)> {
    let phone = SimPhone::start(SimPhoneConfig {
        width: 720,
        height: 1280,
        dpi: 320,
        auth_token: Some(TOKEN.to_owned()),
    })?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    listener.set_nonblocking(true)?;
    let serving = phone.clone();
    spawn_on_own_runtime("sim-api", Priority::Latency, async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = serving.serve(listener, std::future::pending()).await;
    })?;
    Ok((phone, addr))
}

/// Calls `setSensor` for `sensor` at `hz` until `until`; the latencies.
async fn caller(
    c: EmulatorClient,
    sensor: SensorType,
    (hz, first): (u64, Instant),
    until: Instant,
    lat: Arc<Mutex<Vec<u64>>>,
) -> anyhow::Result<()> {
    let period = Duration::from_micros(1_000_000 / hz.max(1));
    let mut tick = tokio::time::interval_at(first.into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let values = [0.12_f32, -0.4, 9.81];
    while Instant::now() < until {
        tick.tick().await;
        let t = Instant::now();
        c.set_sensor(sensor, &values).await?;
        lat.lock().unwrap().push(t.elapsed().as_micros() as u64);
    }
    Ok(())
}

struct Row {
    calls: usize,
    secs: f64,
    client_cpu: f64,
    phone_cpu: f64,
    p50: u64,
    p99: u64,
}

fn run(in_step: bool, addrs: &[String], hz: u64, secs: u64) -> anyhow::Result<Row> {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    // Callers connect first; the window starts a second later.
    let base = Instant::now() + Duration::from_millis(500);
    let until = Instant::now() + Duration::from_secs(secs + 1);
    let period = Duration::from_micros(1_000_000 / hz.max(1));
    // The threads stay until their CPU is read (a thread that ended is
    // gone from /proc): dropping `stops` ends them.
    let mut stops = Vec::new();
    for (p, addr) in addrs.iter().enumerate() {
        let (addr, lat, done) = (addr.clone(), lat.clone(), done_tx.clone());
        // Phones are never in step with each other.
        let phone_at = base + period.mul_f64(p as f64 / addrs.len() as f64);
        let step = if in_step {
            Duration::ZERO
        } else {
            period / (SENSORS.len() as u32 + 1)
        };
        let stop = spawn_until_dropped("sensors", Priority::Latency, async move {
            let res = async {
                // One connection per phone, its sensors' calls on it, as a
                // session's sensor loop has.
                let c = EmulatorClient::connect(&addr, Some(TOKEN)).await?;
                let mut set = tokio::task::JoinSet::new();
                for (i, s) in SENSORS.into_iter().enumerate() {
                    let first = phone_at + step * i as u32;
                    set.spawn(caller(c.clone(), s, (hz, first), until, lat.clone()));
                }
                while let Some(r) = set.join_next().await {
                    r??;
                }
                anyhow::Ok(())
            }
            .await;
            let _ = done.send(res);
            std::future::pending::<()>().await;
        })?;
        stops.push(stop);
    }
    // Throw away the first second (connections, warm-up).
    std::thread::sleep(Duration::from_secs(1));
    let cpu1 = (threads_cpu_seconds("vphone-sensors"), phone_cpu());
    let start = lat.lock().unwrap().len();
    let w0 = Instant::now();
    for _ in addrs {
        done_rx.recv()??;
    }
    let secs = w0.elapsed().as_secs_f64();
    let cpu2 = (threads_cpu_seconds("vphone-sensors"), phone_cpu());
    drop(stops);
    let mut l = lat.lock().unwrap().split_off(start);
    l.sort_unstable();
    let q = |p| device_bridge::stats::quantile(&l, p).unwrap_or(0);
    Ok(Row {
        calls: l.len(),
        secs,
        client_cpu: cpu2.0 - cpu1.0,
        phone_cpu: cpu2.1 - cpu1.1,
        p50: q(0.5),
        p99: q(0.99),
    })
}

fn main() -> anyhow::Result<()> {
    let phones = env_or::<u64>("VPHONE_SENSOR_PHONES", 10);
    let hz = env_or::<u64>("VPHONE_SENSOR_HZ", 50);
    let secs = env_or::<u64>("VPHONE_BENCH_SECONDS", 5);
    let mut addrs = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..phones {
        let (phone, addr) = start_phone()?;
        keep.push(phone);
        addrs.push(addr);
    }
    println!(
        "setSensor: {phones} sim phones x {} sensors at {hz} Hz = {} calls/s offered, {secs} s per run",
        SENSORS.len(),
        phones * SENSORS.len() as u64 * hz
    );
    println!();
    println!(
        "| sensors of a phone | calls/s | client CPU per call | phone CPU per call | both | latency p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    // Baseline, in step, and both again: the machine's drift shows.
    for in_step in [false, true, false, true] {
        let r = run(in_step, &addrs, hz, secs)?;
        let per = |cpu: f64| cpu / r.calls.max(1) as f64 * 1e6;
        println!(
            "| {} | {:.0} | {:.1} us | {:.1} us | {:.1} us | {} / {} us |",
            if in_step {
                "in step"
            } else {
                "each on its own clock (baseline)"
            },
            r.calls as f64 / r.secs,
            per(r.client_cpu),
            per(r.phone_cpu),
            per(r.client_cpu + r.phone_cpu),
            r.p50,
            r.p99
        );
        rows.push((in_step, per(r.client_cpu + r.phone_cpu), r.p99 as f64));
    }
    let mean = |step: bool, f: fn(&(bool, f64, f64)) -> f64| {
        let v: Vec<f64> = rows.iter().filter(|r| r.0 == step).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!();
    println!(
        "in step / baseline: CPU per call {:.2}x, latency p99 {:.2}x",
        mean(true, |r| r.1) / mean(false, |r| r.1),
        mean(true, |r| r.2) / mean(false, |r| r.2)
    );
    Ok(())
}
