//! Where the registry's SQL runs: one sqlx `Any` pool (SQLite or
//! PostgreSQL, the same statements for both), its migrations, and the
//! blocking bridge the rest of the host calls through.
//!
//! The registry keeps the blocking API it had on SQLite alone: its callers
//! are short look-ups and writes from both threads and async tasks. Each
//! call runs as a task on the registry's own one-thread runtime (a thread
//! named `registry`) and the caller waits for its answer, at most
//! [`CALL_TIMEOUT`]: a registry that stops answering (a partitioned
//! database) fails calls with [`HostError::Unavailable`] instead of hanging
//! them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use crate::HostError;

/// The longest a registry call waits for the database.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a registry lives.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Target {
    /// An SQLite file (the one-host default: `<data dir>/registry.sqlite3`).
    Sqlite(PathBuf),
    /// An in-memory SQLite database (tests).
    Memory,
    /// A PostgreSQL database shared by a fleet, `postgres://...`.
    Postgres(String),
}

impl Target {
    /// Reads a `--registry` value: `postgres://` / `postgresql://` URLs, or
    /// `sqlite:PATH` / a plain path for an SQLite file.
    ///
    /// # Errors
    /// [`HostError::Invalid`] for another scheme, saying which are known.
    pub fn parse(s: &str) -> Result<Self, HostError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        if let Some(path) = s.strip_prefix("sqlite://").or(s.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(HostError::Invalid {
                    what: "registry",
                    why: "sqlite: needs a file path, e.g. sqlite:/var/lib/vphone/registry.sqlite3"
                        .into(),
                });
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s.contains("://") || s.is_empty() {
            return Err(HostError::Invalid {
                what: "registry",
                why: format!(
                    "{:?} is neither a postgres:// URL nor an SQLite file path (sqlite:PATH)",
                    redact_url(s)
                ),
            });
        }
        Ok(Self::Sqlite(PathBuf::from(s)))
    }

    /// The database kind.
    #[must_use]
    pub fn kind(&self) -> DbKind {
        match self {
            Self::Postgres(_) => DbKind::Postgres,
            Self::Sqlite(_) | Self::Memory => DbKind::Sqlite,
        }
    }

    /// For logs and errors: a PostgreSQL URL without its password.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite:{}", p.display()),
            Self::Memory => "sqlite::memory:".to_owned(),
            Self::Postgres(url) => redact_url(url),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}?mode=rwc", percent_encode_path(p)),
            Self::Memory => "sqlite::memory:".to_owned(),
            Self::Postgres(url) => url.clone(),
        }
    }
}

/// `scheme://user:password@host/...?...` with the password (in the user
/// part, or a `password=` parameter) replaced by `***`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    // The last '@' ends the user part: a password may contain '@'.
    let rest = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{auth}@{host}"),
        },
        None => rest.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{rest}?{q}"),
        None => format!("{scheme}://{rest}"),
    }
}

/// The path as the sqlx SQLite URL wants it: `%`, `?` and `#` escaped (it
/// percent-decodes the file name).
fn percent_encode_path(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Which database engine.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DbKind {
    /// SQLite (one host).
    Sqlite,
    /// PostgreSQL (a fleet).
    Postgres,
}

type Job = Box<dyn FnOnce(AnyPool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The registry's database: a pool on its own runtime thread.
#[derive(Debug)]
pub struct Db {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    kind: DbKind,
    timeout: Duration,
}

impl Db {
    /// Connects, migrates (`migrations`, in order; index + 1 is the schema
    /// version) and starts the runtime thread.
    pub fn open(target: &Target, migrations: &'static [&'static str]) -> Result<Self, HostError> {
        sqlx::any::install_default_drivers();
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), HostError>>(1);
        let kind = target.kind();
        let url = target.url();
        let describe = target.describe();
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(HostError::io("start the registry runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match connect(&url, kind, &describe, migrations).await {
                        Ok(pool) => {
                            let _ = ready_tx.send(Ok(()));
                            pool
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job(pool.clone()));
                    }
                    pool.close().await;
                });
            })
            .map_err(|e| HostError::io("start the registry thread", e))?;
        ready_rx.recv().map_err(|_| stopped())??;
        Ok(Self {
            jobs,
            kind,
            timeout: CALL_TIMEOUT,
        })
    }

    /// The engine.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Sets the longest a call waits (default [`CALL_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `f` with the pool on the registry's runtime and waits for its
    /// answer (at most its timeout, [`CALL_TIMEOUT`] unless set).
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, HostError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let answer = match tokio::time::timeout(timeout, f(pool)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(HostError::Unavailable {
                        what: "registry",
                        why: format!(
                            "the database did not answer within {} ms",
                            timeout.as_millis()
                        ),
                    }),
                };
                let _ = tx.send(answer);
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }
}

