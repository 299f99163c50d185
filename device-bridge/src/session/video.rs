//! Video: one QUIC stream per GOP, the writer of a GOP (host side) and its
//! reader (handset side). A newer GOP resets an unfinished older one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use quinn::SendStream;
use sensor_proto::bridge::{AppErrorCode, StreamKind, VideoFrameHeader, VideoStreamHeader};
use tokio::sync::Notify;

use crate::BridgeError;
use crate::wire::{self, FrameReader, ReadFail};

use super::*;

/// The send priority of GOP `gop_id`'s stream. Every video stream ranks
/// below control, input and HCI (priority 0, quinn's default), so those
/// never queue behind video in the shared connection; among video streams a
/// newer GOP ranks above an older one, which must never hold it up.
pub(super) fn video_priority(gop_id: u64) -> i32 {
    // gop_id counts up from 1; after 2^31 GOPs (years) the order wraps once.
    let rank = i32::try_from(gop_id % (1 << 31)).unwrap_or(0);
    i32::MIN.saturating_add(rank)
}

/// The state of a video GOP stream being written (host side).
#[derive(Debug)]
pub(super) struct GopSlot {
    gop_id: u64,
    /// The stream, while no write is in progress.
    stream: Mutex<Option<SendStream>>,
    superseded: AtomicBool,
    wake: Notify,
}

impl GopSlot {
    /// Marks the GOP stale and resets its stream (now, or as soon as the
    /// write in progress notices).
    /// Returns true if data was actually cut off (a write was in progress
    /// or the stream still had unacknowledged data).
    pub(super) fn supersede(&self) -> bool {
        self.superseded.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        match lock(&self.stream).take() {
            // Fails harmlessly if everything was already acknowledged.
            Some(mut stream) => stream
                .reset(wire::code_varint(AppErrorCode::NoError))
                .is_ok(),
            // A write is in progress: the writer resets the stream.
            None => true,
        }
    }
}

/// Writes one GOP (group of pictures) on its own unidirectional stream
/// (host side). Obtained from `ServerSession::start_gop`.
///
/// Starting a newer GOP resets this GOP's stream if it is still unfinished
/// or not fully delivered, so stale video never delays fresh video; writes
/// then fail with [`BridgeError::GopSuperseded`].
#[derive(Debug)]
pub struct GopWriter(GopKind);

#[derive(Debug)]
enum GopKind {
    Quic(QuicGop),
    Web(Box<crate::web::WebGop>),
}

impl GopWriter {
    pub(crate) fn quic(gop: QuicGop) -> Self {
        Self(GopKind::Quic(gop))
    }

    pub(crate) fn web(gop: crate::web::WebGop) -> Self {
        Self(GopKind::Web(Box::new(gop)))
    }

    /// This GOP's id (`VideoStreamHeader.gop_id`).
    #[must_use]
    pub fn gop_id(&self) -> u64 {
        match &self.0 {
            GopKind::Quic(g) => g.gop_id(),
            GopKind::Web(g) => g.gop_id(),
        }
    }

    /// Writes one frame: `header` (its `seq` and `payload_len` are filled
    /// in by the bridge) followed by `payload`. The first frame of a GOP
    /// must be a keyframe. Returns the frame's seq.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] once a newer GOP started (stop
    /// writing this one); [`BridgeError::InvalidArgument`] for a non-key
    /// first frame or a payload over 8 MiB; [`BridgeError::Disconnected`]
    /// if the connection died (start a new GOP after the resume).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled write leaves the stream unusable.
    pub async fn write_frame(
        &mut self,
        header: VideoFrameHeader,
        payload: Bytes,
    ) -> Result<u64, BridgeError> {
        match &mut self.0 {
            GopKind::Quic(g) => g.write_frame(header, payload).await,
            GopKind::Web(g) => g.write_frame(header, payload).await,
        }
    }

    /// Ends the GOP cleanly. Its data keeps flowing until delivered or
    /// until a newer GOP resets it.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] if a newer GOP already started.
    pub fn finish(self) -> Result<(), BridgeError> {
        match self.0 {
            GopKind::Quic(g) => g.finish(),
            GopKind::Web(g) => g.finish(),
        }
    }
}

/// One GOP on a native session's stream.
#[derive(Debug)]
pub(crate) struct QuicGop {
    core: Arc<Core>,
    slot: Arc<GopSlot>,
    frames: u64,
}

impl QuicGop {
    /// This GOP's id (`VideoStreamHeader.gop_id`).
    #[must_use]
    pub(crate) fn gop_id(&self) -> u64 {
        self.slot.gop_id
    }

