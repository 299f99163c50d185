//! Touch, keys and location, handset -> phone: one ordered
//! `streamInputEvent` per session; touches outside the screen are clamped
//! and counted, unknown key codes dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use device_bridge::ServerSession;
use sensor_proto::bridge::input_message;
use sensor_proto::emulator::{
    GpsState, InputEvent, KeyboardEvent, Touch, TouchEvent, input_event, keyboard_event,
};

use crate::emu_client::EmulatorClient;

use super::Refused;

fn touch_event(
    t: &sensor_proto::bridge::Touch,
    (w, h): (u32, u32),
    clamped: &AtomicU64,
) -> TouchEvent {
    use sensor_proto::bridge::TouchAction;
    let action = TouchAction::try_from(t.action).unwrap_or(TouchAction::Unspecified);
    let (maxx, maxy) = (w.saturating_sub(1) as f32, h.saturating_sub(1) as f32);
    let touches = t
        .pointers
        .iter()
        .take(10)
        .map(|p| {
            let (x, y) = (
                if p.x.is_finite() { p.x } else { 0.0 },
                if p.y.is_finite() { p.y } else { 0.0 },
            );
            if x < 0.0 || y < 0.0 || x > maxx || y > maxy || !p.x.is_finite() || !p.y.is_finite() {
                clamped.fetch_add(1, Ordering::Relaxed);
            }
            let released = action == TouchAction::Cancel
                || (action == TouchAction::Up && p.id == t.action_pointer_id);
            Touch {
                x: x.clamp(0.0, maxx).round() as i32,
                y: y.clamp(0.0, maxy).round() as i32,
                identifier: p.id.min(i32::MAX as u32) as i32,
                pressure: if released {
                    0
                } else {
                    ((p.pressure.clamp(0.0, 1.0) * 1024.0) as i32).max(1)
                },
                touch_major: p.major_px.clamp(0.0, 1000.0) as i32,
                touch_minor: p.minor_px.clamp(0.0, 1000.0) as i32,
                ..Touch::default()
            }
        })
        .collect();
    TouchEvent {
        touches,
        display: 0,
    }
}

pub(super) async fn input_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    screen: (u32, u32),
    refused: Arc<Refused>,
) {
    let (tx, done) = client.input_stream();
    while let Ok(msg) = s.recv_input().await {
        let ev = match msg.event {
            Some(input_message::Event::Touch(t)) => Some(input_event::Type::TouchEvent(
                touch_event(&t, screen, &refused.clamped_touches),
            )),
            Some(input_message::Event::Key(k)) => {
                use sensor_proto::bridge::KeyAction;
                let event_type = match KeyAction::try_from(k.action).unwrap_or(KeyAction::Press) {
                    KeyAction::Down => keyboard_event::KeyEventType::Keydown,
                    KeyAction::Up => keyboard_event::KeyEventType::Keyup,
                    _ => keyboard_event::KeyEventType::Keypress,
                };
                match (
                    crate::keymap::android_to_w3c(k.keycode),
                    k.text.as_deref().filter(|t| !t.is_empty()),
                ) {
                    (_, Some(text)) if text.len() <= 1024 => {
                        Some(input_event::Type::KeyEvent(KeyboardEvent {
                            event_type: keyboard_event::KeyEventType::Keypress as i32,
                            text: text.to_owned(),
                            ..KeyboardEvent::default()
                        }))
                    }
                    (Some(key), _) => Some(input_event::Type::KeyEvent(KeyboardEvent {
                        event_type: event_type as i32,
                        key: key.to_owned(),
                        ..KeyboardEvent::default()
                    })),
                    _ => {
                        refused.unknown_keys.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            Some(input_message::Event::Location(l)) => {
                let gps = GpsState {
                    passive_update: false,
                    latitude: l.latitude_deg,
                    longitude: l.longitude_deg,
                    speed: l.speed_mps.unwrap_or(0.0),
                    bearing: l.bearing_deg.unwrap_or(0.0),
                    altitude: l.altitude_m.unwrap_or(0.0),
                    satellites: l.satellites as i32,
                };
                if let Err(e) = client.set_gps(gps).await {
                    tracing::debug!(error = %e, "location refused by the phone");
                }
                None
            }
            None => None,
        };
        if let Some(t) = ev
            && tx.send(InputEvent { r#type: Some(t) }).await.is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = done.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_are_clamped_and_counted_and_up_releases_one_pointer() {
        use sensor_proto::bridge::{Pointer, TouchAction};
        let clamped = AtomicU64::new(0);
        let t = sensor_proto::bridge::Touch {
            action: TouchAction::Up as i32,
            action_pointer_id: 2,
            pointers: vec![
                Pointer {
                    id: 1,
                    x: -50.0,
                    y: 5000.0,
                    pressure: 0.5,
                    ..Pointer::default()
                },
                Pointer {
                    id: 2,
                    x: 100.0,
                    y: 200.0,
                    pressure: 0.5,
                    ..Pointer::default()
                },
            ],
            timestamp_ns: 0,
        };
        let ev = touch_event(&t, (720, 1280), &clamped);
        assert_eq!(clamped.load(Ordering::Relaxed), 1);
        assert_eq!((ev.touches[0].x, ev.touches[0].y), (0, 1279));
        assert!(ev.touches[0].pressure > 0);
        assert_eq!(ev.touches[1].pressure, 0);
    }
}
