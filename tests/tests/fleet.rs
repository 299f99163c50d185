//! A fleet on one machine: real `vphone-host` processes sharing one
//! throwaway PostgreSQL registry. Phones run under leases: a killed host's
//! phones are claimed and booted by the others, a clean stop hands them
//! over at once, and a host cut off from the registry stops its phones
//! before their leases can be claimed elsewhere.

use std::time::{Duration, Instant};

use vphone_testkit::postgres::Postgres;
use vphone_tests::companion::HeadlessCompanion;
use vphone_tests::fleet::{CuttableProxy, FleetHost, HostSpec, live_leases, registry, wait_for};

/// Lease length in these tests: rounds every second, a dead host's phones
/// claimable 4 s after its last renewal, a cut-off host stops its phones
/// 2.2 s after its last renewal (4/5 of the lease less four 250 ms calls).
const LEASE_SECS: u64 = 4;

fn spec<'a>(name: &'a str, registry: &'a str, capacity: u32) -> HostSpec<'a> {
    HostSpec {
        name,
        registry,
        capacity,
        lease_secs: LEASE_SECS,
        args: Vec::new(),
    }
}

/// Which host holds each live lease, by phone.
fn holders(reg: &host_core::registry::Registry) -> Vec<(String, String)> {
    live_leases(reg)
        .into_iter()
        .map(|l| (l.phone, l.host))
        .collect()
}

#[test]
fn a_killed_hosts_phones_move_to_the_others_and_a_clean_stop_hands_them_over() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);

    // a starts first and creates phone-1; it runs two phones at most.
    let mut a = FleetHost::start(root.path(), &spec("host-a", &url, 2));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    a.ctl(&["phone", "create", "p2"]).unwrap();
    // a is full: p3 is recorded but waits, stopped, for a host with room.
    a.ctl(&["phone", "create", "p3"]).unwrap();
    wait_for("p2 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("p2").as_deref() == Some("running")).then_some(())
    });
    assert_eq!(a.phone_state("p3").as_deref(), Some("stopped"));
    let b = FleetHost::start(root.path(), &spec("host-b", &url, 10));
    let c = FleetHost::start(root.path(), &spec("host-c", &url, 1));
    // b or c claims p3 in its first rounds.
    wait_for(
        "p3 leased to host-b or host-c",
        Duration::from_secs(10),
        || {
            holders(&reg)
                .into_iter()
                .find(|(p, h)| p == "p3" && h != "host-a")
        },
    );
    let before = holders(&reg);
    assert!(
        before.contains(&("phone-1".into(), "host-a".into()))
            && before.contains(&("p2".into(), "host-a".into())),
        "{before:?}"
    );

    // kill -9: no release. Its phones come back on the others within the
    // lease and a round or two, and run there.
    a.kill();
    let killed = Instant::now();
    let moved = wait_for(
        "host-a's phones claimed by the others",
        Duration::from_secs(u64::from(u32::try_from(LEASE_SECS).unwrap()) + 10),
        || {
            let h = holders(&reg);
            let on = |p: &str| {
                h.iter()
                    .find(|(ph, _)| ph == p)
                    .map(|(_, host)| host.clone())
            };
            match (on("phone-1"), on("p2")) {
                (Some(x), Some(y)) if x != "host-a" && y != "host-a" => Some((x, y)),
                _ => None,
            }
        },
    );
    let claimed_after = killed.elapsed();
    eprintln!("host-a's phones claimed {claimed_after:?} after kill -9: {moved:?}");
    assert!(
        claimed_after >= Duration::from_secs(LEASE_SECS) - Duration::from_millis(1_500),
        "claimed before a's leases could have run out: {claimed_after:?}"
    );
    // c has room for one phone only: it holds at most one lease.
    let now = holders(&reg);
    assert!(
        now.iter().filter(|(_, h)| h == "host-c").count() <= 1,
        "host-c is over capacity: {now:?}"
    );
    for (phone, host) in [("phone-1", &moved.0), ("p2", &moved.1)] {
        let on = if host == "host-b" { &b } else { &c };
        wait_for(
            &format!("{phone} running on {host}"),
            Duration::from_secs(20),
            || (on.phone_state(phone).as_deref() == Some("running")).then_some(()),
        );
    }
    let booted = killed.elapsed();
    eprintln!("... and running there {booted:?} after kill -9");

    // A clean stop releases at once: b's phones move to c (room for one)
    // and to a restarted a, well before a lease could run out.
    let mut b = b;
    let on_b: Vec<String> = holders(&reg)
        .into_iter()
        .filter(|(_, h)| h == "host-b")
        .map(|(p, _)| p)
        .collect();
    assert!(!on_b.is_empty());
    let a = FleetHost::start(root.path(), &spec("host-a", &url, 2));
    let stopped = Instant::now();
    b.terminate();
    let released = wait_for(
        "host-b's phones leased elsewhere",
        Duration::from_secs(10),
        || {
            let h = holders(&reg);
            on_b.iter()
                .all(|p| h.iter().any(|(ph, host)| ph == p && host != "host-b"))
                .then_some(h)
        },
    );
    let handed_over = stopped.elapsed();
    eprintln!("host-b stopped cleanly; its phones re-leased in {handed_over:?}: {released:?}");
    assert!(
        handed_over < Duration::from_secs(LEASE_SECS),
        "a clean stop waited for lease expiry: {handed_over:?}"
    );
    let hosts = reg.hosts().unwrap();
    let b_rec = hosts.iter().find(|h| h.name == "host-b").unwrap();
    assert!(b_rec.stopped, "{b_rec:?}");
    drop((a, c));
}

