//! What a phone shows of the host's state, for any backend to render: which
//! handset drives it and what its Bluetooth link is doing. The host writes
//! it (the router the session, the Bluetooth link the radio); a backend that
//! can show it (the sim phone paints it on its screen) reads it. Nothing here
//! names a backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What the Bluetooth link of a phone is doing.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub enum RadioStatus {
    /// No handset lends a radio.
    #[default]
    NoRadio,
    /// A radio is lent; no connection.
    RadioAttached,
    /// Connected to a peripheral.
    Connected {
        /// The name it advertised, or "unknown device".
        peer_name: String,
        /// Its address, `AA:BB:CC:DD:EE:FF`.
        address: String,
        /// Whether the link is encrypted.
        encrypted: bool,
    },
}

/// The host's state as a phone may show it.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct PhoneStatus {
    /// The name of the handset driving the phone, if one does.
    pub session: Option<String>,
    /// The Bluetooth link.
    pub radio: RadioStatus,
}

/// A watch per phone, by phone name. Cheap to clone; an entry outlives
/// the phone's restarts, so what it holds survives them.
#[derive(Debug)]
pub(crate) struct Board<T>(Arc<Mutex<HashMap<String, watch::Sender<T>>>>);

impl<T> Clone for Board<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Board<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(HashMap::new())))
    }
}

impl<T: Default> Board<T> {
    /// `phone`'s sender, made (holding `T::default()`) if there is none.
    pub(crate) fn sender(&self, phone: &str) -> watch::Sender<T> {
        let mut phones = self.0.lock().unwrap_or_else(|p| p.into_inner());
        phones
            .entry(phone.to_owned())
            .or_insert_with(|| watch::channel(T::default()).0)
            .clone()
    }

    /// Forgets a deleted phone; its sender, if it had one.
    pub(crate) fn remove(&self, phone: &str) -> Option<watch::Sender<T>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(phone)
    }
}

/// Every phone's status, by phone name. Cheap to clone; an entry outlives
/// the phone's restarts, so the status survives them.
#[derive(Clone, Debug, Default)]
pub struct StatusBoard {
    phones: Board<PhoneStatus>,
}

impl StatusBoard {
    /// A writer for `phone`'s status.
    #[must_use]
    pub fn handle(&self, phone: &str) -> StatusHandle {
        StatusHandle {
            tx: self.phones.sender(phone),
        }
    }

    /// The current status of `phone` and its changes.
    #[must_use]
    pub fn subscribe(&self, phone: &str) -> watch::Receiver<PhoneStatus> {
        self.phones.sender(phone).subscribe()
    }

    /// Forgets a deleted phone.
    pub fn remove(&self, phone: &str) {
        self.phones.remove(phone);
    }
}

/// Writes one phone's status.
#[derive(Clone, Debug)]
pub struct StatusHandle {
    tx: watch::Sender<PhoneStatus>,
}

impl StatusHandle {
    /// Which handset drives the phone (`None`: none).
    pub fn set_session(&self, handset: Option<String>) {
        self.tx.send_if_modified(|s| {
            let changed = s.session != handset;
            s.session.clone_from(&handset);
            changed
        });
    }

    /// What the Bluetooth link is doing.
    pub fn set_radio(&self, radio: RadioStatus) {
        self.tx.send_if_modified(|s| {
            let changed = s.radio != radio;
            s.radio.clone_from(&radio);
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_survives_and_changes_are_seen() {
        let board = StatusBoard::default();
        let mut rx = board.subscribe("p1");
        board.handle("p1").set_session(Some("alice".into()));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().session.as_deref(), Some("alice"));
        // Setting the same value again is no change.
        board.handle("p1").set_session(Some("alice".into()));
        assert!(!rx.has_changed().unwrap());
        board.handle("p1").set_radio(RadioStatus::RadioAttached);
        assert_eq!(
            board.subscribe("p1").borrow().radio,
            RadioStatus::RadioAttached
        );
        assert_eq!(
            board.subscribe("p2").borrow().clone(),
            PhoneStatus::default()
        );
    }
}
