//! Length-delimited framing of protobuf messages on QUIC streams.
//!
//! A frame is the protobuf varint of the body length followed by the body
//! (exactly what [`prost::Message::encode_length_delimited`] writes). The
//! control, input and hci streams of the bridge protocol, and the headers on
//! video streams, use it.
//!
//! [`LengthDelimitedDecoder`] is sans-IO: push whatever bytes arrived, then
//! pop whole messages. It enforces a maximum body size
//! ([`DEFAULT_MAX_MESSAGE_SIZE`] by default) and rejects an oversize frame as
//! soon as its length prefix is seen, without waiting for (or buffering) the
//! body. It never panics, whatever the input.

use bytes::{Buf as _, Bytes, BytesMut};
use prost::Message;

use crate::ProtoError;

/// Default maximum body size of one length-delimited message: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Longest valid varint encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Encodes `msg` as one frame: varint length prefix, then the message.
#[must_use]
pub fn encode_length_delimited<M: Message>(msg: &M) -> Bytes {
    Bytes::from(msg.encode_length_delimited_to_vec())
}

/// Like [`encode_length_delimited`], but refuses a message whose body is
/// longer than `max` bytes (so a sender never produces a frame its peer
/// must reject).
///
/// # Errors
///
/// [`ProtoError::TooLarge`] if the encoded body exceeds `max`.
pub fn encode_length_delimited_checked<M: Message>(
    msg: &M,
    max: usize,
) -> Result<Bytes, ProtoError> {
    let len = msg.encoded_len();
    if len > max {
        return Err(ProtoError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(encode_length_delimited(msg))
}

/// Where the next frame's body starts and how long it is.
struct FrameHeader {
    prefix_len: usize,
    body_len: usize,
}

/// Parses the varint length prefix at the start of `buf`.
///
/// `Ok(None)`: not enough bytes yet to know the length.
fn parse_header(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, ProtoError> {
    let max_u64 = u64::try_from(max).unwrap_or(u64::MAX);
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        // The 10th byte may only carry the top bit of a u64 and must end
        // the varint.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(ProtoError::InvalidLengthPrefix);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        // More bytes can only make the value larger, so an oversize length
        // is rejected as early as possible.
        if value > max_u64 {
            return Err(ProtoError::TooLarge { len: value, max });
        }
        if byte & 0x80 == 0 {
            let body_len =
                usize::try_from(value).map_err(|_| ProtoError::TooLarge { len: value, max })?;
            return Ok(Some(FrameHeader {
                prefix_len: i + 1,
                body_len,
            }));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(ProtoError::InvalidLengthPrefix)
    } else {
        Ok(None)
    }
}

/// Sans-IO decoder of length-delimited frames.
///
/// Framing errors ([`ProtoError::TooLarge`],
/// [`ProtoError::InvalidLengthPrefix`]) are sticky: the stream cannot be
/// resynchronised, so every later pop returns the same error and pushed
/// bytes are discarded. A body that fails to decode as the requested message
/// ([`ProtoError::Malformed`]) is consumed and reported once; whether that
/// is fatal is the caller's decision (it is for the bridge protocol).
#[derive(Debug, Clone)]
pub struct LengthDelimitedDecoder {
    buf: BytesMut,
    max: usize,
    failed: Option<ProtoError>,
}

impl Default for LengthDelimitedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl LengthDelimitedDecoder {
    /// A decoder with the [`DEFAULT_MAX_MESSAGE_SIZE`] limit.
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A decoder that rejects bodies longer than `max` bytes.
    #[must_use]
    pub fn with_max_size(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
            failed: None,
        }
    }

    /// The body size limit, bytes.
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Bytes buffered and not yet popped.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The sticky framing error, if the decoder has failed.
    #[must_use]
    pub fn error(&self) -> Option<&ProtoError> {
        self.failed.as_ref()
    }

    /// Appends received bytes. Ignored once the decoder has failed.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    fn fail(&mut self, err: ProtoError) -> ProtoError {
        self.buf = BytesMut::new();
        self.failed = Some(err.clone());
        err
    }

    /// Pops the next whole frame's body, without decoding it.
    ///
    /// `Ok(None)` means more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`ProtoError::TooLarge`] as soon as a length prefix above the limit
    /// is seen; [`ProtoError::InvalidLengthPrefix`] for a broken varint.
    /// Both are sticky.
    pub fn pop_frame(&mut self) -> Result<Option<Bytes>, ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let header = match parse_header(&self.buf, self.max) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.fail(err)),
        };
        let available = self.buf.len() - header.prefix_len;
        if available < header.body_len {
            return Ok(None);
        }
        self.buf.advance(header.prefix_len);
        Ok(Some(self.buf.split_to(header.body_len).freeze()))
    }

    /// Pops and decodes the next whole message.
    ///
    /// `Ok(None)` means more bytes are needed.
    ///
    /// # Errors
    ///
    /// As [`Self::pop_frame`], plus [`ProtoError::Malformed`] (not sticky,
    /// the bad frame is consumed) if the body is not a valid `M`.
    pub fn pop<M: Message + Default>(&mut self) -> Result<Option<M>, ProtoError> {
        match self.pop_frame()? {
            Some(body) => M::decode(body).map(Some).map_err(ProtoError::from),
            None => Ok(None),
        }
    }

    /// Pops exactly `n` raw (unframed) bytes, e.g. the video payload that
    /// follows a `VideoFrameHeader`, or the `StreamKind` byte that starts a
    /// stream. `Ok(None)` until `n` bytes are buffered.
    ///
    /// # Errors
    ///
    /// The sticky framing error, if the decoder has failed.
    pub fn pop_raw(&mut self, n: usize) -> Result<Option<Bytes>, ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.len() < n {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    /// Pops up to `max` raw bytes, as many as are buffered (possibly none),
    /// to stream a large raw payload without buffering all of it.
    ///
    /// # Errors
    ///
    /// The sticky framing error, if the decoder has failed.
    pub fn pop_raw_up_to(&mut self, max: usize) -> Result<Bytes, ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let n = max.min(self.buf.len());
        Ok(self.buf.split_to(n).freeze())
    }

    /// Call when the stream has ended (FIN received): checks that it ended
    /// on a frame boundary.
    ///
    /// # Errors
    ///
    /// The sticky framing error, or [`ProtoError::Truncated`] if bytes of
    /// an incomplete frame are left.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}
