//! What an operator request can carry into the host: phone specs (name,
//! backend, display, AVD) checked exactly as `create_phone` checks them,
//! handset names, and enrollment requests decoded from the wire. A spec the
//! host accepts has a name and an AVD that are safe as file names and as
//! command-line arguments.
#![no_main]

use host_core::backend::emulator::EmulatorKind;
use host_core::backend::{BackendContext, BackendKind, PhoneBackend};
use host_core::phones::PhoneSpec;
use host_core::registry::{Backend, PhoneRecord, validate_name};
use libfuzzer_sys::fuzz_target;
use sensor_proto::operator::{CreatePhoneRequest, EnrollHandsetRequest};
use sensor_proto::prost::Message;

/// A backend kind that accepts any screen (the sim's limits are its own).
#[derive(Debug)]
struct AnyScreen;

impl BackendKind for AnyScreen {
    fn make(&self, _: &PhoneRecord, _: &BackendContext) -> Box<dyn PhoneBackend> {
        unreachable!("the fuzz target never makes a backend")
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = CreatePhoneRequest::decode(data) {
        let d = r.display.unwrap_or_default();
        let emulator = r.backend == 2;
        let spec = PhoneSpec {
            name: r.name,
            backend: if emulator {
                Backend::Emulator
            } else {
                Backend::Sim
            },
            display: (d.width_px, d.height_px, d.dpi),
            avd: (!r.avd.is_empty()).then_some(r.avd),
            start: r.start,
        };
        let kind: &dyn BackendKind = if emulator {
            &EmulatorKind::default()
        } else {
            &AnyScreen
        };
        if let Ok(record) = spec.record(kind, 0) {
            let safe = |s: &str| {
                !s.is_empty()
                    && !s.starts_with(['-', '.'])
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            };
            assert!(safe(&record.name), "{:?}", record.name);
            if emulator {
                assert!(
                    safe(record.avd.as_deref().unwrap_or("")),
                    "{:?}",
                    record.avd
                );
            }
            assert!((120..=640).contains(&record.dpi));
        }
    }
    if let Ok(r) = EnrollHandsetRequest::decode(data) {
        if let Some(name) = &r.name {
            let _ = sensor_proto::names::check_handset_name(name);
        }
        for p in &r.allowed_phones {
            let _ = validate_name("phone name", p);
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && sensor_proto::names::check_handset_name(text).is_ok()
    {
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert_eq!(text.trim(), text);
    }
});
