//! Shared fixtures: an in-process host, client configs, a raw QUIC client
//! for speaking broken protocol. The network-cutting proxy is the testkit's
//! `FaultProxy`.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use device_bridge::proto::{
    ControlMessage, Hello, SensorCapability, SensorKind, Welcome, control_message,
};
use device_bridge::{
    BridgeClientConfig, BridgeServer, BridgeServerConfig, ClientSession, HandsetIdentity,
    HostIdentity, MemoryAuthorizer, ServerSession, TransportSettings,
};
use prost::Message as _;
use sensor_proto::framing::LengthDelimitedDecoder;

pub(crate) const LOOPBACK: &str = "127.0.0.1:0";

/// Bounds every wait in the tests.
pub(crate) async fn within<T>(
    secs: u64,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .with_context(|| format!("timed out waiting for {what}"))
}

pub(crate) struct Host {
    pub(crate) server: BridgeServer,
    pub(crate) auth: Arc<MemoryAuthorizer>,
    pub(crate) addr: SocketAddr,
    pub(crate) identity: HostIdentity,
}

impl Host {
    pub(crate) fn start() -> anyhow::Result<Self> {
        Self::start_with(Duration::from_secs(10))
    }

    pub(crate) fn start_with(resume_window: Duration) -> anyhow::Result<Self> {
        let identity = HostIdentity::generate()?;
        let auth = Arc::new(MemoryAuthorizer::generate()?);
        let mut config = BridgeServerConfig::new(identity.clone(), auth.clone());
        config.transport = TransportSettings::for_tests();
        config.resume_window = resume_window;
        let server = BridgeServer::bind(LOOPBACK.parse()?, config)?;
        let addr = server.local_addr()?;
        Ok(Self {
            server,
            auth,
            addr,
            identity,
        })
    }

    /// A client config for `identity`, advertising accelerometer and light.
    pub(crate) fn client_config(&self, identity: &HandsetIdentity) -> BridgeClientConfig {
        let mut config = BridgeClientConfig::new(self.addr, self.identity.pin(), identity.clone());
        config.transport = TransportSettings::for_tests();
        config.hello = hello("test handset");
        config
    }

    /// Enrolls a fresh handset and opens a session; returns both ends.
    pub(crate) async fn enrolled_pair(&self) -> anyhow::Result<(ClientSession, ServerSession)> {
        let identity = HandsetIdentity::generate()?;
        self.auth.enroll(identity.fingerprint(), "h");
        let client = ClientSession::connect(self.client_config(&identity)).await?;
        let server = within(5, "accept", self.server.accept())
            .await?
            .context("server closed")?;
        Ok((client, server))
    }
}

pub(crate) fn hello(name: &str) -> Hello {
    Hello {
        handset_name: name.into(),
        capabilities: vec![
            SensorCapability {
                kind: SensorKind::Accelerometer as i32,
                max_rate_hz: 200.0,
                name: "accel".into(),
            },
            SensorCapability {
                kind: SensorKind::Light as i32,
                max_rate_hz: 10.0,
                name: "light".into(),
            },
        ],
        ..Hello::default()
    }
}

/// A hand-driven QUIC client that speaks the protocol byte by byte.
pub(crate) struct RawClient {
    pub(crate) _endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
    pub(crate) control: quinn::SendStream,
    pub(crate) _control_rx: quinn::RecvStream,
    pub(crate) welcome: Welcome,
    /// Streams the test opened, kept open until the client is dropped.
    pub(crate) keep_send: Vec<quinn::SendStream>,
    pub(crate) keep_recv: Vec<quinn::RecvStream>,
}

impl RawClient {
    /// Connects an enrolled handset and completes Hello/Welcome.
    pub(crate) async fn connect(host: &Host) -> anyhow::Result<Self> {
        let identity = HandsetIdentity::generate()?;
        host.auth.enroll(identity.fingerprint(), "raw");
        let mut endpoint = quinn::Endpoint::client(LOOPBACK.parse()?)?;
        endpoint.set_default_client_config(device_bridge::tls::client_config(
            &identity,
            host.identity.pin(),
            &TransportSettings::for_tests(),
        )?);
        let conn = endpoint
            .connect(host.addr, device_bridge::tls::SERVER_NAME)?
            .await?;
        let (mut control, mut control_rx) = conn.open_bi().await?;
        let mut msg = hello("raw");
        msg.protocol_version = device_bridge::proto::PROTOCOL_VERSION;
        let frame = ControlMessage {
            msg: Some(control_message::Msg::Hello(msg)),
        }
        .encode_length_delimited_to_vec();
        control.write_all(&frame).await?;
        let mut decoder = LengthDelimitedDecoder::new();
        let welcome = loop {
            if let Some(msg) = decoder.pop::<ControlMessage>()? {
                match msg.msg {
                    Some(control_message::Msg::Welcome(w)) => break w,
                    other => bail!("expected Welcome, got {other:?}"),
                }
            }
            let chunk = control_rx
                .read_chunk(4096, true)
                .await?
                .context("control stream ended")?;
            decoder.push(&chunk.bytes);
        };
        Ok(Self {
            _endpoint: endpoint,
            conn,
            control,
            _control_rx: control_rx,
            welcome,
            keep_send: Vec::new(),
            keep_recv: Vec::new(),
        })
    }

    /// Waits until the host closes the connection; returns its app code.
    pub(crate) async fn closed_code(&self) -> anyhow::Result<u64> {
        match within(5, "the host to close", self.conn.closed()).await? {
            quinn::ConnectionError::ApplicationClosed(close) => Ok(close.error_code.into_inner()),
            other => bail!("connection ended without an application close: {other}"),
        }
    }

    pub(crate) fn send_datagram(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.conn.send_datagram(Bytes::from(bytes))?;
        Ok(())
    }
}

/// A fresh loopback socket for migration.
pub(crate) fn new_socket() -> anyhow::Result<StdUdpSocket> {
    Ok(StdUdpSocket::bind(LOOPBACK)?)
}

/// An ACL packet whose payload encodes `i`.
pub(crate) fn acl(i: u32, len: usize) -> bt_raw::H4Packet {
    let len = len.max(4);
    let mut v = Vec::with_capacity(5 + len);
    v.push(0x02);
    v.extend_from_slice(&0x0040u16.to_le_bytes());
    v.extend_from_slice(&u16::try_from(len).unwrap_or(4).to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.resize(5 + len, 0xab);
    bt_raw::H4Packet::parse(v).expect("valid ACL packet")
}

/// The index encoded by [`acl`].
pub(crate) fn acl_index(p: &bt_raw::H4Packet) -> u32 {
    let payload = p.payload();
    u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
}
