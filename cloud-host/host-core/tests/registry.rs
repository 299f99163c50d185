//! The registry's behaviour, the same on both engines: every test here runs
//! once on SQLite (a file, as one host keeps it) and once on a throwaway
//! PostgreSQL server (as a fleet shares it), through the same API.
//!
//! Run one engine: `cargo nextest run -p host-core --test registry sqlite`.

use std::sync::{Arc, Barrier};

use host_core::HostError;
use host_core::registry::{
    DesiredState, HandsetState, HostRecord, Labels, LeaseState, PhoneGrant, PhoneRecord, Registry,
    SessionRecord, SessionRetention, Target, TokenRecord,
};
use vphone_testkit::postgres::Postgres;

/// One database, opened as many times as a test wants (each open is its own
/// pool: another host sharing the registry).
struct TestDb {
    target: Target,
    _pg: Option<Postgres>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            target: Target::Sqlite(dir.path().join("registry.sqlite3")),
            _pg: None,
            _dir: Some(dir),
        }
    }

    fn postgres() -> Option<Self> {
        let pg = Postgres::start()?;
        Some(Self {
            target: Target::Postgres(pg.url()),
            _pg: Some(pg),
            _dir: None,
        })
    }

    fn open(&self) -> Registry {
        Registry::connect(&self.target).unwrap()
    }
}

/// Each named test function, as `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::TestDb::sqlite());
            }
            #[test]
            fn postgres() {
                if let Some(db) = super::TestDb::postgres() {
                    super::$name(&db);
                }
            }
        }
    )*};
}

on_both_engines!(
    deleting_a_phone_never_widens_a_handsets_grant,
    phones_round_trip_and_duplicates_are_refused,
    bad_names_are_explained,
    handsets_naming_themselves_alike_get_distinct_names,
    tokens_are_single_use_and_expire,
    a_token_used_by_two_hosts_at_once_enrolls_one_handset,
    revoke_by_name_or_fingerprint_prefix,
    the_session_audit_keeps_what_its_retention_says,
    hosts_register_heartbeat_drain_and_stop,
    a_lease_is_exclusive_fenced_and_claimable_after_expiry,
    a_host_renews_hundreds_of_leases_each_fenced,
    racing_claimers_never_share_a_phone,
    claimable_phones_follow_desired_state_and_placement,
    a_restarting_host_closes_only_its_own_open_sessions,
    a_session_starts_on_record_only_under_the_hosts_live_lease,
    a_forgotten_host_that_still_runs_registers_again_at_its_next_round,
);

/// A host forgotten while it still ran (cut off from the registry when the
/// operator forgot it) is not left without a record, which no front door
/// could send handsets to: its next lease round registers it again, with
/// its address and pin.
fn a_forgotten_host_that_still_runs_registers_again_at_its_next_round(db: &TestDb) {
    let r = db.open();
    r.register_host(&host("h1", 2)).unwrap(); // heartbeat at 1_000
    r.forget_host("h1", 5_000, 1_000).unwrap();
    let cfg = host_core::lease::FleetConfig {
        addr: "h1.example:4433".into(),
        pin: "cd".repeat(32),
        capacity: 2,
        ..host_core::lease::FleetConfig::single("h1")
    };
    let input = || host_core::lease::RoundInput {
        release: Vec::new(),
        held: Vec::new(),
        began_ms: 0,
        draining: true,
    };
    let out = host_core::lease::run_round(&r, &cfg, input());
    assert_eq!(out.draining, Some(false));
    let h = r.host("h1").unwrap();
    assert_eq!(
        (h.addr.as_str(), h.pin.as_str(), h.capacity, h.stopped),
        ("h1.example:4433", "cd".repeat(32).as_str(), 2, false)
    );
    // A host without an identity (a test's FleetConfig::single) never
    // writes a record without a pin.
    r.forget_host("h1", host_core::unix_ms() + 60_000, 1_000)
        .unwrap();
    let _ = host_core::lease::run_round(&r, &host_core::lease::FleetConfig::single("h1"), input());
    assert!(matches!(r.host("h1"), Err(HostError::NotFound { .. })));
}

