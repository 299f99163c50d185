//! rustls (ring provider only, TLS 1.3 only, ALPN `vphone/1`) and quinn
//! endpoint configurations for both sides.
//!
//! * The host presents its [`HostIdentity`] and *requires* a client
//!   certificate, but accepts any well-formed one whose handshake signature
//!   verifies: handsets are self-signed and are authorized by fingerprint
//!   at the application layer ([`crate::Authorizer`]).
//! * The handset trusts no CA: it accepts the host only if the SPKI SHA-256
//!   of the host's end-entity certificate equals its [`Pin`].

use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::BridgeError;
use crate::config::{Side, TransportSettings};
use crate::identity::{Fingerprint, HandsetIdentity, HostIdentity, Pin};
use crate::web::WebCertificates;

/// The ALPN protocol id of the bridge protocol, version 1.
pub const ALPN: &[u8] = b"vphone/1";

/// ALPN of HTTP/3, which browser handsets speak for WebTransport.
pub const ALPN_H3: &[u8] = b"h3";

/// The TLS server name the handset sends (the host ignores it; the pin is
/// what authenticates the host).
pub const SERVER_NAME: &str = "vphone-host";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Host side: any well-formed client certificate (authorized later by
/// fingerprint), proof of key possession checked by the TLS 1.3 signature.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    // Optional at the TLS layer only because browsers (ALPN `h3`) cannot
    // present one on WebTransport; a `vphone/1` connection without a
    // certificate is refused right after the handshake, and a browser
    // proves its key inside the session (see `crate::web`).
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Fingerprint::of_certificate(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Records what the host presented when the pin did not match, so that the
/// client can report [`BridgeError::PinMismatch`] instead of a TLS alert.
#[derive(Debug, Default)]
pub(crate) struct PinProbe(Mutex<Option<Fingerprint>>);

impl PinProbe {
    pub(crate) fn mismatch(&self) -> Option<Fingerprint> {
        self.0.lock().ok().and_then(|g| *g)
    }
}

/// Handset side: the host is whoever holds the pinned key.
#[derive(Debug)]
struct PinnedHost {
    pin: Pin,
    provider: Arc<CryptoProvider>,
    probe: Arc<PinProbe>,
}

impl ServerCertVerifier for PinnedHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = Fingerprint::of_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if actual == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            if let Ok(mut slot) = self.probe.0.lock() {
                *slot = Some(actual);
            }
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host's quinn server configuration.
///
/// # Errors
///
/// If the identity's key does not fit its certificate or the transport
/// settings are out of range.
/// Presents the host identity to native handsets and the short-lived
/// WebTransport certificate to browsers, chosen by the ALPN the client
/// offers.
#[derive(Debug)]
struct ByAlpn {
    identity: Arc<rustls::sign::CertifiedKey>,
    web: Arc<WebCertificates>,
}

impl rustls::server::ResolvesServerCert for ByAlpn {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let browser = hello
            .alpn()
            .is_some_and(|mut offered| offered.all(|p| p != ALPN) && hello_offers_h3(&hello));
        Some(if browser {
            self.web.current()
        } else {
            self.identity.clone()
        })
    }
}

fn hello_offers_h3(hello: &rustls::server::ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut o| o.any(|p| p == ALPN_H3))
}

pub fn server_config(
    identity: &HostIdentity,
    transport: &TransportSettings,
    web: Option<Arc<WebCertificates>>,
) -> Result<quinn::ServerConfig, BridgeError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyClientCert {
            provider: provider.clone(),
        }));
    let mut tls = match &web {
        None => builder.with_single_cert(identity.chain(), identity.key())?,
        Some(web) => {
            let key = provider
                .key_provider
                .load_private_key(identity.key())
                .map_err(|e| BridgeError::Identity(format!("host key: {e}")))?;
            let certified = Arc::new(rustls::sign::CertifiedKey::new(identity.chain(), key));
            builder.with_cert_resolver(Arc::new(ByAlpn {
                identity: certified,
                web: web.clone(),
            }))
        }
    };
    tls.alpn_protocols = match web {
        None => vec![ALPN.to_vec()],
        Some(_) => vec![ALPN.to_vec(), ALPN_H3.to_vec()],
    };
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| BridgeError::Identity(format!("quic tls config: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport.quinn(Side::Server)?);
    config.migration(true);
    Ok(config)
}

/// The handset's quinn client configuration: presents `identity`, accepts
/// only a host whose key matches `pin`.
///
/// # Errors
///
/// If the identity's key does not fit its certificate or the transport
/// settings are out of range.
pub fn client_config(
    identity: &HandsetIdentity,
    pin: Pin,
    transport: &TransportSettings,
) -> Result<quinn::ClientConfig, BridgeError> {
    client_config_with_probe(identity, pin, transport).map(|(c, _)| c)
}

pub(crate) fn client_config_with_probe(
    identity: &HandsetIdentity,
    pin: Pin,
    transport: &TransportSettings,
) -> Result<(quinn::ClientConfig, Arc<PinProbe>), BridgeError> {
    let provider = provider();
    let probe = Arc::new(PinProbe::default());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedHost {
            pin,
            provider,
            probe: probe.clone(),
        }))
        .with_client_auth_cert(identity.chain(), identity.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| BridgeError::Identity(format!("quic tls config: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport.quinn(Side::Client)?);
    Ok((config, probe))
}

/// The fingerprint of the peer's end-entity certificate on an established
/// connection.
pub(crate) fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    Fingerprint::of_certificate(certs.first()?).ok()
}

/// The ALPN protocol the connection agreed on.
pub(crate) fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}
