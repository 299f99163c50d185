//! The session's control stream, handset -> host: keyframe requests, clock
//! sync, the radio's heartbeat and the handset's pastes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use device_bridge::ServerSession;
use sensor_proto::bridge::control_message;
use tokio::sync::Notify;

use crate::bluetooth::Bluetooth;

pub(super) async fn control_loop(
    s: Arc<ServerSession>,
    keyframe: Arc<Notify>,
    clock_offset_ns: Arc<std::sync::atomic::AtomicI64>,
    (bluetooth, radio_lent): (Arc<Bluetooth>, Arc<AtomicBool>),
    clipboard: tokio::sync::mpsc::Sender<String>,
) {
    let phone = s.welcome().phone_name;
    while let Ok(m) = s.recv_control().await {
        match m.msg {
            // The handset lends its radio (repeated as a heartbeat) or takes
            // it back.
            Some(control_message::Msg::RadioState(r)) if r.lent => {
                if !radio_lent.swap(true, Ordering::Relaxed) {
                    tracing::info!("the handset lends its Bluetooth radio");
                }
                bluetooth.radio_heartbeat(&phone, &s);
            }
            Some(control_message::Msg::RadioState(_)) => {
                if radio_lent.swap(false, Ordering::Relaxed) {
                    tracing::info!("the handset took its Bluetooth radio back");
                }
                bluetooth
                    .radio_released(&phone, s.id(), "the handset took its radio back")
                    .await;
            }
            Some(control_message::Msg::KeyframeRequest(_)) => keyframe.notify_one(),
            // A paste into the handset's viewer: the phone's clipboard.
            Some(control_message::Msg::Clipboard(c)) => {
                let full = clipboard.try_send(c.text).is_err();
                if full {
                    tracing::debug!("pastes arrive faster than the phone takes them; one dropped");
                }
            }
            // The handset's offset is host minus handset; a sample taken at
            // handset time t happened at host time t + offset.
            Some(control_message::Msg::Stats(st)) => {
                clock_offset_ns.store(st.clock_offset_ns, Ordering::Relaxed)
            }
            _ => {}
        }
    }
}
