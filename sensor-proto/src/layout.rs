//! Where a host keeps the files an operator's tools need to find it: part of
//! the operator contract, so `vphonectl` finds a host without linking it.

use std::path::{Path, PathBuf};

/// The host's data dir when none is configured: `$XDG_DATA_HOME/vphone`,
/// else `$HOME/.local/share/vphone`, else `./vphone-data`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(x) = env("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("vphone");
    }
    if let Some(h) = env("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/vphone");
    }
    PathBuf::from("vphone-data")
}

/// The admin token's file name, in a host's data dir or a fleet key set.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The operator's admin token (mode 0600) in a host's data dir.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// The operator API's address (`HOST:PORT` and a newline) in a host's data
/// dir, written by the host when it starts.
pub fn operator_addr_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operator.addr")
}
