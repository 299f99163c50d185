//! HCI through the bridge vs. a plain TCP loopback echo, in one run.
//!
//! `cargo bench -p device-bridge --bench bridge`
//!
//! * Round trip: the host sends one H4 packet, the handset echoes it, the
//!   host receives it back (host -> QUIC -> handset -> QUIC -> host). The
//!   TCP baseline echoes the same H4 bytes over a loopback TCP connection.
//! * Throughput: the host streams ACL packets (1021-byte payload, the
//!   BR/EDR maximum) to the handset; the TCP baseline streams the same
//!   bytes.
//!
//! Goal: the bridge adds < 250 us at p99 per round trip and carries
//! >= 100 MB/s of ACL data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bt_raw::H4Packet;
use device_bridge::stats::quantile;
use device_bridge::{
    BridgeClientConfig, BridgeServer, BridgeServerConfig, ClientSession, HandsetIdentity,
    HostIdentity, MemoryAuthorizer,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const RTT_WARMUP: usize = 500;
const RTT_SAMPLES: usize = 10_000;
const ACL_PAYLOAD: usize = 1021;
const BULK_PACKETS: usize = 100_000;

fn acl(len: usize) -> anyhow::Result<H4Packet> {
    let mut v = Vec::with_capacity(5 + len);
    v.push(0x02);
    v.extend_from_slice(&0x0001u16.to_le_bytes());
    v.extend_from_slice(&u16::try_from(len)?.to_le_bytes());
    v.resize(5 + len, 0x5a);
    Ok(H4Packet::parse(v)?)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    quantile(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

struct Rtt {
    p50_us: f64,
    p99_us: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Rtt {
    samples.sort();
    Rtt {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
    }
}

async fn bridge_pair() -> anyhow::Result<(BridgeServer, ClientSession, device_bridge::ServerSession)>
{
    let host_identity = HostIdentity::generate()?;
    let auth = Arc::new(MemoryAuthorizer::generate()?);
    let handset = HandsetIdentity::generate()?;
    auth.enroll(handset.fingerprint(), "bench");
    let server = BridgeServer::bind(
        "127.0.0.1:0".parse()?,
        BridgeServerConfig::new(host_identity.clone(), auth),
    )?;
    let config = BridgeClientConfig::new(server.local_addr()?, host_identity.pin(), handset);
    let client = ClientSession::connect(config).await?;
    let session = server.accept().await.context("no session")?;
    Ok((server, client, session))
}

async fn bridge_rtt(packet: &H4Packet) -> anyhow::Result<Rtt> {
    let (_server, client, session) = bridge_pair().await?;
    let echo = tokio::spawn(async move {
        while let Ok(p) = client.recv_hci().await {
            if client.send_hci(p).await.is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    for i in 0..RTT_WARMUP + RTT_SAMPLES {
        let start = Instant::now();
        session.send_hci(packet.clone()).await?;
        session.recv_hci().await?;
        if i >= RTT_WARMUP {
            samples.push(start.elapsed());
        }
    }
    echo.abort();
    Ok(summarize(samples))
}

async fn tcp_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, (server, _)) = (client?, accepted?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

async fn tcp_rtt(packet: &H4Packet) -> anyhow::Result<Rtt> {
    let (mut host, mut handset) = tcp_pair().await?;
    let len = packet.len();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; len];
        while handset.read_exact(&mut buf).await.is_ok() {
            if handset.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; len];
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    for i in 0..RTT_WARMUP + RTT_SAMPLES {
        let start = Instant::now();
        host.write_all(packet.as_bytes()).await?;
        host.read_exact(&mut buf).await?;
        if i >= RTT_WARMUP {
            samples.push(start.elapsed());
        }
    }
    echo.abort();
    Ok(summarize(samples))
}

/// MB/s (10^6 bytes) of H4 bytes delivered to the handset's app.
async fn bridge_throughput(packet: &H4Packet) -> anyhow::Result<f64> {
    let (_server, client, session) = bridge_pair().await?;
    let total = BULK_PACKETS * packet.len();
    let receiver = tokio::spawn(async move {
        let mut bytes = 0usize;
        while bytes < total {
            bytes += client.recv_hci().await?.len();
        }
        anyhow::Ok(())
    });
    let start = Instant::now();
    for _ in 0..BULK_PACKETS {
        session.send_hci(packet.clone()).await?;
    }
    receiver.await??;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

async fn tcp_throughput(packet: &H4Packet) -> anyhow::Result<f64> {
    let (mut host, mut handset) = tcp_pair().await?;
    let total = BULK_PACKETS * packet.len();
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0usize;
        while bytes < total {
            let n = handset.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "tcp closed early");
            bytes += n;
        }
        anyhow::Ok(())
    });
    let start = Instant::now();
    // Same packets, written in batches like the bridge's writer does.
    let per_batch = 64;
    let mut batch = Vec::with_capacity(per_batch * packet.len());
    for _ in 0..per_batch {
        batch.extend_from_slice(packet.as_bytes());
    }
    for _ in 0..BULK_PACKETS / per_batch {
        host.write_all(&batch).await?;
    }
    for _ in 0..BULK_PACKETS % per_batch {
        host.write_all(packet.as_bytes()).await?;
    }
    receiver.await??;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let small = H4Packet::parse(vec![0x01, 0x03, 0x0c, 0x00])?; // HCI_Reset command
        let full = acl(ACL_PAYLOAD)?;
        let bridge_small = bridge_rtt(&small).await?;
        let tcp_small = tcp_rtt(&small).await?;
        let bridge_full = bridge_rtt(&full).await?;
        let tcp_full = tcp_rtt(&full).await?;
        let bridge_mbps = bridge_throughput(&full).await?;
        let tcp_mbps = tcp_throughput(&full).await?;

        println!();
        println!(
            "HCI through device-bridge vs plain TCP loopback echo ({RTT_SAMPLES} round trips, {BULK_PACKETS} x {}-byte ACL packets)",
            full.len()
        );
        println!(
            "{:<34} {:>12} {:>12} {:>10} {:>14}",
            "measure", "bridge", "tcp", "ratio", "bridge - tcp"
        );
        let rows = [
            ("RTT p50, 4-byte command (us)", bridge_small.p50_us, tcp_small.p50_us),
            ("RTT p99, 4-byte command (us)", bridge_small.p99_us, tcp_small.p99_us),
            ("RTT p50, 1026-byte ACL (us)", bridge_full.p50_us, tcp_full.p50_us),
            ("RTT p99, 1026-byte ACL (us)", bridge_full.p99_us, tcp_full.p99_us),
        ];
        for (name, b, t) in rows {
            println!("{name:<34} {b:>12.1} {t:>12.1} {:>9.2}x {:>14.1}", b / t, b - t);
        }
        println!(
            "{:<34} {:>12.1} {:>12.1} {:>9.2}x {:>14}",
            "ACL throughput (MB/s)",
            bridge_mbps,
            tcp_mbps,
            bridge_mbps / tcp_mbps,
            ""
        );
        let added_p99 = bridge_small.p99_us.max(bridge_full.p99_us)
            - tcp_small.p99_us.min(tcp_full.p99_us);
        println!();
        println!(
            "goal: added p99 < 250 us -> {:.1} us ({}); throughput >= 100 MB/s -> {:.1} MB/s ({})",
            added_p99,
            if added_p99 < 250.0 { "met" } else { "NOT met" },
            bridge_mbps,
            if bridge_mbps >= 100.0 { "met" } else { "NOT met" }
        );
        anyhow::Ok(())
    })
}
