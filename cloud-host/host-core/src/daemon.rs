//! The host daemon's entry point, as a library function so tests can run a
//! whole host in-process on listeners they bound to port 0.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::HostError;
use crate::access::RegistryAuthorizer;
use crate::backend::Backends;
use crate::bluetooth::{AttachPoints, Bluetooth, LinkTiming, check_attach_ip};
use crate::config::HostConfig;
use crate::enroll::BridgeEnroller;
use crate::metrics::Metrics;
use crate::phones::{DEFAULT_DISPLAY, ManagerConfig, PhoneManager, PhoneSpec};
use crate::registry::{Backend, Registry};
use crate::router::{Router, RouterConfig, Sessions};
use crate::threads::LatencyRuntime;
use crate::web::{PageInfo, ReloadingCert};
use device_bridge::web::WebCertificates;

/// Sockets the host serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The operator API and `/metrics`.
    pub operator: TcpListener,
    /// Handset QUIC connections.
    pub quic: std::net::UdpSocket,
    /// The netsim `PacketStreamer` development listener, when configured.
    pub netsim: Option<TcpListener>,
    /// The browser handset's page: TCP on the QUIC port's number, when
    /// browser handsets are on.
    pub web: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    ///
    /// # Errors
    /// [`HostError::Io`] naming an address that cannot be bound;
    /// [`HostError::Invalid`] for an address that must not be used (see
    /// [`HostConfig::check_operator_listen`]).
    pub async fn bind(cfg: &HostConfig) -> Result<Self, HostError> {
        cfg.check_operator_listen()?;
        cfg.check_emulator_args()?;
        cfg.check_media()?;
        cfg.check_web()?;
        let (quic, web) = bind_handset_ports(cfg).await?;
        Ok(Self {
            operator: TcpListener::bind(cfg.operator_listen).await.map_err(|e| {
                HostError::io(
                    format!(
                        "binding the operator API on {} (is another vphone-host running?)",
                        cfg.operator_listen
                    ),
                    e,
                )
            })?,
            quic,
            web,
            netsim: match cfg.netsim_listen {
                None => None,
                Some(addr) => {
                    check_attach_ip(addr)?;
                    Some(TcpListener::bind(addr).await.map_err(|e| {
                        HostError::io(
                            format!(
                                "binding the Bluetooth (netsim) development listener {addr} \
                                 (tcp; is another vphone-host running?)"
                            ),
                            e,
                        )
                    })?)
                }
            },
        })
    }
}