    /// Writes one frame: `header` (its `seq` and `payload_len` are filled
    /// in by the bridge) followed by `payload`. The first frame of a GOP
    /// must be a keyframe. Returns the frame's seq.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] once a newer GOP started (stop
    /// writing this one); [`BridgeError::InvalidArgument`] for a non-key
    /// first frame or a payload over 8 MiB; [`BridgeError::Disconnected`]
    /// if the connection died (start a new GOP after the resume).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled write leaves the stream unusable.
    pub(crate) async fn write_frame(
        &mut self,
        mut header: VideoFrameHeader,
        payload: Bytes,
    ) -> Result<u64, BridgeError> {
        let superseded = BridgeError::GopSuperseded {
            gop_id: self.slot.gop_id,
        };
        if self.slot.superseded.load(Ordering::SeqCst) {
            return Err(superseded);
        }
        if self.frames == 0 && !header.keyframe {
            return Err(BridgeError::InvalidArgument(
                "the first frame of a GOP must be a keyframe".into(),
            ));
        }
        if payload.len() > wire::MAX_VIDEO_PAYLOAD {
            return Err(BridgeError::InvalidArgument(format!(
                "video payload of {} bytes exceeds 8 MiB",
                payload.len()
            )));
        }
        let Some(mut stream) = lock(&self.slot.stream).take() else {
            return Err(superseded);
        };
        header.seq = self.core.frame_seq.fetch_add(1, Ordering::SeqCst) + 1;
        header.payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut head = BytesMut::new();
        wire::put_frame(&mut head, &header);
        let result = tokio::select! {
            biased;
            () = self.slot.wake.notified() => Ok(()),
            r = async {
                stream.write_chunk(head.freeze()).await?;
                stream.write_chunk(payload).await
            } => r.map_err(wire::write_error),
        };
        if self.slot.superseded.load(Ordering::SeqCst) {
            let _ = stream.reset(wire::code_varint(AppErrorCode::NoError));
            return Err(superseded);
        }
        result?;
        *lock(&self.slot.stream) = Some(stream);
        self.frames += 1;
        bump(&self.core.counters.video_frames_sent);
        Ok(header.seq)
    }

    /// Ends the GOP cleanly. Its data keeps flowing until delivered or
    /// until a newer GOP resets it.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] if a newer GOP already started.
    pub(crate) fn finish(self) -> Result<(), BridgeError> {
        let mut slot = lock(&self.slot.stream);
        match slot.as_mut() {
            Some(stream) => {
                let _ = stream.finish();
                Ok(())
            }
            None => Err(BridgeError::GopSuperseded {
                gop_id: self.slot.gop_id,
            }),
        }
    }
}

pub(super) async fn gop_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    let header = match reader.next::<VideoStreamHeader>().await {
        Ok(Some(h)) => h,
        Ok(None) | Err(ReadFail::Reset(_)) => return,
        Err(fail) => return core.read_failed(&link, fail, "video"),
    };
    let gop = header.gop_id;
    let newest = core.newest_gop.fetch_max(gop, Ordering::SeqCst);
    if gop < newest {
        bump(&core.counters.video_gops_superseded);
        reader.stop(AppErrorCode::NoError);
        return;
    }
    loop {
        if core.newest_gop.load(Ordering::SeqCst) > gop {
            bump(&core.counters.video_gops_superseded);
            reader.stop(AppErrorCode::NoError);
            return;
        }
        let frame = match reader.next::<VideoFrameHeader>().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(ReadFail::Reset(_)) => {
                bump(&core.counters.video_gops_superseded);
                return;
            }
            Err(fail) => return core.read_failed(&link, fail, "video"),
        };
        let len = usize::try_from(frame.payload_len).unwrap_or(usize::MAX);
        if len > wire::MAX_VIDEO_PAYLOAD {
            return core.fail(
                &link,
                AppErrorCode::MessageTooLarge,
                format!("video frame payload of {len} bytes exceeds 8 MiB"),
            );
        }
        let payload = match reader.raw(len).await {
            Ok(Some(p)) => p,
            Ok(None) if len == 0 => Bytes::new(),
            Ok(None) => {
                return core.fail(
                    &link,
                    AppErrorCode::MalformedMessage,
                    "video stream ended before the frame payload".into(),
                );
            }
            Err(ReadFail::Reset(_)) => {
                bump(&core.counters.video_gops_superseded);
                return;
            }
            Err(fail) => return core.read_failed(&link, fail, "video"),
        };
        let frame = VideoFrame {
            stream: header,
            header: frame,
            payload,
        };
        if core.video_in.tx.send(frame).await.is_err() {
            return;
        }
    }
}

impl Core {
    pub(crate) async fn start_gop(
        self: &Arc<Self>,
        mut header: VideoStreamHeader,
    ) -> Result<QuicGop, BridgeError> {
        let link = self.wait_link().await?;
        let gop_id = self.gop_seq.fetch_add(1, Ordering::SeqCst) + 1;
        header.gop_id = gop_id;
        let prev = lock(&self.last_gop).take();
        if let Some(prev) = prev
            && prev.supersede()
        {
            bump(&self.counters.video_gops_superseded);
        }
        let mut stream = link
            .conn
            .open_uni()
            .await
            .map_err(|_| BridgeError::Disconnected)?;
        let _ = stream.set_priority(video_priority(gop_id));
        let mut buf = wire::kind_prefix(StreamKind::Video);
        wire::put_frame(&mut buf, &header);
        wire::write(&mut stream, buf.freeze()).await?;
        let slot = Arc::new(GopSlot {
            gop_id,
            stream: Mutex::new(Some(stream)),
            superseded: AtomicBool::new(false),
            wake: Notify::new(),
        });
        *lock(&self.last_gop) = Some(slot.clone());
        Ok(QuicGop {
            core: self.clone(),
            slot,
            frames: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::video_priority;

    #[test]
    fn video_ranks_below_other_streams_and_newer_gops_above_older() {
        for gop in [1, 2, 1000, (1 << 31) - 1, u64::MAX] {
            assert!(video_priority(gop) < 0, "GOP {gop}");
        }
        assert!(video_priority(2) > video_priority(1));
        assert!(video_priority(1001) > video_priority(1000));
    }
}
