//! The browser handset's page: a small static app (embedded in the binary,
//! `cloud-host/host-core/web/`) served over HTTPS with the operator's
//! certificate, or plain HTTP for `http://localhost` development, on the TCP
//! port of the same number as the handsets' UDP port. The page then opens a
//! WebTransport session to that UDP port (see `device_bridge::web`).
//!
//! Routes: `/` (the page), `/app.js`, `/style.css`, and
//! `/webtransport.json`: where the session goes, the hashes of the current
//! and next WebTransport certificates, the host's public key and its
//! signature over the hashes (a page that enrolled with the host's pin
//! trusts only hashes that key signed).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderValue, Response, StatusCode, header};
use base64::Engine as _;
use device_bridge::HostIdentity;
use device_bridge::web::WebCertificates;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use crate::HostError;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// The WebTransport path on the UDP port.
pub const WT_PATH: &str = "/wt";

/// Headers every answer carries: the page runs only its own script, sends
/// no referrer (its link carries a token in the fragment), and may use the
/// motion sensors and location.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    (
        "permissions-policy",
        "accelerometer=(self), gyroscope=(self), magnetometer=(self), geolocation=(self), fullscreen=(self)",
    ),
];

/// What the page's routes need.
#[derive(Debug)]
pub struct PageInfo {
    /// The host identity (its public key and signature).
    pub identity: HostIdentity,
    /// The WebTransport certificates.
    pub certs: Arc<WebCertificates>,
    /// `/webtransport.json` for the current hashes (signing once per set).
    cached: Mutex<Option<(Vec<String>, String)>>,
}

impl PageInfo {
    /// The page's view of `identity` and `certs`.
    #[must_use]
    pub fn new(identity: HostIdentity, certs: Arc<WebCertificates>) -> Self {
        Self {
            identity,
            certs,
            cached: Mutex::new(None),
        }
    }

    /// `/webtransport.json`.
    #[must_use]
    pub fn webtransport_json(&self) -> String {
        let hashes = self.certs.hashes_hex();
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((h, json)) = cached.as_ref()
            && *h == hashes
        {
            return json.clone();
        }
        let json = self.build_json();
        *cached = Some((hashes, json.clone()));
        json
    }

    fn build_json(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (published, sig) = self.certs.signed_set(&self.identity);
        let certs: Vec<serde_json::Value> = published
            .iter()
            .map(|c| {
                serde_json::json!({
                    "hash": c.hash_hex,
                    "not_before": c.not_before,
                    "not_after": c.not_after,
                })
            })
            .collect();
        serde_json::json!({
            "path": WT_PATH,
            "host_spki": b64.encode(self.identity.spki()),
            "certs": certs,
            "sig": sig.map(|s| b64.encode(s)),
        })
        .to_string()
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    for (k, v) in SECURITY_HEADERS {
        h.insert(*k, HeaderValue::from_static(v));
    }
    r
}

/// The answer to one request.
#[must_use]
pub fn route(info: &PageInfo, method: &axum::http::Method, path: &str) -> Response<String> {
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
    }
    match path {
        "/" | "/index.html" => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            INDEX_HTML.into(),
        ),
        "/app.js" => answer(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            APP_JS.into(),
        ),
        "/style.css" => answer(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS.into()),
        "/webtransport.json" => {
            answer(StatusCode::OK, "application/json", info.webtransport_json())
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    }
}

