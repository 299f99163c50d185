//! Where a phone's Bluetooth stack attaches: one listener per phone.
//!
//! A stack that reaches a phone's attach point *is* that phone's stack, so
//! an attach point must be reachable only by the stack the host launched
//! for it:
//!
//! - **Not from a guest.** An app in an Android Emulator guest reaches the
//!   host only through user-mode networking: 10.0.2.2 is the host's
//!   127.0.0.1 (and IPv6's gateway its `::1`), other addresses leave
//!   through the host's own routes. Attach points listen on another
//!   loopback address (default 127.0.0.2), which no guest can name.
//! - **Not from another local user.** Every connection's peer socket is
//!   looked up in `/proc/net/tcp` and must belong to the host's own user.
//! - **Not as another phone.** Each phone has its own port; the port
//!   decides the phone. The name a stack puts in its `ChipInfo` is only
//!   logged, so no stack can claim another phone, and a refused client
//!   learns nothing about other phones.
//!
//! (A Unix socket per phone was the first design; gRPC C core 1.57 and
//! later, which the emulator's netsim client is built on, sends the
//! socket's path as the HTTP/2 `:authority`, which the `h2` server rejects,
//! so the emulator could never attach. Loopback TCP has no such trap.)
//!
//! The Android Emulator is pointed at its phone's attach point with
//! `-packet-streamer-endpoint 127.0.0.2:PORT`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sensor_proto::netsim::packet::packet_streamer_server::PacketStreamerServer;
use tokio::sync::oneshot;

use super::{Bluetooth, NetsimService};
use crate::HostError;
pub use crate::procnet::peer_uid;

/// The loopback address attach points listen on by default: loopback, and
/// not the 127.0.0.1 that emulator guests reach as 10.0.2.2.
pub const DEFAULT_ATTACH_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Every phone's attach point. Cheap to clone; made before the phones and
/// the Bluetooth side, which it joins once both exist.
#[derive(Clone, Debug)]
pub struct AttachPoints {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    ip: Ipv4Addr,
    /// The user a connecting stack must run as: the host's own.
    uid: u32,
    open: Mutex<HashMap<String, Open>>,
    bluetooth: OnceLock<Weak<Bluetooth>>,
}

#[derive(Debug)]
struct Open {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl AttachPoints {
    /// Attach points on `ip`, admitting stacks that run as the host's user.
    ///
    /// # Errors
    /// [`HostError::Invalid`] when `ip` is one an emulator guest reaches
    /// (see [`check_attach_ip`]).
    pub fn new(ip: Ipv4Addr) -> Result<Self, HostError> {
        check_attach_ip(SocketAddr::from((ip, 0)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                ip,
                uid: rustix::process::geteuid().as_raw(),
                open: Mutex::new(HashMap::new()),
                bluetooth: OnceLock::new(),
            }),
        })
    }

    /// Where `phone`'s stack attaches (`IP:PORT`), once it is open.
    #[must_use]
    pub fn endpoint(&self, phone: &str) -> Option<SocketAddr> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(phone)
            .map(|o| o.addr)
    }

    /// Opens `phone`'s attach point (a no-op while it is open); its address.
    ///
    /// # Errors
    /// [`HostError::Io`] when no port can be bound.
    pub fn open(&self, phone: &str) -> Result<SocketAddr, HostError> {
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = open.get(phone) {
            return Ok(o.addr);
        }
        let bind = |ip: Ipv4Addr| -> std::io::Result<tokio::net::TcpListener> {
            let l = std::net::TcpListener::bind((ip, 0))?;
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        };
        let listener = bind(self.inner.ip).map_err(|e| {
            HostError::io(
                format!(
                    "binding {phone}'s Bluetooth attach point on {}",
                    self.inner.ip
                ),
                e,
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| HostError::io("reading an attach point's address", e))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let service = PacketStreamerServer::new(NetsimService {
            source: Source::AttachPoint {
                phone: phone.to_owned(),
                points: self.inner.clone(),
            },
        });
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let name = phone.to_owned();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(phone = %name, error = %e, "Bluetooth attach point stopped");
            }
        });
        tracing::debug!(%phone, %addr, "Bluetooth attach point open");
        open.insert(
            phone.to_owned(),
            Open {
                addr,
                _stop: stop_tx,
            },
        );
        Ok(addr)
    }

    /// Closes `phone`'s attach point (the phone was deleted). Dropping its
    /// stop sender ends its server.
    pub fn close(&self, phone: &str) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(phone);
    }

    /// Closes every attach point (the host stopping).
    pub fn close_all(&self) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Joins the Bluetooth side: stacks that attach from now on reach it.
    pub(super) fn join(&self, bt: &Arc<Bluetooth>) {
        let _ = self.inner.bluetooth.set(Arc::downgrade(bt));
    }
}