#[test]
fn a_host_cut_off_from_the_registry_stops_its_phones_before_another_claims_them() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);
    // a reaches the registry through a proxy the test can cut.
    let proxy = CuttableProxy::start(([127, 0, 0, 1], pg.port()).into());
    let via_proxy = format!("postgres://postgres@{}/vphone", proxy.addr);
    let a = FleetHost::start(root.path(), &spec("host-a", &via_proxy, 4));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    let b = FleetHost::start(root.path(), &spec("host-b", &url, 4));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(holders(&reg), [("phone-1".to_owned(), "host-a".to_owned())]);

    proxy.cut();
    let cut = Instant::now();
    // a notices on its own clock and stops the phone...
    // (Its operator API's phone commands wait on the registry; /metrics
    // answers from the phones alone.)
    wait_for(
        "host-a stops phone-1",
        Duration::from_secs(LEASE_SECS + 5),
        || (a.phones_in("running") == Some(0)).then_some(()),
    );
    let a_stopped = cut.elapsed();
    // ...before b may claim it (the lease has not run out yet).
    let still = holders(&reg);
    let b_claimed = wait_for(
        "host-b claims phone-1",
        Duration::from_secs(LEASE_SECS + 10),
        || {
            holders(&reg)
                .iter()
                .any(|(p, h)| p == "phone-1" && h == "host-b")
                .then(|| cut.elapsed())
        },
    );
    eprintln!(
        "registry cut: host-a stopped phone-1 after {a_stopped:?} (its lease still {still:?}); \
         host-b claimed it after {b_claimed:?}"
    );
    assert!(
        a_stopped < b_claimed,
        "host-a ran phone-1 until {a_stopped:?}, host-b had it at {b_claimed:?}"
    );
    wait_for("phone-1 running on host-b", Duration::from_secs(20), || {
        (b.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
}

#[test]
fn the_operator_sees_the_fleet_moves_a_phone_and_drains_a_host_from_any_host() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);
    let a = FleetHost::start(root.path(), &spec("host-a", &url, 4));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    let b = FleetHost::start(root.path(), &spec("host-b", &url, 4));
    let gw = FleetHost::start(root.path(), &spec("gateway", &url, 0));

    // Any host answers for the whole fleet.
    let fleet: serde_json::Value =
        serde_json::from_str(&gw.ctl(&["--json", "fleet"]).unwrap()).unwrap();
    let hosts: Vec<&str> = fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["gateway", "host-a", "host-b"], "{fleet}");
    assert_eq!(fleet["answered_by"], "gateway");
    let phone = &fleet["phones"][0];
    assert_eq!(
        (&phone["name"], &phone["host"], &phone["lease"]),
        (&"phone-1".into(), &"host-a".into(), &"held".into()),
        "{fleet}"
    );
    let table = b.ctl(&["fleet"]).unwrap();
    eprintln!("{table}");
    let row = table.lines().find(|l| l.starts_with("host-a ")).unwrap();
    assert!(row.contains(" up "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("phone-1 ") && l.contains("host-a")),
        "{table}"
    );

    // Move phone-1 to host-b through the gateway's operator API.
    let said = gw
        .ctl(&["phone", "move", "phone-1", "--to", "host-b"])
        .unwrap();
    assert!(said.contains("moves to host 'host-b'"), "{said}");
    wait_for("phone-1 running on host-b", Duration::from_secs(15), || {
        (b.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    assert_eq!(holders(&reg), [("phone-1".to_owned(), "host-b".to_owned())]);
    assert_eq!(a.phone_state("phone-1").as_deref(), Some("stopped"));
    // A gateway runs no phones: nothing moves there.
    let e = a
        .ctl(&["phone", "move", "phone-1", "--to", "gateway"])
        .unwrap_err();
    assert!(e.contains("runs no phones"), "{e}");
    let e = a.ctl(&["host", "drain", "nowhere"]).unwrap_err();
    assert!(e.contains("not found"), "{e}");

    // Drain host-b: the moved phone may run anywhere again (its wanted host
    // is draining), and goes back to host-a.
    let said = a.ctl(&["host", "drain", "host-b"]).unwrap();
    assert!(said.contains("draining"), "{said}");
    wait_for("phone-1 back on host-a", Duration::from_secs(15), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    assert_eq!(holders(&reg), [("phone-1".to_owned(), "host-a".to_owned())]);
    let fleet: serde_json::Value =
        serde_json::from_str(&a.ctl(&["--json", "fleet"]).unwrap()).unwrap();
    let hb = fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "host-b")
        .unwrap()
        .clone();
    assert_eq!(
        (&hb["draining"], &hb["phones"]),
        (&true.into(), &0.into()),
        "{hb}"
    );
    // A new phone never lands on the draining host.
    a.ctl(&["phone", "create", "p2"]).unwrap();
    b.ctl(&["phone", "create", "p3"]).unwrap();
    wait_for("p2 and p3 leased", Duration::from_secs(10), || {
        (holders(&reg).len() == 3).then_some(())
    });
    assert!(
        holders(&reg).iter().all(|(_, h)| h == "host-a"),
        "{:?}",
        holders(&reg)
    );
    a.ctl(&["host", "drain", "host-b", "--undo"]).unwrap();
    a.ctl(&["phone", "move", "p3", "--to", "host-b"]).unwrap();
    wait_for(
        "p3 on host-b after the drain ended",
        Duration::from_secs(15),
        || (b.phone_state("p3").as_deref() == Some("running")).then_some(()),
    );
}

/// The front door: a handset enrolled once at the gateway (a host with no
/// phones) is sent to its phone's host, and after that host is killed it
/// comes back through the gateway to the phone's new host by itself.
#[test]
fn a_handset_enrolled_at_the_front_door_follows_its_phone_across_hosts() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);
    let gw = FleetHost::start(root.path(), &spec("gateway", &url, 0));
    let mut a = FleetHost::start(root.path(), &spec("host-a", &url, 4));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    let b = FleetHost::start(root.path(), &spec("host-b", &url, 4));

    // Enrolled at the gateway: the string names the gateway, not a host.
    let enrollment = gw
        .ctl(&[
            "handset", "enroll", "--name", "bob", "--phone", "phone-1", "--quiet",
        ])
        .unwrap();
    assert!(
        enrollment.contains(&gw.quic.port().to_string()),
        "the string names the gateway: {enrollment}"
    );
    let companion = HeadlessCompanion::enroll_and_connect(root.path(), &enrollment, 90);
    let text = companion.said("connected to phone 'phone-1'", Duration::from_secs(20));
    assert!(text.contains("following the redirect"), "{text}");
    let on_a = |host: &FleetHost| -> usize { host.sessions().len() };
    assert_eq!(on_a(&a), 1, "the session runs on host-a");
    assert_eq!(on_a(&gw), 0, "the gateway only redirects");

    // host-a dies: phone-1 moves to host-b and the handset finds it there
    // through the gateway, without anyone telling it.
    a.kill();
    let killed = Instant::now();
    wait_for("phone-1 leased to host-b", Duration::from_secs(15), || {
        holders(&reg)
            .iter()
            .any(|(p, h)| p == "phone-1" && h == "host-b")
            .then_some(())
    });
    let text = companion.said("reconnected", Duration::from_secs(60));
    let back = killed.elapsed();
    eprintln!("the handset streams from host-b again {back:?} after host-a's kill -9");
    assert_eq!(on_a(&b), 1, "the session now runs on host-b: {text}");

    // The operator moves the phone: its session on host-b ends saying so
    // (SHUTDOWN, not PHONE_STOPPED) and the handset follows at once.
    let c = FleetHost::start(root.path(), &spec("host-c", &url, 4));
    let reconnects = text.matches("reconnected").count();
    let moved = Instant::now();
    gw.ctl(&["phone", "move", "phone-1", "--to", "host-c"])
        .unwrap();
    wait_for(
        "the handset's session on host-c",
        Duration::from_secs(30),
        || (on_a(&c) == 1).then_some(()),
    );
    eprintln!(
        "the handset streams from host-c {:?} after the move",
        moved.elapsed()
    );
    let text = companion.log();
    assert!(text.matches("reconnected").count() > reconnects, "{text}");
    assert!(text.contains("moves to another host"), "{text}");
}

