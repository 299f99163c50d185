//! The operator API (`vphone.operator.v1.Operator`, used by `vphonectl`) and
//! the Prometheus `/metrics` endpoint, served together on the operator port.
//!
//! Every gRPC call needs `authorization: Bearer <admin token>`; the token is
//! created at first start in `<data dir>/admin.token` with mode 0600, so only
//! the host's user can drive the host, or read from `--admin-token-file` (a
//! fleet's one token, e.g. a mounted Secret; refused when every user may
//! read it). `/metrics` needs no token (it carries
//! no secrets; the operator port is on loopback by default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry as PromRegistry, Unit};
use sensor_proto::emulator::image_format::ImgFormat;
use sensor_proto::operator as op;
use sensor_proto::operator::operator_server::{Operator, OperatorServer};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use host_core::HostError;
use host_core::backend::Backends;
use host_core::bluetooth::Bluetooth;
use host_core::config::HostConfig;
use host_core::daemon::{Host, Listeners};
pub use host_core::enroll::{Enroller, MintedToken, enrollment_string};
use host_core::metrics::Metrics;
use host_core::phones::{Lifecycle, PhoneManager, PhoneSpec, PhoneView};
use host_core::registry::{
    Backend, DesiredState, HandsetRecord, HandsetState, PhoneGrant, Registry,
};
pub use host_core::router::{NoSessions, SessionDirectory};

/// A whole host: the core ([`Host`]) and the operator API serving it.
/// Derefs to the [`Host`]. Its `Debug` never shows the admin token.
pub struct ServedHost {
    /// The host's parts.
    pub host: Host,
    /// Where the operator API (and `/metrics`) listens.
    pub operator_addr: SocketAddr,
    /// The operator's admin token.
    pub admin_token: String,
    /// Set when the host is leaving (see [`ServedHost::begin_leaving`]).
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ServedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedHost")
            .field("host", &self.host)
            .field("operator_addr", &self.operator_addr)
            .field("admin_token", &host_core::secret::Redacted(true))
            .finish()
    }
}

impl ServedHost {
    /// Starts the host's core on `listeners` with `backends`, and the
    /// operator API on the operator listener; writes `operator.addr` and
    /// (at first start) `admin.token` into the data dir.
    ///
    /// # Errors
    /// The first part that fails to start, with what to do.
    pub async fn start(
        cfg: &HostConfig,
        listeners: Listeners,
        backends: Backends,
    ) -> Result<Self, HostError> {
        // Before anything starts: a token file that cannot be used stops
        // the host with nothing to clean up.
        let admin_token = match &cfg.admin_token_file {
            Some(path) => load_admin_token(path)?,
            None => {
                host_core::daemon::prepare_data_dir(&cfg.data_dir)?;
                load_or_create_admin_token(&cfg.data_dir)?
            }
        };
        let mut host = Host::start(cfg, listeners, backends).await?;
        let listener = host
            .take_operator_listener()
            .ok_or_else(|| HostError::Internal {
                what: "operator API",
                why: "its listener was already taken".to_owned(),
            })?;
        let operator_addr = listener
            .local_addr()
            .map_err(|e| HostError::io("reading the operator address", e))?;
        // vphonectl finds the host through this file.
        let addr_file = sensor_proto::layout::operator_addr_path(&cfg.data_dir);
        std::fs::write(&addr_file, format!("{operator_addr}\n"))
            .map_err(|e| HostError::io(format!("writing {}", addr_file.display()), e))?;
        let svc = OperatorService::new(
            host.phones.clone(),
            host.registry.clone(),
            host.enroller.clone() as Arc<dyn Enroller>,
            host.sessions.clone() as Arc<dyn SessionDirectory>,
            host.metrics.clone(),
            host.bluetooth.clone(),
        )
        .with_fleet(host.host_name.clone(), cfg.lease);
        let leaving = svc.leaving.clone();
        let token = admin_token.clone();
        let stopping = host.stopping();
        host.adopt(tokio::spawn(async move {
            if let Err(e) = svc.serve(listener, token, stopping).await {
                tracing::error!(error = %e, "operator API stopped");
            }
        }));
        Ok(Self {
            host,
            operator_addr,
            admin_token,
            leaving,
        })
    }

