//! `vphonectl phone ...`: create, list, show, start, stop, delete, move,
//! screenshot.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use sensor_proto::operator as op;
use serde::Serialize;

use super::{enum_name, print_json};
use crate::client::{CliError, Client, EXIT_USAGE};

#[derive(Debug, Subcommand)]
pub(crate) enum PhoneCmd {
    /// Create a phone (started unless --no-start).
    Create(CreateArgs),
    /// List phones.
    List,
    /// Show one phone.
    Show {
        /// Phone name.
        name: String,
    },
    /// Start a phone.
    Start {
        /// Phone name.
        name: String,
    },
    /// Stop a phone.
    Stop {
        /// Phone name.
        name: String,
    },
    /// Delete a phone.
    Delete {
        /// Phone name.
        name: String,
        /// Stop it first if it is running.
        #[arg(long)]
        force: bool,
    },
    /// Move a phone to another host of the fleet (its holder gives it up,
    /// that host claims it).
    Move {
        /// Phone name.
        name: String,
        /// The host to run it on (see `vphonectl fleet`).
        #[arg(long, required_unless_present = "anywhere")]
        to: Option<String>,
        /// Let it run on any host again.
        #[arg(long, conflicts_with = "to")]
        anywhere: bool,
    },
    /// Save the phone's screen as a PNG file.
    Screenshot {
        /// Phone name.
        name: String,
        /// Where to write the PNG.
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Which kind of phone to run.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum BackendArg {
    /// The built-in software phone (no KVM or SDK needed).
    Sim,
    /// The Android Emulator (needs KVM, the SDK and an AVD).
    Emulator,
}

impl From<BackendArg> for op::Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Sim => Self::Sim,
            BackendArg::Emulator => Self::Emulator,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Phone name: letters, digits, '-', '_', '.'.
    name: String,
    /// Which kind of phone.
    #[arg(long, value_enum, default_value_t = BackendArg::Sim)]
    backend: BackendArg,
    /// AVD to boot (emulator backend).
    #[arg(long)]
    avd: Option<String>,
    /// Screen size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "720x1280")]
    size: String,
    /// Screen density in dpi.
    #[arg(long, default_value_t = 320)]
    dpi: u32,
    /// Create it stopped.
    #[arg(long)]
    no_start: bool,
}

/// A phone as `--json` prints it.
#[derive(Debug, Serialize)]
struct PhoneJson<'a> {
    name: &'a str,
    backend: String,
    state: String,
    desired_state: String,
    failure_reason: Option<&'a str>,
    display: DisplayJson,
    avd: Option<&'a str>,
    allowed_handsets: &'a [String],
    created_at_unix_ms: u64,
}

#[derive(Debug, Serialize)]
struct DisplayJson {
    width: u32,
    height: u32,
    dpi: u32,
}

fn backend_name(p: &op::Phone) -> String {
    enum_name(
        op::Backend::try_from(p.backend)
            .unwrap_or_default()
            .as_str_name(),
        "BACKEND_",
    )
}

fn state_name(p: &op::Phone) -> String {
    enum_name(
        op::PhoneState::try_from(p.state)
            .unwrap_or_default()
            .as_str_name(),
        "PHONE_STATE_",
    )
}

impl<'a> From<&'a op::Phone> for PhoneJson<'a> {
    fn from(p: &'a op::Phone) -> Self {
        let d = p.display.unwrap_or_default();
        let non_empty = |s: &'a String| (!s.is_empty()).then_some(s.as_str());
        Self {
            name: &p.name,
            backend: backend_name(p),
            state: state_name(p),
            desired_state: enum_name(
                op::DesiredState::try_from(p.desired_state)
                    .unwrap_or_default()
                    .as_str_name(),
                "DESIRED_STATE_",
            ),
            failure_reason: non_empty(&p.failure_reason),
            display: DisplayJson {
                width: d.width_px,
                height: d.height_px,
                dpi: d.dpi,
            },
            avd: non_empty(&p.avd),
            allowed_handsets: &p.allowed_handsets,
            created_at_unix_ms: p.created_at_unix_ms,
        }
    }
}

