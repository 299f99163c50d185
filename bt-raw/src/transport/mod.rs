//! Radio transports behind one trait.
//!
//! The relay code sees only [`HciTransport`]: send one [`H4Packet`], receive
//! one. Implementations: H4 over any byte stream ([`StreamTransport`]: TCP
//! client and server, Unix sockets) and, on Linux, the kernel's
//! `HCI_CHANNEL_USER` socket ([`UserChannel`]). [`Radio`] picks one from a
//! user-facing spec string such as `tcp:127.0.0.1:9002` or `hci:0`.

mod stream;
#[cfg(target_os = "linux")]
mod user_channel;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

pub use stream::{StreamTransport, TcpH4Server};
#[cfg(target_os = "linux")]
pub use user_channel::UserChannel;

use crate::{Error, H4Packet};

/// A bidirectional HCI packet transport.
pub trait HciTransport: Send {
    /// Receives the next packet.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes already read stay buffered for the next call.
    ///
    /// # Errors
    /// [`Error::Closed`] at end of stream, [`Error::Io`] on I/O failure.
    fn recv(&mut self) -> impl Future<Output = Result<H4Packet, Error>> + Send;

    /// Sends one packet.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send may have written part of the packet.
    ///
    /// # Errors
    /// [`Error::Io`] on I/O failure.
    fn send(&mut self, packet: &H4Packet) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Where a radio is, as a user writes it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum RadioSpec {
    /// `tcp:HOST:PORT`: connect to an H4-over-TCP controller (bumble,
    /// RootCanal, a rooted Android's HCI proxy).
    Tcp(String),
    /// `tcp-listen:ADDR:PORT`: wait for one H4-over-TCP controller to connect.
    TcpListen(SocketAddr),
    /// `unix:PATH`: an H4 stream over a Unix socket (e.g. BlueZ `btproxy`).
    Unix(PathBuf),
    /// `hci:N`: Linux adapter N through `HCI_CHANNEL_USER`.
    Hci(u16),
}

impl FromStr for RadioSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::RadioSpec {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| {
            bad("expected tcp:HOST:PORT, tcp-listen:ADDR:PORT, unix:PATH or hci:N")
        })?;
        match scheme {
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected tcp:HOST:PORT"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad("expected tcp:HOST:PORT with a port number"));
                }
                Ok(Self::Tcp(rest.to_owned()))
            }
            "tcp-listen" => rest
                .parse()
                .map(Self::TcpListen)
                .map_err(|_| bad("expected tcp-listen:ADDR:PORT, e.g. tcp-listen:127.0.0.1:9010")),
            "unix" if !rest.is_empty() => Ok(Self::Unix(PathBuf::from(rest))),
            "hci" => rest
                .strip_prefix("hci")
                .unwrap_or(rest)
                .parse()
                .map(Self::Hci)
                .map_err(|_| bad("expected hci:N with an adapter number, e.g. hci:0")),
            _ => Err(bad(
                "unknown radio type; use tcp:, tcp-listen:, unix: or hci:",
            )),
        }
    }
}

impl fmt::Display for RadioSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::TcpListen(a) => write!(f, "tcp-listen:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Hci(n) => write!(f, "hci:{n}"),
        }
    }
}

/// Any radio transport, chosen at run time.
#[derive(Debug)]
pub enum Radio {
    /// H4 over TCP.
    Tcp(StreamTransport<tokio::net::TcpStream>),
    /// H4 over a Unix socket.
    #[cfg(unix)]
    Unix(StreamTransport<tokio::net::UnixStream>),
    /// Linux HCI user channel.
    #[cfg(target_os = "linux")]
    UserChannel(UserChannel),
}

impl Radio {
    /// Opens the radio a spec names.
    ///
    /// # Errors
    /// A connection error naming the spec, or [`Error::UserChannel`] with the
    /// reason the kernel refused (for example missing `CAP_NET_ADMIN`).
    pub async fn open(spec: &RadioSpec) -> Result<Self, Error> {
        match spec {
            RadioSpec::Tcp(addr) => Ok(Self::Tcp(StreamTransport::connect_tcp(addr).await?)),
            RadioSpec::TcpListen(addr) => {
                let server = TcpH4Server::bind(*addr).await?;
                Ok(Self::Tcp(server.accept().await?.0))
            }
            #[cfg(unix)]
            RadioSpec::Unix(path) => Ok(Self::Unix(StreamTransport::connect_unix(path).await?)),
            #[cfg(target_os = "linux")]
            RadioSpec::Hci(index) => Ok(Self::UserChannel(UserChannel::open(*index)?)),
            #[allow(unreachable_patterns)]
            other => Err(Error::RadioSpec {
                spec: other.to_string(),
                reason: "not supported on this platform".to_owned(),
            }),
        }
    }
}

impl HciTransport for Radio {
    async fn recv(&mut self) -> Result<H4Packet, Error> {
        match self {
            Self::Tcp(t) => t.recv().await,
            #[cfg(unix)]
            Self::Unix(t) => t.recv().await,
            #[cfg(target_os = "linux")]
            Self::UserChannel(t) => t.recv().await,
        }
    }

    async fn send(&mut self, packet: &H4Packet) -> Result<(), Error> {
        match self {
            Self::Tcp(t) => t.send(packet).await,
            #[cfg(unix)]
            Self::Unix(t) => t.send(packet).await,
            #[cfg(target_os = "linux")]
            Self::UserChannel(t) => t.send(packet).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radio_specs_parse_and_print() {
        for s in [
            "tcp:127.0.0.1:9002",
            "tcp:localhost:1",
            "tcp-listen:127.0.0.1:9010",
            "unix:/tmp/h4.sock",
            "hci:0",
        ] {
            assert_eq!(s.parse::<RadioSpec>().unwrap().to_string(), s);
        }
        assert_eq!("hci:hci1".parse::<RadioSpec>().unwrap(), RadioSpec::Hci(1));
        for bad in [
            "",
            "tcp:nohost",
            "tcp::9",
            "tcp:h:port",
            "usb:0",
            "hci:x",
            "unix:",
        ] {
            let e = bad.parse::<RadioSpec>().unwrap_err();
            assert!(matches!(e, Error::RadioSpec { .. }), "{bad}");
        }
    }
}
