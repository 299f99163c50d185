//! A userspace network fault injector for QUIC (UDP) tests.
//!
//! [`FaultProxy`] sits between one client (the handset) and one upstream
//! server (the host): the client sends to [`FaultProxy::addr`], the proxy
//! forwards to the upstream from a socket of its own, and replies go back to
//! the client's last source address. Each direction has its own [`Faults`],
//! changeable at any time ([`FaultProxy::set`]); [`FaultProxy::blackout`]
//! drops everything both ways, and [`FaultProxy::rebind`] moves the proxy's
//! upstream-facing socket to a new port, so the server sees the client come
//! from a new address (a NAT rebinding, a Wi-Fi -> LTE handover).
//!
//! Every random decision comes from generators seeded at
//! [`FaultProxy::start`] (one per direction), so a scenario that failed
//! replays the same fault pattern (given the same packets in the same order
//! in each direction). The proxy only binds
//! loopback (or the address given to [`FaultProxy::start_on`]) and stops by
//! itself after its lifetime (10 minutes unless set otherwise).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which way a packet travels.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Direction {
    /// Client (handset) -> upstream (host).
    Up,
    /// Upstream (host) -> client (handset).
    Down,
}

/// How packets are lost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Loss {
    /// No loss.
    #[default]
    None,
    /// Each packet is lost independently with this probability (0..=1).
    Random(f64),
    /// Bursty loss (a two-state Gilbert-Elliott channel).
    Bursty(GilbertElliott),
}

