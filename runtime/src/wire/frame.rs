//! Frame encoding and decoding: one buffer per frame out, no copy and no type-name allocation in.

use std::cell::RefCell;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{
    DecodeContext, WireType, decode_key, encode_key, encode_varint, encoded_len_varint, key_len,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::wire::message::{Headers, Message, Payload, TypeName};
use crate::wire::proto::{self, Frame, FrameKind};

/// The WebSocket subprotocol this version speaks.
pub const SUBPROTOCOL: &str = "goomerang.v1";

/// Field number of `Frame.payload`.
const PAYLOAD_TAG: u32 = 4;

/// The fields of an outgoing payload-carrying frame besides the payload,
/// encoded by hand so the type name goes from its static halves straight
/// into the buffer. Zero values are left out, as prost leaves them out.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub(crate) kind: FrameKind,
    pub(crate) id: u64,
    pub(crate) type_name: TypeName,
    pub(crate) headers: &'a Headers,
    pub(crate) timeout_ms: u32,
    pub(crate) topic: &'a str,
    pub(crate) queue_group: &'a str,
    pub(crate) created_unix_us: i64,
    /// The method called (`package.Service/Method`); empty to route by type.
    pub(crate) method: &'a str,
    /// History: a SUBSCRIBE's position to recover from (0: none).
    pub(crate) offset: u64,
    /// History: the epoch `offset` counts in.
    pub(crate) epoch: &'a str,
}

impl<'a> Head<'a> {
    /// A frame of `kind` carrying a `type_name` payload, created now; no id, deadline or topic.
    pub(crate) fn new(kind: FrameKind, type_name: TypeName, headers: &'a Headers) -> Head<'a> {
        Head {
            kind,
            id: 0,
            type_name,
            headers,
            timeout_ms: 0,
            topic: "",
            queue_group: "",
            created_unix_us: now_us(),
            method: "",
            offset: 0,
            epoch: "",
        }
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{hash_map, int32, int64, string, uint32, uint64};
        let str_len = |tag: u32, len: usize| {
            if len == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(len as u64) + len
            }
        };
        let kind = self.kind as i32;
        (if kind != 0 {
            int32::encoded_len(1, &kind)
        } else {
            0
        }) + (if self.id != 0 {
            uint64::encoded_len(2, &self.id)
        } else {
            0
        }) + str_len(3, self.type_name.len())
            + (if self.headers.is_empty() {
                0
            } else {
                hash_map::encoded_len(string::encoded_len, string::encoded_len, 5, self.headers)
            })
            + (if self.timeout_ms != 0 {
                uint32::encoded_len(6, &self.timeout_ms)
            } else {
                0
            })
            + str_len(8, self.topic.len())
            + str_len(9, self.queue_group.len())
            + (if self.created_unix_us != 0 {
                int64::encoded_len(10, &self.created_unix_us)
            } else {
                0
            })
            + str_len(11, self.method.len())
            + (if self.offset != 0 {
                uint64::encoded_len(12, &self.offset)
            } else {
                0
            })
            + str_len(13, self.epoch.len())
    }

