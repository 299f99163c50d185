//! `vphonectl`: the operator CLI of a vphone host.

//!
//! `main` parses the command line and dispatches; `client` finds the host
//! and authenticates; `commands/` holds one module per noun (phone,
//! handset, session, bt, stats, fleet and host). The CLI speaks only the operator API
//! (`sensor-proto`), never the host's crates.

mod client;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use client::{CliError, EXIT_FAIL, Target};
use commands::bt::BtCmd;
use commands::fleet::HostCmd;
use commands::handset::HandsetCmd;
use commands::phone::PhoneCmd;
use commands::session::SessionCmd;

const EXAMPLES: &str = "\
Examples:
  vphonectl phone list
  vphonectl phone create pixel --backend emulator --avd Pixel_7_API_34
  vphonectl phone create lab --size 1080x2400 --dpi 420
  vphonectl phone screenshot phone-1 --out screen.png
  vphonectl handset enroll --name alice-pixel --phone phone-1
  vphonectl handset revoke alice-pixel
  vphonectl session list --json
  vphonectl fleet                                       (hosts sharing the registry, where each phone runs)
  vphonectl host drain host-2                           (its phones move to other hosts)
  vphonectl phone move phone-1 --to host-3
  vphonectl bt snoop phone-1 --out phone-1.btsnoop     (Ctrl-C stops; open in Wireshark)
  vphonectl completions bash > /etc/bash_completion.d/vphonectl

The host is found through its data dir (--data-dir, VPHONE_DATA_DIR, or the
default $XDG_DATA_HOME/vphone): it holds the operator address and the admin
token. --operator and --token-file name them explicitly instead.

Exit codes: 0 done, 1 failed, 2 bad command line, 3 not found,
4 admin token missing or refused, 5 host (or what it needs) unavailable.";

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
    /// File holding the admin token (default: `<data dir>/admin.token`);
    /// the same variable as the host's --admin-token-file, so inside a
    /// host's pod or unit vphonectl finds the token the host reads.
    #[arg(long, global = true, env = "VPHONE_ADMIN_TOKEN_FILE")]
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
    /// The fleet sharing this host's registry: hosts with their load,
    /// phones with the host holding their lease.
    Fleet,
    /// Fleet hosts: drain, forget.
    #[command(subcommand)]
    Host(HostCmd),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
    let target = Target {
        data_dir: cli.data_dir,
        operator: cli.operator,
        token_file: cli.token_file,
    };
    let mut c = client::connect(&target).await?;
    let as_json = cli.json;
    match cli.cmd {
        Cmd::Completions { .. } => Ok(()),
        Cmd::Phone(cmd) => commands::phone::run(&mut c, cmd, as_json).await,
        Cmd::Handset(cmd) => commands::handset::run(&mut c, cmd, as_json).await,
        Cmd::Session(cmd) => commands::session::run(&mut c, cmd, as_json).await,
        Cmd::Bt(cmd) => commands::bt::run(&mut c, cmd, as_json).await,
        Cmd::Stats => commands::stats::run(&mut c, as_json).await,
        Cmd::Fleet => commands::fleet::show(&mut c, as_json).await,
        Cmd::Host(cmd) => commands::fleet::host(&mut c, cmd, as_json).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
