//! A fleet in the registry: the hosts that share it and the leases under
//! which they run phones.
//!
//! A phone runs on at most one host: the one holding its unexpired lease.
//! The database enforces it: a claim is one conditional upsert that
//! succeeds only over a missing, released or expired lease, and every
//! claim raises the lease's generation (above every lease then in the
//! registry), the fencing token a host shows on every later write for that
//! phone (renewal, release). A host that lost its lease (expired while it
//! was cut off, then claimed elsewhere) fails those writes instead of
//! overwriting the new holder's; admissions are checked against the live
//! lease (a phone another host holds is redirected there).
//!
//! Times are the hosts' wall clocks (Unix ms), which a fleet keeps in step
//! with NTP; a lease's length must stay well above their skew (10 s against
//! milliseconds). A host stops serving a phone once its own monotonic clock
//! says the lease may have run out, before another host may claim it.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Registry, flag_at, u32_at, validate_name};
use crate::HostError;

/// A host as registered.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct HostRecord {
    /// Unique name (a StatefulSet pod's name, or the machine's).
    pub name: String,
    /// `host:port` handsets dial to reach its phones.
    pub addr: String,
    /// Hex SHA-256 of its identity key, as handsets pin it.
    pub pin: String,
    /// The most phones it runs (0: a gateway, no phones).
    pub capacity: u32,
    /// What it offers, `key=value` pairs phones may ask for.
    pub labels: Labels,
    /// Moving its phones off and claiming none (`host drain`).
    pub draining: bool,
    /// Shut down cleanly (its leases released).
    pub stopped: bool,
    /// Live handset sessions at its last heartbeat.
    pub sessions: u32,
    /// When it (re)started.
    pub started_at_ms: i64,
    /// Its last heartbeat.
    pub heartbeat_ms: i64,
}

impl HostRecord {
    /// Whether its heartbeat is recent enough (within `ttl_ms`) and it did
    /// not stop.
    #[must_use]
    pub fn alive(&self, now_ms: i64, ttl_ms: i64) -> bool {
        !self.stopped && now_ms - self.heartbeat_ms < ttl_ms
    }

    /// Whether it takes phones now: alive and not draining.
    #[must_use]
    pub fn accepting(&self, now_ms: i64, ttl_ms: i64) -> bool {
        self.alive(now_ms, ttl_ms) && !self.draining
    }
}

/// `key=value` labels, kept sorted, written `a=1,b=2`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    /// Parses `a=1,b=2` (empty: no labels).
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a pair without `=` or a bad key or value.
    pub fn parse(s: &str) -> Result<Self, HostError> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(HostError::Invalid {
                    what: "labels",
                    why: format!("{pair:?} is not key=value (e.g. zone=a,gpu=yes)"),
                });
            };
            validate_name("label key", k)?;
            validate_name("label value", v)?;
            map.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self(map))
    }

    /// Whether every label of `wanted` is among these.
    #[must_use]
    pub fn satisfy(&self, wanted: &Labels) -> bool {
        wanted.0.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A phone's lease.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Lease {
    /// The phone.
    pub phone: String,
    /// The host holding (or, once expired, last holding) it.
    pub host: String,
    /// The fencing token: raised by every claim.
    pub generation: i64,
    /// When it runs out unless renewed (0: released).
    pub expires_at_ms: i64,
}

/// A lease as an operator sees it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum LeaseState {
    /// Held and renewed.
    Held,
    /// Released by its host (clean shutdown, drain, move).
    Released,
    /// Ran out: its host stopped renewing.
    Expired,
}

impl Lease {
    /// Held, released or expired at `now_ms`.
    #[must_use]
    pub fn state(&self, now_ms: i64) -> LeaseState {
        if self.expires_at_ms == 0 {
            LeaseState::Released
        } else if self.expires_at_ms <= now_ms {
            LeaseState::Expired
        } else {
            LeaseState::Held
        }
    }
}

impl LeaseState {
    /// The word shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

/// A phone another host could claim: wanted running, its lease missing,
/// released or expired.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Claimable {
    /// The phone.
    pub phone: String,
    /// Labels a host must have to run it.
    pub labels: Labels,
    /// The host the operator moved it to, if any.
    pub wanted_host: Option<String>,
}