    fn encode_raw(&self, buf: &mut BytesMut) {
        use prost::encoding::{hash_map, int32, int64, string, uint32, uint64};
        let kind = self.kind as i32;
        if kind != 0 {
            int32::encode(1, &kind, buf);
        }
        if self.id != 0 {
            uint64::encode(2, &self.id, buf);
        }
        if self.type_name.len() != 0 {
            encode_key(3, WireType::LengthDelimited, buf);
            encode_varint(self.type_name.len() as u64, buf);
            self.type_name.put(buf);
        }
        hash_map::encode(
            string::encode,
            string::encoded_len,
            string::encode,
            string::encoded_len,
            5,
            self.headers,
            buf,
        );
        if self.timeout_ms != 0 {
            uint32::encode(6, &self.timeout_ms, buf);
        }
        for (tag, value) in [(8, self.topic), (9, self.queue_group)] {
            if !value.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(value.len() as u64, buf);
                buf.put_slice(value.as_bytes());
            }
        }
        if self.created_unix_us != 0 {
            int64::encode(10, &self.created_unix_us, buf);
        }
        if !self.method.is_empty() {
            encode_key(11, WireType::LengthDelimited, buf);
            encode_varint(self.method.len() as u64, buf);
            buf.put_slice(self.method.as_bytes());
        }
        put_position(self.offset, self.epoch, buf);
    }

    /// The whole frame: these fields, then `payload` (encoded in place) as field 4.
    pub(crate) fn encode<P: prost::Message>(&self, payload: &P) -> Bytes {
        let payload_len = payload.encoded_len();
        let len = self.encoded_len() + payload_field_len(payload_len);
        with_buffer(len, |buf| {
            self.encode_raw(buf);
            if payload_len != 0 {
                encode_key(PAYLOAD_TAG, WireType::LengthDelimited, buf);
                encode_varint(payload_len as u64, buf);
                payload.encode_raw(buf);
            }
        })
    }

    /// The whole frame with an already encoded payload.
    pub(crate) fn encode_bytes(&self, payload: &[u8]) -> Bytes {
        let len = self.encoded_len() + payload_field_len(payload.len());
        with_buffer(len, |buf| {
            self.encode_raw(buf);
            if !payload.is_empty() {
                encode_key(PAYLOAD_TAG, WireType::LengthDelimited, buf);
                encode_varint(payload.len() as u64, buf);
                buf.put_slice(payload);
            }
        })
    }
}

/// Size of the chunks small frames are encoded into.
const CHUNK: usize = 16 << 10;

thread_local! {
    /// Where this thread encodes small outgoing frames: each frame is split
    /// off a shared chunk, so a send costs a reference count, not an
    /// allocation (which, freed by the writer on another thread, is what
    /// glibc's malloc handles worst). A chunk is freed with its last frame.
    static CHUNKS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Encodes a frame (or a payload) of exactly `len` bytes with `encode`.
pub(crate) fn with_buffer(len: usize, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    if len > CHUNK / 8 {
        let mut buf = BytesMut::with_capacity(len);
        encode(&mut buf);
        return buf.freeze();
    }
    CHUNKS.with_borrow_mut(|chunk| {
        if chunk.capacity() < len {
            *chunk = BytesMut::with_capacity(CHUNK);
        }
        encode(chunk);
        chunk.split().freeze()
    })
}

fn payload_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(PAYLOAD_TAG) + encoded_len_varint(len as u64) + len
    }
}

/// Encodes a payload-carrying frame of `kind` (MESSAGE, BROADCAST, PUBLISH)
/// with `topic` and `method` (empty for none).
pub(crate) fn encode_message<T: Payload>(
    kind: FrameKind,
    topic: &str,
    method: &str,
    message: Message<T>,
) -> Bytes {
    let (payload, headers, _) = message.into_parts();
    let head = Head {
        topic,
        method,
        ..Head::new(kind, TypeName::of::<T>(), &headers)
    };
    head.encode(&payload)
}

/// Writes the history fields (`offset` 12, `epoch` 13), each if set.
fn put_position(offset: u64, epoch: &str, buf: &mut BytesMut) {
    if offset != 0 {
        prost::encoding::uint64::encode(12, &offset, buf);
    }
    if !epoch.is_empty() {
        encode_key(13, WireType::LengthDelimited, buf);
        encode_varint(epoch.len() as u64, buf);
        buf.put_slice(epoch.as_bytes());
    }
}

/// `frame` (an encoded MESSAGE without a position) with `offset` and `epoch`
/// appended: protobuf fields may come in any order, so the frame is copied
/// once and not re-encoded.
pub(crate) fn with_position(frame: &[u8], offset: u64, epoch: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.len() + 12 + epoch.len());
    buf.put_slice(frame);
    put_position(offset, epoch, &mut buf);
    buf.freeze()
}

/// Encodes a frame whose payload is already bytes.
pub(crate) fn encode(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    frame.encode_raw(&mut buf);
    buf.freeze()
}

