//! Reading and writing framed messages on quinn streams.

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message;
use quinn::{ReadError, RecvStream, SendStream, WriteError};
use sensor_proto::bridge::AppErrorCode;
use sensor_proto::framing::{DEFAULT_MAX_MESSAGE_SIZE, LengthDelimitedDecoder};

use crate::BridgeError;

/// Largest raw video payload after one `VideoFrameHeader` (8 MiB).
pub(crate) const MAX_VIDEO_PAYLOAD: usize = 8 * 1024 * 1024;

/// Why reading a stream stopped.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The connection is gone; the connection watcher deals with it.
    Lost,
    /// The peer reset the stream with this code.
    Reset(u64),
    /// The peer sent something invalid: close with this code.
    Peer(AppErrorCode, String),
    /// Something unexpected on our side.
    Internal(String),
}

impl ReadFail {
    fn from_proto(err: &sensor_proto::ProtoError) -> Self {
        Self::Peer(err.app_error_code(), err.to_string())
    }
}

/// A receive stream cut into length-delimited messages (64 KiB limit).
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: RecvStream,
    dec: LengthDelimitedDecoder,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            dec: LengthDelimitedDecoder::with_max_size(DEFAULT_MAX_MESSAGE_SIZE),
        }
    }

    /// Reads more bytes into the decoder. `Ok(false)` at the end of the
    /// stream.
    pub(crate) async fn fill(&mut self) -> Result<bool, ReadFail> {
        match self.recv.read_chunk(256 * 1024, true).await {
            Ok(Some(chunk)) => {
                self.dec.push(&chunk.bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(ReadError::ConnectionLost(_)) => Err(ReadFail::Lost),
            Err(ReadError::Reset(code)) => Err(ReadFail::Reset(code.into_inner())),
            Err(e) => Err(ReadFail::Internal(e.to_string())),
        }
    }

    /// The next whole message already buffered, without waiting.
    pub(crate) fn try_next<M: Message + Default>(&mut self) -> Result<Option<M>, ReadFail> {
        self.dec.pop::<M>().map_err(|e| ReadFail::from_proto(&e))
    }

    /// The next message; `Ok(None)` if the stream ended cleanly between
    /// messages.
    pub(crate) async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, ReadFail> {
        loop {
            if let Some(msg) = self.try_next()? {
                return Ok(Some(msg));
            }
            if !self.fill().await? {
                return match self.dec.finish() {
                    Ok(()) => Ok(None),
                    Err(e) => Err(ReadFail::from_proto(&e)),
                };
            }
        }
    }

    /// Exactly `n` raw bytes; `Ok(None)` if the stream ended before any
    /// byte of them arrived.
    pub(crate) async fn raw(&mut self, n: usize) -> Result<Option<Bytes>, ReadFail> {
        loop {
            if let Some(bytes) = self.dec.pop_raw(n).map_err(|e| ReadFail::from_proto(&e))? {
                return Ok(Some(bytes));
            }
            if !self.fill().await? {
                return if self.dec.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(ReadFail::Peer(
                        AppErrorCode::MalformedMessage,
                        "stream ended inside a raw payload".into(),
                    ))
                };
            }
        }
    }

    /// Asks the peer to stop sending on this stream.
    pub(crate) fn stop(&mut self, code: AppErrorCode) {
        let _ = self.recv.stop(quinn::VarInt::from_u32(code as u32));
    }
}

/// Appends `msg` as a length-delimited frame.
pub(crate) fn put_frame<M: Message>(buf: &mut BytesMut, msg: &M) {
    let len = msg.encoded_len();
    buf.reserve(len + 10);
    // Encoding into a BytesMut cannot run out of space (it grows).
    let _ = msg.encode_length_delimited(buf);
}

/// Encodes `msg` as one frame, refusing bodies over the 64 KiB limit.
pub(crate) fn frame<M: Message>(msg: &M) -> Result<Bytes, BridgeError> {
    sensor_proto::framing::encode_length_delimited_checked(msg, DEFAULT_MAX_MESSAGE_SIZE)
        .map_err(|e| BridgeError::InvalidArgument(format!("message too large to send: {e}")))
}

/// A stream-kind byte followed by an optional first frame.
pub(crate) fn kind_prefix(kind: sensor_proto::bridge::StreamKind) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(kind.to_byte());
    buf
}

/// Maps a write failure to the caller-facing error.
pub(crate) fn write_error(err: WriteError) -> BridgeError {
    match err {
        WriteError::Stopped(code) => BridgeError::protocol(
            AppErrorCode::from_code(code.into_inner()).unwrap_or(AppErrorCode::ProtocolViolation),
            "the peer stopped the stream",
        ),
        WriteError::ConnectionLost(_) | WriteError::ClosedStream | WriteError::ZeroRttRejected => {
            BridgeError::Disconnected
        }
    }
}

/// Writes all of `bytes`.
pub(crate) async fn write(send: &mut SendStream, bytes: Bytes) -> Result<(), BridgeError> {
    send.write_chunk(bytes).await.map_err(write_error)
}

/// The `VarInt` of an application error code.
pub(crate) fn code_varint(code: AppErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.code()).unwrap_or(quinn::VarInt::from_u32(0))
}

/// Trims a close reason so the CONNECTION_CLOSE frame stays small.
pub(crate) fn reason_bytes(reason: &str) -> &[u8] {
    let mut end = reason.len().min(256);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}
