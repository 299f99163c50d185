//! The host's registry: phones, handsets, enrollment tokens, which handsets
//! may attach to which phones, and an audit of sessions, in SQLite.
//!
//! The database lives in the data dir (`registry.sqlite3`), runs in WAL mode
//! with `synchronous=NORMAL` (committed transactions survive a process kill)
//! and is upgraded by numbered migrations recorded in `PRAGMA user_version`.
//! All times are Unix milliseconds. An empty phone list on a handset or token
//! means "every phone".

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::HostError;

/// Ordered schema migrations; index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE phones (
        name TEXT PRIMARY KEY,
        backend TEXT NOT NULL,
        desired_state TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        dpi INTEGER NOT NULL,
        avd TEXT,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE handsets (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        enrolled_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER,
        last_seen_ms INTEGER
    );
    CREATE TABLE handset_phones (
        fingerprint TEXT NOT NULL REFERENCES handsets(fingerprint) ON DELETE CASCADE,
        phone TEXT NOT NULL,
        PRIMARY KEY (fingerprint, phone)
    );
    CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        name TEXT,
        phones TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms INTEGER,
        used_by TEXT
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        phone TEXT NOT NULL,
        remote TEXT,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        end_reason TEXT
    );
    CREATE INDEX sessions_started ON sessions(started_at_ms);",
    // 2: "every phone" becomes an explicit grant. Before, an empty phone
    // list meant every phone, so deleting the only phone a handset was
    // limited to admitted it everywhere. A handset keeps "every phone" only
    // if the token it enrolled with granted that (an empty list there);
    // one whose list a deletion emptied now has no phone.
    "ALTER TABLE handsets ADD COLUMN all_phones INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE enrollment_tokens ADD COLUMN all_phones INTEGER NOT NULL DEFAULT 0;
    UPDATE enrollment_tokens SET all_phones = 1 WHERE phones = '';
    UPDATE handsets SET all_phones = 1 WHERE fingerprint IN
        (SELECT used_by FROM enrollment_tokens WHERE all_phones = 1 AND used_by IS NOT NULL);",
];

/// Which kind of phone backend runs a phone.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Backend {
    /// The built-in software phone.
    Sim,
    /// The real Android Emulator.
    Emulator,
}

impl Backend {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Emulator => "emulator",
        }
    }
}

impl FromStr for Backend {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, HostError> {
        match s {
            "sim" => Ok(Self::Sim),
            "emulator" => Ok(Self::Emulator),
            other => Err(HostError::Invalid {
                what: "backend",
                why: format!("{other:?} is not one of: sim, emulator"),
            }),
        }
    }
}

/// What the operator wants a phone to be doing; restored after a restart.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DesiredState {
    /// Keep it running.
    Running,
    /// Keep it stopped.
    Stopped,
}

impl DesiredState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "running" {
            Self::Running
        } else {
            Self::Stopped
        }
    }
}

/// A phone as recorded.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PhoneRecord {
    /// Unique name, e.g. `phone-1`.
    pub name: String,
    /// Which backend runs it.
    pub backend: Backend,
    /// Running or stopped, as the operator last asked.
    pub desired: DesiredState,
    /// Screen width in pixels.
    pub width: u32,
    /// Screen height in pixels.
    pub height: u32,
    /// Screen density in dpi.
    pub dpi: u32,
    /// The AVD name, for emulator phones.
    pub avd: Option<String>,
    /// When it was created.
    pub created_at_ms: i64,
}

/// Whether a handset may connect.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum HandsetState {
    /// Enrolled and allowed.
    Enrolled,
    /// Revoked by the operator.
    Revoked,
}

/// Which phones a handset may use. "Every phone" is an explicit grant,
/// never what an empty list means: deleting a phone only ever narrows.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum PhoneGrant {
    /// Every phone on the host, present and future.
    All,
    /// These phones (possibly none, once they were deleted).
    Only(Vec<String>),
}

