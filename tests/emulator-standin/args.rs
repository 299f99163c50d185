//! The emulator's command line, as far as the stand-in knows it: every
//! flag is single-dash, takes zero or one value, and an unknown one ends
//! the process with an error before anything starts.

/// One known flag: its name (without the dash) and whether it takes a
/// value. The emulator's list is longer; these are the ones the host passes
/// (see `host_core::backend::emulator::command_line`) and the ones an
/// operator commonly adds through `emulator_args`.
const FLAGS: &[(&str, bool)] = &[
    ("avd", true),
    ("no-window", false),
    ("qt-hide-window", false),
    ("no-audio", false),
    ("no-boot-anim", false),
    ("no-snapshot", false),
    ("no-snapshot-load", false),
    ("no-snapshot-save", false),
    ("wipe-data", false),
    ("read-only", false),
    ("gpu", true),
    ("accel", true),
    ("no-accel", false),
    ("memory", true),
    ("cores", true),
    ("ports", true),
    ("port", true),
    ("skip-adb-auth", false),
    ("feature", true),
    ("netspeed", true),
    ("netdelay", true),
    ("grpc", true),
    ("grpc-use-token", false),
    ("grpc-use-jwt", false),
    ("idle-grpc-timeout", true),
    ("packet-streamer-endpoint", true),
    ("camera-back", true),
    ("camera-front", true),
    ("verbose", false),
    ("show-kernel", false),
    ("debug", true),
    ("logcat", true),
    ("list-avds", false),
    ("version", false),
];

/// What the command line asks for.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// `-avd NAME` (or `@NAME`).
    pub avd: Option<String>,
    /// `-grpc PORT`: a fixed port on every interface, unauthenticated
    /// unless a `-grpc-use-*` flag is also given.
    pub grpc_port: Option<u16>,
    /// `-grpc-use-token`.
    pub use_token: bool,
    /// `-grpc-use-jwt`.
    pub use_jwt: bool,
    /// `-packet-streamer-endpoint HOST:PORT`.
    pub packet_streamer: Option<String>,
    /// `-list-avds`.
    pub list_avds: bool,
    /// `-read-only`: several instances of one AVD may run.
    pub read_only: bool,
    /// `-version`.
    pub version: bool,
    /// Every argument, as given (the discovery file's `cmdline`).
    pub all: Vec<String>,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// The message the emulator prints for an unknown flag or a flag without
/// its value.
pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        all: args.to_vec(),
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(name) = arg.strip_prefix('@') {
            o.avd = Some(name.to_owned());
            continue;
        }
        let Some(flag) = arg.strip_prefix('-') else {
            return Err(format!("invalid command-line parameter: {arg}."));
        };
        let Some(&(_, takes_value)) = FLAGS.iter().find(|(f, _)| *f == flag) else {
            return Err(format!("unknown option: {arg}"));
        };
        let value = if takes_value {
            match it.next() {
                Some(v) => Some(v.clone()),
                None => return Err(format!("option {arg} needs an argument")),
            }
        } else {
            None
        };
        match (flag, value) {
            ("avd", v) => o.avd = v,
            ("grpc", Some(v)) => {
                o.grpc_port = Some(v.parse().map_err(|_| format!("invalid gRPC port: {v}"))?);
            }
            ("grpc-use-token", _) => o.use_token = true,
            ("grpc-use-jwt", _) => o.use_jwt = true,
            ("packet-streamer-endpoint", v) => o.packet_streamer = v,
            ("list-avds", _) => o.list_avds = true,
            ("read-only", _) => o.read_only = true,
            ("version", _) => o.version = true,
            _ => {}
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn reads_the_hosts_command_line() {
        let o = parse(&args(
            "-avd pixel_7 -no-window -no-audio -no-boot-anim -no-snapshot -gpu swiftshader_indirect \
             -accel on -grpc-use-token -packet-streamer-endpoint 127.0.0.2:4000 -memory 2048",
        ))
        .unwrap();
        assert_eq!(o.avd.as_deref(), Some("pixel_7"));
        assert!(o.use_token && !o.use_jwt && o.grpc_port.is_none());
        assert_eq!(o.packet_streamer.as_deref(), Some("127.0.0.2:4000"));
    }

    #[test]
    fn refuses_what_the_emulator_refuses() {
        assert_eq!(
            parse(&args("-avd x -frobnicate")).unwrap_err(),
            "unknown option: -frobnicate"
        );
        assert!(
            parse(&args("-avd"))
                .unwrap_err()
                .contains("needs an argument")
        );
        assert!(parse(&args("pixel")).unwrap_err().contains("invalid"));
        assert_eq!(
            parse(&args("@pixel")).unwrap().avd.as_deref(),
            Some("pixel")
        );
    }
}