fn host_from_row(r: &AnyRow) -> Result<HostRecord, HostError> {
    let labels: String = r.try_get(4)?;
    Ok(HostRecord {
        name: r.try_get(0)?,
        addr: r.try_get(1)?,
        pin: r.try_get(2)?,
        capacity: u32_at(r, 3)?,
        labels: Labels::parse(&labels)?,
        draining: flag_at(r, 5)?,
        stopped: flag_at(r, 6)?,
        sessions: u32_at(r, 7)?,
        started_at_ms: r.try_get(8)?,
        heartbeat_ms: r.try_get(9)?,
    })
}

fn lease_from_row(r: &AnyRow) -> Result<Lease, HostError> {
    Ok(Lease {
        phone: r.try_get(0)?,
        host: r.try_get(1)?,
        generation: r.try_get(2)?,
        expires_at_ms: r.try_get(3)?,
    })
}

/// Leases renewed per statement (two parameters each: well under SQLite's
/// and PostgreSQL's limits).
const RENEW_CHUNK: usize = 256;

const HOST_COLUMNS: &str =
    "name, addr, pin, capacity, labels, draining, stopped, sessions, started_at_ms, heartbeat_ms";

impl Registry {
    /// Registers (or re-registers after a restart) a host: its address,
    /// pin, capacity and labels; marks it started now. A drain the operator
    /// asked for stays in force.
    ///
    /// # Errors
    /// [`HostError::Invalid`] for a bad name, [`HostError::Registry`].
    pub fn register_host(&self, h: &HostRecord) -> Result<(), HostError> {
        validate_name("host name", &h.name)?;
        let h = h.clone();
        self.run(async move |pool| {
            sqlx::query(
                "INSERT INTO hosts (name, addr, pin, capacity, labels, draining, stopped, sessions, started_at_ms, heartbeat_ms)
                 VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6, $6)
                 ON CONFLICT (name) DO UPDATE SET addr = excluded.addr, pin = excluded.pin,
                    capacity = excluded.capacity, labels = excluded.labels, stopped = 0, sessions = 0,
                    started_at_ms = excluded.started_at_ms, heartbeat_ms = excluded.heartbeat_ms",
            )
            .bind(h.name)
            .bind(h.addr)
            .bind(h.pin)
            .bind(i64::from(h.capacity))
            .bind(h.labels.to_string())
            .bind(h.started_at_ms)
            .execute(&pool)
            .await?;
            Ok(())
        })
    }

    /// A host's heartbeat: notes it is alive with `sessions` live sessions
    /// and returns its record (whose `draining` the operator may have set).
    ///
    /// # Errors
    /// [`HostError::NotFound`] when it is not registered.
    pub fn host_heartbeat(
        &self,
        name: &str,
        now_ms: i64,
        sessions: u32,
    ) -> Result<HostRecord, HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE hosts SET heartbeat_ms = $2, sessions = $3 WHERE name = $1
                 RETURNING {HOST_COLUMNS}"
            )))
            .bind(name.clone())
            .bind(now_ms)
            .bind(i64::from(sessions))
            .fetch_optional(&pool)
            .await?;
            match row {
                Some(r) => host_from_row(&r),
                None => Err(HostError::NotFound { kind: "host", name }),
            }
        })
    }

    /// A clean shutdown: releases every lease `name` holds (other hosts may
    /// claim those phones at once) and marks it stopped. A front door
    /// (capacity 0) leaves the host list instead: it holds no phone, and
    /// gateway replicas come and go under new names.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn host_stopped(&self, name: &str, now_ms: i64) -> Result<usize, HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let mut tx = pool.begin().await?;
            let released = sqlx::query(
                "UPDATE leases SET expires_at_ms = 0 WHERE host = $1 AND expires_at_ms > $2",
            )
            .bind(name.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE hosts SET stopped = 1, sessions = 0, heartbeat_ms = $2 WHERE name = $1",
            )
            .bind(name.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM hosts WHERE name = $1 AND capacity = 0")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(released as usize)
        })
    }

    /// Releases every lease `host` holds (a restarted host, before it
    /// claims again: its previous run was killed).
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn release_all(&self, host: &str, now_ms: i64) -> Result<usize, HostError> {
        let host = host.to_owned();
        self.run(async move |pool| {
            Ok(sqlx::query(
                "UPDATE leases SET expires_at_ms = 0 WHERE host = $1 AND expires_at_ms > $2",
            )
            .bind(host)
            .bind(now_ms)
            .execute(&pool)
            .await?
            .rows_affected() as usize)
        })
    }

    /// Every registered host, by name.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn hosts(&self) -> Result<Vec<HostRecord>, HostError> {
        self.run(async |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"
            )))
            .fetch_all(&pool)
            .await?
            .iter()
            .map(host_from_row)
            .collect()
        })
    }

    /// One host.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn host(&self, name: &str) -> Result<HostRecord, HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1"
            )))
            .bind(name.clone())
            .fetch_optional(&pool)
            .await?;
            match row {
                Some(r) => host_from_row(&r),
                None => Err(HostError::NotFound { kind: "host", name }),
            }
        })
    }

    /// Removes a host that is gone from the host list (a gateway replica
    /// whose node died, a host that will not come back): only one that is
    /// not alive (stopped, or no heartbeat within `ttl_ms`) and holds no
    /// live lease, checked in the same statement that deletes it.
    ///
    /// # Errors
    /// [`HostError::NotFound`]; [`HostError::Invalid`] when it is alive or
    /// still holds a lease (its phones move once the lease runs out).
    pub fn forget_host(&self, name: &str, now_ms: i64, ttl_ms: i64) -> Result<(), HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let gone = sqlx::query(
                "DELETE FROM hosts WHERE name = $1 AND (stopped = 1 OR heartbeat_ms <= $2)
                   AND NOT EXISTS (SELECT 1 FROM leases WHERE host = $1 AND expires_at_ms > $3)",
            )
            .bind(name.clone())
            .bind(now_ms.saturating_sub(ttl_ms))
            .bind(now_ms)
            .execute(&pool)
            .await?
            .rows_affected();
            if gone == 1 {
                return Ok(());
            }
            let alive = sqlx::query("SELECT stopped, heartbeat_ms FROM hosts WHERE name = $1")
                .bind(name.clone())
                .fetch_optional(&pool)
                .await?;
            let Some(row) = alive else {
                return Err(HostError::NotFound { kind: "host", name });
            };
            let stopped = flag_at(&row, 0)?;
            let heartbeat_ms: i64 = row.try_get(1)?;
            let why = if !stopped && heartbeat_ms > now_ms.saturating_sub(ttl_ms) {
                format!(
                    "host {name:?} is alive (its last heartbeat {} ms ago): stop it first",
                    now_ms - heartbeat_ms
                )
            } else {
                format!(
                    "host {name:?} still holds a phone's lease; forget it once the lease has \
                     run out and another host took the phone"
                )
            };
            Err(HostError::Invalid {
                what: "forget host",
                why,
            })
        })
    }

    /// Starts or ends a host's drain: a draining host releases its phones
    /// (ending their sessions) and claims none.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<(), HostError> {
        let name = name.to_owned();
        self.run(async move |pool| {
            let n = sqlx::query("UPDATE hosts SET draining = $2 WHERE name = $1")
                .bind(name.clone())
                .bind(i64::from(draining))
                .execute(&pool)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(HostError::NotFound { kind: "host", name });
            }
            Ok(())
        })
    }

    /// Claims `phone` for `host` until `now_ms + ttl_ms`, if its lease is
    /// missing, released or expired: one conditional upsert, so of any
    /// number of hosts claiming at once exactly one gets it. Returns the
    /// new lease (its generation above every earlier one), or `None` when
    /// another lease (possibly this host's own) still holds.
    ///
    /// # Errors
    /// [`HostError::Registry`] (also for a phone that does not exist).
    pub fn claim(
        &self,
        phone: &str,
        host: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, HostError> {
        let (phone, host) = (phone.to_owned(), host.to_owned());
        let expires = now_ms.saturating_add(ttl_ms);
        self.run(async move |pool| {
            let row = sqlx::query(
                "INSERT INTO leases (phone, host, generation, expires_at_ms)
                 VALUES ($1, $2, (SELECT COALESCE(MAX(generation), 0) + 1 FROM leases), $3)
                 ON CONFLICT (phone) DO UPDATE SET host = excluded.host,
                    generation = leases.generation + 1, expires_at_ms = excluded.expires_at_ms
                 WHERE leases.expires_at_ms <= $4
                 RETURNING generation",
            )
            .bind(phone.clone())
            .bind(host.clone())
            .bind(expires)
            .bind(now_ms)
            .fetch_optional(&pool)
            .await?;
            Ok(match row {
                Some(r) => Some(Lease {
                    phone,
                    host,
                    generation: r.try_get(0)?,
                    expires_at_ms: expires,
                }),
                None => None,
            })
        })
    }

    /// Renews the leases `held` (phone, generation) of `host` to
    /// `now_ms + ttl_ms`, each fenced by its generation (a lease another
    /// host claimed since is not touched, however long ago this host last
    /// renewed), and releases every other lease the registry lists for
    /// `host` that was claimed before `orphaned_before_ms` (a claim whose
    /// answer never arrived, a release that failed: leases this host does
    /// not run). Returns the leases renewed: a held phone missing from them
    /// was lost and must stop here.
    ///
    /// # Errors
    /// [`HostError::Registry`], [`HostError::Unavailable`] when the
    /// database is out of reach.
    pub fn renew(
        &self,
        host: &str,
        held: &[(String, i64)],
        now_ms: i64,
        ttl_ms: i64,
        orphaned_before_ms: i64,
    ) -> Result<Vec<Lease>, HostError> {
        let host = host.to_owned();
        let held = held.to_vec();
        let expires = now_ms.saturating_add(ttl_ms);
        self.run(async move |pool| {
            let mut tx = pool.begin().await?;
            let mut renewed = Vec::with_capacity(held.len());
            // A few statements per round whatever the count (a host with
            // 200 phones made 200 round trips to the database here, and
            // under load those outlasted the call's timeout: every lease
            // then ran out together). Each lease stays fenced by its
            // generation.
            for chunk in held.chunks(RENEW_CHUNK) {
                let terms = (0..chunk.len())
                    .map(|i| format!("(phone = ${} AND generation = ${})", 3 + 2 * i, 4 + 2 * i))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let sql = format!(
                    "UPDATE leases SET expires_at_ms = $2 WHERE host = $1 AND ({terms})
                     RETURNING phone, generation"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(host.clone())
                    .bind(expires);
                for (phone, generation) in chunk {
                    q = q.bind(phone.clone()).bind(*generation);
                }
                for row in q.fetch_all(&mut *tx).await? {
                    renewed.push(Lease {
                        phone: row.try_get(0)?,
                        host: host.clone(),
                        generation: row.try_get(1)?,
                        expires_at_ms: expires,
                    });
                }
            }
            renewed.sort_by(|a, b| a.phone.cmp(&b.phone));
            let mine = sqlx::query(
                "SELECT phone, host, generation, expires_at_ms FROM leases
                 WHERE host = $1 AND expires_at_ms > $2",
            )
            .bind(host.clone())
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
            for row in &mine {
                let l = lease_from_row(row)?;
                let ours = held.iter().any(|(p, g)| *p == l.phone && *g == l.generation);
                // Claimed (expiry - ttl) before the round began: not one
                // the actor is about to learn of.
                if !ours && l.expires_at_ms.saturating_sub(ttl_ms) < orphaned_before_ms {
                    sqlx::query(
                        "UPDATE leases SET expires_at_ms = 0
                         WHERE phone = $1 AND host = $2 AND generation = $3",
                    )
                    .bind(l.phone.clone())
                    .bind(host.clone())
                    .bind(l.generation)
                    .execute(&mut *tx)
                    .await?;
                    tracing::warn!(phone = %l.phone, generation = l.generation, "released a lease this host does not run");
                }
            }
            tx.commit().await?;
            Ok(renewed)
        })
    }

    /// Releases a lease (fenced: only the holder with this generation can),
    /// so another host may claim the phone at once. Returns whether it was
    /// still held.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn release(&self, lease: &Lease, now_ms: i64) -> Result<bool, HostError> {
        let lease = lease.clone();
        self.run(async move |pool| {
            Ok(sqlx::query(
                "UPDATE leases SET expires_at_ms = 0
                 WHERE phone = $1 AND host = $2 AND generation = $3 AND expires_at_ms > $4",
            )
            .bind(lease.phone)
            .bind(lease.host)
            .bind(lease.generation)
            .bind(now_ms)
            .execute(&pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// One phone's lease (held, released or expired), if it ever had one.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn lease(&self, phone: &str) -> Result<Option<Lease>, HostError> {
        let phone = phone.to_owned();
        self.run(async move |pool| {
            sqlx::query(
                "SELECT phone, host, generation, expires_at_ms FROM leases WHERE phone = $1",
            )
            .bind(phone)
            .fetch_optional(&pool)
            .await?
            .as_ref()
            .map(lease_from_row)
            .transpose()
        })
    }

    /// Every lease, by phone.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn leases(&self) -> Result<Vec<Lease>, HostError> {
        self.run(async |pool| {
            sqlx::query("SELECT phone, host, generation, expires_at_ms FROM leases ORDER BY phone")
                .fetch_all(&pool)
                .await?
                .iter()
                .map(lease_from_row)
                .collect()
        })
    }

    /// Phones wanted running whose lease is missing, released or expired at
    /// `now_ms`, by name.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn claimable(&self, now_ms: i64) -> Result<Vec<Claimable>, HostError> {
        self.run(async move |pool| {
            sqlx::query(
                "SELECT p.name, p.labels, p.wanted_host FROM phones p
                 LEFT JOIN leases l ON l.phone = p.name
                 WHERE p.desired_state = 'running' AND (l.phone IS NULL OR l.expires_at_ms <= $1)
                 ORDER BY p.name",
            )
            .bind(now_ms)
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| {
                let labels: String = r.try_get(1)?;
                Ok(Claimable {
                    phone: r.try_get(0)?,
                    labels: Labels::parse(&labels)?,
                    wanted_host: r.try_get(2)?,
                })
            })
            .collect()
        })
    }

    /// Sets the labels a host needs to run `phone` and the host it is
    /// wanted on (`phone move`; `None`: any host).
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn set_placement(
        &self,
        phone: &str,
        labels: &Labels,
        wanted_host: Option<&str>,
    ) -> Result<(), HostError> {
        let (phone, labels, wanted) = (
            phone.to_owned(),
            labels.to_string(),
            wanted_host.map(str::to_owned),
        );
        self.run(async move |pool| {
            let n = sqlx::query("UPDATE phones SET labels = $2, wanted_host = $3 WHERE name = $1")
                .bind(phone.clone())
                .bind(labels)
                .bind(wanted)
                .execute(&pool)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(HostError::NotFound {
                    kind: "phone",
                    name: phone,
                });
            }
            Ok(())
        })
    }

    /// A phone's placement: the labels it needs and the host it is wanted on.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub fn placement(&self, phone: &str) -> Result<(Labels, Option<String>), HostError> {
        let phone = phone.to_owned();
        self.run(async move |pool| {
            let row = sqlx::query("SELECT labels, wanted_host FROM phones WHERE name = $1")
                .bind(phone.clone())
                .fetch_optional(&pool)
                .await?;
            let Some(r) = row else {
                return Err(HostError::NotFound {
                    kind: "phone",
                    name: phone,
                });
            };
            let labels: String = r.try_get(0)?;
            Ok((Labels::parse(&labels)?, r.try_get(1)?))
        })
    }

    /// Every phone's placement ([`placement`](Self::placement)) in one
    /// query, by name. A phone whose labels do not parse is left out (and
    /// logged), not allowed to fail every other phone's.
    ///
    /// # Errors
    /// [`HostError::Registry`].
    pub fn placements(
        &self,
    ) -> Result<std::collections::HashMap<String, (Labels, Option<String>)>, HostError> {
        self.run(async move |pool| {
            let rows = sqlx::query("SELECT name, labels, wanted_host FROM phones")
                .fetch_all(&pool)
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let row = || -> Result<_, HostError> {
                        let name: String = r.try_get(0)?;
                        let labels: String = r.try_get(1)?;
                        let labels = Labels::parse(&labels).inspect_err(|e| {
                            tracing::warn!(phone = %name, error = %e, "a phone's labels do not parse; its placement is skipped");
                        })?;
                        Ok((name, (labels, r.try_get(2)?)))
                    };
                    row().ok()
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_print_and_match() {
        let host = Labels::parse("zone=a, gpu=yes").unwrap();
        assert_eq!(host.to_string(), "gpu=yes,zone=a");
        assert!(host.satisfy(&Labels::parse("zone=a").unwrap()));
        assert!(host.satisfy(&Labels::default()));
        assert!(!host.satisfy(&Labels::parse("zone=b").unwrap()));
        let e = Labels::parse("zone").unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
    }

    #[test]
    fn a_lease_reads_held_released_or_expired() {
        let mut l = Lease {
            phone: "p".into(),
            host: "h".into(),
            generation: 1,
            expires_at_ms: 100,
        };
        assert_eq!(l.state(99), LeaseState::Held);
        assert_eq!(l.state(100), LeaseState::Expired);
        l.expires_at_ms = 0;
        assert_eq!(l.state(5), LeaseState::Released);
    }
}
