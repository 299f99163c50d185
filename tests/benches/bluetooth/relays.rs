//! Part 1: GATT ping round trips and L2CAP throughput through four
//! setups, interleaved run by run, and their table.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------- part 1

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setup {
    Direct,
    /// The central on the controller too, but over the controller's own
    /// netsim (gRPC) port: the central's transport of the relayed setups
    /// without a relay, so the ratio to it is what the relays add.
    DirectNetsim,
    Vphone,
    Bridge,
}

impl Setup {
    const ALL: [Self; 4] = [Self::Direct, Self::DirectNetsim, Self::Vphone, Self::Bridge];
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectNetsim => "direct over netsim",
            Self::Vphone => "vphone",
            Self::Bridge => "bumble-hci-bridge",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    Ping,
    L2cap,
}

#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// min, max, average (ms) from `@@@ RTTs`.
    pub(crate) rtt: Option<(f64, f64, f64)>,
    /// Per-packet RTTs (ms).
    pub(crate) rtts: Vec<f64>,
    /// Central send throughput, bytes/s.
    pub(crate) bps: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct RelayRun {
    pub(crate) setup: Setup,
    pub(crate) scenario: Scenario,
    pub(crate) round: usize,
    pub(crate) result: Result<Measured, String>,
}

/// The number right after `key` in `line`.
pub(crate) fn num_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub(crate) fn parse_ping(text: &str) -> Option<Measured> {
    let line = text.lines().find(|l| l.contains("@@@ RTTs: min="))?;
    let rtt = (
        num_after(line, "min=")?,
        num_after(line, "max=")?,
        num_after(line, "average=")?,
    );
    let rtts = text
        .lines()
        .filter(|l| l.contains("<<< Received ACK ["))
        .filter_map(|l| num_after(l, ", RTT="))
        .collect();
    Some(Measured {
        rtt: Some(rtt),
        rtts,
        bps: None,
    })
}

pub(crate) fn parse_l2cap(text: &str) -> Option<Measured> {
    let line = text
        .lines()
        .find(|l| l.contains("@@@ Received ACK. Speed: average="))?;
    Some(Measured {
        bps: Some(num_after(line, "average=")?),
        ..Measured::default()
    })
}

pub(crate) async fn relay_run(
    ctx: &Ctx,
    host: &Host,
    config: &Path,
    setup: Setup,
    scenario: Scenario,
    dir: &Path,
) -> Result<Measured, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let b_netsim = setup == Setup::DirectNetsim;
    let (mut ctl, a, b) = controllers(ctx, None, dir, b_netsim).await?;
    let bench = ctx.bins.bench.display().to_string();
    let role = |args: &[&str], end: &[String]| -> Vec<String> {
        std::iter::once(bench.clone())
            .chain(args.iter().map(|s| (*s).to_owned()))
            .chain(end.iter().cloned())
            .collect()
    };
    let (periph_args, central_args, timeout): (&[&str], &[&str], u64) = match scenario {
        Scenario::Ping => (
            &["--scenario", "pong"],
            &["--scenario", "ping", "-c", "50", "--pace", "50"],
            40,
        ),
        Scenario::L2cap => (
            &["--mode", "l2cap-server", "--scenario", "receive"],
            &["--mode", "l2cap-client", "--scenario", "send", "-c", "200"],
            60,
        ),
    };
    let mut periph = Proc::spawn(
        "bench peripheral",
        &role(
            periph_args,
            &["peripheral".into(), format!("tcp-client:127.0.0.1:{a}")],
        ),
        dir,
        &[],
        &dir.join("peripheral.log"),
    )?;
    ready("advertising", Duration::from_secs(20), &mut periph, |p| {
        p.text().contains("Waiting for connection")
    })
    .await?;
    let mut relay = None;
    let transport = match setup {
        Setup::Direct => format!("tcp-client:127.0.0.1:{b}"),
        Setup::DirectNetsim => format!("android-netsim:127.0.0.1:{b},name=bench"),
        Setup::Vphone => {
            let (p, _) = lend(ctx, host, None, config, b, dir).await?;
            relay = Some(p);
            format!("android-netsim:{},name={PHONE}", host.netsim)
        }
        Setup::Bridge => {
            let port = free_port();
            let argv = vec![
                ctx.bins.bridge.display().to_string(),
                format!("android-netsim:127.0.0.1:{port},mode=controller"),
                format!("tcp-client:127.0.0.1:{b}"),
            ];
            // Its netsim.ini goes to TMPDIR: the run's dir, not /tmp.
            let tmp = dir.display().to_string();
            let env = [("TMPDIR", Some(tmp.as_str())), ("XDG_RUNTIME_DIR", None)];
            let mut p = Proc::spawn(
                "bumble-hci-bridge",
                &argv,
                dir,
                &env,
                &dir.join("bridge.log"),
            )?;
            let pid = p.pid();
            ready("bridge listening", Duration::from_secs(20), &mut p, |_| {
                listening(pid, port)
            })
            .await?;
            relay = Some(p);
            format!("android-netsim:127.0.0.1:{port},name=bench")
        }
    };
    let mut central = Proc::spawn(
        "bench central",
        &role(central_args, &["central".into(), transport]),
        dir,
        &[],
        &dir.join("central.log"),
    )?;
    let code = central.wait(Duration::from_secs(timeout)).await;
    let text = central.text();
    let parsed = match scenario {
        Scenario::Ping => parse_ping(&text),
        Scenario::L2cap => parse_l2cap(&text),
    };
    // The bench peripheral leaves by itself about 1 s after the central.
    if periph.wait(Duration::from_secs(4)).await.is_err() {
        periph.kill().await;
    }
    if let Some(mut r) = relay {
        r.stop(Duration::from_secs(5)).await;
    }
    ctl.kill().await;
    match (code, parsed) {
        (Ok(Some(0)), Some(m)) => Ok(m),
        (Ok(code), None) => Err(format!(
            "central exited ({code:?}) without its result line: {}",
            central.tail(3)
        )),
        (Ok(code), Some(_)) => Err(format!("central exit code {code:?}: {}", central.tail(3))),
        (Err(e), _) => Err(format!("{e}: {}", central.tail(3))),
    }
}

