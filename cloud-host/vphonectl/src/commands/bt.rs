//! `vphonectl bt snoop`: a phone's HCI traffic as a btsnoop file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use sensor_proto::operator as op;
use serde::Serialize;

use super::print_json;
use crate::client::{CliError, Client};

#[derive(Debug, Subcommand)]
pub(crate) enum BtCmd {
    /// Capture the HCI traffic between a phone's Bluetooth stack and the
    /// handset radio lent to it, as a btsnoop file (Wireshark, tshark,
    /// btmon -r). Keys (LTKs, link keys, PINs, IRKs) are zeroed unless
    /// --unredacted is given. Runs until Ctrl-C (packets already on their
    /// way in the next 0.3 s are still written), --duration or --count.
    Snoop {
        /// The phone.
        phone: String,
        /// The btsnoop file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Keep keys in the capture (the host logs that you asked); the file
        /// name gets `.unredacted` before its extension.
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

/// After Ctrl-C, `bt snoop` still writes the packets already on their way
/// for this long, so a capture stopped right after the traffic ends has all
/// of it.
const CAPTURE_DRAIN: std::time::Duration = std::time::Duration::from_millis(300);

#[derive(Debug, Serialize)]
struct CaptureJson<'a> {
    path: &'a std::path::Path,
    packets: u64,
    redacted: bool,
}

pub(crate) async fn run(c: &mut Client, cmd: BtCmd, as_json: bool) -> Result<(), CliError> {
    let BtCmd::Snoop {
        phone,
        out,
        unredacted,
        duration,
        count,
    } = cmd;
    // 0600, and an unredacted capture says so in its name.
    let out = bt_raw::btsnoop::capture_path(&out, unredacted);
    let n = snoop(c, phone, &out, unredacted, duration, count).await?;
    if as_json {
        return print_json(&CaptureJson {
            path: &out,
            packets: n,
            redacted: !unredacted,
        });
    }
    eprintln!();
    println!("wrote {} ({n} packets)", out.display());
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
    let file = bt_raw::btsnoop::create_capture(out)
        .with_context(|| format!("creating {}", out.display()))?;
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
