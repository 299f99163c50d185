//! Phone backends behind one trait: the real Android Emulator and the
//! built-in sim phone. Both end up as an `EmulatorController` gRPC endpoint
//! that [`crate::emu_client::EmulatorClient`] drives, so everything above
//! this module is backend-agnostic.

pub mod emulator;
pub mod sim;

use std::future::Future;
use std::pin::Pin;

use crate::HostError;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a started phone's EmulatorController API answers.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PhoneEndpoint {
    /// `host:port` of the gRPC server.
    pub grpc_addr: String,
    /// The bearer token its gRPC API requires.
    pub token: Option<String>,
}

/// Progress reports from a long start (an emulator boot takes minutes).
pub type Progress = Box<dyn Fn(String) + Send + Sync>;

/// A way to run a phone.
pub trait PhoneBackend: Send + std::fmt::Debug {
    /// Starts the phone and waits until its API answers and it has booted,
    /// reporting progress on the way.
    fn start(&mut self, progress: Progress) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>>;

    /// Stops the phone cleanly (forcefully after a grace period).
    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>>;

    /// A future that resolves when the started phone exits on its own, with
    /// the reason. It never resolves while the phone runs normally, after
    /// [`Self::stop`], or for a phone that was never started.
    fn exited(&self) -> BoxFuture<'static, String>;

    /// The sim phone behind this backend, when it is one (for the host to
    /// show Bluetooth and session state on its screen).
    fn sim(&self) -> Option<crate::sim::SimPhone> {
        None
    }
}

/// A random token for loopback gRPC authentication (hex, 32 bytes of entropy
/// drawn from the OS).
///
/// # Errors
/// [`HostError::Io`] when the OS has no randomness to give.
pub fn random_token() -> Result<String, HostError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| HostError::io("reading /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