impl crate::backend::AttachPointsFor for AttachPoints {
    fn open(&self, phone: &str) -> Result<SocketAddr, HostError> {
        AttachPoints::open(self, phone)
    }

    fn close(&self, phone: &str) {
        AttachPoints::close(self, phone);
    }
}

impl Inner {
    pub(super) fn bluetooth(&self) -> Option<Arc<Bluetooth>> {
        self.bluetooth.get().and_then(Weak::upgrade)
    }

    /// Whether the peer of our connection `local` <- `peer` runs as the
    /// host's user.
    pub(super) fn admits(&self, local: SocketAddr, peer: SocketAddr) -> Result<(), Option<u32>> {
        match peer_uid(local, peer) {
            Some(uid) if uid == self.uid => Ok(()),
            other => Err(other),
        }
    }
}

/// Where a stream to the `PacketStreamer` service came in, which decides
/// the phone it may attach to.
#[derive(Debug)]
pub(super) enum Source {
    /// A phone's own attach point: the port names the phone.
    AttachPoint { phone: String, points: Arc<Inner> },
    /// The development listener: the stack's `ChipInfo` names the phone
    /// (trusting every local process; off unless configured).
    Development(Arc<Bluetooth>),
}

/// Whether a TCP address may serve phones' stacks: loopback, and not an
/// address an emulator guest reaches (its 10.0.2.2 is the host's
/// 127.0.0.1; IPv6 user-mode networking maps to `::1`).
///
/// # Errors
/// [`HostError::Invalid`] saying why the address is refused.
pub fn check_attach_ip(addr: SocketAddr) -> Result<(), HostError> {
    let why = match addr.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST => Some(
            "127.0.0.1 is what an emulator guest reaches as 10.0.2.2, so every app in every \
             phone could attach as any phone's Bluetooth stack",
        ),
        IpAddr::V6(ip) if ip.is_loopback() => {
            Some("::1 is what an emulator guest's IPv6 user-mode networking reaches")
        }
        ip if !ip.is_loopback() => {
            Some("it is not a loopback address, so other machines (and emulator guests) reach it")
        }
        _ => None,
    };
    match why {
        Some(why) => Err(HostError::Invalid {
            what: "Bluetooth listener",
            why: format!(
                "{addr} is refused: {why}; use another loopback address such as 127.0.0.2"
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_reachable_addresses_are_refused() {
        for bad in [
            "127.0.0.1:4435",
            "0.0.0.0:4435",
            "[::1]:4435",
            "[::]:4435",
            "10.0.2.15:1",
        ] {
            let e = check_attach_ip(bad.parse().unwrap()).unwrap_err();
            assert!(e.to_string().contains("is refused"), "{bad}: {e}");
            assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        }
        for good in ["127.0.0.2:4435", "127.1.2.3:0"] {
            check_attach_ip(good.parse().unwrap()).unwrap();
        }
        assert!(AttachPoints::new(Ipv4Addr::LOCALHOST).is_err());
    }

    #[tokio::test]
    async fn a_local_peer_is_found_with_its_uid_and_a_phone_keeps_its_port() {
        let points = AttachPoints::new(DEFAULT_ATTACH_IP).unwrap();
        let addr = points.open("phone-1").unwrap();
        assert_eq!(points.open("phone-1").unwrap(), addr, "idempotent");
        assert_eq!(points.endpoint("phone-1"), Some(addr));
        assert_eq!(addr.ip(), IpAddr::V4(DEFAULT_ATTACH_IP));
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(
            peer_uid(addr, client.local_addr().unwrap()),
            Some(me),
            "our own connection is ours"
        );
        assert!(
            points
                .inner
                .admits(addr, client.local_addr().unwrap())
                .is_ok()
        );
        assert_eq!(peer_uid(addr, "127.0.0.9:1".parse().unwrap()), None);
        points.close("phone-1");
        assert_eq!(points.endpoint("phone-1"), None);
    }
}
