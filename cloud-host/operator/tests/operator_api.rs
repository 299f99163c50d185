//! The operator API against an in-process host with sim phones: lifecycle,
//! bad requests with their status codes and messages, authentication,
//! metrics, and the registry surviving a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sensor_proto::operator as op;
use sensor_proto::operator::operator_client::OperatorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;
use vphone_operator::ServedHost as Host;

async fn start(dir: &Path) -> Host {
    common::start_host(dir).await
}

type Client = OperatorClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    }
}

async fn client(addr: SocketAddr, token: Option<&str>) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    OperatorClient::with_interceptor(ch, Auth(token.map(str::to_owned)))
}

async fn wait_state(c: &mut Client, name: &str, want: op::PhoneState) -> op::Phone {
    for _ in 0..200 {
        let p = c
            .get_phone(op::GetPhoneRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        if p.state == want as i32 {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never reached {want:?}");
}

fn create(name: &str, w: u32, h: u32) -> op::CreatePhoneRequest {
    op::CreatePhoneRequest {
        name: name.into(),
        backend: op::Backend::Sim as i32,
        display: Some(op::DisplaySpec {
            width_px: w,
            height_px: h,
            dpi: 320,
        }),
        avd: String::new(),
        allowed_handsets: vec![],
        start: true,
    }
}

#[tokio::test]
async fn lifecycle_and_bad_requests_through_the_operator_api() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut c = client(host.operator_addr, Some(token.trim())).await;

    // First start: phone-1, a running sim phone.
    let p = wait_state(&mut c, "phone-1", op::PhoneState::Running).await;
    assert_eq!(p.backend, op::Backend::Sim as i32);

    // Bad requests: status codes and messages a person understands.
    let e = c
        .create_phone(create("phone-1", 720, 1280))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::AlreadyExists, "phone 'phone-1' already exists")
    );
    let e = c
        .get_phone(op::GetPhoneRequest {
            name: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "phone 'ghost' not found")
    );
    let e = c
        .create_phone(create("bad name", 720, 1280))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("may only contain"), "{}", e.message());
    let e = c.create_phone(create("small", 100, 100)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("unsupported screen size 100x100"),
        "{}",
        e.message()
    );
    let mut emu = create("emu", 1080, 2400);
    emu.backend = op::Backend::Emulator as i32;
    let e = c.create_phone(emu.clone()).await.unwrap_err();
    assert!(e.message().contains("needs an AVD"), "{}", e.message());
    emu.avd = "-wipe-data".into();
    let e = c.create_phone(emu).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("must start with"), "{}", e.message());
    let mut granting = create("granting", 720, 1280);
    granting.allowed_handsets = vec!["ab12".into()];
    let e = c.create_phone(granting).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("handset enroll --phone"),
        "{}",
        e.message()
    );
    let e = c
        .delete_phone(op::DeletePhoneRequest {
            name: "phone-1".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("use --force"), "{}", e.message());
    let e = c
        .enroll_handset(op::EnrollHandsetRequest {
            name: None,
            allowed_phones: vec!["ghost".into()],
            all_phones: false,
            ttl_seconds: 60,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Create, stop, start, screenshot, delete.
    let p = c
        .create_phone(create("lab", 360, 640))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.display.unwrap().width_px, 360);
    wait_state(&mut c, "lab", op::PhoneState::Running).await;
    let shot = c
        .get_screenshot(op::GetScreenshotRequest {
            name: "lab".into(),
            max_width: 0,
            max_height: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let info = png::Decoder::new(std::io::Cursor::new(shot.png.to_vec()))
        .read_info()
        .unwrap()
        .info()
        .clone();
    assert_eq!((info.width, info.height), (360, 640));
    c.stop_phone(op::StopPhoneRequest {
        name: "lab".into(),
        force: false,
    })
    .await
    .unwrap();
    wait_state(&mut c, "lab", op::PhoneState::Stopped).await;
    let e = c
        .get_screenshot(op::GetScreenshotRequest {
            name: "lab".into(),
            max_width: 0,
            max_height: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    c.start_phone(op::StartPhoneRequest { name: "lab".into() })
        .await
        .unwrap();
    wait_state(&mut c, "lab", op::PhoneState::Running).await;
    c.delete_phone(op::DeletePhoneRequest {
        name: "lab".into(),
        force: true,
    })
    .await
    .unwrap();
    let phones = c
        .list_phones(op::ListPhonesRequest {})
        .await
        .unwrap()
        .into_inner()
        .phones;
    assert_eq!(
        phones.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["phone-1"]
    );

    // Enrollment string.
    let r = c
        .enroll_handset(op::EnrollHandsetRequest {
            name: Some("alice".into()),
            allowed_phones: vec!["phone-1".into()],
            ttl_seconds: 60,
            all_phones: false,
        })
        .await
        .unwrap()
        .into_inner();
    // "Every phone" is never implied: no phone named and no explicit grant
    // is refused, and so is both at once.
    for (phones, all) in [(vec![], false), (vec!["phone-1".to_owned()], true)] {
        let e = c
            .enroll_handset(op::EnrollHandsetRequest {
                name: None,
                allowed_phones: phones,
                ttl_seconds: 60,
                all_phones: all,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("all_phones"), "{}", e.message());
    }
    let prefix = format!(
        "vphone://127.0.0.1:{}?pin={}&token=vpe1.",
        host.quic_addr.port(),
        r.host_pin
    );
    assert!(
        r.enrollment.starts_with(&prefix),
        "{} vs {prefix}",
        r.enrollment
    );
    assert_eq!(r.host_pin.len(), 64);

    // Stats and metrics.
    let s = c
        .get_host_stats(op::GetHostStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.phones, s.phones_running), (1, 1));
    let metrics = http_get(host.operator_addr, "/metrics").await;
    assert!(
        metrics.contains("vphone_phones{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE vphone_sessions gauge"),
        "{metrics}"
    );
    // Every lifecycle state is a series, zero or not; counters follow the
    // OpenMetrics `_total` convention and the exposition ends with # EOF.
    for state in host_core::phones::Lifecycle::NAMES {
        assert!(
            metrics.contains(&format!("vphone_phones{{state=\"{state}\"}}")),
            "{state} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE vphone_sessions_attached counter"),
        "{metrics}"
    );
    assert!(metrics.contains("vphone_uptime_seconds "), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    host.shutdown().await;
}

#[tokio::test]
async fn missing_or_wrong_operator_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    let mut none = client(host.operator_addr, None).await;
    let e = none
        .list_phones(op::ListPhonesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "operator token missing")
    );
    let mut wrong = client(host.operator_addr, Some("guess")).await;
    let e = wrong
        .list_phones(op::ListPhonesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "operator token rejected")
    );
    let metrics = http_get(host.operator_addr, "/metrics").await;
    assert!(
        metrics.contains("vphone_operator_auth_failures_total 2"),
        "{metrics}"
    );
    host.shutdown().await;
}

/// A fleet's admin token comes from a file the operator provides (a
/// mounted Secret): that token and no other is accepted, the data dir gets
/// no token of its own, and a file that cannot be a secret stops the start.
#[tokio::test]
async fn an_admin_token_from_a_file_is_the_one_accepted() {
    use host_core::config::HostConfig;
    use host_core::daemon::Listeners;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("secret-admin.token");
    let token = "6f1c0e4b9d2a7c35e8f01b6a4d9c2e7f5a3b8c1d0e6f4a2b";
    let private = |text: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&token_file, text).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    private(&format!("{token}\n"));
    let mut cfg = HostConfig::loopback(dir.path().join("data"));
    cfg.admin_token_file = Some(token_file.clone());
    let backends = || sim_phone::SimKind::default().backends();
    let host = Host::start(&cfg, Listeners::bind(&cfg).await.unwrap(), backends())
        .await
        .unwrap();
    let mut ok = client(host.operator_addr, Some(token)).await;
    ok.list_phones(op::ListPhonesRequest {}).await.unwrap();
    assert!(
        !dir.path().join("data/admin.token").exists(),
        "no token of its own in the data dir"
    );
    let mut other = client(host.operator_addr, Some(&token[..40])).await;
    let e = other
        .list_phones(op::ListPhonesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    host.shutdown().await;

    for (text, why) in [
        ("short\n", "at least 32 printable ASCII characters"),
        (
            "two tokens of enough length each, 0123456789\n",
            "without spaces",
        ),
        (
            "ünïcödé-is-no-header-value-0123456789abcdef\n",
            "printable ASCII",
        ),
    ] {
        private(text);
        let started = Host::start(&cfg, Listeners::bind(&cfg).await.unwrap(), backends()).await;
        let Err(e) = started else {
            panic!("{text:?} was taken as an admin token")
        };
        assert!(e.to_string().contains(why), "{e}");
        assert!(e.to_string().contains("secret-admin.token"), "{e}");
    }
    // A token every user of the machine may read is no secret.
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let started = Host::start(&cfg, Listeners::bind(&cfg).await.unwrap(), backends()).await;
    let Err(e) = started else {
        panic!("a world-readable admin token was accepted")
    };
    assert!(e.to_string().contains("readable by every user"), "{e}");
}

#[tokio::test]
async fn phones_come_back_in_their_desired_state_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let host = start(dir.path()).await;
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let mut c = client(host.operator_addr, Some(token.trim())).await;
        c.create_phone(create("second", 480, 800)).await.unwrap();
        wait_state(&mut c, "second", op::PhoneState::Running).await;
        c.stop_phone(op::StopPhoneRequest {
            name: "phone-1".into(),
            force: false,
        })
        .await
        .unwrap();
        wait_state(&mut c, "phone-1", op::PhoneState::Stopped).await;
        host.shutdown().await;
    }
    let host = start(dir.path()).await;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let mut c = client(host.operator_addr, Some(token.trim())).await;
    wait_state(&mut c, "second", op::PhoneState::Running).await;
    let p = c
        .get_phone(op::GetPhoneRequest {
            name: "phone-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, op::PhoneState::Stopped as i32);
    assert_eq!(p.desired_state, op::DesiredState::Stopped as i32);
    host.shutdown().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