/// Binds the handsets' UDP port and, with browser handsets on, the TCP
/// port of the same number for their page. With port 0 the OS picks the UDP
/// port; if that number is taken on TCP, another is tried.
async fn bind_handset_ports(
    cfg: &HostConfig,
) -> Result<(std::net::UdpSocket, Option<TcpListener>), HostError> {
    let udp_err = |e| {
        HostError::io(
            format!(
                "binding the handset QUIC port {} (udp; is another vphone-host running?)",
                cfg.quic_listen
            ),
            e,
        )
    };
    let mut attempts = 0;
    loop {
        let quic = std::net::UdpSocket::bind(cfg.quic_listen).map_err(udp_err)?;
        if !cfg.web {
            return Ok((quic, None));
        }
        let bound = quic
            .local_addr()
            .map_err(|e| HostError::io("reading the QUIC address", e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((quic, Some(tcp))),
            Err(_) if cfg.quic_listen.port() == 0 && attempts < 20 => attempts += 1,
            Err(e) => {
                return Err(HostError::io(
                    format!(
                        "binding the browser handsets' page on tcp {bound} (the QUIC port's \
                         number; is something else serving there? turn browser handsets off \
                         with --no-web)"
                    ),
                    e,
                ));
            }
        }
    }
}

/// How long each server may take to finish its open streams at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A running host, for callers that want its parts (tests, `demo`).
#[derive(Debug)]
pub struct Host {
    /// The phone actor.
    pub phones: PhoneManager,
    /// The registry.
    pub registry: Arc<Registry>,
    /// This host's name in the registry.
    pub host_name: String,
    /// Where handsets connect (UDP).
    pub quic_addr: SocketAddr,
    /// The host's identity and token key.
    pub enroller: Arc<BridgeEnroller>,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Each phone's Bluetooth attach point (a port of its own on 127.0.0.2).
    pub attach: AttachPoints,
    /// The netsim development listener, when configured.
    pub netsim_addr: Option<SocketAddr>,
    /// The browser handsets' page (TCP), when on.
    pub web_addr: Option<SocketAddr>,
    /// Bluetooth links of the phones.
    pub bluetooth: Arc<Bluetooth>,
    /// The operator API's listener, until the operator API takes it.
    operator_listener: Option<TcpListener>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Serves handsets (QUIC); last, so it stops after the tasks above
    /// were asked to.
    latency: LatencyRuntime,
}

/// How often a host checks its live sessions' handsets against the
/// registry's revocations: a quarter lease, between 0.5 s and 5 s.
fn revocation_period(lease: std::time::Duration) -> std::time::Duration {
    (lease / 4).clamp(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(5),
    )
}

/// Ends the sessions of handsets revoked (at this host or any other of the
/// fleet sharing the registry) every `every`, until `stop`.
async fn revocation_sweep(
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Revocations made at other hosts go unenforced while the check fails:
    // say so once per failing stretch, and when it works again.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let handsets = sessions.handsets();
        if handsets.is_empty() {
            continue;
        }
        let reg = registry.clone();
        match tokio::task::spawn_blocking(move || reg.revoked_among(&handsets)).await {
            Ok(Ok(revoked)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("revocation check works again");
                }
                if !revoked.is_empty() {
                    let ended = sessions.close_revoked(&revoked);
                    tracing::info!(
                        sessions = ended,
                        "ending the sessions of handsets revoked in the registry"
                    );
                }
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %e,
                    "revocation check failed: handsets revoked at other hosts keep their \
                     sessions here until it works again"
                );
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "revocation check failed again"),
            Err(_) => {}
        }
    }
}

/// Creates the data dir with mode 0700 (it holds keys and tokens), or
/// closes an existing one to 0700 again, at every start.
///
/// # Errors
/// [`HostError::Io`]; [`HostError::Denied`] when another user owns it or it
/// is a symlink.
pub fn prepare_data_dir(dir: &Path) -> Result<(), HostError> {
    crate::files::private_dir(dir)
}

