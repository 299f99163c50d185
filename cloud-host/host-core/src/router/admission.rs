//! Who may hold which phone, as pure code: the admission rules for handset
//! sessions, with no I/O, locks or clock.
//!
//! * One handset per phone: a session for a phone another handset holds is
//!   refused as busy, naming the holder.
//! * The same handset connecting again (its app restarted, its old
//!   connection not timed out yet) replaces its old session.
//! * A resume is the same session on a new path and always passes the
//!   handshake check.

use std::collections::HashMap;

/// One attached session.
#[derive(Debug)]
pub struct Entry<T> {
    /// The phone it drives.
    pub phone: String,
    /// The handset's certificate fingerprint.
    pub handset: String,
    /// The handset's registry name.
    pub handset_name: String,
    /// What the router keeps for it.
    pub data: T,
}

/// A phone is held by another handset.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Busy {
    /// The holder's name.
    pub holder_name: String,
    /// The holder's session id.
    pub session_id: String,
}

/// The live sessions by id.
#[derive(Debug)]
pub struct SessionTable<T> {
    entries: HashMap<String, Entry<T>>,
}

impl<T> Default for SessionTable<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<T> SessionTable<T> {
    /// The check during the QUIC handshake, before a session exists:
    /// handset `handset` asks for `phone`, `resuming` an earlier session or
    /// not.
    ///
    /// # Errors
    /// [`Busy`] when another handset holds the phone (and this is no resume).
    /// How many sessions are attached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no session is attached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn check_handshake(&self, phone: &str, handset: &str, resuming: bool) -> Result<(), Busy> {
        if resuming {
            return Ok(());
        }
        match self.holder(phone) {
            Some((id, e)) if e.handset != handset => Err(Busy {
                holder_name: e.handset_name.clone(),
                session_id: id.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Attaches session `id`. The same handset's old session on the phone
    /// is removed and returned (the caller closes it).
    ///
    /// # Errors
    /// [`Busy`] when another handset holds the phone: nothing changes.
    pub fn attach(&mut self, id: &str, entry: Entry<T>) -> Result<Option<(String, T)>, Busy> {
        let same = self
            .entries
            .iter()
            .find(|(_, e)| e.phone == entry.phone && e.handset == entry.handset)
            .map(|(id, _)| id.clone());
        if same.is_none()
            && let Some((holder, e)) = self.holder(&entry.phone)
        {
            return Err(Busy {
                holder_name: e.handset_name.clone(),
                session_id: holder.to_owned(),
            });
        }
        let replaced = same.and_then(|old| self.entries.remove(&old).map(|e| (old, e.data)));
        self.entries.insert(id.to_owned(), entry);
        Ok(replaced)
    }

    /// Removes session `id`.
    pub fn detach(&mut self, id: &str) -> Option<Entry<T>> {
        self.entries.remove(id)
    }

    /// The session holding `phone`, if any.
    #[must_use]
    pub fn holder(&self, phone: &str) -> Option<(&str, &Entry<T>)> {
        self.entries
            .iter()
            .find(|(_, e)| e.phone == phone)
            .map(|(id, e)| (id.as_str(), e))
    }

    /// Session `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Entry<T>> {
        self.entries.get(id)
    }

    /// Every session with its id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry<T>)> {
        self.entries.iter().map(|(id, e)| (id.as_str(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(phone: &str, handset: &str) -> Entry<()> {
        Entry {
            phone: phone.into(),
            handset: handset.into(),
            handset_name: format!("{handset}-name"),
            data: (),
        }
    }

    fn busy(holder: &str, session: &str) -> Busy {
        Busy {
            holder_name: format!("{holder}-name"),
            session_id: session.into(),
        }
    }

    #[test]
    fn handshake_rules() {
        let mut t = SessionTable::default();
        t.attach("s1", entry("p1", "alice")).unwrap();
        // (phone, handset, resuming) -> outcome
        let cases = [
            (("p1", "alice", false), Ok(())),
            (("p1", "alice", true), Ok(())),
            (("p1", "bob", false), Err(busy("alice", "s1"))),
            (("p1", "bob", true), Ok(())),
            (("p2", "bob", false), Ok(())),
            (("p2", "alice", false), Ok(())),
        ];
        for ((phone, handset, resuming), want) in cases {
            assert_eq!(
                t.check_handshake(phone, handset, resuming),
                want,
                "{phone} {handset} resuming={resuming}"
            );
        }
    }

    #[test]
    fn attach_rules() {
        let mut t = SessionTable::default();
        assert_eq!(t.attach("s1", entry("p1", "alice")).unwrap(), None);
        // Another handset on a held phone: refused, nothing changes.
        assert_eq!(
            t.attach("s2", entry("p1", "bob")).unwrap_err(),
            busy("alice", "s1")
        );
        assert!(t.get("s2").is_none());
        // The same handset again replaces its old session.
        assert_eq!(
            t.attach("s3", entry("p1", "alice")).unwrap(),
            Some(("s1".to_owned(), ()))
        );
        assert_eq!(t.holder("p1").map(|(id, _)| id), Some("s3"));
        // Another phone is free for bob.
        assert_eq!(t.attach("s4", entry("p2", "bob")).unwrap(), None);
        // A detached session frees its phone.
        assert!(t.detach("s3").is_some());
        assert!(t.detach("s3").is_none());
        assert_eq!(t.attach("s5", entry("p1", "bob")).unwrap(), None);
        assert_eq!(t.iter().count(), 2);
    }
}