/// The session audit's start is a write under the phone's lease: recorded
/// only while the writing host holds the phone's unexpired lease, checked
/// in the statement that writes it.
fn a_session_starts_on_record_only_under_the_hosts_live_lease(db: &TestDb) {
    let a = db.open().with_owner("host-a");
    let b = db.open().with_owner("host-b");
    a.insert_phone(&phone("p")).unwrap();
    let session = |id: &str, at: i64| SessionRecord {
        id: id.to_owned(),
        fingerprint: "aa".into(),
        phone: "p".into(),
        remote: None,
        started_at_ms: at,
        ended_at_ms: None,
        end_reason: None,
    };
    let recorded = |id: &str| a.sessions(100).unwrap().iter().any(|s| s.id == id);
    assert!(
        !a.session_started_under_lease(&session("never-leased", 1_000))
            .unwrap()
    );
    a.claim("p", "host-a", 1_000, 10_000).unwrap().unwrap();
    assert!(
        a.session_started_under_lease(&session("held", 2_000))
            .unwrap()
    );
    assert!(
        !b.session_started_under_lease(&session("not-b", 2_000))
            .unwrap()
    );
    // At and after expiry the lease no longer covers a start, and once
    // another host claimed it the old holder's starts are refused.
    assert!(
        !a.session_started_under_lease(&session("expired", 11_000))
            .unwrap()
    );
    b.claim("p", "host-b", 11_000, 10_000).unwrap().unwrap();
    assert!(
        !a.session_started_under_lease(&session("stale", 12_000))
            .unwrap()
    );
    assert!(
        b.session_started_under_lease(&session("new-holder", 12_000))
            .unwrap()
    );
    assert!(recorded("held") && recorded("new-holder"));
    for id in ["never-leased", "not-b", "expired", "stale"] {
        assert!(!recorded(id), "{id} was recorded without the lease");
    }
}

fn a_restarting_host_closes_only_its_own_open_sessions(db: &TestDb) {
    let a = db.open().with_owner("host-a");
    let b = db.open().with_owner("host-b");
    let session = |id: &str| SessionRecord {
        id: id.to_owned(),
        fingerprint: "aa".into(),
        phone: "p".into(),
        remote: None,
        started_at_ms: 5,
        ended_at_ms: None,
        end_reason: None,
    };
    a.session_started(&session("sa")).unwrap();
    b.session_started(&session("sb")).unwrap();
    assert_eq!(a.close_dangling_sessions("host restarted", 9).unwrap(), 1);
    let ended: Vec<(String, Option<String>)> = b
        .sessions(10)
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.end_reason))
        .collect();
    assert!(
        ended.contains(&("sa".into(), Some("host restarted".into()))),
        "{ended:?}"
    );
    assert!(ended.contains(&("sb".into(), None)), "{ended:?}");
}

fn phone(name: &str) -> PhoneRecord {
    PhoneRecord::sim(name, 1)
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

fn host(name: &str, capacity: u32) -> HostRecord {
    HostRecord {
        name: name.to_owned(),
        addr: format!("{name}.example:4433"),
        pin: "ab".repeat(32),
        capacity,
        labels: Labels::parse("zone=a").unwrap(),
        draining: false,
        stopped: false,
        sessions: 0,
        started_at_ms: 1_000,
        heartbeat_ms: 1_000,
    }
}

fn a_token_used_by_two_hosts_at_once_enrolls_one_handset(db: &TestDb) {
    let hosts: Vec<Registry> = (0..4).map(|_| db.open()).collect();
    for i in 0..10 {
        hosts[0]
            .insert_token(&token(&format!("t{i}"), 1000, PhoneGrant::All), 0)
            .unwrap();
    }
    let barrier = Arc::new(Barrier::new(hosts.len()));
    let results: Vec<Vec<bool>> = std::thread::scope(|s| {
        let joins: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, r)| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            barrier.wait();
                            r.enroll_with_token(&format!("t{i}"), &format!("fp{h}x{i}"), "h", 5)
                                .is_ok()
                        })
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for i in 0..10 {
        let winners = results.iter().filter(|r| r[i]).count();
        assert_eq!(winners, 1, "token t{i} enrolled {winners} handsets");
    }
    assert_eq!(hosts[1].handsets().unwrap().len(), 10);
}

