//! The fleet (not a timed test): `cargo bench -p vphone-tests --bench fleet`.
//!
//! 1. **Front door decisions per second**: the registry look-ups a host
//!    makes to admit or redirect a handset (`RegistryAuthorizer`: handset,
//!    last seen, phones, the phone's lease, its holder), from 1, 4 and 16
//!    threads, on a shared PostgreSQL registry (200 handsets, 200 phones
//!    leased to another host: every decision is a redirect) and, as the
//!    baseline in the same process, on the one-host SQLite registry (every
//!    decision an admission). p50/p99 per decision and decisions/s.
//! 2. **Failover**: real `vphone-host` processes on one throwaway
//!    PostgreSQL: host-a runs N sim phones, each streamed to a headless
//!    `vphone-companion` enrolled at a gateway; host-b has room. `kill -9`
//!    of host-a, then: when host-b holds every lease, when every phone runs
//!    there, and when each handset streams again (its log says
//!    `reconnected`), for N = 1 and 20. The default lease (10 s) unless
//!    `VPHONE_BENCH_LEASE_SECS` says otherwise; `VPHONE_BENCH_FAILOVER=1,20`
//!    picks the sizes (empty: skip). It runs the release binaries: build
//!    them first (`cargo build --release --bins`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_bridge::{AuthRequest, Authorizer, Fingerprint, TokenKey};
use host_core::access::RegistryAuthorizer;
use host_core::registry::{
    HostRecord, Labels, PhoneGrant, PhoneRecord, Registry, Target, TokenRecord,
};
use sensor_proto::bridge::{AppErrorCode, Hello};
use vphone_testkit::postgres::Postgres;
use vphone_tests::fleet::{FleetHost, HostSpec, live_leases, wait_for};

const PHONES: usize = 200;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn fingerprint(i: usize) -> String {
    format!("{i:064x}")
}

/// A registry with `PHONES` phones and handsets, each handset granted
/// every phone; the phones leased to `holder` (registered, alive) unless
/// it is `None`.
fn populate(reg: &Registry, holder: Option<&str>) {
    let now = host_core::unix_ms();
    for i in 0..PHONES {
        reg.insert_phone(&PhoneRecord::sim(format!("p{i}"), now))
            .expect("phone");
        reg.insert_token(
            &TokenRecord {
                id: format!("t{i}"),
                name: Some(format!("h{i}")),
                grant: PhoneGrant::All,
                expires_at_ms: now + 60_000,
                used_at_ms: None,
            },
            now,
        )
        .expect("token");
        reg.enroll_with_token(&format!("t{i}"), &fingerprint(i), "h", now)
            .expect("enroll");
    }
    if let Some(holder) = holder {
        reg.register_host(&HostRecord {
            name: holder.to_owned(),
            addr: "10.0.0.2:4433".to_owned(),
            pin: "ab".repeat(32),
            capacity: 1000,
            labels: Labels::default(),
            draining: false,
            stopped: false,
            sessions: 0,
            started_at_ms: now,
            heartbeat_ms: now + 3_600_000,
        })
        .expect("holder");
        // Alive for the whole bench.
        reg.host_heartbeat(holder, now + 3_600_000, 0)
            .expect("heartbeat");
        for i in 0..PHONES {
            reg.claim(&format!("p{i}"), holder, now, 3_600_000)
                .expect("claim")
                .expect("free");
        }
    }
}

struct Row {
    threads: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `threads` threads deciding for `secs`; every decision must be `expect`.
fn decide(
    auth: &Arc<RegistryAuthorizer>,
    threads: usize,
    secs: f64,
    expect: Option<AppErrorCode>,
) -> Row {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..threads)
            .map(|t| {
                let auth = auth.clone();
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = t * 7;
                    let remote: SocketAddr = ([127, 0, 0, 1], 9).into();
                    while Instant::now() < until {
                        i = (i + 13) % PHONES;
                        let hello = Hello {
                            phone_name: format!("p{i}"),
                            ..Hello::default()
                        };
                        let fp: Fingerprint = fingerprint(i).parse().expect("fingerprint");
                        let t0 = Instant::now();
                        let res = auth.authorize(&AuthRequest::new(fp, &hello, remote));
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        match (&res, expect) {
                            (Ok(_), None) => {}
                            (Err(r), Some(code)) if r.code == code => {}
                            _ => panic!("unexpected decision: {:?}", res.map(|_| ()).err()),
                        }
                    }
                    lat
                })
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().expect("thread"))
            .collect()
    });
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    Row {
        threads,
        per_sec: all.len() as f64 / secs,
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
    }
}

