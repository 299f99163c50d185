//! H4 over a byte stream (TCP, Unix sockets).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::HciTransport;
use crate::h4::{Decoded, DecoderStats, H4Decoder};
use crate::{Error, H4Packet};

/// H4 framing over any async byte stream.
#[derive(Debug)]
pub struct StreamTransport<S> {
    io: S,
    decoder: H4Decoder,
    read_buf: Vec<u8>,
    peer: String,
}

impl<S> StreamTransport<S> {
    /// Wraps a connected stream. `peer` names it in errors.
    pub fn new(io: S, peer: impl Into<String>) -> Self {
        Self {
            io,
            decoder: H4Decoder::new(),
            read_buf: vec![0; 16 * 1024],
            peer: peer.into(),
        }
    }

    /// What the decoder has seen (packets, discarded bytes, resyncs).
    pub fn stats(&self) -> DecoderStats {
        self.decoder.stats()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl StreamTransport<TcpStream> {
    /// Connects to an H4-over-TCP controller at `addr` (`host:port`).
    ///
    /// # Errors
    /// [`Error::Io`] naming the address.
    pub async fn connect_tcp(addr: &str) -> Result<Self, Error> {
        let io = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(format!("connecting to H4 radio at tcp:{addr}"), e))?;
        let _ = io.set_nodelay(true);
        Ok(Self::new(io, format!("tcp:{addr}")))
    }
}

#[cfg(unix)]
impl StreamTransport<tokio::net::UnixStream> {
    /// Connects to an H4 stream on a Unix socket.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub async fn connect_unix(path: &std::path::Path) -> Result<Self, Error> {
        let io = tokio::net::UnixStream::connect(path).await.map_err(|e| {
            Error::io(
                format!("connecting to H4 radio at unix:{}", path.display()),
                e,
            )
        })?;
        Ok(Self::new(io, format!("unix:{}", path.display())))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> HciTransport for StreamTransport<S> {
    async fn recv(&mut self) -> Result<H4Packet, Error> {
        loop {
            while let Some(d) = self.decoder.poll() {
                match d {
                    Decoded::Packet(p) => return Ok(p),
                    Decoded::Discarded { bytes, reason } => {
                        tracing::warn!(peer = %self.peer, bytes, %reason, "dropped garbage on H4 stream");
                    }
                }
            }
            let n = self
                .io
                .read(&mut self.read_buf)
                .await
                .map_err(|e| Error::io(format!("reading from {}", self.peer), e))?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.decoder.push(&self.read_buf[..n]);
        }
    }

    async fn send(&mut self, packet: &H4Packet) -> Result<(), Error> {
        self.io
            .write_all(packet.as_bytes())
            .await
            .map_err(|e| Error::io(format!("writing to {}", self.peer), e))
    }
}

/// A TCP server that accepts H4 peers (controllers or host stacks).
#[derive(Debug)]
pub struct TcpH4Server {
    listener: TcpListener,
}

impl TcpH4Server {
    /// Binds `addr` (use port 0 for any free port).
    ///
    /// # Errors
    /// [`Error::Io`] naming the address.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listening for H4 on {addr}"), e))?;
        Ok(Self { listener })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket has no local address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading listener address", e))
    }

    /// Waits for the next peer.
    ///
    /// # Errors
    /// [`Error::Io`] from accept.
    pub async fn accept(&self) -> Result<(StreamTransport<TcpStream>, SocketAddr), Error> {
        let (io, peer) = self
            .listener
            .accept()
            .await
            .map_err(|e| Error::io("accepting H4 peer", e))?;
        let _ = io.set_nodelay(true);
        Ok((StreamTransport::new(io, format!("tcp:{peer}")), peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_round_trip_with_split_writes_and_garbage() {
        let server = TcpH4Server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let client = tokio::spawn(async move {
            let mut raw = TcpStream::connect(&addr).await.unwrap();
            // Garbage, then a Reset split over two writes, then an event.
            raw.write_all(&[0xEE, 0xEE, 0x01, 0x03]).await.unwrap();
            raw.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            raw.write_all(&[0x0C, 0x00, 0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00])
                .await
                .unwrap();
            let mut t = StreamTransport::new(raw, "test");
            // And receive what the server sends back.
            t.recv().await.unwrap()
        });
        let (mut t, _) = server.accept().await.unwrap();
        let a = t.recv().await.unwrap();
        let b = t.recv().await.unwrap();
        assert_eq!(a.as_bytes(), &[0x01, 0x03, 0x0C, 0x00]);
        assert_eq!(b.as_bytes(), &[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00]);
        assert_eq!(t.stats().discarded_bytes, 2);
        let reply = H4Packet::parse(vec![0x02, 0x01, 0x00, 0x02, 0x00, 0xAB, 0xCD]).unwrap();
        t.send(&reply).await.unwrap();
        assert_eq!(client.await.unwrap(), reply);
        // Peer gone: Closed, not a hang or a panic.
        assert!(matches!(t.recv().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn connect_error_names_the_radio() {
        let server = TcpH4Server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        drop(server);
        let e = StreamTransport::connect_tcp(&addr)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("tcp:{addr}")), "{e}");
    }
}
