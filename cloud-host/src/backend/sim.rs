//! The sim backend: a [`SimPhone`] serving EmulatorController on loopback.

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{BoxFuture, PhoneBackend, PhoneEndpoint, Progress, random_token};
use crate::HostError;
use crate::sim::{SimPhone, SimPhoneConfig};

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
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| HostError::io("binding the sim phone's gRPC port on 127.0.0.1", e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| HostError::io("reading the sim phone's address", e))?;
            let (stop, stopped) = oneshot::channel();
            let serving = phone.clone();
            tokio::spawn(async move {
                let res = serving
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "sim phone gRPC server failed");
                }
            });
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
