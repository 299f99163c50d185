//! The sim phone's `EmulatorController` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sensor_proto::emulator::emulator_controller_server::EmulatorController;
use sensor_proto::emulator::{
    AudioFormat, AudioPacket, BatteryState, ClipData, DisplayConfigurations, EmulatorStatus,
    GpsState, Image, ImageFormat, InputEvent, KeyboardEvent, MouseEvent, PhysicalModelValue,
    SensorValue, TouchEvent, VmRunState, WheelEvent, image_format, input_event,
    physical_model_value, sensor_value,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::image::image_for;
use super::*;

/// The EmulatorController implementation behind a [`SimPhone`].
#[derive(Debug, Clone)]
pub struct SimService {
    pub(super) phone: SimPhone,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(super) fn check_values(v: &[f32]) -> Result<(), Status> {
    if v.len() > MAX_SENSOR_VALUES {
        return Err(Status::invalid_argument(format!(
            "{} values given; at most {MAX_SENSOR_VALUES}",
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Status::invalid_argument(
            "sensor values must be finite numbers",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl EmulatorController for SimService {
    async fn stream_sensor(
        &self,
        _: Request<SensorValue>,
    ) -> Result<Response<BoxStream<SensorValue>>, Status> {
        Err(Status::unimplemented(
            "streamSensor is not served by the sim phone",
        ))
    }

    async fn get_sensor(&self, req: Request<SensorValue>) -> Result<Response<SensorValue>, Status> {
        let target = req.into_inner().target;
        sensor_value::SensorType::try_from(target)
            .map_err(|_| Status::invalid_argument(format!("unknown sensor type {target}")))?;
        let data = self
            .phone
            .state()
            .sensors
            .get(&target)
            .cloned()
            .unwrap_or_else(|| vec![0.0; 3]);
        Ok(Response::new(SensorValue {
            target,
            status: sensor_value::State::Ok as i32,
            value: Some(sensor_proto::emulator::ParameterValue { data }),
        }))
    }

    async fn set_sensor(&self, req: Request<SensorValue>) -> Result<Response<()>, Status> {
        let v = req.into_inner();
        sensor_value::SensorType::try_from(v.target)
            .map_err(|_| Status::invalid_argument(format!("unknown sensor type {}", v.target)))?;
        let data = v.value.map(|p| p.data).unwrap_or_default();
        if let Err(e) = check_values(&data) {
            self.phone
                .shared
                .stats
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        // The screen shows the values: it is drawn again only when one
        // changed (a handset lying still sends the same ones at 10 Hz).
        let changed = {
            let mut st = self.phone.state();
            if st.sensors.get(&v.target) == Some(&data) {
                false
            } else {
                st.sensors.insert(v.target, data);
                true
            }
        };
        self.phone
            .shared
            .stats
            .sensor_updates
            .fetch_add(1, Ordering::Relaxed);
        if changed {
            self.phone.touch();
        }
        Ok(Response::new(()))
    }

    async fn set_physical_model(
        &self,
        req: Request<PhysicalModelValue>,
    ) -> Result<Response<()>, Status> {
        let v = req.into_inner();
        let kind = physical_model_value::PhysicalType::try_from(v.target).map_err(|_| {
            Status::invalid_argument(format!("unknown physical model target {}", v.target))
        })?;
        let data = v.value.map(|p| p.data).unwrap_or_default();
        check_values(&data)?;
        let mut st = self.phone.state();
        if kind == physical_model_value::PhysicalType::Rotation {
            let z = data.get(2).copied().unwrap_or(0.0);
            st.rotation = (((z / 90.0).round() as i32) + 4).rem_euclid(4);
        }
        st.physical.insert(v.target, data);
        Ok(Response::new(()))
    }

    async fn get_physical_model(
        &self,
        req: Request<PhysicalModelValue>,
    ) -> Result<Response<PhysicalModelValue>, Status> {
        let target = req.into_inner().target;
        physical_model_value::PhysicalType::try_from(target).map_err(|_| {
            Status::invalid_argument(format!("unknown physical model target {target}"))
        })?;
        let data = self
            .phone
            .state()
            .physical
            .get(&target)
            .cloned()
            .unwrap_or_else(|| vec![0.0; 3]);
        Ok(Response::new(PhysicalModelValue {
            target,
            status: physical_model_value::State::Ok as i32,
            value: Some(sensor_proto::emulator::ParameterValue { data }),
        }))
    }

    async fn stream_physical_model(
        &self,
        _: Request<PhysicalModelValue>,
    ) -> Result<Response<BoxStream<PhysicalModelValue>>, Status> {
        Err(Status::unimplemented(
            "streamPhysicalModel is not served by the sim phone",
        ))
    }

    async fn set_battery(&self, req: Request<BatteryState>) -> Result<Response<()>, Status> {
        let b = req.into_inner();
        if !(0..=100).contains(&b.charge_level) {
            return Err(Status::invalid_argument(format!(
                "chargeLevel {} is not 0..100",
                b.charge_level
            )));
        }
        self.phone.state().battery = b;
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn get_battery(&self, _: Request<()>) -> Result<Response<BatteryState>, Status> {
        Ok(Response::new(self.phone.state().battery))
    }

    async fn set_gps(&self, req: Request<GpsState>) -> Result<Response<()>, Status> {
        let g = req.into_inner();
        let ok = g.latitude.is_finite()
            && g.longitude.is_finite()
            && (-90.0..=90.0).contains(&g.latitude)
            && (-180.0..=180.0).contains(&g.longitude)
            && g.altitude.is_finite()
            && g.speed.is_finite()
            && g.bearing.is_finite();
        if !ok {
            self.phone
                .shared
                .stats
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(Status::invalid_argument(
                "latitude must be -90..90 and longitude -180..180, all finite",
            ));
        }
        self.phone.state().gps = Some(g);
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn get_gps(&self, _: Request<()>) -> Result<Response<GpsState>, Status> {
        Ok(Response::new(self.phone.state().gps.unwrap_or_default()))
    }

    async fn send_key(&self, req: Request<KeyboardEvent>) -> Result<Response<()>, Status> {
        self.phone.apply_key(&req.into_inner());
        Ok(Response::new(()))
    }

    async fn send_touch(&self, req: Request<TouchEvent>) -> Result<Response<()>, Status> {
        self.phone.apply_touch(&req.into_inner())?;
        Ok(Response::new(()))
    }

    async fn send_mouse(&self, _: Request<MouseEvent>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "sendMouse is not served by the sim phone",
        ))
    }

    async fn inject_wheel(
        &self,
        _: Request<Streaming<WheelEvent>>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "injectWheel is not served by the sim phone",
        ))
    }

    async fn stream_input_event(
        &self,
        req: Request<Streaming<InputEvent>>,
    ) -> Result<Response<()>, Status> {
        let mut events = req.into_inner();
        while let Some(ev) = events.next().await {
            match ev?.r#type {
                Some(input_event::Type::KeyEvent(k)) => self.phone.apply_key(&k),
                Some(input_event::Type::TouchEvent(t)) => {
                    if self.phone.apply_touch(&t).is_err() {
                        self.phone
                            .shared
                            .stats
                            .rejected
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    self.phone
                        .shared
                        .stats
                        .rejected
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(Response::new(()))
    }

    async fn get_status(&self, _: Request<()>) -> Result<Response<EmulatorStatus>, Status> {
        Ok(Response::new(self.phone.status()))
    }

    async fn get_screenshot(&self, req: Request<ImageFormat>) -> Result<Response<Image>, Status> {
        let want = req.into_inner();
        let mut rx = self.phone.frames();
        let frame = loop {
            if let Some(f) = rx.borrow_and_update().clone() {
                break f;
            }
            rx.changed()
                .await
                .map_err(|_| Status::unavailable("the sim phone stopped"))?;
        };
        let region = Region::open(&want)?.map(Arc::new);
        Ok(Response::new(
            image_for(self.phone.clone(), frame, want, region).await?,
        ))
    }

    async fn stream_screenshot(
        &self,
        req: Request<ImageFormat>,
    ) -> Result<Response<BoxStream<Image>>, Status> {
        let want = req.into_inner();
        // Validate the request once, up front.
        image_format::ImgFormat::try_from(want.format).map_err(|_| {
            Status::invalid_argument(format!("unknown image format {}", want.format))
        })?;
        let region = Region::open(&want)?.map(Arc::new);
        let rx = self.phone.frames();
        let phone = self.phone.clone();
        let stream = tokio_stream::wrappers::WatchStream::new(rx)
            .filter_map(|f| f)
            .then(move |f| image_for(phone.clone(), f, want.clone(), region.clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_clipboard(&self, req: Request<ClipData>) -> Result<Response<()>, Status> {
        // Like the emulator: no clipboard event for a set.
        self.phone.state().clipboard = req.into_inner().text;
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn get_clipboard(&self, _: Request<()>) -> Result<Response<ClipData>, Status> {
        Ok(Response::new(ClipData {
            text: self.phone.clipboard(),
        }))
    }

    async fn stream_clipboard(
        &self,
        _: Request<()>,
    ) -> Result<Response<BoxStream<ClipData>>, Status> {
        // The current text at once, then each change the guest makes.
        let phone = self.phone.clone();
        let changes = tokio_stream::wrappers::WatchStream::new(phone.shared.guest_clip.subscribe());
        let stream = changes.map(move |_| {
            Ok(ClipData {
                text: phone.clipboard(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stream_audio(
        &self,
        req: Request<AudioFormat>,
    ) -> Result<Response<BoxStream<AudioPacket>>, Status> {
        let format = req.into_inner();
        let pcm = sound::PcmFormat::from_proto(&format)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let phone = self.phone.clone();
        let n = (u64::from(pcm.rate) * sound::PACKET_US / 1_000_000) as usize;
        tokio::spawn(async move {
            // One packet per 20 ms of sound, sent when its last sample has
            // been "played", on an absolute schedule (no drift).
            let start = tokio::time::Instant::now();
            let start_us = unix_us();
            let mut i: u64 = 0;
            loop {
                let due = start + Duration::from_micros((i + 1) * sound::PACKET_US);
                tokio::time::sleep_until(due).await;
                // Far behind (a stalled machine): skip what is already late.
                let behind = start.elapsed().as_micros() as u64 / sound::PACKET_US;
                if behind > i + 10 {
                    i = behind - 1;
                }
                let t0 = start_us + i * sound::PACKET_US;
                let mono = phone.state().mixer.render(t0, n, pcm.rate);
                let p = sound::packet(&format, pcm, &mono, t0);
                match tx.try_send(Ok(p)) {
                    // Real time: a reader that does not keep up loses
                    // packets, it does not delay them.
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
                i += 1;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn inject_audio(
        &self,
        req: Request<Streaming<AudioPacket>>,
    ) -> Result<Response<()>, Status> {
        if self.phone.shared.mic_busy.swap(true, Ordering::AcqRel) {
            return Err(Status::failed_precondition(
                "There is already an active microphone; only one client can inject audio",
            ));
        }
        // Frees the microphone however the call ends.
        struct Release(SimPhone);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.shared.mic_busy.store(false, Ordering::Release);
                if let Some(m) = self.0.state().mic.as_mut() {
                    m.active = false;
                }
                self.0.touch();
            }
        }
        let _release = Release(self.phone.clone());
        let mut packets = req.into_inner();
        // Only the first packet's format counts, as on the emulator.
        let mut format: Option<sound::PcmFormat> = None;
        let mut meter: Option<sound::Meter> = None;
        while let Some(p) = packets.next().await {
            let p = p?;
            let pcm = match format {
                Some(f) => f,
                None => {
                    let f = sound::PcmFormat::from_proto(&p.format.unwrap_or_default())?;
                    meter = Some(sound::Meter::new(f.rate));
                    format = Some(f);
                    f
                }
            };
            if p.audio.len() > pcm.max_packet_bytes() {
                return Err(Status::invalid_argument(format!(
                    "The audio packet was too large to handle: {} bytes, at most {} (300 ms)",
                    p.audio.len(),
                    pcm.max_packet_bytes()
                )));
            }
            let mono = pcm.decode(&p.audio);
            if let Some(m) = meter.as_mut() {
                let heard = m.hear(&mono);
                let delay = unix_us()
                    .checked_sub(p.timestamp)
                    .filter(|d| *d < 60_000_000);
                let mut st = self.phone.state();
                st.mic = Some(heard);
                if let Some(d) = delay {
                    if st.mic_latency_us.len() >= 1024 {
                        st.mic_latency_us.pop_front();
                    }
                    st.mic_latency_us.push_back(d);
                }
                drop(st);
                self.phone.touch();
            }
        }
        Ok(Response::new(()))
    }

    async fn set_vm_state(&self, _: Request<VmRunState>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "setVmState is not served by the sim phone",
        ))
    }

    async fn get_vm_state(&self, _: Request<()>) -> Result<Response<VmRunState>, Status> {
        Ok(Response::new(VmRunState {
            state: sensor_proto::emulator::vm_run_state::RunState::Running as i32,
        }))
    }

    async fn set_display_configurations(
        &self,
        _: Request<DisplayConfigurations>,
    ) -> Result<Response<DisplayConfigurations>, Status> {
        Err(Status::failed_precondition(
            "the sim phone has no secondary displays",
        ))
    }

    async fn get_display_configurations(
        &self,
        _: Request<()>,
    ) -> Result<Response<DisplayConfigurations>, Status> {
        Err(Status::failed_precondition(
            "the sim phone has no secondary displays",
        ))
    }
}