/// A two-state Markov loss model: in the good state packets are lost with
/// `loss_good`, in the bad state with `loss_bad`; before each packet the
/// channel moves good -> bad with `p_enter_bad` and bad -> good with
/// `p_leave_bad`. Mean burst length is `1 / p_leave_bad` packets; the
/// long-run loss rate is [`GilbertElliott::mean_loss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of entering the bad state, per packet.
    pub p_enter_bad: f64,
    /// Probability of leaving the bad state, per packet.
    pub p_leave_bad: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// A channel losing `mean` of all packets in bursts of `burst` packets
    /// on average (nothing lost in the good state, everything in the bad).
    #[must_use]
    pub fn bursts(mean: f64, burst: f64) -> Self {
        let p_leave_bad = 1.0 / burst.max(1.0);
        // Stationary share of the bad state: enter / (enter + leave) = mean.
        let p_enter_bad = (mean * p_leave_bad / (1.0 - mean).max(1e-9)).min(1.0);
        Self {
            p_enter_bad,
            p_leave_bad,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// The long-run share of packets lost.
    #[must_use]
    pub fn mean_loss(&self) -> f64 {
        let bad = self.p_enter_bad / (self.p_enter_bad + self.p_leave_bad).max(1e-12);
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// The faults applied to one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Packet loss.
    pub loss: Loss,
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay varies uniformly by up to this much either way
    /// (never below zero). Packets whose delays cross are reordered.
    pub jitter: Duration,
    /// Probability that a packet is held back an extra [`Faults::reorder_by`]
    /// (reordering without jitter).
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_by: Duration,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Bandwidth cap, bits per second (`None`: unlimited). Packets queue
    /// behind the cap up to [`Faults::queue_bytes`]; beyond that they are
    /// dropped (drop-tail, as a router's buffer does).
    pub rate_bps: Option<u64>,
    /// The buffer in front of the bandwidth cap, bytes.
    pub queue_bytes: usize,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            loss: Loss::None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_by: Duration::from_millis(10),
            duplicate: 0.0,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}

impl Faults {
    /// No faults: a plain relay.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Independent loss of `p` (0..=1) of the packets.
    #[must_use]
    pub fn random_loss(p: f64) -> Self {
        Self {
            loss: Loss::Random(p),
            ..Self::default()
        }
    }

    /// A fixed one-way delay with `jitter` either way.
    #[must_use]
    pub fn delay(delay: Duration, jitter: Duration) -> Self {
        Self {
            delay,
            jitter,
            ..Self::default()
        }
    }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct DirectionStats {
    /// Packets that arrived at the proxy.
    pub received: u64,
    /// Packets sent on (duplicates counted).
    pub forwarded: u64,
    /// Packets dropped by the loss model.
    pub lost: u64,
    /// Packets dropped during a blackout.
    pub blacked_out: u64,
    /// Packets dropped because the queue behind the bandwidth cap was full.
    pub overflowed: u64,
    /// Packets that found the link busy and queued behind the bandwidth cap.
    pub queued: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
}

/// Counters of both directions.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ProxyStats {
    /// Client -> upstream.
    pub up: DirectionStats,
    /// Upstream -> client.
    pub down: DirectionStats,
    /// Times the upstream-facing socket moved.
    pub rebinds: u64,
}

#[derive(Debug)]
struct Control {
    up: Faults,
    down: Faults,
    blackout: bool,
    rebinds_asked: u64,
}

#[derive(Debug)]
struct Shared {
    control: Mutex<Control>,
    stats: Mutex<ProxyStats>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A seeded UDP fault proxy between one client and one upstream server.
/// Dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    seed: u64,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a proxy runs at most unless told otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a port chosen by the OS) in front of
    /// `upstream`, with no faults yet. `seed` fixes every random decision.
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid"), upstream, seed).await
    }

    /// Like [`FaultProxy::start`], listening on `listen` (an address on
    /// loopback or in a network namespace the test made).
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Self> {
        Self::start_with(listen, upstream, seed, DEFAULT_LIFETIME).await
    }

    /// Like [`FaultProxy::start_on`], stopping by itself after `lifetime`.
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
        lifetime: Duration,
    ) -> std::io::Result<Self> {
        let front = UdpSocket::bind(listen).await?;
        let back = bind_towards(upstream).await?;
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                up: Faults::none(),
                down: Faults::none(),
                blackout: false,
                rebinds_asked: 0,
            }),
            stats: Mutex::new(ProxyStats::default()),
            wake: Notify::new(),
        });
        let relay = Relay {
            front,
            back,
            upstream,
            client: None,
            shared: shared.clone(),
            // One generator per direction: the interleaving of the two
            // directions depends on timing, the order within one does not.
            rng: [
                fastrand::Rng::with_seed(seed),
                fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            ],
            bad_state: [false; 2],
            link_free: [Instant::now(); 2],
            queue: BinaryHeap::new(),
            next_id: 0,
            rebinds_done: 0,
        };
        let task = tokio::spawn(relay.run(Instant::now() + lifetime));
        tracing::debug!(%addr, %upstream, seed, "fault proxy started");
        Ok(Self {
            addr,
            seed,
            shared,
            task,
        })
    }

    /// Where the client should send (instead of the upstream).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed this proxy's faults come from (print it when a test fails).
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Applies `faults` to packets arriving from now on in `dir`.
    pub fn set(&self, dir: Direction, faults: Faults) {
        let mut c = lock(&self.shared.control);
        match dir {
            Direction::Up => c.up = faults,
            Direction::Down => c.down = faults,
        }
    }

    /// Applies `faults` to both directions.
    pub fn set_both(&self, faults: Faults) {
        let mut c = lock(&self.shared.control);
        c.up = faults;
        c.down = faults;
    }

    /// While `on`, every packet arriving in either direction is dropped
    /// (neither side is told: a network cut). Packets already delayed in
    /// the proxy are still delivered.
    pub fn blackout(&self, on: bool) {
        lock(&self.shared.control).blackout = on;
    }

    /// Moves the upstream-facing socket to a new port: from now on the
    /// upstream sees the client's packets come from a new address, and
    /// packets it still sends to the old one are lost.
    pub fn rebind(&self) {
        lock(&self.shared.control).rebinds_asked += 1;
        self.shared.wake.notify_one();
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ProxyStats {
        *lock(&self.shared.stats)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind_towards(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if upstream.is_ipv4() {
        "127.0.0.1:0".parse().expect("valid")
    } else {
        "[::1]:0".parse().expect("valid")
    };
    // Bind on the upstream's own address family; loopback unless the
    // upstream lives in a test namespace (then its own network).
    let local = if upstream.ip().is_loopback() {
        any
    } else {
        SocketAddr::new(unspecified(upstream), 0)
    };
    UdpSocket::bind(local).await
}

fn unspecified(upstream: SocketAddr) -> std::net::IpAddr {
    if upstream.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    }
}

/// A packet waiting for its delivery time.
#[derive(Debug, Eq, PartialEq)]
struct Pending {
    at: Instant,
    id: u64,
    dir: u8,
    bytes: Vec<u8>,
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Relay {
    front: UdpSocket,
    back: UdpSocket,
    upstream: SocketAddr,
    client: Option<SocketAddr>,
    shared: Arc<Shared>,
    rng: [fastrand::Rng; 2],
    /// Gilbert-Elliott state per direction (true: bad).
    bad_state: [bool; 2],
    /// When each direction's capped link is next free.
    link_free: [Instant; 2],
    queue: BinaryHeap<Reverse<Pending>>,
    next_id: u64,
    rebinds_done: u64,
}

impl Relay {
    async fn run(mut self, deadline: Instant) {
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        loop {
            let next = self.queue.peek().map(|Reverse(p)| p.at);
            tokio::select! {
                r = self.front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    self.client = Some(from);
                    self.admit(Direction::Up, &a[..n]);
                }
                r = self.back.recv_from(&mut b) => {
                    let Ok((n, from)) = r else { return };
                    if from == self.upstream {
                        self.admit(Direction::Down, &b[..n]);
                    }
                }
                () = sleep_until(next) => self.deliver_due().await,
                () = self.shared.wake.notified() => self.maybe_rebind().await,
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("fault proxy reached its lifetime and stopped");
                    return;
                }
            }
        }
    }

    async fn maybe_rebind(&mut self) {
        let asked = lock(&self.shared.control).rebinds_asked;
        while self.rebinds_done < asked {
            match bind_towards(self.upstream).await {
                Ok(s) => {
                    self.back = s;
                    lock(&self.shared.stats).rebinds += 1;
                }
                Err(e) => tracing::warn!("fault proxy could not rebind: {e}"),
            }
            self.rebinds_done += 1;
        }
    }

    /// Decides the fate of one arriving packet and queues what survives.
    fn admit(&mut self, dir: Direction, bytes: &[u8]) {
        let d = dir as usize;
        let (faults, blackout) = {
            let c = lock(&self.shared.control);
            (if dir == Direction::Up { c.up } else { c.down }, c.blackout)
        };
        let shared = self.shared.clone();
        let mut stats = lock(&shared.stats);
        let s = match dir {
            Direction::Up => &mut stats.up,
            Direction::Down => &mut stats.down,
        };
        s.received += 1;
        if blackout {
            s.blacked_out += 1;
            return;
        }
        if self.lose(d, faults.loss) {
            s.lost += 1;
            return;
        }
        let copies = if self.rng[d].f64() < faults.duplicate {
            s.duplicated += 1;
            2
        } else {
            1
        };
        let now = Instant::now();
        for _ in 0..copies {
            let mut at = now + faults.delay;
            if !faults.jitter.is_zero() {
                let j = faults.jitter.as_secs_f64() * (self.rng[d].f64() * 2.0 - 1.0);
                at = if j >= 0.0 {
                    at + Duration::from_secs_f64(j)
                } else {
                    at.checked_sub(Duration::from_secs_f64(-j))
                        .map_or(now, |t| t.max(now))
                };
            }
            if faults.reorder > 0.0 && self.rng[d].f64() < faults.reorder {
                s.reordered += 1;
                at += faults.reorder_by;
            }
            if let Some(rate) = faults.rate_bps.filter(|r| *r > 0) {
                let free = self.link_free[d].max(now);
                let backlog_bytes = (free - now).as_secs_f64() * rate as f64 / 8.0;
                if backlog_bytes + bytes.len() as f64 > faults.queue_bytes as f64 {
                    s.overflowed += 1;
                    continue;
                }
                if free > now {
                    s.queued += 1;
                }
                let wire = Duration::from_secs_f64(bytes.len() as f64 * 8.0 / rate as f64);
                self.link_free[d] = free + wire;
                at = at.max(self.link_free[d] + faults.delay);
            }
            self.next_id += 1;
            self.queue.push(Reverse(Pending {
                at,
                id: self.next_id,
                dir: d as u8,
                bytes: bytes.to_vec(),
            }));
        }
    }

    fn lose(&mut self, d: usize, loss: Loss) -> bool {
        match loss {
            Loss::None => false,
            Loss::Random(p) => self.rng[d].f64() < p,
            Loss::Bursty(ge) => {
                let flip = if self.bad_state[d] {
                    ge.p_leave_bad
                } else {
                    ge.p_enter_bad
                };
                if self.rng[d].f64() < flip {
                    self.bad_state[d] = !self.bad_state[d];
                }
                let p = if self.bad_state[d] {
                    ge.loss_bad
                } else {
                    ge.loss_good
                };
                self.rng[d].f64() < p
            }
        }
    }

    async fn deliver_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            let sent = if p.dir == Direction::Up as u8 {
                self.back.send_to(&p.bytes, self.upstream).await.is_ok()
            } else if let Some(client) = self.client {
                self.front.send_to(&p.bytes, client).await.is_ok()
            } else {
                false
            };
            if sent {
                let mut stats = lock(&self.shared.stats);
                if p.dir == Direction::Up as u8 {
                    stats.up.forwarded += 1;
                } else {
                    stats.down.forwarded += 1;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// Sends `n` numbered packets through the proxy (paced), returns the
    /// numbers echoed back in arrival order.
    async fn exchange(proxy: &FaultProxy, n: u32, gap: Duration) -> Vec<u32> {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(proxy.addr()).await.unwrap();
        let mut got = Vec::new();
        let recv = async {
            let mut buf = [0u8; 64];
            while let Ok(Ok(k)) =
                tokio::time::timeout(Duration::from_millis(400), c.recv(&mut buf)).await
            {
                got.push(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let _ = k;
            }
        };
        let send = async {
            for i in 0..n {
                c.send(&i.to_le_bytes()).await.unwrap();
                if gap.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(gap).await;
                }
            }
        };
        tokio::join!(send, recv);
        got
    }

    #[tokio::test]
    async fn a_plain_relay_delivers_everything_in_order() {
        let p = FaultProxy::start(echo().await, 1).await.unwrap();
        let got = exchange(&p, 200, Duration::from_millis(1)).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        let s = p.stats();
        assert_eq!((s.up.forwarded, s.down.forwarded), (200, 200));
    }

    #[tokio::test]
    async fn random_loss_is_near_its_rate_and_replays_from_the_seed() {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let p = FaultProxy::start(echo().await, 42).await.unwrap();
            p.set(Direction::Up, Faults::random_loss(0.2));
            // Paced, so no socket buffer overflows and shifts the pattern.
            let got = exchange(&p, 400, Duration::from_millis(1)).await;
            let s = p.stats();
            assert_eq!(s.up.lost as usize + got.len(), 400);
            assert!((50..=110).contains(&s.up.lost), "lost {}", s.up.lost);
            runs.push(got);
        }
        assert_eq!(runs[0], runs[1], "the same seed loses the same packets");
    }

    #[tokio::test]
    async fn bursty_loss_comes_in_runs() {
        let p = FaultProxy::start(echo().await, 7).await.unwrap();
        let ge = GilbertElliott::bursts(0.1, 8.0);
        assert!((ge.mean_loss() - 0.1).abs() < 1e-9);
        p.set(
            Direction::Up,
            Faults {
                loss: Loss::Bursty(ge),
                ..Faults::none()
            },
        );
        let got = exchange(&p, 2000, Duration::from_millis(1)).await;
        // Count the gaps: bursty loss of 10% in bursts of ~8 makes far
        // fewer, longer gaps than independent loss would (~180 gaps).
        let gaps = got.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let lost = 2000 - got.len();
        assert!((100..=320).contains(&lost), "lost {lost}");
        assert!(gaps * 3 < lost, "{gaps} gaps for {lost} lost packets");
    }

    #[tokio::test]
    async fn jitter_reorders_and_duplicates_are_counted() {
        let p = FaultProxy::start(echo().await, 3).await.unwrap();
        p.set(
            Direction::Down,
            Faults {
                duplicate: 0.1,
                ..Faults::delay(Duration::from_millis(20), Duration::from_millis(15))
            },
        );
        let got = exchange(&p, 300, Duration::from_millis(1)).await;
        let s = p.stats();
        assert_eq!(got.len() as u64, 300 + s.down.duplicated);
        assert!(s.down.duplicated > 10);
        assert!(got.windows(2).any(|w| w[1] < w[0]), "jitter reorders");
    }

    #[tokio::test]
    async fn a_bandwidth_cap_paces_and_drops_beyond_the_queue() {
        let p = FaultProxy::start(echo().await, 5).await.unwrap();
        // A burst of 300 packets of 4 bytes at 64 kbit/s (0.5 ms each)
        // behind a 400-byte queue: about 100 fit, the rest overflow.
        p.set(
            Direction::Up,
            Faults {
                rate_bps: Some(64_000),
                queue_bytes: 400,
                ..Faults::none()
            },
        );
        let got = exchange(&p, 300, Duration::ZERO).await;
        let s = p.stats();
        assert!(s.up.overflowed > 100, "{s:?}");
        // Exact accounting of what reached the proxy (the kernel may drop
        // some of a burst before it does).
        assert_eq!(got.len() as u64 + s.up.overflowed, s.up.received);
        assert!(got.len() > 50, "{} delivered", got.len());
    }

    #[tokio::test]
    async fn blackout_drops_both_ways_and_rebind_changes_the_source() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let p = FaultProxy::start(server.local_addr().unwrap(), 9)
            .await
            .unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(p.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        c.send(b"a").await.unwrap();
        let (_, first) = server.recv_from(&mut buf).await.unwrap();
        p.blackout(true);
        c.send(b"b").await.unwrap();
        // The flag is read when the packet reaches the proxy.
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.blackout(false);
        p.rebind();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.send(b"c").await.unwrap();
        let (n, second) = server.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"c", "b was lost in the blackout");
        assert_ne!(first, second, "the server sees a new source address");
        let s = p.stats();
        assert_eq!((s.up.blacked_out, s.rebinds), (1, 1));
    }
}