fn stopped() -> HostError {
    HostError::Internal {
        what: "registry",
        why: "the registry's thread has stopped".into(),
    }
}

async fn connect(
    url: &str,
    kind: DbKind,
    describe: &str,
    migrations: &'static [&'static str],
) -> Result<AnyPool, HostError> {
    let options: AnyConnectOptions = url.parse().map_err(|e: sqlx::Error| HostError::Invalid {
        what: "registry",
        why: format!("{describe}: {e}"),
    })?;
    if kind == DbKind::Sqlite {
        // The pool reports a file it cannot open or read only as a
        // timeout: open and read it once first, for SQLite's own error.
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options).await?;
        sqlx::raw_sql("PRAGMA synchronous = NORMAL; SELECT count(*) FROM sqlite_master")
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
    }
    let pool = match kind {
        // One connection: SQLite serialises writers anyway, and an
        // in-memory database lives exactly as long as its connection.
        DbKind::Sqlite => AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            }),
        DbKind::Postgres => AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5)),
    }
    .connect_with(options)
    .await
    .map_err(|e| match kind {
        DbKind::Postgres => HostError::Unavailable {
            what: "registry",
            why: format!("cannot reach {describe}: {e}"),
        },
        DbKind::Sqlite => HostError::from(e),
    })?;
    if kind == DbKind::Sqlite && url != "sqlite::memory:" {
        // Committed transactions survive a process kill (WAL + NORMAL);
        // the journal mode is stored in the file.
        sqlx::raw_sql("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
    }
    migrate(&pool, kind, migrations).await?;
    Ok(pool)
}

/// The schema version lives in `vphone_schema` on both engines. An SQLite
/// registry from before PostgreSQL kept it in `PRAGMA user_version`, which
/// is adopted once and still kept in step (so an older vphone-host refuses
/// a newer file instead of misreading it).
async fn migrate(
    pool: &AnyPool,
    kind: DbKind,
    migrations: &'static [&'static str],
) -> Result<(), HostError> {
    let mut conn = pool.acquire().await?;
    if kind == DbKind::Postgres {
        // Hosts of a fleet start together: one migrates, the others wait.
        sqlx::query("SELECT pg_advisory_lock(7366880)")
            .execute(&mut *conn)
            .await?;
    }
    let result = async {
        let legacy: i64 = match kind {
            DbKind::Sqlite => sqlx::query("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?,
            DbKind::Postgres => 0,
        };
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS vphone_schema (id BIGINT PRIMARY KEY, version BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO vphone_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(legacy)
            .execute(&mut *conn)
            .await?;
        let version: i64 = sqlx::query("SELECT version FROM vphone_schema WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > migrations.len() {
            return Err(HostError::Internal {
                what: "registry",
                why: format!(
                    "schema version {version} is newer than this vphone-host understands ({}); upgrade vphone-host",
                    migrations.len()
                ),
            });
        }
        for (i, sql) in migrations.iter().enumerate().skip(version) {
            let v = i as i64 + 1;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("UPDATE vphone_schema SET version = $1 WHERE id = 1")
                .bind(v)
                .execute(&mut *tx)
                .await?;
            if kind == DbKind::Sqlite {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {v}")))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            tracing::info!(version = v, "registry schema migrated");
        }
        Ok(())
    }
    .await;
    if kind == DbKind::Postgres {
        sqlx::query("SELECT pg_advisory_unlock(7366880)")
            .execute(&mut *conn)
            .await?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_targets_parse_and_redact() {
        assert_eq!(
            Target::parse("postgres://vphone:s3cret@db:5432/vphone").unwrap(),
            Target::Postgres("postgres://vphone:s3cret@db:5432/vphone".into())
        );
        assert_eq!(
            Target::parse("postgres://vphone:s3cret@db:5432/vphone")
                .unwrap()
                .describe(),
            "postgres://vphone:***@db:5432/vphone"
        );
        assert_eq!(
            Target::parse("sqlite:/var/lib/x.db").unwrap(),
            Target::Sqlite("/var/lib/x.db".into())
        );
        assert_eq!(
            Target::parse("/var/lib/x.db").unwrap(),
            Target::Sqlite("/var/lib/x.db".into())
        );
        for bad in ["mysql://a:b@c/d", "", "sqlite:"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid registry"), "{e}");
            assert!(!e.contains(":b@"), "password shown: {e}");
        }
        assert_eq!(
            redact_url("postgres://u:p@ss@db/v?sslmode=verify-full&password=x2"),
            "postgres://u:***@db/v?sslmode=verify-full&password=***"
        );
        assert_eq!(redact_url("postgres://db/v"), "postgres://db/v");
        assert_eq!(
            percent_encode_path(Path::new("/tmp/a?b#c%d")),
            "/tmp/a%3Fb%23c%25d"
        );
    }
}