    /// The host is about to stop: `/readyz` answers 503 "leaving" from now
    /// on, so a load balancer stops sending new handsets here while those
    /// already on their way are still served (see `shutdown_delay_secs`).
    pub fn begin_leaving(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A whole host on 127.0.0.1 (every port chosen by the OS) in
    /// `data_dir`: what tests and the demo run.
    ///
    /// # Errors
    /// As [`ServedHost::start`].
    pub async fn start_on_loopback(
        data_dir: std::path::PathBuf,
        backends: Backends,
    ) -> Result<Self, HostError> {
        let cfg = HostConfig::loopback(data_dir);
        let listeners = Listeners::bind(&cfg).await?;
        Self::start(&cfg, listeners, backends).await
    }

    /// Stops serving and waits for the servers to finish.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
    }
}

impl std::ops::Deref for ServedHost {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

pub use host_core::enroll::{load_admin_token, load_or_create_admin_token};
pub use sensor_proto::layout::admin_token_path;

/// The operator service.
#[derive(Debug, Clone)]
pub struct OperatorService {
    phones: PhoneManager,
    registry: Arc<Registry>,
    enroller: Arc<dyn Enroller>,
    sessions: Arc<dyn SessionDirectory>,
    metrics: Arc<Metrics>,
    bluetooth: Arc<Bluetooth>,
    started: Instant,
    /// This host's name in the registry and the fleet's lease length.
    fleet: (String, Duration),
    /// The host is leaving: not ready.
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

fn phone_msg(v: &PhoneView, handsets: &[HandsetRecord]) -> op::Phone {
    let r = &v.record;
    op::Phone {
        name: r.name.clone(),
        backend: match r.backend {
            Backend::Sim => op::Backend::Sim,
            Backend::Emulator => op::Backend::Emulator,
        } as i32,
        state: match v.state {
            Lifecycle::Creating => op::PhoneState::Creating,
            Lifecycle::Booting => op::PhoneState::Booting,
            Lifecycle::Running => op::PhoneState::Running,
            Lifecycle::Stopping => op::PhoneState::Stopping,
            Lifecycle::Stopped => op::PhoneState::Stopped,
            Lifecycle::Failed(_) => op::PhoneState::Failed,
        } as i32,
        desired_state: match r.desired {
            DesiredState::Running => op::DesiredState::Running,
            DesiredState::Stopped => op::DesiredState::Stopped,
        } as i32,
        failure_reason: match &v.state {
            Lifecycle::Failed(why) => why.clone(),
            _ => String::new(),
        },
        display: Some(op::DisplaySpec {
            width_px: r.width,
            height_px: r.height,
            dpi: r.dpi,
        }),
        avd: r.avd.clone().unwrap_or_default(),
        allowed_handsets: handsets
            .iter()
            .filter(|h| h.may_use(&r.name))
            .map(|h| h.name.clone())
            .collect(),
        created_at_unix_ms: r.created_at_ms.max(0) as u64,
        attached_session_id: String::new(),
    }
}

fn handset_msg(h: &HandsetRecord) -> op::Handset {
    op::Handset {
        fingerprint: h.fingerprint.clone(),
        name: h.name.clone(),
        state: match h.state {
            HandsetState::Enrolled => op::HandsetState::Enrolled,
            HandsetState::Revoked => op::HandsetState::Revoked,
        } as i32,
        allowed_phones: h.grant.named().to_vec(),
        all_phones: h.grant.is_all(),
        enrolled_at_unix_ms: h.enrolled_at_ms.max(0) as u64,
        last_seen_unix_ms: h.last_seen_ms.unwrap_or(0).max(0) as u64,
    }
}

impl OperatorService {
    /// Builds the service.
    pub fn new(
        phones: PhoneManager,
        registry: Arc<Registry>,
        enroller: Arc<dyn Enroller>,
        sessions: Arc<dyn SessionDirectory>,
        metrics: Arc<Metrics>,
        bluetooth: Arc<Bluetooth>,
    ) -> Self {
        Self {
            phones,
            registry,
            enroller,
            sessions,
            metrics,
            bluetooth,
            started: Instant::now(),
            fleet: (String::new(), host_core::lease::DEFAULT_LEASE),
            leaving: Arc::default(),
        }
    }