impl PhoneGrant {
    /// Whether the grant covers `phone`.
    #[must_use]
    pub fn allows(&self, phone: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|p| p == phone),
        }
    }

    /// The named phones (empty for [`PhoneGrant::All`]).
    #[must_use]
    pub fn named(&self) -> &[String] {
        match self {
            Self::All => &[],
            Self::Only(list) => list,
        }
    }

    /// Whether this is the explicit every-phone grant.
    #[must_use]
    pub fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }

    /// What the grant means, for people: "every phone (present and
    /// future)", "phone-1, lab", or "no phone".
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::All => "every phone on this host, present and future".to_owned(),
            Self::Only(list) if list.is_empty() => "no phone".to_owned(),
            Self::Only(list) => list.join(", "),
        }
    }

    fn from_row(all: bool, phones: &str) -> Self {
        if all {
            Self::All
        } else {
            Self::Only(split(phones))
        }
    }
}

/// A handset as recorded.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct HandsetRecord {
    /// Hex SHA-256 fingerprint of its certificate's public key.
    pub fingerprint: String,
    /// A name for people.
    pub name: String,
    /// Enrolled or revoked.
    pub state: HandsetState,
    /// Phones it may attach to.
    pub grant: PhoneGrant,
    /// When it enrolled.
    pub enrolled_at_ms: i64,
    /// When it last connected.
    pub last_seen_ms: Option<i64>,
}

impl HandsetRecord {
    /// Whether this handset may attach to `phone`.
    pub fn may_use(&self, phone: &str) -> bool {
        self.state == HandsetState::Enrolled && self.grant.allows(phone)
    }
}

/// An enrollment token as recorded (the secret itself is never stored).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TokenRecord {
    /// The token's public id.
    pub id: String,
    /// The name the enrolled handset will get.
    pub name: Option<String>,
    /// Phones the handset will be allowed.
    pub grant: PhoneGrant,
    /// When it stops being valid.
    pub expires_at_ms: i64,
    /// When it was used, if it was.
    pub used_at_ms: Option<i64>,
}

/// A session in the audit log.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// Handset fingerprint.
    pub fingerprint: String,
    /// Phone name.
    pub phone: String,
    /// Remote address at start.
    pub remote: Option<String>,
    /// Start time.
    pub started_at_ms: i64,
    /// End time, once ended.
    pub ended_at_ms: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

