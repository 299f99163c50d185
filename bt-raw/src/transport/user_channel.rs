//! Linux `HCI_CHANNEL_USER` sockets: exclusive raw access to one adapter.
//!
//! This module is bt-raw's only `unsafe` code: the kernel interface has no
//! safe wrapper in std. The kernel does no flow control and no command
//! filtering on this channel (`net/bluetooth/hci_sock.c`), which is why the
//! relay enforces [`crate::Policy`] and [`crate::flow::FlowControl`] itself.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::HciTransport;
use crate::{Error, H4Packet};

const BTPROTO_HCI: libc::c_int = 1;
const HCI_CHANNEL_USER: u16 = 1;

/// `struct sockaddr_hci` from `<bluetooth/hci.h>`.
#[repr(C)]
struct SockaddrHci {
    family: libc::sa_family_t,
    dev: u16,
    channel: u16,
}

/// An open user-channel socket on adapter `hciN`.
#[derive(Debug)]
pub struct UserChannel {
    fd: AsyncFd<OwnedFd>,
    index: u16,
    buf: Vec<u8>,
}

/// Turns an errno from socket/bind into advice a person can act on.
fn explain(index: u16, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "permission denied: opening hci{index} needs CAP_NET_ADMIN (run as root, or \
             `sudo setcap cap_net_admin+ep $(which vphone-companion)`)"
        ),
        Some(libc::EBUSY) => format!(
            "hci{index} is up or in use by BlueZ; power it down first \
             (`bluetoothctl power off` or `sudo hciconfig hci{index} down`)"
        ),
        Some(libc::ENODEV) => {
            format!("there is no adapter hci{index} (see `vphone-companion radios`)")
        }
        Some(libc::EUSERS) => {
            format!("another program already holds the user channel of hci{index}")
        }
        Some(libc::EAFNOSUPPORT) => {
            "this kernel has no Bluetooth socket support (AF_BLUETOOTH unavailable)".to_owned()
        }
        _ => e.to_string(),
    }
}

impl UserChannel {
    /// Opens adapter `index` exclusively. The adapter must be down.
    ///
    /// # Errors
    /// [`Error::UserChannel`] with the reason the kernel refused, for example
    /// a missing `CAP_NET_ADMIN` (EPERM) or an adapter that is up (EBUSY).
    pub fn open(index: u16) -> Result<Self, Error> {
        let fail = |e: io::Error| Error::UserChannel {
            index,
            reason: explain(index, &e),
            source: e,
        };
        // SAFETY: socket(2) with constant arguments touches no memory of ours;
        // the result is checked before it is used.
        let raw = unsafe {
            libc::socket(
                libc::AF_BLUETOOTH,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                BTPROTO_HCI,
            )
        };
        if raw < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a valid descriptor just returned by socket(2) and
        // owned by nothing else, so OwnedFd may take ownership and close it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = SockaddrHci {
            family: libc::AF_BLUETOOTH as libc::sa_family_t,
            dev: index,
            channel: HCI_CHANNEL_USER,
        };
        // SAFETY: `addr` is a properly initialised sockaddr_hci that outlives
        // the call, and the length passed is exactly its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<SockaddrHci>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a valid open descriptor owned by the OwnedFd we hand
        // over; the AsyncFd owns it from here on and it stays open until the
        // AsyncFd is dropped, always returning the same raw descriptor.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| {
                    Error::io(format!("registering hci{index} with the runtime"), e.into())
                })?;
        Ok(Self {
            fd,
            index,
            buf: vec![0; 4 + 65535],
        })
    }

    /// The adapter index.
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl HciTransport for UserChannel {
    async fn recv(&mut self) -> Result<H4Packet, Error> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| Error::io(format!("waiting on hci{}", self.index), e))?;
            let buf = &mut self.buf;
            let res = guard.try_io(|fd| {
                // SAFETY: `buf` is a valid, writable allocation of `buf.len()`
                // bytes for the duration of the call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(0)) => return Err(Error::Closed),
                Ok(Ok(n)) => {
                    // One read is one packet, H4 type byte first.
                    match H4Packet::parse(self.buf[..n].to_vec()) {
                        Ok(p) => return Ok(p),
                        Err(e) => {
                            tracing::warn!(index = self.index, error = %e, "dropped malformed packet from adapter");
                        }
                    }
                }
                Ok(Err(e)) => return Err(Error::io(format!("reading hci{}", self.index), e)),
                Err(_would_block) => {}
            }
        }
    }

    async fn send(&mut self, packet: &H4Packet) -> Result<(), Error> {
        let bytes = packet.as_bytes();
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(|e| Error::io(format!("waiting on hci{}", self.index), e))?;
            let res = guard.try_io(|fd| {
                // SAFETY: `bytes` is a valid, readable slice for the duration
                // of the call; the kernel only reads from it.
                let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(Error::io(format!("writing hci{}", self.index), e)),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_a_missing_or_forbidden_adapter_is_a_clear_error() {
        // hci250 does not exist anywhere we test; depending on the kernel and
        // privileges the refusal is ENODEV, EPERM or EAFNOSUPPORT, each explained.
        let e = UserChannel::open(250).unwrap_err();
        let Error::UserChannel { index, reason, .. } = &e else {
            panic!("unexpected error {e:?}");
        };
        assert_eq!(*index, 250);
        assert!(
            reason.contains("no adapter hci250")
                || reason.contains("CAP_NET_ADMIN")
                || reason.contains("no Bluetooth socket support"),
            "{reason}"
        );
    }
}
