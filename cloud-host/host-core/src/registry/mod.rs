//! The registry: phones, handsets, enrollment tokens, which handsets may
//! attach to which phones, an audit of sessions and, for a fleet, its hosts
//! and the leases under which they run phones.
//!
//! One host keeps it in SQLite in the data dir (`registry.sqlite3`, WAL mode
//! with `synchronous=NORMAL`: committed transactions survive a process
//! kill); a fleet shares one PostgreSQL database (`--registry
//! postgres://...`). Both run the same statements and the same numbered
//! migrations through sqlx's `Any` driver ([`db`]), so the schema is written
//! in the SQL both speak: `BIGINT` for every number, 0/1 for flags, `$N`
//! parameters. All times are Unix milliseconds.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::HostError;

pub mod db;
pub mod fleet;

pub use db::{DbKind, Target};
pub use fleet::{Claimable, HostRecord, Labels, Lease, LeaseState};

/// Ordered schema migrations; index + 1 is the schema version.
/// Ordered schema migrations; index + 1 is the schema version. Written in
/// the SQL SQLite and PostgreSQL share (SQLite registries made before
/// PostgreSQL said `INTEGER`, the same type there).
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE phones (
        name TEXT PRIMARY KEY,
        backend TEXT NOT NULL,
        desired_state TEXT NOT NULL,
        width BIGINT NOT NULL,
        height BIGINT NOT NULL,
        dpi BIGINT NOT NULL,
        avd TEXT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE handsets (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        enrolled_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT,
        last_seen_ms BIGINT
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
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        used_at_ms BIGINT,
        used_by TEXT
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        phone TEXT NOT NULL,
        remote TEXT,
        started_at_ms BIGINT NOT NULL,
        ended_at_ms BIGINT,
        end_reason TEXT
    );
    CREATE INDEX sessions_started ON sessions(started_at_ms);",
    // 2: "every phone" becomes an explicit grant. Before, an empty phone
    // list meant every phone, so deleting the only phone a handset was
    // limited to admitted it everywhere. A handset keeps "every phone" only
    // if the token it enrolled with granted that (an empty list there);
    // one whose list a deletion emptied now has no phone.
    "ALTER TABLE handsets ADD COLUMN all_phones BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE enrollment_tokens ADD COLUMN all_phones BIGINT NOT NULL DEFAULT 0;
    UPDATE enrollment_tokens SET all_phones = 1 WHERE phones = '';
    UPDATE handsets SET all_phones = 1 WHERE fingerprint IN
        (SELECT used_by FROM enrollment_tokens WHERE all_phones = 1 AND used_by IS NOT NULL);",
    // 3: a fleet. Hosts register themselves and run phones under leases: a
    // phone runs on at most one host, the one holding its unexpired lease;
    // the generation grows with every claim and fences every write a host
    // makes as the phone's holder. A phone may ask for hosts with labels
    // (`zone=a`) and be wanted on one host (`phone move`).
    "CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        addr TEXT NOT NULL,
        pin TEXT NOT NULL,
        capacity BIGINT NOT NULL,
        labels TEXT NOT NULL DEFAULT '',
        draining BIGINT NOT NULL DEFAULT 0,
        stopped BIGINT NOT NULL DEFAULT 0,
        sessions BIGINT NOT NULL DEFAULT 0,
        started_at_ms BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
    CREATE TABLE leases (
        phone TEXT PRIMARY KEY REFERENCES phones(name) ON DELETE CASCADE,
        host TEXT NOT NULL,
        generation BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    CREATE INDEX leases_host ON leases(host);
    ALTER TABLE phones ADD COLUMN labels TEXT NOT NULL DEFAULT '';
    ALTER TABLE phones ADD COLUMN wanted_host TEXT;",
    // 4: which host served a session, so a restarting host closes only
    // its own sessions left open in a shared registry.
    "ALTER TABLE sessions ADD COLUMN host TEXT;",
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

impl PhoneRecord {
    /// A sim phone at the default display (720x1280, 320 dpi), wanted
    /// running: the phone tests and benchmarks put in a registry.
    #[must_use]
    pub fn sim(name: impl Into<String>, created_at_ms: i64) -> Self {
        let (width, height, dpi) = crate::phones::DEFAULT_DISPLAY;
        Self {
            name: name.into(),
            backend: Backend::Sim,
            desired: DesiredState::Running,
            width,
            height,
            dpi,
            avd: None,
            created_at_ms,
        }
    }
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
async fn unique_handset_name(
    tx: &mut sqlx::AnyConnection,
    name: &str,
    fingerprint: &str,
) -> Result<String, HostError> {
    async fn taken(
        tx: &mut sqlx::AnyConnection,
        name: &str,
        fingerprint: &str,
    ) -> Result<bool, HostError> {
        Ok(sqlx::query(
            "SELECT 1 FROM handsets WHERE name = $1 AND fingerprint <> $2 AND state = 'enrolled'",
        )
        .bind(name.to_owned())
        .bind(fingerprint.to_owned())
        .fetch_optional(&mut *tx)
        .await?
        .is_some())
    }
    if !taken(tx, name, fingerprint).await? {
        return Ok(name.to_owned());
    }
    for i in 2..=10_000u32 {
        let suffix = format!("-{i}");
        // Room for the suffix within the 64-character limit.
        let keep = sensor_proto::names::MAX_HANDSET_NAME - suffix.len();
        let base: String = name.chars().take(keep).collect();
        let candidate = format!("{}{suffix}", base.trim_end());
        if !taken(tx, &candidate, fingerprint).await? {
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

/// The registry. Cheap to share behind an `Arc`; every call is one short
/// statement or transaction on the registry's thread ([`db`]).
#[derive(Debug)]
pub struct Registry {
    db: db::Db,
    target: Target,
    retention: SessionRetention,
    /// The host whose sessions this handle records.
    owner: Option<String>,
}

/// A number read from a row as `u32` (0 if out of range, never the case
/// for what the registry writes).
fn u32_at(r: &AnyRow, i: usize) -> Result<u32, HostError> {
    Ok(u32::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
}

/// A 0/1 flag read from a row.
fn flag_at(r: &AnyRow, i: usize) -> Result<bool, HostError> {
    Ok(r.try_get::<i64, _>(i)? != 0)
}

impl Registry {
    /// Opens (creating and migrating as needed) the SQLite registry at
    /// `path`.
    ///
    /// # Errors
    /// [`HostError::Registry`] when the file cannot be opened or migrated;
    /// [`HostError::StorageReadOnly`] on a read-only filesystem.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        Self::connect(&Target::Sqlite(path.to_owned())).map_err(|e| match e {
            // SQLite says only "unable to open database file" on a read-only
            // filesystem: find out, and say what it is.
            HostError::Registry(err) if on_read_only_fs(path) => HostError::StorageReadOnly(err),
            other => other,
        })
    }

    /// An in-memory SQLite registry (tests).
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn open_in_memory() -> Result<Self, HostError> {
        Self::connect(&Target::Memory)
    }

    /// Opens the registry at `target`, an SQLite file or a PostgreSQL
    /// database, creating and migrating its schema as needed (hosts of a
    /// fleet starting together migrate one at a time).
    ///
    /// # Errors
    /// [`HostError::Unavailable`] when a PostgreSQL server cannot be
    /// reached, [`HostError::Registry`] when the schema cannot be migrated,
    /// [`HostError::Internal`] when it is newer than this build.
    pub fn connect(target: &Target) -> Result<Self, HostError> {
        Ok(Self {
            db: db::Db::open(target, MIGRATIONS)?,
            target: target.clone(),
            retention: SessionRetention::default(),
            owner: None,
        })
    }

    /// Records sessions as served by host `name` (a fleet's registry is
    /// shared: a restarting host closes only its own).
    #[must_use]
    pub fn with_owner(mut self, name: &str) -> Self {
        self.owner = Some(name.to_owned());
        self
    }

    /// Sets the longest one call waits for the database (default
    /// [`db::CALL_TIMEOUT`]): a host of a fleet bounds it by its lease, so
    /// no call can hold the phone actor past its renewal deadline.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.db.set_timeout(timeout);
        self
    }

    /// Sets how much of the session audit is kept (the default:
    /// [`SessionRetention::default`]).
    #[must_use]
    pub fn with_session_retention(mut self, retention: SessionRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Where the registry lives (for logs: a PostgreSQL URL without its
    /// password).
    #[must_use]
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// The database engine.
    #[must_use]
    pub fn kind(&self) -> DbKind {
        self.db.kind()
    }

    /// Runs `f` on the registry's thread (see [`db::Db::run`]).
    fn run<T, F, Fut>(&self, f: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, HostError>> + Send + 'static,
    {
        self.db.run(f)
    }

    /// The schema version.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn schema_version(&self) -> Result<usize, HostError> {
        self.run(async |pool| {
            let v: i64 = sqlx::query("SELECT version FROM vphone_schema WHERE id = 1")
                .fetch_one(&pool)
                .await?
                .try_get(0)?;
            Ok(usize::try_from(v).unwrap_or(0))
        })
    }

    // ---- phones -------------------------------------------------------

    /// Records a new phone.
    ///
    /// # Errors
    /// [`HostError::AlreadyExists`] for a duplicate name, [`HostError::Invalid`]
    /// for a bad name.
    pub fn insert_phone(&self, p: &PhoneRecord) -> Result<(), HostError> {
        validate_name("phone name", &p.name)?;
        let p = p.clone();
        self.run(async move |pool| {
            let res = sqlx::query(
                "INSERT INTO phones (name, backend, desired_state, width, height, dpi, avd, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(p.name.clone())
            .bind(p.backend.as_str())
            .bind(p.desired.as_str())
            .bind(i64::from(p.width))
            .bind(i64::from(p.height))
            .bind(i64::from(p.dpi))
            .bind(p.avd.clone())
            .bind(p.created_at_ms)
            .execute(&pool)
            .await;
            match res {
                Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                    Err(HostError::AlreadyExists {
                        kind: "phone",
                        name: p.name,
                    })
                }
                other => other.map(drop).map_err(Into::into),
            }
        })
    }

    fn phone_from_row(r: &AnyRow) -> Result<PhoneRecord, HostError> {
        let backend: String = r.try_get(1)?;
        let desired: String = r.try_get(2)?;
        Ok(PhoneRecord {
            name: r.try_get(0)?,
            backend: backend.parse()?,
            desired: DesiredState::parse(&desired),
            width: u32_at(r, 3)?,
            height: u32_at(r, 4)?,
            dpi: u32_at(r, 5)?,
            avd: r.try_get(6)?,
            created_at_ms: r.try_get(7)?,
        })
    }

    /// Every phone, by name.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn phones(&self) -> Result<Vec<PhoneRecord>, HostError> {
        self.run(async |pool| {
            sqlx::query(
                "SELECT name, backend, desired_state, width, height, dpi, avd, created_at_ms
                 FROM phones ORDER BY name",
            )
            .fetch_all(&pool)
            .await?
            .iter()
            .map(Self::phone_from_row)
            .collect()
        })
    }

    /// One phone.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn phone(&self, name: &str) -> Result<PhoneRecord, HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let row = sqlx::query(
                "SELECT name, backend, desired_state, width, height, dpi, avd, created_at_ms
                 FROM phones WHERE name = $1",
            )
            .bind(name.clone())
            .fetch_optional(&pool)
            .await?;
            match row {
                Some(r) => Self::phone_from_row(&r),
                None => Err(HostError::NotFound {
                    kind: "phone",
                    name,
                }),
            }
        })
    }

    /// Records what the operator wants a phone to be doing.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn set_desired_state(&self, name: &str, desired: DesiredState) -> Result<(), HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let n = sqlx::query("UPDATE phones SET desired_state = $2 WHERE name = $1")
                .bind(name.clone())
                .bind(desired.as_str())
                .execute(&pool)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(HostError::NotFound {
                    kind: "phone",
                    name,
                });
            }
            Ok(())
        })
    }

    /// Deletes a phone and every handset permission naming it.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn delete_phone(&self, name: &str) -> Result<(), HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM phones WHERE name = $1")
                .bind(name.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM handset_phones WHERE phone = $1")
                .bind(name.clone())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if n == 0 {
                return Err(HostError::NotFound {
                    kind: "phone",
                    name,
                });
            }
            Ok(())
        })
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
        let t = t.clone();
        self.run(async move |pool| {
            sqlx::query(
                "INSERT INTO enrollment_tokens (id, name, phones, all_phones, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(t.id)
            .bind(t.name)
            .bind(join(t.grant.named()))
            .bind(i64::from(t.grant.is_all()))
            .bind(now_ms)
            .bind(t.expires_at_ms)
            .execute(&pool)
            .await?;
            Ok(())
        })
    }

    /// Uses a token once to enroll the handset `fingerprint`, atomically: the
    /// token is marked used and the handset recorded in one transaction.
    /// The token is taken by a conditional update first, so of two hosts
    /// enrolling with one token at once exactly one succeeds.
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
        let (token_id, fingerprint, handset_name) = (
            token_id.to_owned(),
            fingerprint.to_owned(),
            handset_name.to_owned(),
        );
        self.run(async move |pool| {
            let mut tx = pool.begin().await?;
            let taken = sqlx::query(
                "UPDATE enrollment_tokens SET used_at_ms = $2, used_by = $3
                 WHERE id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
            )
            .bind(token_id.clone())
            .bind(now_ms)
            .bind(fingerprint.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row = sqlx::query(
                "SELECT name, phones, all_phones, expires_at_ms, used_by FROM enrollment_tokens WHERE id = $1",
            )
            .bind(token_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(HostError::Token("is unknown to this host"));
            };
            if taken == 0 {
                let expires: i64 = row.try_get(3)?;
                let used_by: Option<String> = row.try_get(4)?;
                return Err(if used_by.is_some() {
                    HostError::Token("was already used")
                } else if now_ms >= expires {
                    HostError::Token("has expired")
                } else {
                    HostError::Token("was already used")
                });
            }
            let name: Option<String> = row.try_get(0)?;
            let phones: String = row.try_get(1)?;
            let grant = PhoneGrant::from_row(flag_at(&row, 2)?, &phones);
            let name = match name {
                Some(n) => n,
                None => {
                    sensor_proto::names::check_handset_name(&handset_name).map_err(|e| {
                        HostError::Invalid {
                            what: "handset name",
                            why: match e {
                                sensor_proto::ProtoError::BadName(why) => why.to_owned(),
                                other => other.to_string(),
                            },
                        }
                    })?;
                    unique_handset_name(&mut tx, &handset_name, &fingerprint).await?
                }
            };
            sqlx::query(
                "INSERT INTO handsets (fingerprint, name, state, enrolled_at_ms, all_phones) VALUES ($1, $2, 'enrolled', $3, $4)
                 ON CONFLICT (fingerprint) DO UPDATE SET name = excluded.name, state = 'enrolled',
                    enrolled_at_ms = excluded.enrolled_at_ms, revoked_at_ms = NULL, all_phones = excluded.all_phones",
            )
            .bind(fingerprint.clone())
            .bind(name.clone())
            .bind(now_ms)
            .bind(i64::from(grant.is_all()))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM handset_phones WHERE fingerprint = $1")
                .bind(fingerprint.clone())
                .execute(&mut *tx)
                .await?;
            for p in grant.named() {
                sqlx::query("INSERT INTO handset_phones (fingerprint, phone) VALUES ($1, $2)")
                    .bind(fingerprint.clone())
                    .bind(p.clone())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(HandsetRecord {
                fingerprint,
                name,
                state: HandsetState::Enrolled,
                grant,
                enrolled_at_ms: now_ms,
                last_seen_ms: None,
            })
        })
    }

    /// One handset by fingerprint, or `None` if it never enrolled.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    ///
    /// Primary-key look-ups only: this runs for every connection attempt,
    /// before the handset is known, so it must not scan a table.
    pub fn handset(&self, fingerprint: &str) -> Result<Option<HandsetRecord>, HostError> {
        let fingerprint = fingerprint.to_owned();
        self.run(async move |pool| {
            let rows = sqlx::query(
                "SELECT fingerprint, name, state, enrolled_at_ms, last_seen_ms, all_phones
                 FROM handsets WHERE fingerprint = $1",
            )
            .bind(fingerprint.clone())
            .fetch_all(&pool)
            .await?;
            let phones = sqlx::query(
                "SELECT fingerprint, phone FROM handset_phones WHERE fingerprint = $1 ORDER BY phone",
            )
            .bind(fingerprint)
            .fetch_all(&pool)
            .await?;
            Ok(handsets_from_rows(&rows, &phones)?.pop())
        })
    }

    /// Every handset.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn handsets(&self) -> Result<Vec<HandsetRecord>, HostError> {
        self.run(async |pool| {
            let rows = sqlx::query(
                "SELECT fingerprint, name, state, enrolled_at_ms, last_seen_ms, all_phones
                 FROM handsets ORDER BY name, fingerprint",
            )
            .fetch_all(&pool)
            .await?;
            let phones =
                sqlx::query("SELECT fingerprint, phone FROM handset_phones ORDER BY phone")
                    .fetch_all(&pool)
                    .await?;
            handsets_from_rows(&rows, &phones)
        })
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
        let fingerprint = h.fingerprint.clone();
        self.run(async move |pool| {
            sqlx::query(
                "UPDATE handsets SET state = 'revoked', revoked_at_ms = $2 WHERE fingerprint = $1",
            )
            .bind(fingerprint)
            .bind(now_ms)
            .execute(&pool)
            .await?;
            Ok(())
        })?;
        h.state = HandsetState::Revoked;
        Ok(h)
    }

    /// Which of `fingerprints` are revoked handsets (or no longer
    /// enrolled at all): what a host checks its live sessions against, so
    /// a revocation at any host of the fleet reaches them.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn revoked_among(&self, fingerprints: &[String]) -> Result<Vec<String>, HostError> {
        if fingerprints.is_empty() {
            return Ok(Vec::new());
        }
        let asked = fingerprints.to_vec();
        self.run(async move |pool| {
            let placeholders: Vec<String> = (1..=asked.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT fingerprint FROM handsets WHERE state = 'enrolled' AND fingerprint IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for fp in &asked {
                q = q.bind(fp.clone());
            }
            let enrolled: Vec<String> = q
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            Ok(asked
                .into_iter()
                .filter(|fp| !enrolled.contains(fp))
                .collect())
        })
    }

    /// Notes that a handset connected.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn touch_handset(&self, fingerprint: &str, now_ms: i64) -> Result<(), HostError> {
        let fingerprint = fingerprint.to_owned();
        self.run(async move |pool| {
            sqlx::query("UPDATE handsets SET last_seen_ms = $2 WHERE fingerprint = $1")
                .bind(fingerprint)
                .bind(now_ms)
                .execute(&pool)
                .await?;
            Ok(())
        })
    }

    // ---- session audit -------------------------------------------------

    /// Records a session's start, and applies the [`SessionRetention`] to
    /// the ended ones (in the same transaction), so the audit stays bounded
    /// however many sessions come and go.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn session_started(&self, s: &SessionRecord) -> Result<(), HostError> {
        self.record_session_start(s, false).map(|_| ())
    }

    /// [`Registry::session_started`], fenced by the phone's lease: the
    /// session is recorded only while this registry's owner (the host)
    /// holds the phone's unexpired lease at the session's start, checked in
    /// the same statement that writes it. `false`: not recorded, the lease
    /// is not (or no longer) this host's, and the session must not be
    /// served here.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn session_started_under_lease(&self, s: &SessionRecord) -> Result<bool, HostError> {
        self.record_session_start(s, true)
    }

    fn record_session_start(&self, s: &SessionRecord, fenced: bool) -> Result<bool, HostError> {
        let s = s.clone();
        let SessionRetention { keep, max_age_ms } = self.retention;
        let owner = self.owner.clone();
        self.run(async move |pool| {
            let mut tx = pool.begin().await?;
            let written = sqlx::query(
                "INSERT INTO sessions (id, fingerprint, phone, remote, started_at_ms, host)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE $7 = 0 OR EXISTS (SELECT 1 FROM leases
                    WHERE phone = $3 AND host = $6 AND expires_at_ms > $5)",
            )
            .bind(s.id)
            .bind(s.fingerprint)
            .bind(s.phone)
            .bind(s.remote)
            .bind(s.started_at_ms)
            .bind(owner)
            .bind(i64::from(fenced))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if written == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            // (LIMIT with the largest number: SQLite needs a LIMIT before
            // OFFSET, PostgreSQL has no LIMIT -1.)
            let pruned = sqlx::query(
                "DELETE FROM sessions WHERE ended_at_ms IS NOT NULL AND (started_at_ms < $1
                    OR id IN (SELECT id FROM sessions ORDER BY started_at_ms DESC, id
                              LIMIT 9223372036854775807 OFFSET $2))",
            )
            .bind(s.started_at_ms.saturating_sub(max_age_ms))
            .bind(i64::try_from(keep).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if pruned > 0 {
                tracing::debug!(pruned, "session audit: old sessions deleted");
            }
            Ok(true)
        })
    }

    /// Records a session's end.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn session_ended(&self, id: &str, reason: &str, now_ms: i64) -> Result<(), HostError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.run(async move |pool| {
            sqlx::query(
                "UPDATE sessions SET ended_at_ms = $2, end_reason = $3 WHERE id = $1 AND ended_at_ms IS NULL",
            )
            .bind(id)
            .bind(now_ms)
            .bind(reason)
            .execute(&pool)
            .await?;
            Ok(())
        })
    }

    /// Marks every session this host (see [`Registry::with_owner`]; every
    /// host's without one) left open as ended (after a restart).
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn close_dangling_sessions(&self, reason: &str, now_ms: i64) -> Result<usize, HostError> {
        let reason = reason.to_owned();
        let owner = self.owner.clone();
        self.run(async move |pool| {
            Ok(sqlx::query(
                "UPDATE sessions SET ended_at_ms = $1, end_reason = $2
                 WHERE ended_at_ms IS NULL AND ($3 IS NULL OR host IS NULL OR host = $3)",
            )
            .bind(now_ms)
            .bind(reason)
            .bind(owner)
            .execute(&pool)
            .await?
            .rows_affected() as usize)
        })
    }

    /// The most recent sessions, newest first.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn sessions(&self, limit: usize) -> Result<Vec<SessionRecord>, HostError> {
        self.run(async move |pool| {
            sqlx::query(
                "SELECT id, fingerprint, phone, remote, started_at_ms, ended_at_ms, end_reason
                 FROM sessions ORDER BY started_at_ms DESC, id LIMIT $1",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| {
                Ok(SessionRecord {
                    id: r.try_get(0)?,
                    fingerprint: r.try_get(1)?,
                    phone: r.try_get(2)?,
                    remote: r.try_get(3)?,
                    started_at_ms: r.try_get(4)?,
                    ended_at_ms: r.try_get(5)?,
                    end_reason: r.try_get(6)?,
                })
            })
            .collect()
        })
    }
}