pub(crate) async fn part_relays(ctx: &Ctx, cfg: &Config, scratch: &Path) -> Vec<RelayRun> {
    let mut runs = Vec::new();
    let dir = scratch.join("relays");
    let _ = std::fs::create_dir_all(&dir);
    let host = async {
        let quic = free_udp(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let host = Host::start(ctx, &dir, quic, quic).await?;
        let config = dir.join("companion");
        host.enroll(ctx, &config, "bench-relays").await?;
        Ok::<_, String>((host, config))
    }
    .await;
    let (host, config) = match host {
        Ok(h) => h,
        Err(e) => {
            println!("## 1. Relays\n\nFAILED to start the host: {e}\n");
            return runs;
        }
    };
    let total = cfg.runs * Setup::ALL.len() * 2;
    for round in 0..cfg.runs {
        for setup in Setup::ALL {
            for scenario in [Scenario::Ping, Scenario::L2cap] {
                let n = runs.len() + 1;
                let name = format!("{n:02}-{}-{scenario:?}", setup.name()).to_lowercase();
                note_run();
                let result =
                    relay_run(ctx, &host, &config, setup, scenario, &dir.join(&name)).await;
                let shown = match &result {
                    Ok(m) => match (m.rtt, m.bps) {
                        (Some((_, _, avg)), _) => format!("RTT avg {avg:.2} ms"),
                        (_, Some(bps)) => format!("{:.1} kB/s", bps / 1000.0),
                        _ => "?".into(),
                    },
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{n}/{total}] {} {scenario:?} round {}: {shown}",
                    setup.name(),
                    round + 1
                );
                runs.push(RelayRun {
                    setup,
                    scenario,
                    round,
                    result,
                });
            }
        }
    }
    drop(host);
    print_relays(cfg, &runs);
    runs
}

/// Per setup: (ok ping runs, avg, min, max, p50, p99, per-packet count,
/// ok l2cap runs, mean kB/s, min kB/s, max kB/s).
#[derive(Debug, Default)]
pub(crate) struct SetupStats {
    pub(crate) ping_ok: usize,
    pub(crate) avg: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) packets: usize,
    pub(crate) l2cap_ok: usize,
    pub(crate) kbps: Option<f64>,
    pub(crate) kbps_min: Option<f64>,
    pub(crate) kbps_max: Option<f64>,
}

