//! The sim backend: a [`SimPhone`] serving EmulatorController on loopback.

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{BoxFuture, PhoneBackend, PhoneEndpoint, Progress, random_token};
use crate::HostError;
use crate::sim::{SimPhone, SimPhoneConfig};
use crate::threads::Priority;

/// Runs a sim phone.
#[derive(Debug)]
pub struct SimBackend {
    width: u32,
    height: u32,
    dpi: u32,
    running: Option<(SimPhone, oneshot::Sender<()>)>,
}

impl SimBackend {
    /// A sim phone of this screen size.
    pub fn new(width: u32, height: u32, dpi: u32) -> Self {
        Self {
            width,
            height,
            dpi,
            running: None,
        }
    }
}

impl PhoneBackend for SimBackend {
    fn start(&mut self, progress: Progress) -> BoxFuture<'_, Result<PhoneEndpoint, HostError>> {
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
            crate::threads::spawn_on_own_runtime("sim-api", Priority::Latency, async move {
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
            self.running = Some((phone, stop));
            Ok(PhoneEndpoint {
                grpc_addr: addr.to_string(),
                token: Some(token),
            })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            if let Some((_, stop)) = self.running.take() {
                let _ = stop.send(());
            }
            Ok(())
        })
    }

    fn exited(&self) -> BoxFuture<'static, String> {
        // The sim phone lives in this process: it only ends when stopped.
        Box::pin(std::future::pending())
    }

    fn sim(&self) -> Option<SimPhone> {
        self.running.as_ref().map(|(p, _)| p.clone())
    }
}