/// `name`, or `name-2`, `name-3`, ... when another enrolled handset is
/// already called that: handsets that name themselves (every companion on
/// one machine defaults to its host name) stay apart in lists, audits and
/// `handset revoke NAME`. A name the operator chose is kept as given.
fn unique_handset_name(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    fingerprint: &str,
) -> Result<String, HostError> {
    let taken = |n: &str| -> Result<bool, HostError> {
        Ok(tx
            .query_row(
                "SELECT 1 FROM handsets WHERE name = ?1 AND fingerprint <> ?2 AND state = 'enrolled'",
                params![n, fingerprint],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    };
    if !taken(name)? {
        return Ok(name.to_owned());
    }
    for i in 2..=10_000u32 {
        let suffix = format!("-{i}");
        // Room for the suffix within the 64-character limit.
        let keep = sensor_proto::names::MAX_HANDSET_NAME - suffix.len();
        let base: String = name.chars().take(keep).collect();
        let candidate = format!("{}{suffix}", base.trim_end());
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(HostError::Invalid {
        what: "handset name",
        why: format!("10000 enrolled handsets are already called '{name}'"),
    })
}

/// Whether `path` (or, if it does not exist, its directory) is on a
/// filesystem mounted read-only.
fn on_read_only_fs(path: &Path) -> bool {
    let probe = if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        tempfile_in(dir)
    };
    matches!(probe, Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem)
}

/// Creates and removes an empty file in `dir`.
fn tempfile_in(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".vphone-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Checks a phone or handset name: 1-63 characters of `a-z A-Z 0-9 - _ .`,
/// starting with a letter or digit.
///
/// # Errors
/// [`HostError::Invalid`] saying what is wrong.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), HostError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let why = if name.is_empty() || name.len() > 63 {
        "must be 1 to 63 characters"
    } else if !name.chars().all(ok_char) {
        "may only contain letters, digits, '-', '_' and '.'"
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "must start with a letter or digit"
    } else {
        return Ok(());
    };
    Err(HostError::Invalid {
        what,
        why: format!("{name:?} {why}"),
    })
}

fn join(list: &[String]) -> String {
    list.join("\n")
}

fn split(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How much of the session audit the registry keeps: ended sessions beyond
/// the newest `keep`, or started more than `max_age_ms` ago, are deleted
/// when a session starts. Open sessions are always kept.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SessionRetention {
    /// The most sessions kept.
    pub keep: usize,
    /// The oldest start kept, in ms before now.
    pub max_age_ms: i64,
}

impl Default for SessionRetention {
    /// 10 000 sessions, 90 days.
    fn default() -> Self {
        Self {
            keep: 10_000,
            max_age_ms: 90 * 24 * 3600 * 1000,
        }
    }
}

/// The registry. Cheap to share behind an `Arc`; every call takes a short lock.
#[derive(Debug)]
pub struct Registry {
    conn: Mutex<Connection>,
    retention: SessionRetention,
}

impl Registry {
    /// Opens (creating and migrating as needed) the registry at `path`.
    ///
    /// # Errors
    /// [`HostError::Registry`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let open = || -> Result<Self, HostError> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Self::init(conn)
        };
        // SQLite says only "unable to open database file" on a read-only
        // filesystem: find out, and say what it is.
        open().map_err(|e| match e {
            HostError::Registry(err) if on_read_only_fs(path) => HostError::StorageReadOnly(err),
            other => other,
        })
    }

    /// An in-memory registry (tests).
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn open_in_memory() -> Result<Self, HostError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, HostError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(HostError::Internal {
                what: "registry",
                why: format!(
                    "schema version {version} is newer than this vphone-host understands ({}); upgrade vphone-host",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            retention: SessionRetention::default(),
        })
    }

    /// Sets how much of the session audit is kept (the default:
    /// [`SessionRetention::default`]).
    #[must_use]
    pub fn with_session_retention(mut self, retention: SessionRetention) -> Self {
        self.retention = retention;
        self
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn schema_version(&self) -> Result<usize, HostError> {
        let v: i64 = self
            .db()
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    // ---- phones -------------------------------------------------------

    /// Records a new phone.
    ///
    /// # Errors
    /// [`HostError::AlreadyExists`] for a duplicate name, [`HostError::Invalid`]
    /// for a bad name.
    pub fn insert_phone(&self, p: &PhoneRecord) -> Result<(), HostError> {
        validate_name("phone name", &p.name)?;
        let res = self.db().execute(
            "INSERT INTO phones (name, backend, desired_state, width, height, dpi, avd, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p.name,
                p.backend.as_str(),
                p.desired.as_str(),
                p.width,
                p.height,
                p.dpi,
                p.avd,
                p.created_at_ms
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(HostError::AlreadyExists {
                    kind: "phone",
                    name: p.name.clone(),
                })
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    fn phone_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(PhoneRecord, String)> {
        let backend: String = r.get(1)?;
        let desired: String = r.get(2)?;
        Ok((
            PhoneRecord {
                name: r.get(0)?,
                backend: Backend::Sim,
                desired: DesiredState::parse(&desired),
                width: r.get(3)?,
                height: r.get(4)?,
                dpi: r.get(5)?,
                avd: r.get(6)?,
                created_at_ms: r.get(7)?,
            },
            backend,
        ))
    }

    fn finish_phone((mut p, backend): (PhoneRecord, String)) -> Result<PhoneRecord, HostError> {
        p.backend = backend.parse()?;
        Ok(p)
    }

    /// Every phone, by name.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn phones(&self) -> Result<Vec<PhoneRecord>, HostError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT name, backend, desired_state, width, height, dpi, avd, created_at_ms
             FROM phones ORDER BY name",
        )?;
        let rows = st.query_map([], Self::phone_from_row)?;
        rows.map(|r| Self::finish_phone(r?)).collect()
    }

    /// One phone.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn phone(&self, name: &str) -> Result<PhoneRecord, HostError> {
        let row = self
            .db()
            .query_row(
                "SELECT name, backend, desired_state, width, height, dpi, avd, created_at_ms
                 FROM phones WHERE name = ?1",
                [name],
                Self::phone_from_row,
            )
            .optional()?;
        match row {
            Some(r) => Self::finish_phone(r),
            None => Err(HostError::NotFound {
                kind: "phone",
                name: name.to_owned(),
            }),
        }
    }

    /// Records what the operator wants a phone to be doing.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn set_desired_state(&self, name: &str, desired: DesiredState) -> Result<(), HostError> {
        let n = self.db().execute(
            "UPDATE phones SET desired_state = ?2 WHERE name = ?1",
            params![name, desired.as_str()],
        )?;
        if n == 0 {
            return Err(HostError::NotFound {
                kind: "phone",
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Deletes a phone and every handset permission naming it.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn delete_phone(&self, name: &str) -> Result<(), HostError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute("DELETE FROM phones WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM handset_phones WHERE phone = ?1", [name])?;
        tx.commit()?;
        if n == 0 {
            return Err(HostError::NotFound {
                kind: "phone",
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    // ---- enrollment and handsets ---------------------------------------

    /// Records a freshly minted enrollment token.
    ///
    /// # Errors
    /// [`HostError::Registry`], [`HostError::Invalid`] for bad phone names.
    pub fn insert_token(&self, t: &TokenRecord, now_ms: i64) -> Result<(), HostError> {
        for p in t.grant.named() {
            validate_name("phone name", p)?;
        }
        self.db().execute(
            "INSERT INTO enrollment_tokens (id, name, phones, all_phones, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.id,
                t.name,
                join(t.grant.named()),
                t.grant.is_all(),
                now_ms,
                t.expires_at_ms
            ],
        )?;
        Ok(())
    }

    /// Uses a token once to enroll the handset `fingerprint`, atomically: the
    /// token is marked used and the handset recorded in one transaction.
    ///
    /// # Errors
    /// [`HostError::Token`] for an unknown, used or expired token.
    pub fn enroll_with_token(
        &self,
        token_id: &str,
        fingerprint: &str,
        handset_name: &str,
        now_ms: i64,
    ) -> Result<HandsetRecord, HostError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        // name, phones, all_phones, expires_at_ms, used_at_ms
        type TokenRow = (Option<String>, String, bool, i64, Option<i64>);
        let row: Option<TokenRow> = tx
            .query_row(
                "SELECT name, phones, all_phones, expires_at_ms, used_at_ms FROM enrollment_tokens WHERE id = ?1",
                [token_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((name, phones, all, expires, used)) = row else {
            return Err(HostError::Token("is unknown to this host"));
        };
        if used.is_some() {
            return Err(HostError::Token("was already used"));
        }
        if now_ms >= expires {
            return Err(HostError::Token("has expired"));
        }
        let name = match name {
            Some(n) => n,
            None => {
                sensor_proto::names::check_handset_name(handset_name).map_err(|e| {
                    HostError::Invalid {
                        what: "handset name",
                        why: match e {
                            sensor_proto::ProtoError::BadName(why) => why.to_owned(),
                            other => other.to_string(),
                        },
                    }
                })?;
                unique_handset_name(&tx, handset_name, fingerprint)?
            }
        };
        let grant = PhoneGrant::from_row(all, &phones);
        tx.execute(
            "UPDATE enrollment_tokens SET used_at_ms = ?2, used_by = ?3 WHERE id = ?1",
            params![token_id, now_ms, fingerprint],
        )?;
        tx.execute(
            "INSERT INTO handsets (fingerprint, name, state, enrolled_at_ms, all_phones) VALUES (?1, ?2, 'enrolled', ?3, ?4)
             ON CONFLICT(fingerprint) DO UPDATE SET name = ?2, state = 'enrolled', enrolled_at_ms = ?3, revoked_at_ms = NULL, all_phones = ?4",
            params![fingerprint, name, now_ms, grant.is_all()],
        )?;
        tx.execute(
            "DELETE FROM handset_phones WHERE fingerprint = ?1",
            [fingerprint],
        )?;
        for p in grant.named() {
            tx.execute(
                "INSERT INTO handset_phones (fingerprint, phone) VALUES (?1, ?2)",
                params![fingerprint, p],
            )?;
        }
        tx.commit()?;
        Ok(HandsetRecord {
            fingerprint: fingerprint.to_owned(),
            name,
            state: HandsetState::Enrolled,
            grant,
            enrolled_at_ms: now_ms,
            last_seen_ms: None,
        })
    }

    /// One handset by fingerprint, or `None` if it never enrolled.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    ///
    /// One primary-key look-up: this runs for every connection attempt,
    /// before the handset is known, so it must not scan the table.
    pub fn handset(&self, fingerprint: &str) -> Result<Option<HandsetRecord>, HostError> {
        Ok(self
            .query_handsets("WHERE h.fingerprint = ?1", [fingerprint])?
            .pop())
    }

    /// Every handset.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn handsets(&self) -> Result<Vec<HandsetRecord>, HostError> {
        self.query_handsets("ORDER BY h.name, h.fingerprint", [])
    }

    fn query_handsets(
        &self,
        rest: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<HandsetRecord>, HostError> {
        let db = self.db();
        let mut st = db.prepare_cached(&format!(
            "SELECT h.fingerprint, h.name, h.state, h.enrolled_at_ms, h.last_seen_ms,
                    COALESCE((SELECT group_concat(phone, char(10)) FROM handset_phones p
                              WHERE p.fingerprint = h.fingerprint), ''),
                    h.all_phones
             FROM handsets h {rest}"
        ))?;
        let rows = st.query_map(params, |r| {
            let state: String = r.get(2)?;
            let phones: String = r.get(5)?;
            Ok(HandsetRecord {
                fingerprint: r.get(0)?,
                name: r.get(1)?,
                state: if state == "revoked" {
                    HandsetState::Revoked
                } else {
                    HandsetState::Enrolled
                },
                enrolled_at_ms: r.get(3)?,
                last_seen_ms: r.get(4)?,
                grant: PhoneGrant::from_row(r.get(6)?, &phones),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a handset, found by its exact fingerprint first, then by a
    /// unique fingerprint prefix (6 characters or more), then by name.
    /// Returns the revoked record.
    ///
    /// The exact fingerprint always wins, so no other handset (say, one
    /// named after it) can make a handset impossible to revoke.
    ///
    /// # Errors
    /// [`HostError::NotFound`], or [`HostError::Invalid`] when ambiguous.
    pub fn revoke_handset(&self, who: &str, now_ms: i64) -> Result<HandsetRecord, HostError> {
        let all = self.handsets()?;
        let exact: Vec<_> = all
            .iter()
            .filter(|h| h.fingerprint == who)
            .cloned()
            .collect();
        let prefix: Vec<_> = all
            .iter()
            .filter(|h| who.len() >= 6 && h.fingerprint.starts_with(who))
            .cloned()
            .collect();
        let hits = if !exact.is_empty() {
            exact
        } else if !prefix.is_empty() {
            prefix
        } else {
            all.into_iter().filter(|h| h.name == who).collect()
        };
        let mut h = match hits.len() {
            0 => {
                return Err(HostError::NotFound {
                    kind: "handset",
                    name: who.to_owned(),
                });
            }
            1 => hits.into_iter().next().ok_or(HostError::NotFound {
                kind: "handset",
                name: who.to_owned(),
            })?,
            n => {
                return Err(HostError::Invalid {
                    what: "handset",
                    why: format!("{who:?} matches {n} handsets; give the fingerprint"),
                });
            }
        };
        self.db().execute(
            "UPDATE handsets SET state = 'revoked', revoked_at_ms = ?2 WHERE fingerprint = ?1",
            params![h.fingerprint, now_ms],
        )?;
        h.state = HandsetState::Revoked;
        Ok(h)
    }

    /// Notes that a handset connected.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn touch_handset(&self, fingerprint: &str, now_ms: i64) -> Result<(), HostError> {
        self.db().execute(
            "UPDATE handsets SET last_seen_ms = ?2 WHERE fingerprint = ?1",
            params![fingerprint, now_ms],
        )?;
        Ok(())
    }

    // ---- session audit -------------------------------------------------

    /// Records a session's start, and applies the [`SessionRetention`] to
    /// the ended ones (in the same transaction), so the audit stays bounded
    /// however many sessions come and go.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn session_started(&self, s: &SessionRecord) -> Result<(), HostError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO sessions (id, fingerprint, phone, remote, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.id, s.fingerprint, s.phone, s.remote, s.started_at_ms],
        )?;
        let SessionRetention { keep, max_age_ms } = self.retention;
        let pruned = tx.execute(
            "DELETE FROM sessions WHERE ended_at_ms IS NOT NULL AND (started_at_ms < ?1
                OR id IN (SELECT id FROM sessions ORDER BY started_at_ms DESC, id LIMIT -1 OFFSET ?2))",
            params![
                s.started_at_ms.saturating_sub(max_age_ms),
                i64::try_from(keep).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
        if pruned > 0 {
            tracing::debug!(pruned, "session audit: old sessions deleted");
        }
        Ok(())
    }

    /// Records a session's end.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn session_ended(&self, id: &str, reason: &str, now_ms: i64) -> Result<(), HostError> {
        self.db().execute(
            "UPDATE sessions SET ended_at_ms = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at_ms IS NULL",
            params![id, now_ms, reason],
        )?;
        Ok(())
    }

    /// Marks every session still open as ended (after a host restart).
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn close_dangling_sessions(&self, reason: &str, now_ms: i64) -> Result<usize, HostError> {
        Ok(self.db().execute(
            "UPDATE sessions SET ended_at_ms = ?1, end_reason = ?2 WHERE ended_at_ms IS NULL",
            params![now_ms, reason],
        )?)
    }

    /// The most recent sessions, newest first.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn sessions(&self, limit: usize) -> Result<Vec<SessionRecord>, HostError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, fingerprint, phone, remote, started_at_ms, ended_at_ms, end_reason
             FROM sessions ORDER BY started_at_ms DESC, id LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(SessionRecord {
                id: r.get(0)?,
                fingerprint: r.get(1)?,
                phone: r.get(2)?,
                remote: r.get(3)?,
                started_at_ms: r.get(4)?,
                ended_at_ms: r.get(5)?,
                end_reason: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(name: &str) -> PhoneRecord {
        PhoneRecord {
            name: name.to_owned(),
            backend: Backend::Sim,
            desired: DesiredState::Running,
            width: 720,
            height: 1280,
            dpi: 320,
            avd: None,
            created_at_ms: 1,
        }
    }

    fn token(id: &str, expires: i64, grant: PhoneGrant) -> TokenRecord {
        TokenRecord {
            id: id.to_owned(),
            name: Some("pixel".to_owned()),
            grant,
            expires_at_ms: expires,
            used_at_ms: None,
        }
    }

    fn only(phones: &[&str]) -> PhoneGrant {
        PhoneGrant::Only(phones.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn deleting_a_phone_never_widens_a_handsets_grant() {
        let r = Registry::open_in_memory().unwrap();
        r.insert_phone(&phone("phone-1")).unwrap();
        r.insert_phone(&phone("lab")).unwrap();
        r.insert_token(&token("t1", 1000, only(&["lab"])), 0)
            .unwrap();
        r.enroll_with_token("t1", "aa11", "h", 1).unwrap();
        assert!(r.handset("aa11").unwrap().unwrap().may_use("lab"));
        r.delete_phone("lab").unwrap();
        let h = r.handset("aa11").unwrap().unwrap();
        assert_eq!(h.grant, only(&[]));
        assert_eq!(h.grant.describe(), "no phone");
        for phone in ["phone-1", "lab", "future"] {
            assert!(!h.may_use(phone), "{phone} must stay out of reach");
        }
        // Every phone only when granted so, explicitly.
        r.insert_token(&token("t2", 1000, PhoneGrant::All), 0)
            .unwrap();
        let all = r.enroll_with_token("t2", "bb22", "h2", 1).unwrap();
        assert!(all.may_use("future"));
        assert_eq!(
            r.handset("bb22").unwrap().unwrap().grant,
            PhoneGrant::All,
            "stored"
        );
    }

    #[test]
    fn the_grant_migration_keeps_every_phone_only_where_it_was_granted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite3");
        {
            // A version-1 registry: `aa` enrolled for every phone, `bb` for
            // `lab`, which was then deleted (its list is empty).
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO enrollment_tokens (id, name, phones, created_at_ms, expires_at_ms, used_at_ms, used_by)
                   VALUES ('t1', NULL, '', 0, 9, 1, 'aa'), ('t2', NULL, 'lab', 0, 9, 1, 'bb'),
                          ('t3', NULL, '', 0, 9, NULL, NULL);
                 INSERT INTO handsets (fingerprint, name, state, enrolled_at_ms)
                   VALUES ('aa', 'a', 'enrolled', 1), ('bb', 'b', 'enrolled', 1);",
            )
            .unwrap();
        }
        let r = Registry::open(&path).unwrap();
        assert_eq!(r.handset("aa").unwrap().unwrap().grant, PhoneGrant::All);
        assert_eq!(r.handset("bb").unwrap().unwrap().grant, only(&[]));
        // An unused token that granted every phone still does.
        let h = r.enroll_with_token("t3", "cc", "c", 2).unwrap();
        assert_eq!(h.grant, PhoneGrant::All);
    }

    #[test]
    fn phones_round_trip_and_duplicates_are_refused() {
        let r = Registry::open_in_memory().unwrap();
        r.insert_phone(&phone("phone-1")).unwrap();
        let e = r.insert_phone(&phone("phone-1")).unwrap_err();
        assert_eq!(e.to_string(), "phone 'phone-1' already exists");
        r.set_desired_state("phone-1", DesiredState::Stopped)
            .unwrap();
        assert_eq!(r.phone("phone-1").unwrap().desired, DesiredState::Stopped);
        assert_eq!(r.phones().unwrap().len(), 1);
        assert_eq!(
            r.phone("nope").unwrap_err().to_string(),
            "phone 'nope' not found"
        );
        r.delete_phone("phone-1").unwrap();
        assert!(r.delete_phone("phone-1").is_err());
    }

    #[test]
    fn bad_names_are_explained() {
        let r = Registry::open_in_memory().unwrap();
        for bad in ["", "has space", "-lead", "a/b", &"x".repeat(64)] {
            let e = r.insert_phone(&phone(bad)).unwrap_err().to_string();
            assert!(e.starts_with("invalid phone name"), "{e}");
        }
    }

    #[test]
    fn handsets_naming_themselves_alike_get_distinct_names() {
        let r = Registry::open_in_memory().unwrap();
        for (i, id) in ["t1", "t2", "t3", "t4"].into_iter().enumerate() {
            let mut t = token(id, 1000, only(&["phone-1"]));
            t.name = (i == 3).then(|| "laptop".to_owned());
            r.insert_token(&t, 0).unwrap();
        }
        let names: Vec<String> = [("t1", "aa"), ("t2", "bb"), ("t3", "cc")]
            .into_iter()
            .map(|(t, fp)| r.enroll_with_token(t, fp, "laptop", 1).unwrap().name)
            .collect();
        assert_eq!(names, ["laptop", "laptop-2", "laptop-3"]);
        // The operator's choice is kept as given.
        assert_eq!(
            r.enroll_with_token("t4", "dd", "x", 1).unwrap().name,
            "laptop"
        );
        // A 64-character name keeps its suffix within the limit.
        let long = "n".repeat(64);
        for (id, fp) in [("t5", "ee"), ("t6", "ff")] {
            let mut t = token(id, 1000, only(&["phone-1"]));
            t.name = None;
            r.insert_token(&t, 0).unwrap();
            let n = r.enroll_with_token(id, fp, &long, 1).unwrap().name;
            assert!(n.chars().count() <= 64, "{n}");
        }
        assert!(
            r.handsets()
                .unwrap()
                .iter()
                .any(|h| h.name.ends_with("n-2"))
        );
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let r = Registry::open_in_memory().unwrap();
        r.insert_token(&token("t1", 1000, only(&["phone-1"])), 0)
            .unwrap();
        r.insert_token(&token("t2", 1000, PhoneGrant::All), 0)
            .unwrap();
        let h = r.enroll_with_token("t1", "aa11", "handset", 10).unwrap();
        assert_eq!(h.name, "pixel");
        assert!(h.may_use("phone-1"));
        assert!(!h.may_use("phone-2"));
        let e = r.enroll_with_token("t1", "bb22", "other", 20).unwrap_err();
        assert_eq!(e.to_string(), "enrollment token was already used");
        let e = r
            .enroll_with_token("t2", "bb22", "other", 1000)
            .unwrap_err();
        assert_eq!(e.to_string(), "enrollment token has expired");
        let e = r.enroll_with_token("t3", "bb22", "other", 0).unwrap_err();
        assert_eq!(e.to_string(), "enrollment token is unknown to this host");
        // No handset was recorded by the failed attempts.
        assert_eq!(r.handsets().unwrap().len(), 1);
    }

    #[test]
    fn revoke_by_name_or_fingerprint_prefix() {
        let r = Registry::open_in_memory().unwrap();
        r.insert_token(&token("t1", 1000, PhoneGrant::All), 0)
            .unwrap();
        r.enroll_with_token("t1", "abcdef0123", "h", 1).unwrap();
        assert!(r.handset("abcdef0123").unwrap().unwrap().may_use("any"));
        assert!(r.revoke_handset("abc", 2).is_err(), "prefix too short");
        let h = r.revoke_handset("abcdef", 2).unwrap();
        assert_eq!(h.state, HandsetState::Revoked);
        assert!(!r.handset("abcdef0123").unwrap().unwrap().may_use("any"));
        assert!(matches!(
            r.revoke_handset("ghost", 3),
            Err(HostError::NotFound { .. })
        ));
    }

    #[test]
    fn survives_reopen_and_records_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite3");
        {
            let r = Registry::open(&path).unwrap();
            r.insert_phone(&phone("phone-1")).unwrap();
            r.session_started(&SessionRecord {
                id: "s1".into(),
                fingerprint: "aa".into(),
                phone: "phone-1".into(),
                remote: Some("127.0.0.1:5".into()),
                started_at_ms: 5,
                ended_at_ms: None,
                end_reason: None,
            })
            .unwrap();
        }
        let r = Registry::open(&path).unwrap();
        assert_eq!(r.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(r.phone("phone-1").unwrap().width, 720);
        assert_eq!(r.close_dangling_sessions("host restarted", 9).unwrap(), 1);
        let s = &r.sessions(10).unwrap()[0];
        assert_eq!(s.end_reason.as_deref(), Some("host restarted"));
    }

    #[test]
    fn a_newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Registry::open(&path).unwrap_err().to_string();
        assert!(e.contains("upgrade vphone-host"), "{e}");
    }

    #[test]
    fn the_session_audit_keeps_what_its_retention_says() {
        let r = Registry::open_in_memory()
            .unwrap()
            .with_session_retention(SessionRetention {
                keep: 5,
                max_age_ms: 1_000_000,
            });
        let session = |i: i64| SessionRecord {
            id: format!("s{i:03}"),
            fingerprint: "aa".into(),
            phone: "phone-1".into(),
            remote: None,
            started_at_ms: i * 10,
            ended_at_ms: None,
            end_reason: None,
        };
        // s000 stays open throughout: an open session is never deleted.
        r.session_started(&session(0)).unwrap();
        for i in 1..=50 {
            r.session_started(&session(i)).unwrap();
            r.session_ended(&format!("s{i:03}"), "done", i * 10 + 5)
                .unwrap();
        }
        let ids: Vec<String> = r.sessions(100).unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["s050", "s049", "s048", "s047", "s046", "s000"]);
        // Age: a session starting much later leaves only the open one and itself.
        r.session_started(&session(200_000)).unwrap();
        let ids: Vec<String> = r.sessions(100).unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["s200000", "s000"]);
        // The default keeps 10 000 sessions for 90 days.
        assert_eq!(
            SessionRetention::default(),
            SessionRetention {
                keep: 10_000,
                max_age_ms: 7_776_000_000
            }
        );
    }
}
