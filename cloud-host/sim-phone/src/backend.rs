//! The sim backend: a [`SimPhone`] serving EmulatorController on loopback,
//! painting the host's status for it (session, Bluetooth) on its screen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::{MAX_DIMENSION, MIN_HEIGHT, MIN_WIDTH, SimPhone, SimPhoneConfig};
use host_core::HostError;
use host_core::backend::emulator::EmulatorKind;
use host_core::backend::{
    BackendContext, BackendKind, Backends, BoxFuture, PhoneBackend, PhoneEndpoint, Progress,
    random_token,
};
use host_core::registry::{Backend, PhoneRecord};
use host_core::status::PhoneStatus;
use host_core::threads::Priority;

/// The sim as a backend kind. It keeps the running sim phones by name, so
/// tests and the demo can look at a phone directly ([`SimKind::phone`]).
#[derive(Clone, Debug, Default)]
pub struct SimKind {
    running: Arc<Mutex<HashMap<String, SimPhone>>>,
}

impl SimKind {
    /// Every backend a host runs: sim phones through this kind, and the
    /// Android Emulator.
    #[must_use]
    pub fn backends(&self) -> Backends {
        Backends::default()
            .with(Backend::Sim, Arc::new(self.clone()))
            .with(Backend::Emulator, Arc::new(EmulatorKind::default()))
    }

    /// The running sim phone `name`, if any.
    #[must_use]
    pub fn phone(&self, name: &str) -> Option<SimPhone> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

impl BackendKind for SimKind {
    fn make(&self, record: &PhoneRecord, _: &BackendContext) -> Box<dyn PhoneBackend> {
        Box::new(SimBackend {
            name: record.name.clone(),
            width: record.width,
            height: record.height,
            dpi: record.dpi,
            registry: self.running.clone(),
            running: None,
        })
    }

    fn check(&self, record: &PhoneRecord) -> Result<(), HostError> {
        let (w, h) = (record.width, record.height);
        if (MIN_WIDTH..=MAX_DIMENSION).contains(&w) && (MIN_HEIGHT..=MAX_DIMENSION).contains(&h) {
            Ok(())
        } else {
            Err(HostError::InvalidSize {
                width: w,
                height: h,
                supported: format!(
                    " (supported: {MIN_WIDTH}x{MIN_HEIGHT} up to {MAX_DIMENSION}x{MAX_DIMENSION})"
                ),
            })
        }
    }
}

/// Paints `status` on `phone`'s screen until the status ends.
async fn paint(phone: SimPhone, mut status: watch::Receiver<PhoneStatus>) {
    loop {
        let s = status.borrow_and_update().clone();
        phone.set_session(s.session);
        phone.set_bluetooth(s.radio);
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Runs a sim phone.
#[derive(Debug)]
pub struct SimBackend {
    name: String,
    width: u32,
    height: u32,
    dpi: u32,
    registry: Arc<Mutex<HashMap<String, SimPhone>>>,
    running: Option<(SimPhone, oneshot::Sender<()>, tokio::task::AbortHandle)>,
}

impl PhoneBackend for SimBackend {
    fn start(
        &mut self,
        progress: Progress,
        status: watch::Receiver<PhoneStatus>,
    ) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>> {
        Box::pin(async move {
            let token = random_token()?;
            let phone = SimPhone::start(SimPhoneConfig {
                width: self.width,
                height: self.height,
                dpi: self.dpi,
                auth_token: Some(token.clone()),
            })?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| HostError::io("binding the sim phone's gRPC port on 127.0.0.1", e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| HostError::io("reading the sim phone's address", e))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| HostError::io("configuring the sim phone's gRPC port", e))?;
            let (stop, stopped) = oneshot::channel();
            let serving = phone.clone();
            // The phone's API (setSensor, input, screenshots) gets a thread of
            // its own at latency priority, like the host's sensor path: a
            // sample is applied the moment it arrives, not a scheduler tick
            // later behind video work. Heavy image conversions leave it
            // (see `SimPhone::serve`).
            host_core::threads::spawn_on_own_runtime("sim-api", Priority::Latency, async move {
                let res = match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        serving
                            .serve(listener, async {
                                let _ = stopped.await;
                            })
                            .await
                    }
                    Err(e) => Err(HostError::io("registering the sim phone's gRPC port", e)),
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "sim phone gRPC server failed");
                }
            })?;
            progress(format!("sim phone serving EmulatorController on {addr}"));
            let painter = tokio::spawn(paint(phone.clone(), status)).abort_handle();
            self.registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.name.clone(), phone.clone());
            self.running = Some((phone, stop, painter));
            Ok(PhoneEndpoint {
                grpc_addr: addr.to_string(),
                token: Some(token),
            })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            if let Some((_, stop, painter)) = self.running.take() {
                let _ = stop.send(());
                painter.abort();
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.name);
            }
            Ok(())
        })
    }

    fn exited(&self) -> BoxFuture<'static, String> {
        // The sim phone lives in this process: it only ends when stopped.
        Box::pin(std::future::pending())
    }
}
