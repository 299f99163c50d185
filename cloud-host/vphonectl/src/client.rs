//! Reaching the host: where its operator API and admin token are, the
//! authenticated gRPC client, and what a failure exits with.

use std::path::PathBuf;

use anyhow::Context as _;
use sensor_proto::layout::{admin_token_path, default_data_dir, operator_addr_path};
use sensor_proto::operator::operator_client::OperatorClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The operator API client, every call carrying the admin token.
pub(crate) type Client = OperatorClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <admin token>` to every call.
#[derive(Clone, Debug)]
pub(crate) struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Exit codes (listed in `--help`): scripts branch on them, not on text.
pub(crate) const EXIT_FAIL: u8 = 1;
/// A command line clap accepted but we could not use (e.g. `--size 7`).
pub(crate) const EXIT_USAGE: u8 = 2;
/// The phone, handset or session does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 3;
/// The admin token is missing or refused.
pub(crate) const EXIT_AUTH: u8 = 4;
/// The host, or what the request needs there (KVM, a phone), is unavailable.
pub(crate) const EXIT_UNAVAILABLE: u8 = 5;

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: u8,
    pub(crate) msg: String,
}

impl CliError {
    pub(crate) fn new(code: u8, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::new(EXIT_FAIL, format!("{e:#}"))
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        // The host's status follows its error's kind, so the exit code does.
        let code = match s.code() {
            Code::NotFound => EXIT_NOT_FOUND,
            Code::Unauthenticated | Code::PermissionDenied => EXIT_AUTH,
            Code::Unavailable => EXIT_UNAVAILABLE,
            _ => EXIT_FAIL,
        };
        Self::new(code, s.message())
    }
}

/// Where the host is and how to prove we are its operator.
#[derive(Debug)]
pub(crate) struct Target {
    /// `--data-dir` / `VPHONE_DATA_DIR`.
    pub(crate) data_dir: Option<PathBuf>,
    /// `--operator` / `VPHONE_OPERATOR`.
    pub(crate) operator: Option<String>,
    /// `--token-file`.
    pub(crate) token_file: Option<PathBuf>,
}

/// Connects to the operator API named by `target`.
pub(crate) async fn connect(target: &Target) -> Result<Client, CliError> {
    let data_dir = target
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&|k| std::env::var(k).ok()));
    let addr = match &target.operator {
        Some(a) => a.clone(),
        None => std::fs::read_to_string(operator_addr_path(&data_dir))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "127.0.0.1:4434".to_owned()),
    };
    let token_path = target
        .token_file
        .clone()
        .unwrap_or_else(|| admin_token_path(&data_dir));
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| {
            format!(
                "cannot read the admin token {} (give --data-dir or --token-file / VPHONE_ADMIN_TOKEN_FILE; the host creates it at first start unless it reads --admin-token-file)",
                token_path.display()
            )
        })
        .map_err(|e| CliError::new(EXIT_AUTH, format!("{e:#}")))?;
    let bearer: MetadataValue<_> = format!("Bearer {}", token.trim()).parse().map_err(|_| {
        CliError::new(
            EXIT_AUTH,
            format!("{} does not hold a valid token", token_path.display()),
        )
    })?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CliError::new(EXIT_USAGE, format!("invalid operator address {addr:?}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .map_err(|_| {
            CliError::new(
                EXIT_UNAVAILABLE,
                format!(
                    "cannot reach vphone-host at {addr}: is it running? (start it with `vphone-host serve`)"
                ),
            )
        })?;
    Ok(OperatorClient::with_interceptor(channel, Bearer(bearer)))
}
