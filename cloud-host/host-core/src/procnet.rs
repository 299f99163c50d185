//! Who owns a local TCP socket, from the kernel's `/proc/net/tcp{,6}`
//! tables: the user at the other end of a connection to us (Bluetooth
//! attach points admit only the host's own user), and the process holding
//! a listening socket (the host talks to an emulator's gRPC port only on
//! the address the emulator process itself listens on).

use std::net::{IpAddr, SocketAddr};

/// The uid owning the socket at the other end of our TCP connection
/// `local` <- `peer` on this machine, from `/proc/net/tcp{,6}` (the peer's
/// own entry: its local address is `peer`, its remote `local`). Both tables
/// are read: gRPC's C core dials IPv4 from a dual-stack IPv6 socket, listed
/// in `tcp6` with IPv4-mapped addresses. `None` when there is no such entry
/// (a peer on another machine, or gone).
#[must_use]
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (local, peer) = (canonical(local), canonical(peer));
    find_row(|cols| {
        let (ours, theirs, uid) = (cols.get(1)?, cols.get(2)?, cols.get(7)?);
        (canonical(parse_proc_addr(ours)?) == peer && canonical(parse_proc_addr(theirs)?) == local)
            .then(|| uid.parse().ok())?
    })
}

/// The first row of `/proc/net/tcp`, then `/proc/net/tcp6`, for which
/// `pick` (given the row's columns) says something.
fn find_row<T>(pick: impl Fn(&[&str]) -> Option<T>) -> Option<T> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                pick(&cols)
            })
        })
}

/// `addr` with an IPv4-mapped IPv6 address as plain IPv4 (the tables list
/// a dual-stack socket's IPv4 peers that way).
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// `0100007F:1F90` (the kernel's hex of the address as stored, then the
/// port) as a socket address.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes()),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The uid and socket inode of the socket listening on `addr` on this
/// machine (a `LISTEN` row with exactly that local address). `None` when
/// nothing listens there.
fn listener(addr: SocketAddr) -> Option<(u32, u64)> {
    /// The kernel's `TCP_LISTEN` state.
    const LISTEN: &str = "0A";
    let want = canonical(addr);
    find_row(|cols| {
        let (local, state) = (cols.get(1)?, cols.get(3)?);
        let (uid, inode) = (cols.get(7)?, cols.get(9)?);
        (*state == LISTEN && canonical(parse_proc_addr(local)?) == want)
            .then(|| Some((uid.parse().ok()?, inode.parse().ok()?)))?
    })
}

/// Whether process `pid` itself holds the socket listening on `addr` (one
/// of its file descriptors is that socket). Needs the right to read the
/// process's `/proc/<pid>/fd`, which a process of the same user has.
#[must_use]
pub fn held_by(addr: SocketAddr, pid: u32) -> bool {
    let Some((_, inode)) = listener(addr) else {
        return false;
    };
    let want = std::ffi::OsString::from(format!("socket:[{inode}]"));
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn a_listener_is_found_with_its_uid_and_its_holder() {
        let me = rustix::process::geteuid().as_raw();
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = v4.local_addr().unwrap();
        assert_eq!(listener(a).map(|l| l.0), Some(me));
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let b = v6.local_addr().unwrap();
        assert_eq!(listener(b).map(|l| l.0), Some(me));
        // The same port on the other loopback: nobody listens there.
        assert_eq!(listener(SocketAddr::from(([127, 0, 0, 1], b.port()))), None);
        assert!(held_by(a, std::process::id()) && held_by(b, std::process::id()));
        assert!(!held_by(a, 1), "not init's");
        drop(v4);
        assert_eq!(listener(a), None, "closed");
        assert!(!held_by(a, std::process::id()));
    }
}
