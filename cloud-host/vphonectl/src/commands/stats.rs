//! `vphonectl stats`: the host's counts, uptime and traffic.

use sensor_proto::operator as op;
use serde::Serialize;

use super::print_json;
use crate::client::{CliError, Client};

#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    phones: u32,
    phones_running: u32,
    handsets: u32,
    sessions: u32,
    sessions_connected: u32,
    uptime_ms: u64,
    version: &'a str,
    bytes_up: u64,
    bytes_down: u64,
}

pub(crate) async fn run(c: &mut Client, as_json: bool) -> Result<(), CliError> {
    let s = c
        .get_host_stats(op::GetHostStatsRequest {})
        .await?
        .into_inner();
    if as_json {
        return print_json(&StatsJson {
            phones: s.phones,
            phones_running: s.phones_running,
            handsets: s.handsets,
            sessions: s.sessions,
            sessions_connected: s.sessions_connected,
            uptime_ms: s.uptime_ms,
            version: &s.version,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
        });
    }
    println!("version:   {}", s.version);
    println!("uptime:    {}s", s.uptime_ms / 1000);
    println!("phones:    {} ({} running)", s.phones, s.phones_running);
    println!("handsets:  {}", s.handsets);
    println!(
        "sessions:  {} ({} connected)",
        s.sessions, s.sessions_connected
    );
    println!("traffic:   {} B up, {} B down", s.bytes_up, s.bytes_down);
    Ok(())
}
