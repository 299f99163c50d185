//! Network namespaces and delay for tests and benchmarks that need a real
//! network path (a handset behind a veth pair): [`Netns`], [`in_ns`], a
//! userspace [`DelayLine`] for kernels without `tc netem`, a UDP [`Echo`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::sh;

/// `argv` run inside the namespace when there is one.
#[must_use]
pub fn in_ns(ns: Option<&Netns>, argv: Vec<String>) -> Vec<String> {
    match ns {
        Some(ns) => ["ip", "netns", "exec", &ns.name]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(argv)
            .collect(),
        None => argv,
    }
}

/// A network namespace joined to the root one by a veth pair (a /24
/// between `root_ip` and `ns_ip`); both are deleted on drop, also when a
/// test panics. Needs root and iproute2.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns exec <name> ...`).
    pub name: String,
    /// The veth end in the root namespace.
    pub veth: String,
    /// The veth end inside the namespace.
    pub peer: String,
    /// The root namespace's end of the pair.
    pub root_ip: Ipv4Addr,
    /// The namespace's end of the pair.
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    /// Creates namespace `<prefix>-<pid>` with veth `<prefix><pid>a` (root
    /// side, `root_ip`) and `<prefix><pid>b` (inside, `ns_ip`), both up.
    /// `prefix` is at most 5 characters (interface names are short).
    ///
    /// # Errors
    /// When the subnet is already in use or an `ip` command fails; whatever
    /// was made is removed again.
    pub fn create(prefix: &str, root_ip: Ipv4Addr, ns_ip: Ipv4Addr) -> Result<Self, String> {
        let pid = std::process::id();
        let subnet = format!("{root_ip}/24");
        if !sh(&["ip", "-o", "addr", "show", "to", &subnet])?
            .trim()
            .is_empty()
        {
            return Err(format!(
                "{subnet} is already in use on this machine (`ip -o addr show to {subnet}`): \
                 a namespace left by another run? delete it first"
            ));
        }
        let ns = Self {
            name: format!("{prefix}-{pid}"),
            veth: format!("{prefix}{pid}a"),
            peer: format!("{prefix}{pid}b"),
            root_ip,
            ns_ip,
        };
        sh(&["ip", "netns", "add", &ns.name])?;
        // From here on, dropping `ns` removes whatever was made.
        let (n, v, p) = (ns.name.as_str(), ns.veth.as_str(), ns.peer.as_str());
        let root = format!("{root_ip}/24");
        let inner = format!("{ns_ip}/24");
        sh(&["ip", "link", "add", v, "type", "veth", "peer", "name", p])?;
        sh(&["ip", "link", "set", p, "netns", n])?;
        sh(&["ip", "addr", "add", &root, "dev", v])?;
        sh(&["ip", "link", "set", v, "up"])?;
        sh(&["ip", "-n", n, "addr", "add", &inner, "dev", p])?;
        sh(&["ip", "-n", n, "link", "set", p, "up"])?;
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `tc qdisc <verb> ... netem delay <one_way>` on both ends.
    ///
    /// # Errors
    /// When `tc` fails (this kernel may have no netem: use [`DelayLine`]).
    pub fn netem(&self, verb: &str, one_way_us: u64) -> Result<(), String> {
        let delay = format!("{one_way_us}us");
        sh(&[
            "tc", "qdisc", verb, "dev", &self.veth, "root", "netem", "delay", &delay,
        ])?;
        sh(&[
            "ip", "netns", "exec", &self.name, "tc", "qdisc", verb, "dev", &self.peer, "root",
            "netem", "delay", &delay,
        ])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = sh(&["ip", "link", "del", &self.veth]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A userspace UDP delay line: datagrams from clients to `listen` go to
/// `upstream`, and replies come back, each held `one_way` in each direction
/// (std threads and `thread::sleep`, sub-millisecond precise, order kept).
#[derive(Debug)]
pub struct DelayLine {
    /// Where clients send (bound from `listen`).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

type Datagram = (Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>);

impl DelayLine {
    /// Starts the line; `one_way_us` may change while it runs.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way_us: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let tick = Some(Duration::from_millis(100));
        let front = Arc::new(UdpSocket::bind(listen)?);
        front.set_read_timeout(tick)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Datagram>();
        let s = stop.clone();
        let sender = std::thread::spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok((due, socket, to, data)) => {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let _ = socket.send_to(&data, to);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if !s.load(Ordering::Relaxed) => {}
                    Err(_) => break,
                }
            }
        });
        let s = stop.clone();
        let listener = std::thread::spawn(move || {
            let delay =
                |d: &AtomicU64| Instant::now() + Duration::from_micros(d.load(Ordering::Relaxed));
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut threads = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let due = delay(&one_way_us);
                let back = if let Some(b) = backs.get(&client) {
                    b.clone()
                } else {
                    // One upstream socket per client, as a NAT would.
                    let Ok(b) = UdpSocket::bind(SocketAddr::new(upstream.ip(), 0)) else {
                        continue;
                    };
                    let _ = b.set_read_timeout(tick);
                    let b = Arc::new(b);
                    let (b2, f2, tx2, s2, d2) = (
                        b.clone(),
                        front.clone(),
                        tx.clone(),
                        s.clone(),
                        one_way_us.clone(),
                    );
                    threads.push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !s2.load(Ordering::Relaxed) {
                            if let Ok((n, from)) = b2.recv_from(&mut buf)
                                && from == upstream
                            {
                                let _ =
                                    tx2.send((delay(&d2), f2.clone(), client, buf[..n].to_vec()));
                            }
                        }
                    }));
                    backs.insert(client, b.clone());
                    b
                };
                let _ = tx.send((due, back, upstream, buf[..n].to_vec()));
            }
            for t in threads {
                let _ = t.join();
            }
        });
        Ok(Self {
            addr,
            stop,
            threads: vec![listener, sender],
        })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP echo (a round-trip probe's far end); stops on drop.
#[derive(Debug)]
pub struct Echo {
    /// Where it answers.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    /// Binds a free port on `ip` and echoes every datagram to its sender.
    ///
    /// # Errors
    /// When binding fails.
    pub async fn start(ip: IpAddr) -> Result<Self, String> {
        let s = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| format!("echo socket: {e}"))?;
        let addr = s.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP address on `ip` that was free a moment ago.
///
/// # Errors
/// When nothing can be bound on `ip`.
pub fn free_udp(ip: IpAddr) -> Result<SocketAddr, String> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("a free UDP port on {ip}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_line_holds_each_direction() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let one_way = Arc::new(AtomicU64::new(20_000));
        let line =
            DelayLine::start("127.0.0.1:0".parse().unwrap(), echo_addr, one_way.clone()).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        let t = Instant::now();
        client.send_to(b"ping", line.addr).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        let rtt = t.elapsed();
        assert_eq!((&buf[..n], from), (&b"ping"[..], line.addr));
        assert!(rtt >= Duration::from_millis(40), "20 ms each way: {rtt:?}");
        // The delay can change while the line runs.
        one_way.store(0, Ordering::Relaxed);
        let t = Instant::now();
        client.send_to(b"again", line.addr).unwrap();
        client.recv_from(&mut buf).unwrap();
        assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
    }

    #[test]
    fn a_namespace_is_made_and_removed() {
        if !crate::tools::require_root("a network namespace") {
            return;
        }
        let root_ip = Ipv4Addr::new(10, 203, 0, 1);
        let ns = Netns::create("vptk", root_ip, Ipv4Addr::new(10, 203, 0, 2)).expect("netns");
        let name = ns.name.clone();
        let wrapped = in_ns(Some(&ns), vec!["true".into()]);
        assert_eq!(wrapped[..4], ["ip", "netns", "exec", name.as_str()]);
        let argv: Vec<&str> = wrapped.iter().map(String::as_str).collect();
        sh(&argv).expect("a command runs inside");
        // A datagram sent from inside arrives at the root end of the pair.
        let rx = UdpSocket::bind((root_ip, 0)).expect("bind the root end");
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = rx.local_addr().unwrap().port().to_string();
        let send = format!(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('{root_ip}', {port}))"
        );
        sh(&["ip", "netns", "exec", &name, "python3", "-c", &send]).expect("send from inside");
        let mut buf = [0u8; 8];
        let (n, from) = rx
            .recv_from(&mut buf)
            .expect("the veth pair carries traffic");
        assert_eq!((&buf[..n], from.ip()), (&b"hi"[..], IpAddr::V4(ns.ns_ip)));
        drop(ns);
        let list = sh(&["ip", "netns", "list"]).unwrap();
        assert!(!list.contains(&name), "removed on drop: {list}");
    }
}
