//! Part 2: scan -> connect -> pair -> encrypted read with added round
//! trip between host and handset (a namespace behind a veth pair), and its
//! table.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------- part 2

/// How the round trip is added between host and handset.
#[derive(Debug)]
pub(crate) enum Delay {
    Netem,
    Userspace {
        one_way_us: Arc<AtomicU64>,
        /// In front of the host's QUIC port; the handsets dial it.
        _line: DelayLine,
        /// The same delay in front of the probe's echo.
        probe: DelayLine,
    },
}

pub(crate) const PINGER: &str = r"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
target = (sys.argv[1], int(sys.argv[2]))
try:  # warm-up (neighbour discovery, first-packet costs), not counted
    s.sendto(b'warm-up', target)
    s.recvfrom(64)
except socket.timeout:
    pass
out = []
for i in range(int(sys.argv[3])):
    t = time.perf_counter()
    s.sendto(b'probe %d' % i, target)
    try:
        s.recvfrom(64)
        out.append('%.3f' % ((time.perf_counter() - t) * 1000))
    except socket.timeout:
        out.append('lost')
    time.sleep(0.02)
print(' '.join(out))
";

/// UDP round trips (ms) from inside the namespace to `target` in the root one.
pub(crate) async fn probe(ctx: &Ctx, ns: &Netns, target: SocketAddr) -> Result<Vec<f64>, String> {
    let run = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&ctx.bins.python)
        .args([
            "-c",
            PINGER,
            &target.ip().to_string(),
            &target.port().to_string(),
            "10",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| "the probe timed out".to_owned())?
        .map_err(|e| format!("probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.is_empty() {
        return Err(format!(
            "probe printed {text:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(v)
}

#[derive(Debug)]
pub(crate) struct Flow {
    /// Seconds from central start, per MILESTONES.
    pub(crate) t: [f64; 5],
    /// The host's QUIC RTT estimate for the companion's session (ms).
    pub(crate) quic_rtt_ms: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct FlowRun {
    pub(crate) rtt: u32,
    pub(crate) pairing: &'static str,
    pub(crate) result: Result<Flow, String>,
}

pub(crate) async fn flow_run(
    ctx: &Ctx,
    host: &Host,
    ns: &Netns,
    config: &Path,
    pairing: &str,
    dir: &Path,
) -> Result<Flow, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (mut ctl, a, b) = controllers(ctx, Some(ns), dir, false).await?;
    let mut args = in_ns(
        Some(ns),
        vec![
            ctx.bins.python.display().to_string(),
            "peripheral.py".into(),
            "--transport".into(),
            format!("tcp-client:127.0.0.1:{a}"),
            "--pairing".into(),
            pairing.into(),
        ],
    );
    let program = PathBuf::from(args.remove(0));
    let mut periph = Script::try_spawn(
        "peripheral",
        &program,
        &args,
        &ctx.scripts,
        &dir.join("peripheral.log"),
    )?;
    periph.until("advertising", Duration::from_secs(20)).await?;
    let (mut companion, session) = lend(ctx, host, Some(ns), config, b, dir).await?;
    // The QUIC RTT estimate after the handshake and the first exchanges.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = session["id"].clone();
    let quic_rtt_ms = host
        .sessions()
        .await
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or(session)["rtt_us"]
        .as_f64()
        .map(|us| us / 1000.0);
    let args: Vec<String> = vec![
        "central.py".into(),
        "--transport".into(),
        format!("android-netsim:{},name={PHONE}", host.netsim),
        "--target".into(),
        PERIPHERAL.into(),
        "--pairing".into(),
        pairing.into(),
        "--timeout".into(),
        "40".into(),
    ];
    let mut central = Script::try_spawn(
        "central",
        &ctx.bins.python,
        &args,
        &ctx.scripts,
        &dir.join("central.log"),
    )?;
    let done = central.until("done", Duration::from_secs(45)).await;
    let code = central.try_wait(Duration::from_secs(10)).await;
    companion.stop(Duration::from_secs(5)).await;
    drop(periph);
    ctl.kill().await;
    done?;
    let seen = central.seen();
    let at = |event: &str| {
        seen.iter()
            .find(|l| l.event() == event)
            .and_then(|l| l.json["t"].as_f64())
    };
    let value = seen.iter().find(|l| l.event() == "value");
    if value.is_none_or(|v| v.json["value"] != SECRET) {
        return Err(format!("wrong value: {:?}", value.map(|v| &v.json)));
    }
    if pairing == "numeric" && at("compare_numbers").is_none() {
        return Err("paired without Numeric Comparison".into());
    }
    if pairing == "passkey" && at("compare_numbers").is_some() {
        return Err("paired with Numeric Comparison, not Passkey Entry".into());
    }
    let mut t = [0.0; 5];
    for (slot, m) in t.iter_mut().zip(MILESTONES) {
        *slot = at(m).ok_or(format!("no {m} event"))?;
    }
    match code {
        Ok(Some(0)) => Ok(Flow { t, quic_rtt_ms }),
        other => Err(format!("central exit {other:?} after done")),
    }
}

#[derive(Debug, Default)]
pub(crate) struct FlowReport {
    pub(crate) runs: Vec<FlowRun>,
    /// RTT -> (probe RTTs in ms).
    pub(crate) probes: Vec<(u32, Result<Vec<f64>, String>)>,
    pub(crate) mode: String,
    pub(crate) error: Option<String>,
}

pub(crate) async fn part_flow(ctx: &Ctx, cfg: &Config, scratch: &Path) -> FlowReport {
    let mut report = FlowReport::default();
    let dir = scratch.join("flow");
    let _ = std::fs::create_dir_all(&dir);
    // Declared first: dropped last, after every process in it is gone.
    let ns = match Netns::create("vphb", ROOT_IP, NS_IP) {
        Ok(ns) => ns,
        Err(e) => {
            report.error = Some(format!(
                "cannot create the handset namespace (needs root, iproute2): {e}"
            ));
            print_flow(cfg, &report);
            return report;
        }
    };
    let setup = async {
        let quic = free_udp(IpAddr::V4(ROOT_IP))?;
        let echo = Echo::start(IpAddr::V4(ROOT_IP)).await?;
        let mut netem_error = None;
        let delay = if cfg.delay == "userspace" {
            None
        } else {
            match ns.netem("add", 0) {
                Ok(()) => Some(Delay::Netem),
                Err(e) if cfg.delay == "netem" => return Err(e),
                Err(e) => {
                    netem_error = Some(e);
                    None
                }
            }
        };
        let (delay, public) = match delay {
            Some(d) => (d, quic),
            None => {
                let one_way_us = Arc::new(AtomicU64::new(0));
                let line = DelayLine::start(SocketAddr::new(IpAddr::V4(ROOT_IP), 0), quic, one_way_us.clone())
                    .map_err(|e| format!("delay line: {e}"))?;
                let probe = DelayLine::start(SocketAddr::new(IpAddr::V4(ROOT_IP), 0), echo.addr, one_way_us.clone())
                    .map_err(|e| format!("delay line: {e}"))?;
                let public = line.addr;
                (
                    Delay::Userspace {
                        one_way_us,
                        _line: line,
                        probe,
                    },
                    public,
                )
            }
        };
        let mode = match (&delay, netem_error) {
            (Delay::Netem, _) => format!(
                "`tc qdisc ... netem delay RTT/2` on both veth ends ({} in the root namespace, {} in {})",
                ns.veth, ns.peer, ns.name
            ),
            (Delay::Userspace { .. }, Some(e)) => format!(
                "**tc netem is not available here** ({e}; this kernel is built without CONFIG_NET_SCH_NETEM \
                 and loads no modules), so the bench adds the delay itself: a userspace UDP delay line on \
                 {ROOT_IP} holding every datagram of the host <-> handset QUIC path RTT/2 in each direction; \
                 the handset side still sits in namespace {} behind the veth pair",
                ns.name
            ),
            (Delay::Userspace { .. }, None) => format!(
                "a userspace UDP delay line on {ROOT_IP} (VPHONE_BENCH_DELAY=userspace), RTT/2 each way; handset side in namespace {}",
                ns.name
            ),
        };
        let host = Host::start(ctx, &dir, quic, public).await?;
        let config = dir.join("companion");
        host.enroll(ctx, &config, "bench-flow").await?;
        Ok::<_, String>((echo, delay, mode, host, config))
    }
    .await;
    let (echo, delay, mode, host, config) = match setup {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            print_flow(cfg, &report);
            return report;
        }
    };
    report.mode = mode;
    let set_rtt = |rtt: u32| -> Result<SocketAddr, String> {
        let one_way = u64::from(rtt) * 500;
        match &delay {
            Delay::Netem => {
                ns.netem("change", one_way)?;
                Ok(echo.addr)
            }
            Delay::Userspace {
                one_way_us, probe, ..
            } => {
                one_way_us.store(one_way, Ordering::Relaxed);
                Ok(probe.addr)
            }
        }
    };
    // Verify the delay before measuring with it.
    for &rtt in &cfg.rtts {
        let probed = match set_rtt(rtt) {
            Ok(target) => probe(ctx, &ns, target).await,
            Err(e) => Err(e),
        };
        eprintln!("added RTT {rtt} ms: probe {probed:?}");
        report.probes.push((rtt, probed));
    }
    let total = cfg.runs * cfg.rtts.len() * PAIRINGS.len();
    for round in 0..cfg.runs {
        for &rtt in &cfg.rtts {
            if let Err(e) = set_rtt(rtt) {
                for pairing in PAIRINGS {
                    report.runs.push(FlowRun {
                        rtt,
                        pairing,
                        result: Err(e.clone()),
                    });
                }
                continue;
            }
            for pairing in PAIRINGS {
                let n = report.runs.len() + 1;
                let run_dir = dir.join(format!("{n:02}-{rtt}ms-{pairing}"));
                note_run();
                let result = flow_run(ctx, &host, &ns, &config, pairing, &run_dir).await;
                let shown = match &result {
                    Ok(fl) => format!(
                        "value at {:.2} s (QUIC RTT {} ms)",
                        fl.t[4],
                        f(fl.quic_rtt_ms, 1)
                    ),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{n}/{total}] {rtt} ms {pairing} round {}: {shown}",
                    round + 1
                );
                report.runs.push(FlowRun {
                    rtt,
                    pairing,
                    result,
                });
            }
        }
    }
    drop(host);
    drop(delay);
    drop(echo);
    drop(ns);
    print_flow(cfg, &report);
    report
}

pub(crate) fn flow_values<'a>(
    report: &'a FlowReport,
    rtt: u32,
    pairing: &str,
) -> (Vec<&'a Flow>, usize) {
    let runs: Vec<&FlowRun> = report
        .runs
        .iter()
        .filter(|r| r.rtt == rtt && r.pairing == pairing)
        .collect();
    let ok = runs.iter().filter_map(|r| r.result.as_ref().ok()).collect();
    (ok, runs.len())
}

/// The flow the goal names: from the initialised stack starting its scan
/// (`powered`) to the encrypted value.
pub(crate) fn scan_to_read(fl: &&Flow) -> f64 {
    fl.t[4] - fl.t[0]
}

pub(crate) fn print_flow(cfg: &Config, report: &FlowReport) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 2. scan -> connect -> pair -> encrypted read through vphone, with added host <-> handset RTT\n"
    );
    if let Some(e) = &report.error {
        let _ = writeln!(out, "FAILED: {e}\n");
        println!("{out}");
        return;
    }
    let _ = writeln!(out, "Delay: {}.\n", report.mode);
    let _ = writeln!(
        out,
        "Delay check (10 UDP round trips, after one warm-up, from a socket in the handset namespace to an echo in the root namespace, through the same delay):\n"
    );
    let _ = writeln!(
        out,
        "| added RTT (ms) | measured min (ms) | median | max | lost |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (rtt, p) in &report.probes {
        match p {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "| {rtt} | {} | {} | {} | {} |",
                    f(v.iter().copied().reduce(f64::min), 2),
                    f(median(v), 2),
                    f(v.iter().copied().reduce(f64::max), 2),
                    10usize.saturating_sub(v.len())
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {rtt} | FAILED: {e} | | | |");
            }
        }
    }
    let base: HashMap<&str, Option<f64>> = PAIRINGS
        .iter()
        .map(|p| {
            let (ok, _) = flow_values(report, 0, p);
            (*p, median(&ok.iter().map(scan_to_read).collect::<Vec<_>>()))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nMedian seconds from central start (process start, so Python's start-up and the stack's power-on, one command round trip each, are in `powered`), of the runs that succeeded. \
         **scan -> read** = `value` - `powered`: the flow the goal names, from the initialised stack starting its scan to the encrypted value:\n"
    );
    let _ = writeln!(
        out,
        "| added RTT (ms) | pairing | runs ok | QUIC RTT (ms) | powered | found | connected | paired | value | scan -> read | scan -> read per run | extra vs 0 ms (RTTs) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &rtt in &cfg.rtts {
        for pairing in PAIRINGS {
            let (ok, n) = flow_values(report, rtt, pairing);
            let col = |i: usize| median(&ok.iter().map(|fl| fl.t[i]).collect::<Vec<_>>());
            let quic = median(
                &ok.iter()
                    .filter_map(|fl| fl.quic_rtt_ms)
                    .collect::<Vec<_>>(),
            );
            let per_run = report
                .runs
                .iter()
                .filter(|r| r.rtt == rtt && r.pairing == pairing)
                .map(|r| match &r.result {
                    Ok(fl) => format!("{:.2}", scan_to_read(&fl)),
                    Err(_) => "FAILED".into(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let flow = median(&ok.iter().map(scan_to_read).collect::<Vec<_>>());
            let extra = match (flow, base.get(pairing).copied().flatten()) {
                (Some(v), Some(b)) if rtt > 0 => {
                    format!("{:.2} s ({:.0})", v - b, (v - b) * 1000.0 / f64::from(rtt))
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {rtt} | {pairing} | {}/{n} | {} | {} | {} | {} | {} | {} | **{}** | {per_run} | {extra} |",
                ok.len(),
                f(quic, 1),
                f(col(0), 2),
                f(col(1), 2),
                f(col(2), 2),
                f(col(3), 2),
                f(col(4), 2),
                f(flow, 2),
            );
        }
    }
    let failures: Vec<&FlowRun> = report.runs.iter().filter(|r| r.result.is_err()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for r in failures {
            if let Err(e) = &r.result {
                let _ = writeln!(out, "- {} ms {}: {e}", r.rtt, r.pairing);
            }
        }
    }
    println!("{out}");
}