/// A received frame: `proto::Frame` with its `type` and `method` borrowed
/// from the received bytes instead of copied into `String`s (the
/// allocations prost's decode makes for a header-less frame).
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    pub(crate) kind: i32,
    pub(crate) id: u64,
    /// Empty until [`check_names`](Self::check_names) checks the received
    /// one ([`type_bytes`](Self::type_bytes)), or the dispatcher finds a
    /// route by it (a name equal to a registered one needs no UTF-8 check,
    /// and the route's own copy is static).
    pub(crate) type_name: Utf8Bytes,
    /// The whole frame as received, which the received type name and method
    /// lie in (at `type_at`, `method_at`): looked at in place, with no
    /// reference count of their own.
    raw: Bytes,
    type_at: Range<usize>,
    method_at: Range<usize>,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    pub(crate) timeout_ms: u32,
    pub(crate) status: Option<proto::Status>,
    pub(crate) topic: String,
    pub(crate) queue_group: String,
    pub(crate) created_unix_us: i64,
    /// Empty until checked or found, as `type_name`.
    pub(crate) method: Utf8Bytes,
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// What a request's caller gets of its REPLY frame: the parts it reads,
/// taken out of the frame. A third of an [`Incoming`]'s size, which matters:
/// the answer is moved (copied) several times on its way to the caller.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) id: u64,
    pub(crate) type_name: Utf8Bytes,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    pub(crate) created_unix_us: i64,
}

impl Reply {
    /// Takes the reply's parts out of `frame` (whose type name is checked).
    pub(crate) fn take(frame: &mut Incoming) -> Reply {
        Reply {
            id: frame.id,
            type_name: std::mem::take(&mut frame.type_name),
            payload: std::mem::take(&mut frame.payload),
            headers: std::mem::take(&mut frame.headers),
            created_unix_us: frame.created_unix_us,
        }
    }
}

/// Decodes a `goomerang.v1.Frame` as prost would (unknown fields skipped,
/// the last value of a repeated scalar wins), field numbers as in frame.proto.
/// The error says what is wrong with the bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode(buf: Bytes) -> Result<Incoming, String> {
    let mut frame = Incoming::default();
    decode_into(buf, &mut frame)?;
    frame.check_names()?;
    Ok(frame)
}

/// [`decode`] into `frame`, which must be as [`Incoming::default`] makes
/// it: filled in place, since a frame is some 300 bytes and each move
/// copies them (the reader decodes into a local it lends to the
/// dispatcher). The type name and method are left unchecked: the caller
/// checks them with [`Incoming::check_names`] unless routes' names match them.
pub(crate) fn decode_into(buf: Bytes, frame: &mut Incoming) -> Result<(), String> {
    let decoded = decode_fields(&buf, frame);
    frame.raw = buf;
    decoded.map_err(|err| err.to_string())
}

impl Incoming {
    /// Checks the received type name and method for UTF-8 (the last
    /// occurrence of each; see `decode_fields`) and keeps them as
    /// `type_name` and `method`; the error is [`decode`]'s, the type name's
    /// first when both are wrong, as prost's field order has it.
    pub(crate) fn check_names(&mut self) -> Result<(), String> {
        self.type_name = self.checked(&self.type_at, "type name")?;
        if self.has_method() {
            self.method = self.checked(&self.method_at, "method")?;
        }
        Ok(())
    }

    /// The received name at `at`, if it is UTF-8.
    fn checked(&self, at: &Range<usize>, field: &'static str) -> Result<Utf8Bytes, String> {
        Utf8Bytes::try_from(self.raw.slice(at.clone()))
            .map_err(|_| Undecodable::Utf8(field).to_string())
    }

    /// Whether the frame names a method.
    pub(crate) fn has_method(&self) -> bool {
        !self.method_at.is_empty()
    }

    /// The method as received, not checked for UTF-8.
    pub(crate) fn method_bytes(&self) -> &[u8] {
        &self.raw[self.method_at.clone()]
    }

