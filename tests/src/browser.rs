//! A real headless Chromium driven over the DevTools protocol (CDP): the
//! browser handset's tests and benchmark. The protocol is JSON over one
//! WebSocket (`tokio-tungstenite`); commands go to a page through a flat
//! session (`Target.attachToTarget {flatten: true}`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use vphone_testkit::process::Proc;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A running headless Chromium and its DevTools connection.
pub struct Chromium {
    proc: Proc,
    overridden: Mutex<std::collections::HashSet<(String, &'static str)>>,
    tx: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: AtomicU64,
    console: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Chromium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chromium").finish_non_exhaustive()
    }
}

/// One page (tab) of a [`Chromium`].
#[derive(Debug, Clone)]
pub struct Page {
    session: String,
}

impl Chromium {
    /// Starts `chromium` headless, trusting the TLS key whose SPKI SHA-256
    /// (base64) is `trust_spki` (the flag made for one self-signed key;
    /// nothing else about TLS is relaxed).
    ///
    /// # Errors
    /// When it does not start or its DevTools endpoint does not answer.
    pub async fn start(
        binary: &Path,
        trust_spki: Option<&str>,
        log: &Path,
    ) -> Result<Self, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut argv: Vec<String> = vec![
            binary.display().to_string(),
            "--headless=new".into(),
            "--no-sandbox".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-gpu".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".into(),
            "--remote-debugging-port=0".into(),
            "--window-size=800,1000".into(),
            // The page's sound starts without a tap, as after a person's.
            "--autoplay-policy=no-user-gesture-required".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if let Some(spki) = trust_spki {
            argv.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        argv.push("about:blank".into());
        let proc = Proc::spawn("chromium", &argv, profile.path(), &[], log)?;
        // It writes its DevTools port into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "chromium wrote no DevTools port in 30 s; its log:\n{}",
                    proc.tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .map_err(|e| format!("DevTools WebSocket {ws_url}: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let console: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let pending = pending.clone();
            let console = console.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        let waiter = pending.lock().expect("pending").remove(&id);
                        if let Some(w) = waiter {
                            let r = match v.get("error") {
                                Some(e) => Err(e.to_string()),
                                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                            };
                            let _ = w.send(r);
                        }
                    } else if v.get("method").and_then(Value::as_str)
                        == Some("Runtime.consoleAPICalled")
                    {
                        let args = v["params"]["args"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|x| {
                                        x.get("value")
                                            .map(|v| v.to_string())
                                            .or_else(|| x.get("description").map(|d| d.to_string()))
                                            .unwrap_or_default()
                                    })
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .unwrap_or_default();
                        console.lock().expect("console").push(args);
                    }
                }
            });
        }
        Ok(Self {
            proc,
            overridden: Mutex::default(),
            tx,
            pending,
            next: AtomicU64::new(1),
            console,
            _profile: profile,
        })
    }

    /// Sends one command (to a page's session when given) and waits for
    /// its result.
    ///
    /// # Errors
    /// The protocol's error, or no answer within 30 s.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.tx
            .send(Message::Text(msg.to_string().into()))
            .map_err(|_| "the DevTools connection is closed".to_owned())?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) => r.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err(format!("{method}: the DevTools connection closed")),
            Err(_) => Err(format!("{method}: no answer in 30 s")),
        }
    }

    /// Opens `url` in a new page and attaches to it.
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn open(&self, url: &str) -> Result<Page, String> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .ok_or("no sessionId")?
                .to_owned(),
        };
        self.page(&page, "Runtime.enable", json!({})).await?;
        self.page(&page, "Page.enable", json!({})).await?;
        if url != "about:blank" {
            self.navigate(&page, url).await?;
        }
        Ok(page)
    }

    /// Loads `url` in `page`.
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn navigate(&self, page: &Page, url: &str) -> Result<(), String> {
        self.page(page, "Page.navigate", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    /// A command to `page`.
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn page(&self, page: &Page, method: &str, params: Value) -> Result<Value, String> {
        self.call(Some(&page.session), method, params).await
    }

    /// Evaluates `expression` in the page (promises awaited), by value.
    ///
    /// # Errors
    /// Protocol errors or a thrown exception.
    pub async fn eval(&self, page: &Page, expression: &str) -> Result<Value, String> {
        let r = self
            .page(
                page,
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Grants the page's origin these permissions (`sensors`,
    /// `geolocation`, ...).
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn grant(&self, origin: &str, permissions: &[&str]) -> Result<(), String> {
        self.call(
            None,
            "Browser.grantPermissions",
            if origin.is_empty() {
                json!({ "permissions": permissions })
            } else {
                json!({ "origin": origin, "permissions": permissions })
            },
        )
        .await
        .map(|_| ())
    }

    /// Makes the page's motion sensors report `accel` (m/s², gravity
    /// included) with the device at rest otherwise: `devicemotion` fires
    /// once accelerometer, gravity, linear acceleration and gyroscope all
    /// have readings.
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn tilt(&self, page: &Page, accel: [f64; 3]) -> Result<(), String> {
        for (kind, [x, y, z]) in [
            ("accelerometer", accel),
            ("gravity", accel),
            ("linear-acceleration", [0.0, 0.0, 0.0]),
            ("gyroscope", [0.0, 0.0, 0.0]),
        ] {
            // Enabled once per page; later calls change only the readings
            // that move.
            let first = self
                .overridden
                .lock()
                .expect("overrides")
                .insert((page.session.clone(), kind));
            if first {
                match self
                    .page(
                        page,
                        "Emulation.setSensorOverrideEnabled",
                        json!({ "enabled": true, "type": kind }),
                    )
                    .await
                {
                    Err(e) if e.contains("already overridden") => {}
                    other => {
                        other?;
                    }
                }
            } else if x == 0.0 && y == 0.0 && z == 0.0 {
                continue;
            }
            self.page(
                page,
                "Emulation.setSensorOverrideReadings",
                json!({ "type": kind, "reading": { "xyz": { "x": x, "y": y, "z": z } } }),
            )
            .await?;
        }
        Ok(())
    }

    /// A PNG screenshot of the page.
    ///
    /// # Errors
    /// Protocol errors.
    pub async fn screenshot(&self, page: &Page, to: &Path) -> Result<(), String> {
        use base64::Engine as _;
        let r = self
            .page(page, "Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        std::fs::write(to, png).map_err(|e| format!("{}: {e}", to.display()))
    }

    /// What the pages logged to the console so far.
    #[must_use]
    pub fn console(&self) -> Vec<String> {
        self.console.lock().expect("console").clone()
    }

    /// Chromium's own log, last lines.
    #[must_use]
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.tail(n)
    }

    /// Stops the browser.
    pub async fn stop(mut self) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        self.proc.stop(Duration::from_secs(3)).await;
    }
}

/// The `chromium` binary, or `None` after printing `SKIPPED` when missing
/// and skipping is allowed.
#[must_use]
pub fn chromium_binary() -> Option<PathBuf> {
    vphone_testkit::tools::require("chromium")
}

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as
/// `--ignore-certificate-errors-spki-list` takes it.
#[must_use]
pub fn spki_hash_b64(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A certificate for the page as an operator would install one (here
/// self-signed for 127.0.0.1 and localhost; the browser is told to trust
/// exactly its key): the certificate and key files in `dir`, and the
/// `--ignore-certificate-errors-spki-list` value.
///
/// # Panics
/// When it cannot be made or written.
#[must_use]
pub fn page_certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let (c, k) = (dir.join("page.crt"), dir.join("page.key"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (
        c,
        k,
        spki_hash_b64(key.subject_public_key_info().as_slice()),
    )
}

/// A host on loopback that serves the browser page over HTTPS with a
/// [`page_certificate`] made in `dir`; returns it and the value for
/// [`Chromium::start`]'s `trust_spki`.
///
/// # Panics
/// When the host does not start.
pub async fn web_host(dir: &Path) -> (crate::TestHost, String) {
    let (cert, key, spki) = page_certificate(dir);
    let t = crate::TestHost::start_configured(
        |cfg| {
            cfg.web_cert = Some(cert.clone());
            cfg.web_key = Some(key.clone());
        },
        |b| b,
    )
    .await;
    (t, spki)
}