fn front_door(pg: &Postgres) {
    let secs: f64 = std::env::var("VPHONE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let key = TokenKey::generate().expect("token key");
    let sessions = Arc::new(host_core::router::Sessions::default());
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = Arc::new(Registry::open(&dir.path().join("registry.sqlite3")).expect("sqlite"));
    // One host holds every phone's lease, as a host alone does.
    populate(&sqlite, Some("host-a"));
    let url = pg.database("frontdoor");
    let shared = Arc::new(Registry::connect(&Target::Postgres(url)).expect("postgres"));
    populate(&shared, Some("host-b"));
    let one_host = Arc::new(
        RegistryAuthorizer::new(sqlite, key.clone(), sessions.clone())
            .with_fleet("host-a".into(), Duration::from_secs(10)),
    );
    let gateway = Arc::new(
        RegistryAuthorizer::new(shared, key, sessions)
            .with_fleet("gateway".into(), Duration::from_secs(10)),
    );
    println!(
        "\nfront door: admission decisions ({PHONES} handsets, {PHONES} phones, {secs} s each)"
    );
    println!(
        "{:<34} {:>7} {:>12} {:>9} {:>9} {:>8}",
        "registry", "threads", "decisions/s", "p50 ms", "p99 ms", "ratio"
    );
    for threads in [1, 4, 16] {
        let base = decide(&one_host, threads, secs, None);
        let fleet = decide(&gateway, threads, secs, Some(AppErrorCode::Redirect));
        for (name, r) in [
            ("SQLite, one host (admit)", &base),
            ("PostgreSQL, gateway (redirect)", &fleet),
        ] {
            println!(
                "{:<34} {:>7} {:>12.0} {:>9.3} {:>9.3} {:>7.2}x",
                name,
                r.threads,
                r.per_sec,
                r.p50_ms,
                r.p99_ms,
                r.per_sec / base.per_sec
            );
        }
    }
}

struct Companion(Child);

impl Drop for Companion {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn failover(pg: &Postgres, n: usize, lease_secs: u64) {
    let url = pg.database(&format!("failover{n}"));
    let root = tempfile::tempdir().expect("dir");
    let spec = |name: &'static str, capacity| HostSpec {
        name,
        registry: &url,
        capacity,
        lease_secs,
        args: Vec::new(),
    };
    let gw = FleetHost::start(root.path(), &spec("gateway", 0));
    let mut a = FleetHost::start(root.path(), &spec("host-a", n as u32));
    for i in 2..=n {
        a.ctl(&["phone", "create", &format!("phone-{i}")])
            .expect("create");
    }
    wait_for("host-a runs every phone", Duration::from_secs(60), || {
        (a.phones_in("running") == Some(n as u32)).then_some(())
    });
    let b = FleetHost::start(root.path(), &spec("host-b", n as u32));
    let mut companions = Vec::new();
    let mut logs = Vec::new();
    for i in 1..=n {
        let enrollment = gw
            .ctl(&[
                "handset",
                "enroll",
                "--name",
                &format!("h{i}"),
                "--phone",
                &format!("phone-{i}"),
                "--quiet",
            ])
            .expect("enroll");
        let config = root.path().join(format!("companion-{i}"));
        let ok = Command::new(vphone_testkit::binary("vphone-companion"))
            .arg("--config-dir")
            .arg(&config)
            .args(["enroll", enrollment.trim()])
            .output()
            .expect("companion enroll");
        assert!(ok.status.success(), "{ok:?}");
        let log = root.path().join(format!("companion-{i}.log"));
        companions.push(Companion(
            Command::new(vphone_testkit::binary("vphone-companion"))
                .arg("--config-dir")
                .arg(&config)
                .args(["connect", "--headless", "--no-audio", "--duration", "600"])
                .args(["--phone", &format!("phone-{i}")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("companion"),
        ));
        logs.push(log);
    }
    let count = |what: &str| {
        logs.iter()
            .filter(|l| {
                std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .contains(what)
            })
            .count()
    };
    wait_for("every handset streams", Duration::from_secs(60), || {
        (count("connected to phone") == n).then_some(())
    });
    let reg = Registry::connect(&Target::Postgres(url.clone())).expect("registry");
    std::thread::sleep(Duration::from_secs(1));
    a.kill();
    let killed = Instant::now();
    let mut claimed = None;
    let mut running = None;
    let mut back: Vec<Option<f64>> = vec![None; n];
    let deadline = killed + Duration::from_secs(lease_secs + 90);
    while Instant::now() < deadline && (running.is_none() || back.iter().any(Option::is_none)) {
        let t = killed.elapsed().as_secs_f64();
        if claimed.is_none()
            && live_leases(&reg)
                .iter()
                .filter(|l| l.host == "host-b")
                .count()
                == n
        {
            claimed = Some(t);
        }
        if running.is_none() && b.phones_in("running") == Some(n as u32) {
            running = Some(t);
        }
        for (i, l) in logs.iter().enumerate() {
            if back[i].is_none()
                && std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .contains("reconnected")
            {
                back[i] = Some(t);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times: Vec<f64> = back.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.2}"));
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>8}",
        n,
        lease_secs,
        fmt(claimed),
        fmt(running),
        fmt(times.first().copied()),
        fmt((!times.is_empty()).then(|| pct(&times, 0.5))),
        fmt(times.last().copied()),
        format!("{}/{n}", times.len())
    );
    drop(companions);
}

fn main() {
    let Some(pg) = Postgres::start() else {
        println!("fleet bench SKIPPED: no PostgreSQL");
        return;
    };
    front_door(&pg);
    let sizes: Vec<usize> = std::env::var("VPHONE_BENCH_FAILOVER")
        .unwrap_or_else(|_| "1,20".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if sizes.is_empty() {
        return;
    }
    let exe = std::env::current_exe().expect("bench path");
    let bins = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir");
    if ["vphone-host", "vphonectl", "vphone-companion"]
        .iter()
        .any(|b| !bins.join(b).exists())
    {
        println!(
            "\nfailover SKIPPED: build the release binaries first: cargo build --release --bins"
        );
        return;
    }
    let lease: u64 = std::env::var("VPHONE_BENCH_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("\nfailover: kill -9 of host-a, seconds after it (handset resume window 10 s)");
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "phones",
        "lease s",
        "all claimed",
        "all running",
        "first back",
        "p50 back",
        "last back",
        "back"
    );
    for n in sizes {
        failover(&pg, n, lease);
    }
}