    /// The type name as received, not checked for UTF-8.
    pub(crate) fn type_bytes(&self) -> &[u8] {
        &self.raw[self.type_at.clone()]
    }
}

fn decode_fields(buf: &Bytes, frame: &mut Incoming) -> Result<(), Undecodable> {
    use prost::encoding::{hash_map, int32, int64, message, string, uint32, uint64};
    let mut rest: &[u8] = buf;
    let mut payload = 0..0;
    while !rest.is_empty() {
        let (tag, wire) = decode_key(&mut rest)?;
        let ctx = DecodeContext::default();
        match tag {
            1 => int32::merge(wire, &mut frame.kind, &mut rest, ctx)?,
            2 => uint64::merge(wire, &mut frame.id, &mut rest, ctx)?,
            3 => {
                // Every occurrence must be UTF-8, as with prost's string
                // fields: an earlier one is checked as a later one replaces
                // it, the last by `check_names` (or a route's name).
                if !frame.type_at.is_empty() {
                    utf8(&buf[frame.type_at.clone()], "type name")?;
                }
                frame.type_at = bytes_at(wire, buf.len(), &mut rest, ctx)?;
            }
            4 => payload = bytes_at(wire, buf.len(), &mut rest, ctx)?,
            5 => {
                // As prost's generated code does: a map entry must be length-delimited.
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire)?;
                hash_map::merge(
                    string::merge,
                    string::merge,
                    &mut frame.headers,
                    &mut rest,
                    ctx,
                )?
            }
            6 => uint32::merge(wire, &mut frame.timeout_ms, &mut rest, ctx)?,
            7 => message::merge(
                wire,
                frame.status.get_or_insert_with(proto::Status::default),
                &mut rest,
                ctx,
            )?,
            8 => string::merge(wire, &mut frame.topic, &mut rest, ctx)?,
            9 => string::merge(wire, &mut frame.queue_group, &mut rest, ctx)?,
            10 => int64::merge(wire, &mut frame.created_unix_us, &mut rest, ctx)?,
            11 => {
                if frame.has_method() {
                    utf8(&buf[frame.method_at.clone()], "method")?;
                }
                frame.method_at = bytes_at(wire, buf.len(), &mut rest, ctx)?;
            }
            12 => uint64::merge(wire, &mut frame.offset, &mut rest, ctx)?,
            13 => string::merge(wire, &mut frame.epoch, &mut rest, ctx)?,
            _ => prost::encoding::skip_field(wire, tag, &mut rest, ctx)?,
        }
    }
    // A reference count, no copy (none at all for an empty payload).
    frame.payload = buf.slice(payload);
    Ok(())
}

/// Reads a `bytes` field as prost's `bytes::merge` does (the last
/// occurrence wins), as where it lies in the frame (of `len` bytes, of
/// which `rest` is what is left): the caller slices what it keeps, and
/// only looks at the rest. Anything malformed goes to prost, for its exact error.
fn bytes_at(
    wire: WireType,
    len: usize,
    rest: &mut &[u8],
    ctx: DecodeContext,
) -> Result<Range<usize>, prost::DecodeError> {
    if wire == WireType::LengthDelimited {
        let mut after: &[u8] = rest;
        if let Ok(n) = prost::encoding::decode_varint(&mut after)
            && let Ok(n) = usize::try_from(n)
            && n <= after.len()
        {
            let start = len - after.len();
            *rest = &after[n..];
            return Ok(start..start + n);
        }
    }
    let mut value = Vec::new();
    prost::encoding::bytes::merge(wire, &mut value, rest, ctx)?;
    let end = len - rest.len();
    Ok(end - value.len()..end)
}

/// Why the bytes are not a frame.
#[derive(Debug)]
enum Undecodable {
    Prost(prost::DecodeError),
    /// A string field (named) is not UTF-8.
    Utf8(&'static str),
}

impl From<prost::DecodeError> for Undecodable {
    fn from(err: prost::DecodeError) -> Undecodable {
        Undecodable::Prost(err)
    }
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecodable::Prost(err) => err.fmt(f),
            Undecodable::Utf8(field) => write!(f, "the {field} is not UTF-8"),
        }
    }
}