    /// `200 ready` while the registry answers (within 2 s) and lists this
    /// host, else `503` and why.
    async fn readiness(&self) -> (axum::http::StatusCode, String) {
        if self.leaving.load(std::sync::atomic::Ordering::Relaxed) {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "leaving: shutting down\n".to_owned(),
            );
        }
        let registry = self.registry.clone();
        let name = self.fleet.0.clone();
        let check = tokio::task::spawn_blocking(move || registry.host(&name));
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(Ok(h))) if !h.stopped => (axum::http::StatusCode::OK, "ready\n".to_owned()),
            Ok(Ok(Ok(_))) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "stopping\n".to_owned(),
            ),
            Ok(Ok(Err(e))) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}\n"),
            ),
            Ok(Err(_)) | Err(_) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the registry did not answer within 2 s\n".to_owned(),
            ),
        }
    }

    /// The fleet's lease length, ms.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.fleet.1.as_millis()).unwrap_or(i64::MAX)
    }

    /// Names this host and the lease length, for the fleet view.
    #[must_use]
    pub fn with_fleet(mut self, host: String, lease: Duration) -> Self {
        self.fleet = (host, lease);
        self
    }

    fn fleet_host_msg(&self, h: &host_core::registry::HostRecord, phones: u32) -> op::FleetHost {
        let now = host_core::unix_ms();
        let lease_ms = self.lease_ms();
        op::FleetHost {
            name: h.name.clone(),
            addr: h.addr.clone(),
            capacity: h.capacity,
            labels: h.labels.to_string(),
            draining: h.draining,
            alive: h.alive(now, lease_ms),
            stopped: h.stopped,
            sessions: h.sessions,
            phones,
            heartbeat_age_ms: u64::try_from(now - h.heartbeat_ms).unwrap_or(0),
            pin: h.pin.clone(),
        }
    }

    fn fleet_phone_msg(
        p: &host_core::registry::PhoneRecord,
        lease: Option<&host_core::registry::Lease>,
        placement: (host_core::registry::Labels, Option<String>),
    ) -> op::FleetPhone {
        let now = host_core::unix_ms();
        op::FleetPhone {
            name: p.name.clone(),
            desired_state: match p.desired {
                DesiredState::Running => op::DesiredState::Running,
                DesiredState::Stopped => op::DesiredState::Stopped,
            } as i32,
            host: lease.map(|l| l.host.clone()).unwrap_or_default(),
            lease: lease.map_or("none", |l| l.state(now).as_str()).to_owned(),
            generation: lease.map_or(0, |l| u64::try_from(l.generation).unwrap_or(0)),
            expires_in_ms: lease.map_or(0, |l| u64::try_from(l.expires_at_ms - now).unwrap_or(0)),
            labels: placement.0.to_string(),
            wanted_host: placement.1.unwrap_or_default(),
        }
    }

    async fn phone(&self, name: &str) -> Result<op::Phone, Status> {
        let v = self.phones.get(name).await?;
        Ok(phone_msg(&v, &self.registry.handsets()?))
    }

    /// The Prometheus (OpenMetrics) text exposition of the host's state
    /// and counters, encoded by `prometheus-client`.
    pub async fn metrics_text(&self) -> String {
        let phones = self.phones.list().await.unwrap_or_default();
        let mut registry = PromRegistry::with_prefix("vphone");
        let by_state = Family::<StateLabel, Gauge>::default();
        // Every state is exported, zero or not, so a dashboard's series do
        // not appear and vanish; `Lifecycle::NAMES` is the one list.
        for state in Lifecycle::NAMES {
            let n = phones.iter().filter(|p| p.state.name() == state).count();
            by_state
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        registry.register("phones", "Phones by lifecycle state", by_state);
        let live = Gauge::<i64>::default();
        live.set(i64::try_from(self.sessions.list().len()).unwrap_or(i64::MAX));
        registry.register("sessions", "Live handset sessions", live);
        self.metrics.register(&mut registry);
        let uptime = Gauge::<i64>::default();
        uptime.set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        registry.register_with_unit("uptime", "Host uptime", Unit::Seconds, uptime);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Serves the operator API (admin token required) and `/metrics` on
    /// `listener` until `shutdown` resolves.
    ///
    /// # Errors
    /// [`HostError::Io`] if the server fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin_token: String,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), HostError> {
        let want = format!("Bearer {admin_token}");
        let metrics = self.metrics.clone();
        let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
            match req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                // Constant time: the comparison must not tell a guesser how
                // much of the token was right.
                Some(v) if bool::from(v.as_bytes().ct_eq(want.as_bytes())) => Ok(req),
                found => {
                    metrics.auth_failures.inc();
                    Err(Status::unauthenticated(if found.is_some() {
                        "operator token rejected"
                    } else {
                        "operator token missing"
                    }))
                }
            }
        };
        let scrape = self.clone();
        let ready = self.clone();
        let grpc = OperatorServer::with_interceptor(self, auth);
        let router = tonic::service::Routes::new(grpc)
            .into_axum_router()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let s = scrape.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            s.metrics_text().await,
                        )
                    }
                }),
            )
            // Probes (Kubernetes): alive while the process answers; ready while
            // the registry answers and lists this host. No token: they say
            // nothing an unauthenticated caller could use.
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let s = ready.clone();
                    async move { s.readiness().await }
                }),
            );
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
            .map_err(|e| HostError::io("operator API server", std::io::Error::other(e)))
    }
}