fn hosts_register_heartbeat_drain_and_stop(db: &TestDb) {
    let r = db.open();
    r.register_host(&host("h1", 4)).unwrap();
    r.register_host(&host("h2", 0)).unwrap();
    let e = r.register_host(&host("bad name", 1)).unwrap_err();
    assert!(e.to_string().contains("invalid host name"), "{e}");
    let h1 = r.host_heartbeat("h1", 2_000, 3).unwrap();
    assert_eq!(
        (h1.sessions, h1.heartbeat_ms, h1.draining),
        (3, 2_000, false)
    );
    assert!(h1.alive(2_500, 1_000) && !h1.alive(3_000, 1_000));
    assert!(matches!(
        r.host_heartbeat("ghost", 1, 0),
        Err(HostError::NotFound { .. })
    ));
    // The operator's drain survives the host re-registering (a restart).
    r.set_draining("h1", true).unwrap();
    r.register_host(&host("h1", 4)).unwrap();
    assert!(r.host_heartbeat("h1", 3_000, 0).unwrap().draining);
    r.set_draining("h1", false).unwrap();
    // A clean stop releases its leases: another host claims at once.
    r.insert_phone(&phone("p1")).unwrap();
    r.claim("p1", "h1", 3_000, 10_000).unwrap().unwrap();
    assert!(r.claim("p1", "h2", 3_001, 10_000).unwrap().is_none());
    assert_eq!(r.host_stopped("h1", 3_002).unwrap(), 1);
    let stopped = r.host("h1").unwrap();
    assert!(stopped.stopped && !stopped.alive(3_003, 10_000));
    assert_eq!(r.leases().unwrap()[0].state(3_003), LeaseState::Released);
    assert!(r.claim("p1", "h2", 3_003, 10_000).unwrap().is_some());
    let names: Vec<String> = r.hosts().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["h1", "h2"]);
    assert_eq!(r.host("h2").unwrap().labels.to_string(), "zone=a");
    // A front door (capacity 0) stopping leaves the list: its replicas come
    // and go under new names.
    r.register_host(&host("gw-7f9c", 0)).unwrap();
    assert_eq!(r.host_stopped("gw-7f9c", 3_004).unwrap(), 0);
    assert!(matches!(r.host("gw-7f9c"), Err(HostError::NotFound { .. })));
    assert_eq!(r.hosts().unwrap().len(), 2);

    // Forgetting a host: never one alive or holding a live lease.
    r.register_host(&host("gw-dead", 0)).unwrap(); // heartbeat at 1_000
    let refused = |e: HostError, why: &str| {
        assert_eq!(e.kind(), host_core::ErrorKind::BadInput, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    };
    refused(
        r.forget_host("gw-dead", 1_500, 1_000).unwrap_err(),
        "is alive",
    );
    r.forget_host("gw-dead", 2_000, 1_000).unwrap();
    assert!(matches!(
        r.forget_host("gw-dead", 2_000, 1_000),
        Err(HostError::NotFound { .. })
    ));
    // h2 holds p1 until 13_003: lost by its heartbeat but still leased.
    refused(
        r.forget_host("h2", 12_000, 1_000).unwrap_err(),
        "still holds a phone's lease",
    );
    r.forget_host("h2", 13_004, 1_000).unwrap();
    // A stopped host goes at once (its leases were released).
    r.forget_host("h1", 3_005, 10_000).unwrap();
    assert!(r.hosts().unwrap().is_empty());
}

fn a_lease_is_exclusive_fenced_and_claimable_after_expiry(db: &TestDb) {
    let r = db.open();
    r.insert_phone(&phone("p1")).unwrap();
    r.insert_phone(&phone("p2")).unwrap();
    let a = r
        .claim("p1", "A", 1_000, 10_000)
        .unwrap()
        .expect("free phone");
    assert_eq!((a.host.as_str(), a.expires_at_ms), ("A", 11_000));
    // Held: nobody else, and not A again, gets it.
    assert!(r.claim("p1", "B", 5_000, 10_000).unwrap().is_none());
    assert!(r.claim("p1", "A", 5_000, 10_000).unwrap().is_none());
    // Renewal extends the leases the holder names, by generation.
    let held = [("p1".to_owned(), a.generation)];
    let renewed = r.renew("A", &held, 9_000, 10_000, 0).unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].expires_at_ms, 19_000);
    assert!(r.renew("B", &held, 9_000, 10_000, 0).unwrap().is_empty());
    // A stops renewing (cut off): after expiry B claims, with a higher
    // generation: the fencing token.
    let b = r
        .claim("p1", "B", 19_000, 10_000)
        .unwrap()
        .expect("expired");
    assert!(b.generation > a.generation, "{b:?} after {a:?}");
    // A comes back: its renewal no longer includes p1, its release fails.
    assert!(r.renew("A", &held, 19_500, 10_000, 0).unwrap().is_empty());
    assert!(!r.release(&a, 19_500).unwrap());
    assert_eq!(r.leases().unwrap()[0].host, "B");
    // A new phone's first lease is above every generation so far, so a
    // recreated phone never repeats an old token.
    let c = r.claim("p2", "A", 20_000, 10_000).unwrap().unwrap();
    assert!(c.generation > b.generation);
    r.delete_phone("p1").unwrap();
    r.insert_phone(&phone("p1")).unwrap();
    let d = r.claim("p1", "A", 20_000, 10_000).unwrap().unwrap();
    assert!(d.generation > c.generation);
    // The holder's release frees it at once.
    assert!(r.release(&d, 20_001).unwrap());
    assert!(r.claim("p1", "B", 20_002, 10_000).unwrap().is_some());
    // A lease on a phone that does not exist is refused.
    assert!(r.claim("ghost", "A", 1, 1).is_err());
    // A lease the registry lists for A but A does not hold (a claim whose
    // answer was lost) is released by A's next renewal, unless it was
    // claimed after the round began.
    r.insert_phone(&phone("p3")).unwrap();
    let orphan = r.claim("p3", "A", 30_000, 10_000).unwrap().unwrap();
    assert!(
        r.renew("A", &[], 30_500, 10_000, 29_000)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        r.leases()
            .unwrap()
            .iter()
            .find(|l| l.phone == "p3")
            .unwrap()
            .expires_at_ms,
        40_000,
        "claimed after the round began: kept"
    );
    assert!(
        r.renew("A", &[], 31_000, 10_000, 30_500)
            .unwrap()
            .is_empty()
    );
    assert!(
        r.claim("p3", "B", 31_001, 10_000).unwrap().is_some(),
        "{orphan:?} released"
    );
    // A lease that ran out unclaimed is renewed by its generation: a jump
    // of the wall clock does not lose it.
    let late = r.claim("p2", "A", 50_000, 10_000).unwrap();
    assert!(late.is_some() || r.leases().unwrap().iter().any(|l| l.phone == "p2"));
}

