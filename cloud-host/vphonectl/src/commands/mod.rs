//! One module per noun of the command line. Each holds its clap
//! subcommands, its JSON shapes (serde) and `run`, which calls the operator
//! API and prints a table or, with `--json`, one JSON document.

pub(crate) mod bt;
pub(crate) mod fleet;
pub(crate) mod handset;
pub(crate) mod phone;
pub(crate) mod session;
pub(crate) mod stats;

use serde::Serialize;

use crate::client::CliError;

/// The lowercase name of a proto enum value (`PHONE_STATE_RUNNING` with
/// prefix `PHONE_STATE_` is `running`): the proto is the one list of names.
pub(crate) fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// Prints `v` as one line of JSON.
pub(crate) fn print_json(v: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(v)
        .map_err(|e| CliError::new(crate::client::EXIT_FAIL, format!("encoding JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use sensor_proto::operator as op;

    use super::enum_name;

    #[test]
    fn proto_enum_names_become_lowercase_words() {
        assert_eq!(
            enum_name(op::PhoneState::Running.as_str_name(), "PHONE_STATE_"),
            "running"
        );
        assert_eq!(
            enum_name(op::Backend::Emulator.as_str_name(), "BACKEND_"),
            "emulator"
        );
        assert_eq!(enum_name("ODD", "X_"), "odd");
    }
}