/// Handsets from their rows (`fingerprint, name, state, enrolled_at_ms,
/// last_seen_ms, all_phones`) and their phones' rows (`fingerprint,
/// phone`).
fn handsets_from_rows(rows: &[AnyRow], phones: &[AnyRow]) -> Result<Vec<HandsetRecord>, HostError> {
    let mut named: std::collections::HashMap<String, Vec<String>> = Default::default();
    for r in phones {
        named.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
    }
    rows.iter()
        .map(|r| {
            let fingerprint: String = r.try_get(0)?;
            let state: String = r.try_get(2)?;
            let grant = if flag_at(r, 5)? {
                PhoneGrant::All
            } else {
                PhoneGrant::Only(named.remove(&fingerprint).unwrap_or_default())
            };
            Ok(HandsetRecord {
                fingerprint,
                name: r.try_get(1)?,
                state: if state == "revoked" {
                    HandsetState::Revoked
                } else {
                    HandsetState::Enrolled
                },
                enrolled_at_ms: r.try_get(3)?,
                last_seen_ms: r.try_get(4)?,
                grant,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn phone(name: &str) -> PhoneRecord {
        PhoneRecord::sim(name, 1)
    }

    fn only(phones: &[&str]) -> PhoneGrant {
        PhoneGrant::Only(phones.iter().map(|s| (*s).to_owned()).collect())
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
}