/// Several front doors behind one address: gateways started with one fleet
/// key set (`vphone-host fleet-keys`) present one identity and share the
/// enrollment token key, so a handset enrolled at one gateway is admitted
/// and redirected by another; one admin token file serves every host; a
/// gateway that stops cleanly leaves the host list.
#[test]
fn gateways_sharing_the_fleet_keys_serve_each_others_handsets() {
    use std::process::Command;
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);
    let keys = root.path().join("fleet-keys");
    let made = Command::new(vphone_testkit::binary("vphone-host"))
        .arg("fleet-keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    let pin = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("pin:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pin in {said}"))
        .to_owned();
    let key_before = std::fs::read(keys.join("key.pem")).unwrap();
    let again = Command::new(vphone_testkit::binary("vphone-host"))
        .arg("fleet-keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a second set over the first");
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("already exists"), "{why}");
    assert_eq!(std::fs::read(keys.join("key.pem")).unwrap(), key_before);

    let token_file = keys.join("admin.token").display().to_string();
    let shared = vec![
        "--fleet-keys".to_owned(),
        keys.display().to_string(),
        "--admin-token-file".to_owned(),
        token_file.clone(),
    ];
    let with = |name, capacity, args: &[String]| HostSpec {
        args: args.to_vec(),
        ..spec(name, &url, capacity)
    };
    let mut gw1 = FleetHost::start(root.path(), &with("gw-1", 0, &shared));
    let gw2 = FleetHost::start(root.path(), &with("gw-2", 0, &shared));
    let a = FleetHost::start(root.path(), &with("host-a", 4, &shared[2..]));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    // One identity for both front doors, the host its own.
    let pin_of = |name: &str| reg.host(name).unwrap().pin;
    assert_eq!(pin_of("gw-1"), pin);
    assert_eq!(pin_of("gw-2"), pin);
    assert_ne!(pin_of("host-a"), pin);
    // No token of its own in any data dir: the fleet's file is the one.
    for h in [&gw1, &gw2, &a] {
        assert!(!h.dir.join("admin.token").exists(), "{}", h.name);
    }

    // Enrolled at gw-1; the handset's first connection lands on gw-2 (as a
    // load balancer may send it), which admits the token gw-1 minted,
    // presents the key the string pins and redirects to host-a.
    let enrollment = gw1
        .ctl(&[
            "handset", "enroll", "--name", "carol", "--phone", "phone-1", "--quiet",
        ])
        .unwrap();
    assert!(enrollment.contains(&format!("pin={pin}")), "{enrollment}");
    let via_gw2 = enrollment.replace(&gw1.quic.to_string(), &gw2.quic.to_string());
    assert_ne!(via_gw2, enrollment, "the string names gw-1: {enrollment}");
    let companion = HeadlessCompanion::enroll_and_connect(root.path(), &via_gw2, 60);
    let text = companion.said("connected to phone 'phone-1'", Duration::from_secs(20));
    assert!(text.contains("following the redirect"), "{text}");
    let sessions = |h: &FleetHost| -> usize { h.sessions().len() };
    assert_eq!(sessions(&a), 1, "the session runs on host-a");
    // The token was spent once, at gw-2, for the whole fleet.
    let handsets = gw1.ctl(&["--json", "handset", "list"]).unwrap();
    assert!(handsets.contains("carol"), "{handsets}");

    // Revoked at gw-1, the handset loses its session on host-a (which
    // learns it from the registry within a quarter lease) and does not
    // come back.
    let revoked = Instant::now();
    gw1.ctl(&["handset", "revoke", "carol"]).unwrap();
    wait_for(
        "carol's session on host-a ended",
        Duration::from_secs(10),
        || (sessions(&a) == 0).then_some(()),
    );
    eprintln!(
        "a revocation at gw-1 ended the session on host-a {:?} later",
        revoked.elapsed()
    );
    let text = companion.said("revoked", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sessions(&a), 0, "the revoked handset came back: {text}");

    // A replica stopping (a rollout) leaves the host list; the other
    // still answers for the fleet.
    gw1.terminate();
    let names: Vec<String> = reg.hosts().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["gw-2", "host-a"]);
    let fleet = gw2.ctl(&["fleet"]).unwrap();
    assert!(
        fleet.contains("host-a") && !fleet.contains("gw-1"),
        "{fleet}"
    );

    // A replica that dies (its node lost) stays listed, lost, until the
    // operator forgets it; never while it is alive.
    let mut gw2 = gw2;
    let e = a.ctl(&["host", "forget", "gw-2"]).unwrap_err();
    assert!(e.contains("is alive"), "{e}");
    gw2.kill();
    wait_for("gw-2 lost", Duration::from_secs(15), || {
        a.ctl(&["host", "forget", "gw-2"]).ok()
    });
    let names: Vec<String> = reg.hosts().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["host-a"]);
    drop(companion);
}