fn racing_claimers_never_share_a_phone(db: &TestDb) {
    const HOSTS: usize = 4;
    const PHONES: usize = 12;
    const ROUNDS: i64 = 5;
    let hosts: Vec<Registry> = (0..HOSTS).map(|_| db.open()).collect();
    for p in 0..PHONES {
        hosts[0].insert_phone(&phone(&format!("p{p}"))).unwrap();
    }
    let barrier = Arc::new(Barrier::new(HOSTS));
    // Each round every host claims every phone at the same instant of the
    // registry's time; the leases of a round expire before the next.
    let won: Vec<Vec<(i64, String, i64)>> = std::thread::scope(|s| {
        let joins: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, r)| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut won = Vec::new();
                    for round in 0..ROUNDS {
                        let now = 1_000 + round * 1_000;
                        barrier.wait();
                        for p in 0..PHONES {
                            let phone = format!("p{}", (p + h * 3) % PHONES);
                            if let Some(l) = r.claim(&phone, &format!("h{h}"), now, 500).unwrap() {
                                won.push((round, phone, l.generation));
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut all: Vec<(i64, String, i64)> = won.into_iter().flatten().collect();
    all.sort();
    assert_eq!(
        all.len(),
        PHONES * ROUNDS as usize,
        "every phone claimed exactly once per round: {all:?}"
    );
    for w in all.windows(2) {
        assert!(
            !(w[0].0 == w[1].0 && w[0].1 == w[1].1),
            "two hosts hold {} in round {}",
            w[0].1,
            w[0].0
        );
    }
    // Generations grow per phone round after round.
    for p in 0..PHONES {
        let gens: Vec<i64> = all
            .iter()
            .filter(|(_, ph, _)| *ph == format!("p{p}"))
            .map(|(_, _, g)| *g)
            .collect();
        assert!(gens.windows(2).all(|g| g[0] < g[1]), "p{p}: {gens:?}");
    }
}

/// A host with many phones renews them all in one round (in a few
/// statements, more than one batch here), each still fenced by its
/// generation: a lease another host took, or one held at a stale
/// generation, is not renewed.
fn a_host_renews_hundreds_of_leases_each_fenced(db: &TestDb) {
    let r = db.open();
    let mut held = Vec::new();
    for i in 0..600 {
        let name = format!("p{i:03}");
        r.insert_phone(&phone(&name)).unwrap();
        let l = r.claim(&name, "A", 1_000, 10_000).unwrap().unwrap();
        held.push((name, l.generation));
    }
    // p100 ran out and B took it; A names p200 at a generation it never had.
    assert!(r.claim("p100", "B", 11_000, 10_000).unwrap().is_some());
    held[200].1 += 1_000;
    let renewed = r.renew("A", &held, 12_000, 10_000, 0).unwrap();
    let names: Vec<&str> = renewed.iter().map(|l| l.phone.as_str()).collect();
    assert_eq!(renewed.len(), 598, "every lease but p100 and p200");
    assert!(!names.contains(&"p100") && !names.contains(&"p200"));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert!(
        renewed
            .iter()
            .all(|l| l.expires_at_ms == 22_000 && l.host == "A")
    );
    let leases = r.leases().unwrap();
    let of = |p: &str| leases.iter().find(|l| l.phone == p).unwrap().clone();
    assert_eq!(of("p100").host, "B", "another host's lease is not touched");
    assert_eq!(of("p599").expires_at_ms, 22_000);
    // p200, named at a generation it never had, was left to run out: it is
    // claimable.
    assert_eq!(of("p200").expires_at_ms, 11_000);
    assert!(r.claim("p200", "B", 12_500, 10_000).unwrap().is_some());
}

fn claimable_phones_follow_desired_state_and_placement(db: &TestDb) {
    let r = db.open();
    for p in ["a", "b", "c"] {
        r.insert_phone(&phone(p)).unwrap();
    }
    r.set_desired_state("c", DesiredState::Stopped).unwrap();
    r.set_placement("b", &Labels::parse("zone=b").unwrap(), Some("h9"))
        .unwrap();
    let names = |now| -> Vec<String> {
        r.claimable(now)
            .unwrap()
            .into_iter()
            .map(|c| c.phone)
            .collect()
    };
    assert_eq!(names(1_000), ["a", "b"]);
    r.claim("a", "h1", 1_000, 1_000).unwrap().unwrap();
    assert_eq!(names(1_500), ["b"]);
    assert_eq!(names(2_000), ["a", "b"], "expired at 2000");
    let b = &r.claimable(2_000).unwrap()[1];
    assert_eq!(b.labels.to_string(), "zone=b");
    assert_eq!(b.wanted_host.as_deref(), Some("h9"));
    assert_eq!(
        r.placement("b").unwrap(),
        (Labels::parse("zone=b").unwrap(), Some("h9".to_owned()))
    );
    // All at once, as a lease round reads them.
    let all = r.placements().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["b"], r.placement("b").unwrap());
    assert_eq!(all["a"], (Labels::default(), None));
    assert!(matches!(
        r.set_placement("ghost", &Labels::default(), None),
        Err(HostError::NotFound { .. })
    ));
}

fn deleting_a_phone_never_widens_a_handsets_grant(db: &TestDb) {
    let r = db.open();
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

fn phones_round_trip_and_duplicates_are_refused(db: &TestDb) {
    let r = db.open();
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

fn bad_names_are_explained(db: &TestDb) {
    let r = db.open();
    for bad in ["", "has space", "-lead", "a/b", &"x".repeat(64)] {
        let e = r.insert_phone(&phone(bad)).unwrap_err().to_string();
        assert!(e.starts_with("invalid phone name"), "{e}");
    }
}

fn handsets_naming_themselves_alike_get_distinct_names(db: &TestDb) {
    let r = db.open();
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

fn tokens_are_single_use_and_expire(db: &TestDb) {
    let r = db.open();
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

fn revoke_by_name_or_fingerprint_prefix(db: &TestDb) {
    let r = db.open();
    r.insert_token(&token("t1", 1000, PhoneGrant::All), 0)
        .unwrap();
    r.enroll_with_token("t1", "abcdef0123", "h", 1).unwrap();
    r.insert_token(&token("t2", 1000, PhoneGrant::All), 0)
        .unwrap();
    r.enroll_with_token("t2", "fedcba9876", "k", 1).unwrap();
    let asked = |fps: &[&str]| {
        let fps: Vec<String> = fps.iter().map(|f| (*f).to_owned()).collect();
        r.revoked_among(&fps).unwrap()
    };
    assert!(asked(&["abcdef0123", "fedcba9876"]).is_empty());
    assert!(asked(&[]).is_empty());
    assert!(r.handset("abcdef0123").unwrap().unwrap().may_use("any"));
    assert!(r.revoke_handset("abc", 2).is_err(), "prefix too short");
    let h = r.revoke_handset("abcdef", 2).unwrap();
    assert_eq!(h.state, HandsetState::Revoked);
    assert!(!r.handset("abcdef0123").unwrap().unwrap().may_use("any"));
    // What every host checks its live sessions against: the revoked one
    // and one no longer enrolled at all, never an enrolled one.
    assert_eq!(
        asked(&["abcdef0123", "fedcba9876", "0000000000"]),
        ["abcdef0123", "0000000000"]
    );
    assert!(matches!(
        r.revoke_handset("ghost", 3),
        Err(HostError::NotFound { .. })
    ));
}

fn the_session_audit_keeps_what_its_retention_says(db: &TestDb) {
    let r = db.open().with_session_retention(SessionRetention {
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