/// The operator's certificate for the page, reloaded when its files change
/// (checked at most every 2 s, on a handshake).
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, HostError> {
    let bad = |why: String| HostError::Invalid {
        what: "web certificate",
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(format!("{}: no certificate in it", cert.display())));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad(format!("{}: {e}", key.display())))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| bad(format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| bad(format!("the key does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// Loads the certificate chain and key (PEM).
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the file and the problem.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, HostError> {
        let certified = load_certified(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(CertState {
                key: certified,
                stamp: (mtime(cert), mtime(key)),
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.checked.elapsed() >= Duration::from_secs(2) {
            s.checked = Instant::now();
            let stamp = (mtime(&self.cert), mtime(&self.key));
            if stamp != s.stamp {
                match load_certified(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded the web certificate");
                        s.key = k;
                        s.stamp = stamp;
                    }
                    // A renewal caught between writing the two files: keep
                    // the old pair and look again shortly.
                    Err(e) => tracing::warn!(error = %e, "keeping the previous web certificate"),
                }
            }
        }
        s.key.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Serves the page on `listener` until `shutdown` resolves: TLS when a
/// client starts with a TLS handshake and `cert` is set, plain HTTP
/// otherwise (a browser treats only `http://localhost` as a secure
/// context; the page says so anywhere else).
pub async fn serve(
    listener: TcpListener,
    info: Arc<PageInfo>,
    cert: Option<Arc<ReloadingCert>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = cert.map(|c| {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(c));
        if let Ok(cfg) = config.as_mut() {
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        config.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)))
    });
    let tls = match tls.transpose() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the web page's TLS setup failed; serving no page");
            return;
        }
    };
    tokio::pin!(shutdown);
    // Page loads are a few requests; a cap keeps idle strangers from taking
    // the host's descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PAGE_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "web page listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let info = info.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut first = [0u8; 1];
            let peeked =
                tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await;
            if !matches!(peeked, Ok(Ok(1))) {
                return;
            }
            match (first[0] == 0x16, tls) {
                (true, Some(acceptor)) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => http1(s, info, Scheme::Https).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web TLS handshake"),
                        Err(_) => tracing::debug!(%peer, "web TLS handshake timed out"),
                    }
                }
                // With a certificate, plain HTTP only redirects (except for
                // localhost, the development origin).
                (false, Some(_)) => http1(stream, info, Scheme::RedirectToHttps).await,
                _ => http1(stream, info, Scheme::Http).await,
            }
        });
    }
}

/// Connections the page server holds at once.
const MAX_PAGE_CONNECTIONS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
    RedirectToHttps,
}

async fn http1<S>(stream: S, info: Arc<PageInfo>, scheme: Scheme)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let local = host.starts_with("localhost:") || host == "localhost";
        let r = if scheme == Scheme::RedirectToHttps && !local {
            redirect(&host, req.uri().path())
        } else {
            route(&info, req.method(), req.uri().path())
        };
        async move { Ok::<_, Infallible>(r) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
}

fn redirect(host: &str, path: &str) -> Response<String> {
    let mut r = answer(
        StatusCode::PERMANENT_REDIRECT,
        "text/plain; charset=utf-8",
        "this page is served over HTTPS\n".into(),
    );
    let safe = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    match HeaderValue::from_str(&format!("https://{host}{path}")) {
        Ok(v) if safe && path.starts_with('/') => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        _ => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("page.crt"), cert.pem()).expect("cert");
        std::fs::write(dir.join("page.key"), key.serialize_pem()).expect("key");
        cert.der().to_vec()
    }

    #[test]
    fn the_page_certificate_is_reloaded_when_its_files_change() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = write_pair(dir.path(), "a.example");
        let c = ReloadingCert::load(&dir.path().join("page.crt"), &dir.path().join("page.key"))
            .expect("load");
        assert_eq!(c.current().cert[0].as_ref(), first.as_slice());
        // A renewal (new files, later mtime) is picked up at the next check.
        std::thread::sleep(Duration::from_millis(20));
        let second = write_pair(dir.path(), "b.example");
        c.state.lock().expect("state").checked = Instant::now() - Duration::from_secs(3);
        assert_eq!(c.current().cert[0].as_ref(), second.as_slice());
        // A half-written renewal keeps the working pair.
        std::fs::write(dir.path().join("page.key"), "garbage").expect("write");
        c.state.lock().expect("state").checked = Instant::now() - Duration::from_secs(3);
        assert_eq!(c.current().cert[0].as_ref(), second.as_slice());
        // A key that does not match is refused at load with a clear error.
        let other = tempfile::tempdir().expect("tmp");
        write_pair(other.path(), "c.example");
        let e = ReloadingCert::load(&dir.path().join("page.crt"), &other.path().join("page.key"))
            .expect_err("mismatch");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn the_page_and_its_pins_are_served_with_strict_headers() {
        let identity = HostIdentity::generate().expect("id");
        let certs = Arc::new(WebCertificates::ephemeral().expect("certs"));
        let info = PageInfo::new(identity, certs);
        let get = axum::http::Method::GET;
        let page = route(&info, &get, "/");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.body().contains("app.js"));
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .expect("csp");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        let pins: serde_json::Value =
            serde_json::from_str(route(&info, &get, "/webtransport.json").body()).expect("json");
        assert_eq!(pins["path"], WT_PATH);
        assert_eq!(pins["certs"].as_array().map(Vec::len), Some(2));
        assert!(pins["sig"].is_string(), "{pins}");
        assert_eq!(
            route(&info, &get, "/etc/passwd").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&info, &axum::http::Method::POST, "/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