/// Refuses a string field that is not UTF-8.
fn utf8(bytes: &[u8], field: &'static str) -> Result<(), Undecodable> {
    std::str::from_utf8(bytes)
        .map(drop)
        .map_err(|_| Undecodable::Utf8(field))
}

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_us() -> i64 {
    // Seconds and microseconds apart: `as_micros` divides a u128.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs())
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .and_then(|us| us.checked_add(i64::from(d.subsec_micros())))
            .unwrap_or(i64::MAX)
    })
}

/// The creation time a frame states, if any.
pub(crate) fn created(us: i64) -> Option<SystemTime> {
    u64::try_from(us)
        .ok()
        .filter(|&us| us > 0)
        .and_then(|us| UNIX_EPOCH.checked_add(Duration::from_micros(us)))
}

/// A request timeout as sent on the wire: whole milliseconds, at least 1, saturating.
pub(crate) fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::Status;

    #[test]
    fn head_encodes_like_prost() {
        let headers: Headers = [("traceparent".to_owned(), "00-ab-cd-01".to_owned())].into();
        let status = Status {
            code: 5,
            message: "hello".into(),
        };
        let head = Head {
            id: 7,
            timeout_ms: 250,
            topic: "orders.eu",
            queue_group: "workers",
            method: "acme.inventory.v2.Stock/Adjust",
            ..Head::new(FrameKind::Request, TypeName::of::<Status>(), &headers)
        };
        let expected = Frame {
            kind: FrameKind::Request as i32,
            id: 7,
            r#type: "goomerang.v1.Status".into(),
            payload: status.encode_to_vec().into(),
            headers: headers.clone(),
            timeout_ms: 250,
            topic: "orders.eu".into(),
            queue_group: "workers".into(),
            created_unix_us: head.created_unix_us,
            method: "acme.inventory.v2.Stock/Adjust".into(),
            ..Frame::default()
        };
        let in_place = head.encode(&status);
        assert_eq!(in_place.len(), expected.encoded_len());
        assert_eq!(Frame::decode(in_place).expect("decodes"), expected);
        let from_bytes = head.encode_bytes(&status.encode_to_vec());
        assert_eq!(Frame::decode(from_bytes).expect("decodes"), expected);
    }

    #[test]
    fn a_position_appended_to_a_frame_decodes_as_prost_reads_it() {
        let headers = Headers::new();
        let head = Head {
            topic: "chat.a",
            ..Head::new(FrameKind::Message, TypeName::of::<Status>(), &headers)
        };
        let frame = head.encode(&Status {
            code: 1,
            message: "x".into(),
        });
        let stamped = with_position(&frame, 7, "ep-3");
        let theirs = Frame::decode(stamped.clone()).expect("prost decodes");
        assert_eq!(
            (theirs.offset, theirs.epoch.as_str(), theirs.topic.as_str()),
            (7, "ep-3", "chat.a")
        );
        let ours = decode(stamped).expect("decodes");
        assert_eq!((ours.offset, ours.epoch.as_str()), (7, "ep-3"));
        // A SUBSCRIBE's position, written by `Head`, reads back the same.
        let subscribe = Head {
            offset: 5,
            epoch: "ep-3",
            ..Head::new(FrameKind::Subscribe, TypeName::NONE, &headers)
        }
        .encode(&());
        let theirs = Frame::decode(subscribe).expect("prost decodes");
        assert_eq!((theirs.offset, theirs.epoch.as_str()), (5, "ep-3"));
    }

    #[test]
    fn empty_fields_are_omitted() {
        let headers = Headers::new();
        let head = Head {
            created_unix_us: 0,
            ..Head::new(FrameKind::Unspecified, TypeName::NONE, &headers)
        };
        assert!(head.encode(&Status::default()).is_empty());
    }

    #[test]
    fn decode_agrees_with_prost() {
        let full = Frame {
            kind: FrameKind::Error as i32,
            id: 42,
            r#type: "chat.v1.Hello".into(),
            payload: Bytes::from_static(b"\x0a\x03ada"),
            headers: [("traceparent".to_owned(), "00-ab-cd-01".to_owned())].into(),
            timeout_ms: 1500,
            status: Some(Status {
                code: 3,
                message: "bad".into(),
            }),
            topic: "orders.eu".into(),
            queue_group: "workers".into(),
            created_unix_us: 1_700_000_000_000_000,
            method: "chat.v1.Greeter/SayHello".into(),
            offset: 9,
            epoch: "e-1".into(),
        };
        for frame in [full, Frame::default()] {
            let mut bytes = BytesMut::new();
            frame.encode_raw(&mut bytes);
            // An unknown field (number 99, varint) is skipped, as prost skips it.
            encode_key(99, WireType::Varint, &mut bytes);
            encode_varint(7, &mut bytes);
            let ours = decode(bytes.clone().freeze()).expect("decodes");
            let theirs = Frame::decode(bytes.freeze()).expect("prost decodes");
            assert_eq!(ours.kind, theirs.kind);
            assert_eq!(ours.id, theirs.id);
            assert_eq!(ours.type_name.as_str(), theirs.r#type);
            assert_eq!(ours.payload, theirs.payload);
            assert_eq!(ours.headers, theirs.headers);
            assert_eq!(ours.timeout_ms, theirs.timeout_ms);
            assert_eq!(ours.status, theirs.status);
            assert_eq!(ours.topic, theirs.topic);
            assert_eq!(ours.queue_group, theirs.queue_group);
            assert_eq!(ours.created_unix_us, theirs.created_unix_us);
            assert_eq!(ours.method.as_str(), theirs.method);
            assert_eq!(
                (ours.offset, ours.epoch.as_str()),
                (theirs.offset, theirs.epoch.as_str())
            );
        }
    }

    #[test]
    fn decode_rejects_what_prost_rejects() {
        let mut bad_utf8 = BytesMut::new();
        encode_key(3, WireType::LengthDelimited, &mut bad_utf8);
        encode_varint(2, &mut bad_utf8);
        bad_utf8.extend_from_slice(&[0xc3, 0x28]);
        let mut bad_method = BytesMut::new();
        encode_key(11, WireType::LengthDelimited, &mut bad_method);
        encode_varint(1, &mut bad_method);
        bad_method.extend_from_slice(&[0xff]);
        let truncated = Bytes::from_static(&[0x22, 0x05, 0x01]);
        // What the split-off fast path for `bytes` fields hands to prost:
        // a type name longer than what is left, a payload with the varint
        // wire type, and a method whose length does not fit a varint.
        let long_type = Bytes::from_static(&[0x1a, 0x05, b'a']);
        let payload_varint = Bytes::from_static(&[0x20, 0x01]);
        let method_overlong = Bytes::from_static(&[
            0x5a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        // Found by the frame fuzz target: a headers entry (field 5) with the
        // end-group wire type, which prost refuses before reading the map entry.
        let map_wire_type = Bytes::from_static(&[104, 39, 16, 2, 44, 2, 104, 39, 104, 39]);
        // Also found by it: a bad type name followed by a good one (the last wins,
        // but each occurrence must be UTF-8).
        let mut bad_then_good = bad_utf8.clone();
        encode_key(3, WireType::LengthDelimited, &mut bad_then_good);
        encode_varint(1, &mut bad_then_good);
        bad_then_good.extend_from_slice(b"a");
        for bytes in [
            bad_utf8.freeze(),
            bad_method.freeze(),
            truncated,
            long_type,
            payload_varint,
            method_overlong,
            map_wire_type,
            bad_then_good.freeze(),
        ] {
            assert!(decode(bytes.clone()).is_err());
            assert!(Frame::decode(bytes).is_err());
        }
    }

    #[test]
    fn creation_time_round_trips() {
        let us = now_us();
        assert!(us > 0);
        assert!(created(us).is_some());
        assert_eq!(created(0), None);
        assert_eq!(created(-5), None);
    }
}