fn print_phone(p: &op::Phone, as_json: bool) -> Result<(), CliError> {
    if as_json {
        return print_json(&PhoneJson::from(p));
    }
    let d = p.display.unwrap_or_default();
    println!("name:     {}", p.name);
    println!("backend:  {}", backend_name(p));
    println!("state:    {}", state_name(p));
    if !p.failure_reason.is_empty() {
        println!("reason:   {}", p.failure_reason);
    }
    println!("display:  {}x{} @ {} dpi", d.width_px, d.height_px, d.dpi);
    if !p.avd.is_empty() {
        println!("avd:      {}", p.avd);
    }
    println!(
        "handsets: {}",
        if p.allowed_handsets.is_empty() {
            "-".to_owned()
        } else {
            p.allowed_handsets.join(", ")
        }
    );
    Ok(())
}

fn parse_size(s: &str) -> Result<(u32, u32), CliError> {
    let bad = || {
        CliError::new(
            EXIT_USAGE,
            format!("invalid --size {s:?}: expected WIDTHxHEIGHT, e.g. 720x1280"),
        )
    };
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

#[derive(Debug, Serialize)]
struct ScreenshotJson<'a> {
    path: &'a std::path::Path,
    width: u32,
    height: u32,
}

pub(crate) async fn run(c: &mut Client, cmd: PhoneCmd, as_json: bool) -> Result<(), CliError> {
    match cmd {
        PhoneCmd::Create(a) => {
            let (w, h) = parse_size(&a.size)?;
            let p = c
                .create_phone(op::CreatePhoneRequest {
                    name: a.name,
                    backend: op::Backend::from(a.backend) as i32,
                    display: Some(op::DisplaySpec {
                        width_px: w,
                        height_px: h,
                        dpi: a.dpi,
                    }),
                    avd: a.avd.unwrap_or_default(),
                    allowed_handsets: Vec::new(),
                    start: !a.no_start,
                })
                .await?
                .into_inner();
            print_phone(&p, as_json)
        }
        PhoneCmd::List => {
            let phones = c
                .list_phones(op::ListPhonesRequest {})
                .await?
                .into_inner()
                .phones;
            if as_json {
                let v: Vec<PhoneJson<'_>> = phones.iter().map(PhoneJson::from).collect();
                return print_json(&v);
            }
            println!(
                "{:<20} {:<9} {:<9} {:<11} REASON",
                "NAME", "BACKEND", "STATE", "SIZE"
            );
            for p in &phones {
                let d = p.display.unwrap_or_default();
                println!(
                    "{:<20} {:<9} {:<9} {:<11} {}",
                    p.name,
                    backend_name(p),
                    state_name(p),
                    format!("{}x{}", d.width_px, d.height_px),
                    p.failure_reason
                );
            }
            Ok(())
        }
        PhoneCmd::Show { name } => {
            let p = c
                .get_phone(op::GetPhoneRequest { name })
                .await?
                .into_inner();
            print_phone(&p, as_json)
        }
        PhoneCmd::Start { name } => {
            let p = c
                .start_phone(op::StartPhoneRequest { name })
                .await?
                .into_inner();
            print_phone(&p, as_json)
        }
        PhoneCmd::Stop { name } => {
            let p = c
                .stop_phone(op::StopPhoneRequest { name, force: false })
                .await?
                .into_inner();
            print_phone(&p, as_json)
        }
        PhoneCmd::Delete { name, force } => {
            c.delete_phone(op::DeletePhoneRequest {
                name: name.clone(),
                force,
            })
            .await?;
            if !as_json {
                println!("deleted phone '{name}'");
            }
            Ok(())
        }
        PhoneCmd::Move { name, to, .. } => super::fleet::move_phone(c, name, to, as_json).await,
        PhoneCmd::Screenshot { name, out } => {
            let s = c
                .get_screenshot(op::GetScreenshotRequest {
                    name,
                    max_width: 0,
                    max_height: 0,
                })
                .await?
                .into_inner();
            std::fs::write(&out, &s.png).with_context(|| format!("writing {}", out.display()))?;
            if as_json {
                return print_json(&ScreenshotJson {
                    path: &out,
                    width: s.width,
                    height: s.height,
                });
            }
            println!("wrote {} ({}x{})", out.display(), s.width, s.height);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_or_say_what_is_expected() {
        assert_eq!(parse_size("720x1280").unwrap(), (720, 1280));
        assert_eq!(parse_size("1080X2400").unwrap(), (1080, 2400));
        for bad in ["720", "x", "720x", "ax1", "-1x5"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.msg.contains("WIDTHxHEIGHT"), "{bad}: {}", e.msg);
        }
    }
}