/// The leases `host` holds at `now` (unexpired).
fn held_by<'a>(
    leases: &'a [host_core::registry::Lease],
    host: &'a str,
    now: i64,
) -> impl Iterator<Item = &'a host_core::registry::Lease> + 'a {
    leases
        .iter()
        .filter(move |l| l.host == host && l.expires_at_ms > now)
}

/// The `state` label of `vphone_phones`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn create_phone(
        &self,
        req: Request<op::CreatePhoneRequest>,
    ) -> Result<Response<op::Phone>, Status> {
        let r = req.into_inner();
        if !r.allowed_handsets.is_empty() {
            return Err(Status::invalid_argument(
                "allowed_handsets cannot be set when creating a phone: grant a phone to a \
                 handset when enrolling it (allowed_phones; vphonectl: handset enroll --phone \
                 NAME)",
            ));
        }
        let backend = match op::Backend::try_from(r.backend) {
            Ok(op::Backend::Sim) | Ok(op::Backend::Unspecified) => Backend::Sim,
            Ok(op::Backend::Emulator) => Backend::Emulator,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown backend {}",
                    r.backend
                )));
            }
        };
        let d = r.display.unwrap_or_default();
        let (w, h, dpi) = host_core::phones::DEFAULT_DISPLAY;
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        let display = (or(d.width_px, w), or(d.height_px, h), or(d.dpi, dpi));
        let v = self
            .phones
            .create(PhoneSpec {
                name: r.name,
                backend,
                display,
                avd: (!r.avd.is_empty()).then_some(r.avd),
                start: r.start,
            })
            .await?;
        Ok(Response::new(phone_msg(&v, &self.registry.handsets()?)))
    }

    async fn list_phones(
        &self,
        _: Request<op::ListPhonesRequest>,
    ) -> Result<Response<op::ListPhonesResponse>, Status> {
        let handsets = self.registry.handsets()?;
        let phones = self
            .phones
            .list()
            .await?
            .iter()
            .map(|v| phone_msg(v, &handsets))
            .collect();
        Ok(Response::new(op::ListPhonesResponse { phones }))
    }

    async fn get_phone(
        &self,
        req: Request<op::GetPhoneRequest>,
    ) -> Result<Response<op::Phone>, Status> {
        Ok(Response::new(self.phone(&req.into_inner().name).await?))
    }

    async fn start_phone(
        &self,
        req: Request<op::StartPhoneRequest>,
    ) -> Result<Response<op::Phone>, Status> {
        let name = req.into_inner().name;
        self.phones.start(&name).await?;
        Ok(Response::new(self.phone(&name).await?))
    }

    async fn stop_phone(
        &self,
        req: Request<op::StopPhoneRequest>,
    ) -> Result<Response<op::Phone>, Status> {
        let name = req.into_inner().name;
        self.phones.stop(&name).await?;
        Ok(Response::new(self.phone(&name).await?))
    }

    async fn delete_phone(
        &self,
        req: Request<op::DeletePhoneRequest>,
    ) -> Result<Response<op::DeletePhoneResponse>, Status> {
        let r = req.into_inner();
        // In a fleet the phone may run on another host: the same guard.
        if !r.force
            && let Some(l) = self.registry.lease(&r.name)?
            && l.host != self.fleet.0
            && l.expires_at_ms > host_core::unix_ms()
        {
            return Err(HostError::Conflict(format!(
                "phone '{}' is running on host '{}'; stop it first or use --force",
                r.name, l.host
            ))
            .into());
        }
        self.phones.delete(&r.name, r.force).await?;
        Ok(Response::new(op::DeletePhoneResponse {}))
    }

    async fn get_screenshot(
        &self,
        req: Request<op::GetScreenshotRequest>,
    ) -> Result<Response<op::Screenshot>, Status> {
        let r = req.into_inner();
        let client = self.phones.connect(&r.name).await?;
        let img = client.screenshot(ImgFormat::Png).await?;
        let f = img.format.unwrap_or_default();
        Ok(Response::new(op::Screenshot {
            png: img.image,
            width: f.width,
            height: f.height,
            captured_at_unix_ms: img.timestamp_us / 1000,
        }))
    }

    async fn enroll_handset(
        &self,
        req: Request<op::EnrollHandsetRequest>,
    ) -> Result<Response<op::EnrollHandsetResponse>, Status> {
        let r = req.into_inner();
        let grant = match (r.all_phones, r.allowed_phones.is_empty()) {
            (true, true) => PhoneGrant::All,
            (false, false) => PhoneGrant::Only(r.allowed_phones),
            (true, false) => {
                return Err(Status::invalid_argument(
                    "give either phones (allowed_phones) or all_phones, not both",
                ));
            }
            (false, true) => {
                return Err(Status::invalid_argument(
                    "say which phones the handset may use (allowed_phones; vphonectl: --phone \
                     NAME, repeatable), or grant every phone explicitly (all_phones; \
                     vphonectl: --all-phones)",
                ));
            }
        };
        for p in grant.named() {
            // The registry, not this host's phones: in a fleet the phone
            // may run (or have been created) on another host.
            self.registry.phone(p)?;
        }
        let ttl = Duration::from_secs(u64::from(if r.ttl_seconds == 0 {
            600
        } else {
            r.ttl_seconds
        }));
        let offer = host_core::enroll::offer_enrollment(
            &self.registry,
            self.enroller.as_ref(),
            r.name,
            grant,
            ttl,
        )?;
        Ok(Response::new(op::EnrollHandsetResponse {
            enrollment: offer.enrollment,
            expires_at_unix_ms: offer.expires_at_ms.max(0) as u64,
            host_pin: offer.pin,
            web_link: offer.web_link.unwrap_or_default(),
        }))
    }

    async fn list_handsets(
        &self,
        req: Request<op::ListHandsetsRequest>,
    ) -> Result<Response<op::ListHandsetsResponse>, Status> {
        let all = req.into_inner().include_revoked;
        let handsets = self
            .registry
            .handsets()?
            .iter()
            .filter(|h| all || h.state == HandsetState::Enrolled)
            .map(handset_msg)
            .collect();
        Ok(Response::new(op::ListHandsetsResponse { handsets }))
    }

    async fn revoke_handset(
        &self,
        req: Request<op::RevokeHandsetRequest>,
    ) -> Result<Response<op::Handset>, Status> {
        let h = self
            .registry
            .revoke_handset(&req.into_inner().handset, host_core::unix_ms())?;
        // A revoked handset loses its live sessions at once.
        for s in self.sessions.list() {
            if s.handset_fingerprint == h.fingerprint {
                let _ = self.sessions.kick(&s.id, "handset revoked");
            }
        }
        Ok(Response::new(handset_msg(&h)))
    }

    async fn list_sessions(
        &self,
        _: Request<op::ListSessionsRequest>,
    ) -> Result<Response<op::ListSessionsResponse>, Status> {
        Ok(Response::new(op::ListSessionsResponse {
            sessions: self.sessions.list(),
        }))
    }

    async fn kick_session(
        &self,
        req: Request<op::KickSessionRequest>,
    ) -> Result<Response<op::KickSessionResponse>, Status> {
        let r = req.into_inner();
        let reason = if r.reason.is_empty() {
            "kicked by the operator"
        } else {
            &r.reason
        };
        self.sessions.kick(&r.id, reason)?;
        Ok(Response::new(op::KickSessionResponse {}))
    }

    async fn get_host_stats(
        &self,
        _: Request<op::GetHostStatsRequest>,
    ) -> Result<Response<op::HostStats>, Status> {
        let phones = self.phones.list().await?;
        let sessions = self.sessions.list();
        Ok(Response::new(op::HostStats {
            phones: phones.len() as u32,
            phones_running: phones
                .iter()
                .filter(|p| p.state == Lifecycle::Running)
                .count() as u32,
            handsets: self
                .registry
                .handsets()?
                .iter()
                .filter(|h| h.state == HandsetState::Enrolled)
                .count() as u32,
            sessions: sessions.len() as u32,
            sessions_connected: sessions
                .iter()
                .filter(|s| s.state == op::SessionState::Connected as i32)
                .count() as u32,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            bytes_up: self.metrics.bytes_up.get(),
            bytes_down: self.metrics.bytes_down.get(),
        }))
    }

    async fn get_fleet(
        &self,
        _: Request<op::GetFleetRequest>,
    ) -> Result<Response<op::Fleet>, Status> {
        let hosts = self.registry.hosts()?;
        let leases = self.registry.leases()?;
        let now = host_core::unix_ms();
        let held = |host: &str| held_by(&leases, host, now).count() as u32;
        let mut phones = Vec::new();
        for p in self.registry.phones()? {
            let lease = leases.iter().find(|l| l.phone == p.name);
            let placement = self.registry.placement(&p.name)?;
            phones.push(Self::fleet_phone_msg(&p, lease, placement));
        }
        Ok(Response::new(op::Fleet {
            hosts: hosts
                .iter()
                .map(|h| self.fleet_host_msg(h, held(&h.name)))
                .collect(),
            phones,
            lease_ms: u64::try_from(self.fleet.1.as_millis()).unwrap_or(u64::MAX),
            registry: self.registry.describe(),
            answered_by: self.fleet.0.clone(),
        }))
    }

    async fn drain_host(
        &self,
        req: Request<op::DrainHostRequest>,
    ) -> Result<Response<op::FleetHost>, Status> {
        let r = req.into_inner();
        self.registry.set_draining(&r.name, !r.undo)?;
        let h = self.registry.host(&r.name)?;
        let now = host_core::unix_ms();
        let held = held_by(&self.registry.leases()?, &h.name, now).count() as u32;
        tracing::info!(host = %r.name, draining = !r.undo, "host drain set by the operator");
        Ok(Response::new(self.fleet_host_msg(&h, held)))
    }

    async fn forget_host(
        &self,
        req: Request<op::ForgetHostRequest>,
    ) -> Result<Response<op::ForgetHostResponse>, Status> {
        let r = req.into_inner();
        if r.name == self.fleet.0 {
            return Err(HostError::Invalid {
                what: "forget host",
                why: format!("host {:?} is the one answering: stop it first", r.name),
            }
            .into());
        }
        let lease_ms = self.lease_ms();
        self.registry
            .forget_host(&r.name, host_core::unix_ms(), lease_ms)?;
        tracing::info!(host = %r.name, "host forgotten by the operator");
        Ok(Response::new(op::ForgetHostResponse {}))
    }

    async fn move_phone(
        &self,
        req: Request<op::MovePhoneRequest>,
    ) -> Result<Response<op::FleetPhone>, Status> {
        let r = req.into_inner();
        let to = (!r.to_host.is_empty()).then_some(r.to_host);
        let phone = self.registry.phone(&r.name)?;
        let (labels, _) = self.registry.placement(&r.name)?;
        if let Some(host) = &to {
            let h = self.registry.host(host)?;
            let now = host_core::unix_ms();
            let lease_ms = self.lease_ms();
            let held = held_by(&self.registry.leases()?, &h.name, now)
                .filter(|l| l.phone != r.name)
                .count();
            let why = if h.capacity == 0 {
                Some("runs no phones (capacity 0)".to_owned())
            } else if !h.labels.satisfy(&labels) {
                Some(format!("lacks the labels the phone asks for ({labels})"))
            } else if held >= h.capacity as usize {
                Some(format!("is full ({held} of {} phones)", h.capacity))
            } else if !h.accepting(now, lease_ms) {
                Some("is not up (lost, stopped or draining)".to_owned())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(HostError::Invalid {
                    what: "host",
                    why: format!("'{host}' {why}"),
                }
                .into());
            }
        }
        self.registry
            .set_placement(&r.name, &labels, to.as_deref())?;
        tracing::info!(phone = %r.name, to = ?to, "phone moved by the operator");
        let lease = self
            .registry
            .leases()?
            .into_iter()
            .find(|l| l.phone == r.name);
        Ok(Response::new(Self::fleet_phone_msg(
            &phone,
            lease.as_ref(),
            (labels, to),
        )))
    }

    type StreamBtSnoopStream = tonic::codegen::BoxStream<op::BtSnoopRecord>;

    async fn stream_bt_snoop(
        &self,
        req: Request<op::StreamBtSnoopRequest>,
    ) -> Result<Response<Self::StreamBtSnoopStream>, Status> {
        let req = req.into_inner();
        let phone = req.phone;
        self.phones.get(&phone).await?;
        let unredacted = req.unredacted;
        if unredacted {
            tracing::warn!(%phone, "serving an UNREDACTED Bluetooth capture: keys travel in clear");
        } else {
            tracing::info!(%phone, "serving a Bluetooth capture (keys redacted)");
        }
        let mut rx = self.bluetooth.subscribe(&phone);
        let (tx, out) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut dropped = 0u64;
            // Follows ACL fragments, so a key split across them is found.
            let mut redactor = bt_raw::redact::Redactor::new();
            loop {
                let item = match rx.recv().await {
                    Ok(item) => item,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        dropped += n;
                        // A lost start fragment must not let its continuation
                        // pass as the rest of an earlier frame.
                        redactor = bt_raw::redact::Redactor::new();
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let (h4, zeroed) = if unredacted {
                    (item.packet.as_bytes().to_vec(), 0)
                } else {
                    redactor.redacted(item.direction, &item.packet)
                };
                let record = op::BtSnoopRecord {
                    direction: match item.direction {
                        bt_raw::btsnoop::Direction::HostToController => {
                            op::SnoopDirection::HostToController
                        }
                        bt_raw::btsnoop::Direction::ControllerToHost => {
                            op::SnoopDirection::ControllerToHost
                        }
                    } as i32,
                    h4: h4.into(),
                    timestamp_us: item.unix_us.max(0) as u64,
                    redacted: zeroed > 0,
                    dropped_before: std::mem::take(&mut dropped),
                };
                if tx.send(Ok(record)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