impl Host {
    /// Starts every part of the host on `listeners`, running phones with
    /// `backends`. When the registry holds no phone and the host runs sim
    /// phones, it creates and starts the sim phone `phone-1`.
    ///
    /// # Errors
    /// The first part that fails to start, with what to do.
    pub async fn start(
        cfg: &HostConfig,
        listeners: Listeners,
        backends: Backends,
    ) -> Result<Self, HostError> {
        prepare_data_dir(&cfg.data_dir)?;
        let quic_bound = listeners
            .quic
            .local_addr()
            .map_err(|e| HostError::io("reading the QUIC address", e))?;
        let public_addr = cfg.public_addr_for(quic_bound);
        let web_certs = if cfg.web {
            Some(Arc::new(
                WebCertificates::load_or_create(cfg.data_dir.join("web")).map_err(|e| {
                    HostError::Internal {
                        what: "WebTransport certificates",
                        why: e.to_string(),
                    }
                })?,
            ))
        } else {
            None
        };
        let mut enroller = BridgeEnroller::open(
            &cfg.data_dir,
            cfg.fleet_keys.as_deref(),
            public_addr.clone(),
        )?;
        if let Some(certs) = &web_certs {
            enroller.offer_web(
                cfg.web_url_for(&public_addr, quic_bound.port()),
                certs.clone(),
            );
        }
        let enroller = Arc::new(enroller);
        let page_cert = match (&cfg.web_cert, &cfg.web_key) {
            (Some(c), Some(k)) if cfg.web => Some(Arc::new(ReloadingCert::load(c, k)?)),
            _ => None,
        };
        let target = cfg.registry_target()?;
        let host_name = cfg.host_name()?;
        let registry = match &target {
            crate::registry::Target::Sqlite(path) => Registry::open(path)?,
            other => Registry::connect(other)?,
        }
        .with_owner(&host_name);
        // No registry call may hold the phone actor past its lease deadline.
        let registry = Arc::new(match &target {
            crate::registry::Target::Postgres(_) => {
                registry.with_call_timeout(crate::lease::call_timeout(cfg.lease))
            }
            _ => registry,
        });
        let labels = crate::registry::Labels::parse(&cfg.labels)?;
        let sessions = Arc::new(Sessions::default());
        let load_sessions = sessions.clone();
        let fleet = crate::lease::FleetConfig {
            host: host_name.clone(),
            capacity: cfg.capacity,
            labels,
            lease: cfg.lease,
            load: Arc::new(move || u32::try_from(load_sessions.count()).unwrap_or(u32::MAX)),
            addr: public_addr.clone(),
            pin: enroller.identity().pin().to_string(),
        };
        registry.register_host(&fleet.registration(crate::unix_ms()))?;
        tracing::info!(host = %host_name, registry = %registry.describe(), "registered in the registry");
        let dangling = registry.close_dangling_sessions("host restarted", crate::unix_ms())?;
        if dangling > 0 {
            tracing::info!(dangling, "closed sessions left open by a previous run");
        }
        let netsim_addr = listeners
            .netsim
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| HostError::io("reading the netsim address", e))?;
        let attach = AttachPoints::new(cfg.attach_ip)?;
        let phones = PhoneManager::spawn(
            registry.clone(),
            ManagerConfig {
                data_dir: cfg.data_dir.clone(),
                attach: Arc::new(attach.clone()),
                boot_timeout: cfg.boot_timeout,
                restart: cfg.restart,
                emulator_args: cfg.emulator_args.clone(),
                // A host that runs no phones (a gateway) creates none.
                first_phone: (cfg.capacity > 0)
                    .then(|| backends.get(Backend::Sim))
                    .flatten()
                    .map(|_| PhoneSpec {
                        name: "phone-1".to_owned(),
                        backend: Backend::Sim,
                        display: DEFAULT_DISPLAY,
                        avd: None,
                        start: true,
                    }),
                backends,
                fleet,
            },
        )?;
        let metrics = Arc::new(Metrics::default());
        let bluetooth = Bluetooth::new(
            phones.clone(),
            metrics.clone(),
            LinkTiming::default(),
            &attach,
        );
        let (stop, stopped) = watch::channel(false);
        // Handsets are served on the latency runtime: real-time workers where
        // the process may, so a sensor datagram is read at once even while
        // video work keeps every core busy.
        let workers = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4));
        let latency = LatencyRuntime::start("bridge", workers)?;
        match latency.priority().await {
            device_bridge::LatencyPriority::RealTime => tracing::info!(
                workers,
                priority = device_bridge::LATENCY_RT_PRIORITY,
                "handset sessions run at real-time priority"
            ),
            device_bridge::LatencyPriority::Normal => tracing::warn!(
                "handset sessions run at normal priority: this process may not use real-time \
                 priority, so on a busy host a sensor sample can wait a scheduler tick (4 ms at \
                 250 Hz) behind video work; grant it with systemd's LimitRTPRIO=1 (see \
                 infra/systemd) or CAP_SYS_NICE"
            ),
        }
        // Handsets: QUIC sessions admitted by the registry, routed to phones.
        let mut bridge_cfg = device_bridge::BridgeServerConfig::new(
            enroller.identity().clone(),
            Arc::new(
                RegistryAuthorizer::new(registry.clone(), enroller.key().clone(), sessions.clone())
                    .with_fleet(host_name.clone(), cfg.lease),
            ),
        );
        bridge_cfg.resume_window = cfg.resume_window;
        bridge_cfg.web = web_certs.clone().map(|certs| {
            device_bridge::web::WebSettings::new(
                certs,
                cfg.web_origins(&public_addr, quic_bound.port()),
            )
        });
        let server = {
            // The endpoint's socket and tasks belong to the runtime entered here.
            let _on_latency_runtime = latency.handle().enter();
            device_bridge::BridgeServer::with_socket(listeners.quic, bridge_cfg).map_err(|e| {
                HostError::Internal {
                    what: "QUIC listener",
                    why: e.to_string(),
                }
            })?
        };
        let quic_addr = server.local_addr().map_err(|e| HostError::Internal {
            what: "QUIC listener",
            why: e.to_string(),
        })?;
        let router = Arc::new(Router::new(
            phones.clone(),
            registry.clone(),
            sessions.clone(),
            metrics.clone(),
            RouterConfig {
                adapt_to_path: cfg.video_adapt,
                max_fps: cfg.video_max_fps,
                tuning: cfg.video_tuning,
                audio_bitrate_bps: cfg.audio_bitrate,
                audio_frame_ms: cfg.audio_frame_ms,
                ..RouterConfig::default()
            },
            bluetooth.clone(),
        ));
        let mut rx = stopped.clone();
        let router_task = latency.handle().spawn(router.run(server, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        // Phone Bluetooth stacks stay at ordinary priority: their peer (the
        // emulator, or bumble in tests) is an ordinary process that a
        // real-time thread would preempt on its core instead of using an
        // idle one (measured: half the L2CAP throughput).
        let mut tasks = vec![router_task];
        let web_addr = match (listeners.web, web_certs) {
            (Some(listener), Some(certs)) => {
                let addr = listener.local_addr().ok();
                let info = Arc::new(PageInfo::new(enroller.identity().clone(), certs));
                tracing::info!(
                    addr = ?addr,
                    tls = page_cert.is_some(),
                    "browser handsets: page on tcp, WebTransport on the QUIC port"
                );
                let mut rx = stopped.clone();
                tasks.push(tokio::spawn(crate::web::serve(
                    listener,
                    info,
                    page_cert,
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )));
                addr
            }
            _ => None,
        };
        let mut rx = stopped.clone();
        if let Some(listener) = listeners.netsim {
            tracing::warn!(
                addr = ?netsim_addr,
                "netsim development listener on: any process of this user can attach as any \
                 phone's Bluetooth stack by naming it"
            );
            tasks.push(tokio::spawn({
                let bt = bluetooth.clone();
                async move {
                    let res = bt
                        .serve_development(listener, async move {
                            let _ = rx.wait_for(|s| *s).await;
                        })
                        .await;
                    if let Err(e) = res {
                        tracing::error!(error = %e, "netsim development listener stopped");
                    }
                }
            }));
        }
        // A revocation at any host of the fleet reaches this host's
        // sessions within a period.
        tasks.push(tokio::spawn(revocation_sweep(
            registry.clone(),
            sessions.clone(),
            revocation_period(cfg.lease),
            stopped.clone(),
        )));
        Ok(Self {
            phones,
            registry,
            host_name,
            quic_addr,
            enroller,
            sessions,
            metrics,
            attach,
            netsim_addr,
            web_addr,
            bluetooth,
            operator_listener: Some(listeners.operator),
            stop,
            tasks,
            latency,
        })
    }

    /// The operator API's listener (bound by [`Listeners::bind`]), for the
    /// operator API to serve on; `None` once taken.
    pub fn take_operator_listener(&mut self) -> Option<TcpListener> {
        self.operator_listener.take()
    }

    /// Resolves when the host is shutting down (for servers added to it).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Makes `task` part of the host: [`Host::shutdown`] waits for it (up
    /// to the grace period).
    pub fn adopt(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Stops serving and waits for the servers to finish.
    pub async fn shutdown(self) {
        // No lease round may claim a phone after the release below.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.phones.quiesce()).await;
        let _ = self.stop.send(true);
        self.attach.close_all();
        for mut t in self.tasks {
            // Servers drain gracefully; a client that keeps a stream open
            // (a Bluetooth stack, a capture) does not hold the host forever.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                t.abort();
            }
        }
        // Whatever the grace period left running there stops now.
        drop(self.latency);
        // Other hosts may run this host's phones at once.
        let registry = self.registry.clone();
        let name = self.host_name.clone();
        match tokio::task::spawn_blocking(move || registry.host_stopped(&name, crate::unix_ms()))
            .await
        {
            Ok(Ok(released)) => tracing::info!(released, "leases released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release leases; they run out"),
            Err(_) => {}
        }
    }
}