pub(crate) fn stats(runs: &[RelayRun], setup: Setup) -> SetupStats {
    let ok = |sc: Scenario| {
        runs.iter()
            .filter(move |r| r.setup == setup && r.scenario == sc)
            .filter_map(|r| r.result.as_ref().ok())
    };
    let pings: Vec<(f64, f64, f64)> = ok(Scenario::Ping).filter_map(|m| m.rtt).collect();
    let all: Vec<f64> = ok(Scenario::Ping)
        .flat_map(|m| m.rtts.iter().copied())
        .collect();
    let kbps: Vec<f64> = ok(Scenario::L2cap)
        .filter_map(|m| m.bps)
        .map(|b| b / 1000.0)
        .collect();
    SetupStats {
        ping_ok: pings.len(),
        avg: mean(&pings.iter().map(|p| p.2).collect::<Vec<_>>()),
        min: pings.iter().map(|p| p.0).reduce(f64::min),
        max: pings.iter().map(|p| p.1).reduce(f64::max),
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        packets: all.len(),
        l2cap_ok: kbps.len(),
        kbps: mean(&kbps),
        kbps_min: kbps.iter().copied().reduce(f64::min),
        kbps_max: kbps.iter().copied().reduce(f64::max),
    }
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub(crate) fn print_relays(cfg: &Config, runs: &[RelayRun]) {
    let direct = stats(runs, Setup::Direct);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 1. bumble-bench: direct vs through vphone vs through bumble-hci-bridge (loopback, 0 ms added RTT)\n"
    );
    let _ = writeln!(
        out,
        "| setup | ping runs ok | RTT avg (ms) | RTT min | RTT max | RTT p50 | RTT p99 | RTT avg x direct | L2CAP runs ok | throughput (kB/s) | min-max | throughput x direct |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for setup in Setup::ALL {
        let s = stats(runs, setup);
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {} | {} | {} | {} | {}x | {}/{} | {} | {}-{} | {}x |",
            setup.name(),
            s.ping_ok,
            cfg.runs,
            f(s.avg, 2),
            f(s.min, 2),
            f(s.max, 2),
            f(s.p50, 2),
            f(s.p99, 2),
            f(ratio(s.avg, direct.avg), 2),
            s.l2cap_ok,
            cfg.runs,
            f(s.kbps, 1),
            f(s.kbps_min, 1),
            f(s.kbps_max, 1),
            f(ratio(s.kbps, direct.kbps), 2),
        );
    }
    let _ = writeln!(
        out,
        "\np50/p99 over every `<<< Received ACK [i], RTT=` line of the setup's runs ({} / {} / {} / {} packets); \
         avg = mean of the runs' `@@@ RTTs` averages, min/max over the runs; throughput = the central's \
         `Speed: average` (bytes sent / time to the receiver's ACK, 200 x 500 B), mean of the runs.\n",
        stats(runs, Setup::Direct).packets,
        stats(runs, Setup::DirectNetsim).packets,
        stats(runs, Setup::Vphone).packets,
        stats(runs, Setup::Bridge).packets,
    );
    let _ = writeln!(
        out,
        "The central's own transport differs: `tcp-client` (H4 over TCP) direct, `android-netsim` (gRPC, \
         Python grpcio) direct over netsim, through vphone and through the bridge, so both relays also carry the cost of the \
         central's gRPC transport; `direct over netsim` is that transport with no relay.\n"
    );
    let _ = writeln!(out, "Per run (in the order run):\n");
    let _ = writeln!(
        out,
        "| round | setup | ping RTT avg / min / max (ms) | L2CAP (kB/s) |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for round in 0..cfg.runs {
        for setup in Setup::ALL {
            let cell = |sc: Scenario| {
                runs.iter()
                    .find(|r| r.round == round && r.setup == setup && r.scenario == sc)
                    .map_or("-".to_owned(), |r| match &r.result {
                        Ok(m) => match (m.rtt, m.bps) {
                            (Some((mn, mx, avg)), _) => format!("{avg:.2} / {mn:.2} / {mx:.2}"),
                            (_, Some(b)) => format!("{:.1}", b / 1000.0),
                            _ => "?".into(),
                        },
                        Err(_) => "FAILED".into(),
                    })
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                round + 1,
                setup.name(),
                cell(Scenario::Ping),
                cell(Scenario::L2cap)
            );
        }
    }
    let failures: Vec<&RelayRun> = runs.iter().filter(|r| r.result.is_err()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for r in failures {
            if let Err(e) = &r.result {
                let _ = writeln!(
                    out,
                    "- {} {:?} round {}: {e}",
                    r.setup.name(),
                    r.scenario,
                    r.round + 1
                );
            }
        }
    }
    println!("{out}");
}