/// One enrollment at the front door reaches phones on every host: a handset
/// granted every phone drives a phone on each of three hosts (each host on
/// a loopback address of its own) through the gateway's redirects. Then
/// `host drain` of the host under a live session ends that session cleanly
/// ("moves to another host") and the handset follows its phone by itself.
#[test]
fn one_enrollment_reaches_phones_on_every_host_and_a_drain_ends_sessions_cleanly() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let reg = registry(&url);
    let gw = FleetHost::start(root.path(), &spec("gateway", &url, 0));
    let a = FleetHost::start(root.path(), &spec("host-a", &url, 2));
    wait_for("phone-1 running on host-a", Duration::from_secs(20), || {
        (a.phone_state("phone-1").as_deref() == Some("running")).then_some(())
    });
    let b = FleetHost::start(root.path(), &spec("host-b", &url, 2));
    let c = FleetHost::start(root.path(), &spec("host-c", &url, 2));
    let hosts = [&a, &b, &c];
    let ips: std::collections::BTreeSet<_> =
        [&gw, &a, &b, &c].iter().map(|h| h.quic.ip()).collect();
    assert_eq!(ips.len(), 4, "each host on an address of its own");
    for (phone, host) in [("phone-2", "host-b"), ("phone-3", "host-c")] {
        gw.ctl(&["phone", "create", phone]).unwrap();
        gw.ctl(&["phone", "move", phone, "--to", host]).unwrap();
    }
    let on = |phone: &str, host: &FleetHost| host.phone_state(phone).as_deref() == Some("running");
    wait_for(
        "a phone running on each host",
        Duration::from_secs(20),
        || (on("phone-1", &a) && on("phone-2", &b) && on("phone-3", &c)).then_some(()),
    );

    let enrollment = gw
        .ctl(&[
            "handset",
            "enroll",
            "--name",
            "erin",
            "--all-phones",
            "--quiet",
        ])
        .unwrap();
    HeadlessCompanion::enroll(root.path(), &enrollment);
    let sessions = |h: &FleetHost| -> Vec<String> { h.sessions() };
    for (phone, host) in [("phone-1", &a), ("phone-2", &b), ("phone-3", &c)] {
        let companion = HeadlessCompanion::connect(root.path(), phone, &["--phone", phone], 30);
        let text = companion.said(
            &format!("connected to phone '{phone}'"),
            Duration::from_secs(20),
        );
        assert!(text.contains("following the redirect"), "{text}");
        // (The session of the companion before stays in its resume window
        // on its own host: killed companions do not say goodbye.)
        wait_for(
            &format!("{phone}'s session on {}", host.name),
            Duration::from_secs(5),
            || sessions(host).iter().any(|p| p == phone).then_some(()),
        );
        for other in hosts.iter().filter(|h| h.name != host.name) {
            assert!(
                !sessions(other).iter().any(|p| p == phone),
                "{} serves {phone} too",
                other.name
            );
        }
        assert!(sessions(&gw).is_empty(), "the gateway only redirects");
    }

    // Drain host-c under a live session on phone-3: the session ends
    // saying the phone moves, and the handset finds it on its new host.
    let companion = HeadlessCompanion::connect(root.path(), "drained", &["--phone", "phone-3"], 60);
    let _ = companion.said("connected to phone 'phone-3'", Duration::from_secs(20));
    gw.ctl(&["host", "drain", "host-c"]).unwrap();
    let text = companion.said("reconnected", Duration::from_secs(30));
    assert!(text.contains("moves to another host"), "{text}");
    let holder = live_leases(&reg)
        .into_iter()
        .find(|l| l.phone == "phone-3")
        .map(|l| l.host)
        .expect("phone-3 leased again");
    assert_ne!(holder, "host-c");
    let new_host = hosts.iter().find(|h| h.name == holder).unwrap();
    wait_for(
        "the session on phone-3's new host",
        Duration::from_secs(10),
        || {
            sessions(new_host)
                .iter()
                .any(|p| p == "phone-3")
                .then_some(())
        },
    );
    assert!(sessions(&c).is_empty(), "the drained host keeps no session");
}
