//! Phone backends behind one trait: the real Android Emulator and the
//! built-in sim phone. Both end up as an `EmulatorController` gRPC endpoint
//! that [`crate::emu_client::EmulatorClient`] drives, so everything above
//! this module is backend-agnostic. The host is given its backends
//! ([`Backends`]) when it starts; nothing outside a backend names it.

pub mod emulator;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::HostError;
use crate::registry::{Backend, PhoneRecord};
use crate::status::PhoneStatus;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a started phone's EmulatorController API answers. Its `Debug`
/// never shows the token.
#[derive(Clone, Eq, PartialEq)]
pub struct PhoneEndpoint {
    /// `host:port` of the gRPC server.
    pub grpc_addr: String,
    /// The bearer token its gRPC API requires.
    pub token: Option<String>,
}

impl std::fmt::Debug for PhoneEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneEndpoint")
            .field("grpc_addr", &self.grpc_addr)
            .field("token", &crate::secret::Redacted(self.token.is_some()))
            .finish()
    }
}

/// Progress reports from a long start (an emulator boot takes minutes).
pub type Progress = Box<dyn Fn(String) + Send + Sync>;

/// A way to run a phone.
pub trait PhoneBackend: Send + std::fmt::Debug {
    /// Starts the phone and waits until its API answers and it has booted,
    /// reporting progress on the way. `status` is the host's state for the
    /// phone to show, if it can (the sim paints it on its screen).
    fn start(
        &mut self,
        progress: Progress,
        status: watch::Receiver<PhoneStatus>,
    ) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>>;

    /// Stops the phone cleanly (forcefully after a grace period).
    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>>;

    /// A future that resolves when the started phone exits on its own, with
    /// the reason. It never resolves while the phone runs normally, after
    /// [`Self::stop`], or for a phone that was never started.
    fn exited(&self) -> BoxFuture<'static, String>;
}

/// Where phones' Bluetooth stacks attach, opened per phone by the phone
/// manager and served by the Bluetooth side (`bluetooth::AttachPoints`).
/// A trait here, so the phones do not depend on the Bluetooth module that
/// depends on them.
pub trait AttachPointsFor: Send + Sync + std::fmt::Debug {
    /// Opens `phone`'s attach point (a no-op while it is open); the address
    /// its stack dials.
    ///
    /// # Errors
    /// When no listener can be bound.
    fn open(&self, phone: &str) -> Result<std::net::SocketAddr, HostError>;

    /// Closes `phone`'s attach point (the phone was deleted).
    fn close(&self, phone: &str);
}

/// What a backend needs to know about the host it runs phones for.
#[derive(Clone, Debug)]
pub struct BackendContext {
    /// The host's data dir (emulator logs go under `logs/`).
    pub data_dir: PathBuf,
    /// The PacketStreamer endpoint phones' Bluetooth stacks use.
    pub packet_streamer: String,
    /// How long an emulator boot may take.
    pub boot_timeout: Duration,
    /// Extra emulator arguments.
    pub emulator_args: Vec<String>,
}

/// A kind of backend: makes the backend of each phone recorded with it.
pub trait BackendKind: Send + Sync + std::fmt::Debug {
    /// The backend that runs `record`.
    fn make(&self, record: &PhoneRecord, host: &BackendContext) -> Box<dyn PhoneBackend>;

    /// Checks a phone about to be created (its screen size, say).
    ///
    /// # Errors
    /// What this backend cannot run, with why.
    fn check(&self, record: &PhoneRecord) -> Result<(), HostError> {
        let _ = record;
        Ok(())
    }
}

/// The backends a host runs phones with.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    kinds: HashMap<Backend, Arc<dyn BackendKind>>,
}

impl Backends {
    /// These backends and `kind` for `backend`.
    #[must_use]
    pub fn with(mut self, backend: Backend, kind: Arc<dyn BackendKind>) -> Self {
        self.kinds.insert(backend, kind);
        self
    }

    /// The kind for `backend`, if this host has it.
    #[must_use]
    pub fn get(&self, backend: Backend) -> Option<&Arc<dyn BackendKind>> {
        self.kinds.get(&backend)
    }
}

/// The backend of a phone recorded with a backend this host does not run:
/// starting it fails with a clear reason.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) Backend);

impl PhoneBackend for Unavailable {
    fn start(
        &mut self,
        _: Progress,
        _: watch::Receiver<PhoneStatus>,
    ) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>> {
        let backend = self.0;
        Box::pin(async move {
            Err(HostError::Unavailable {
                what: "backend",
                why: format!("this host does not run {} phones", backend.as_str()),
            })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async { Ok(()) })
    }

    fn exited(&self) -> BoxFuture<'static, String> {
        Box::pin(std::future::pending())
    }
}

/// A random token for loopback gRPC authentication (hex, 32 bytes from the
/// system CSPRNG; the one generator `device-bridge` uses for its secrets).
///
/// # Errors
/// [`HostError::Invalid`] when the OS has no randomness to give.
pub fn random_token() -> Result<String, HostError> {
    device_bridge::random_token().map_err(|e| HostError::Internal {
        what: "randomness",
        why: e.to_string(),
    })
}
