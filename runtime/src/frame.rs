//! Frame encoding and decoding: one buffer per frame out, no copy and no type-name allocation in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf as _, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{
    DecodeContext, WireType, decode_key, encode_key, encode_varint, encoded_len_varint, key_len,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{Headers, Message, Payload};
use crate::proto::{self, Frame, FrameKind};

/// The WebSocket subprotocol this version speaks.
pub const SUBPROTOCOL: &str = "goomerang.v1";

/// Field number of `Frame.payload`.
const PAYLOAD_TAG: u32 = 4;

/// Encodes `frame` (whose `payload` must be empty) followed by `payload` as
/// field 4. Protobuf allows fields in any order, so this is a valid `Frame`.
pub(crate) fn encode_with<P: prost::Message>(frame: &Frame, payload: &P) -> Bytes {
    debug_assert!(frame.payload.is_empty());
    let payload_len = payload.encoded_len();
    let field_len = if payload_len == 0 {
        0
    } else {
        key_len(PAYLOAD_TAG) + encoded_len_varint(payload_len as u64) + payload_len
    };
    let mut buf = BytesMut::with_capacity(frame.encoded_len() + field_len);
    frame.encode_raw(&mut buf);
    if payload_len != 0 {
        encode_key(PAYLOAD_TAG, WireType::LengthDelimited, &mut buf);
        encode_varint(payload_len as u64, &mut buf);
        payload.encode_raw(&mut buf);
    }
    buf.freeze()
}

/// Encodes a payload-carrying frame of `kind` (MESSAGE, BROADCAST, PUBLISH)
/// with `topic` (empty for none).
pub(crate) fn encode_message<T: Payload>(
    kind: FrameKind,
    topic: &str,
    message: Message<T>,
) -> Bytes {
    let (payload, headers, _) = message.into_parts();
    let frame = Frame {
        kind: kind as i32,
        r#type: T::full_name(),
        headers,
        topic: topic.to_owned(),
        created_unix_us: now_us(),
        ..Frame::default()
    };
    encode_with(&frame, &payload)
}

/// Encodes a frame whose payload is already bytes.
pub(crate) fn encode(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    frame.encode_raw(&mut buf);
    buf.freeze()
}

/// A received frame: `proto::Frame` with its `type` borrowed from the
/// received bytes instead of copied into a `String` (the one allocation
/// prost's decode makes for a header-less frame).
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    pub(crate) kind: i32,
    pub(crate) id: u64,
    pub(crate) type_name: Utf8Bytes,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    pub(crate) timeout_ms: u32,
    pub(crate) status: Option<proto::Status>,
    pub(crate) topic: String,
    pub(crate) queue_group: String,
    pub(crate) created_unix_us: i64,
}

/// Decodes a `goomerang.v1.Frame` as prost would (unknown fields skipped,
/// the last value of a repeated scalar wins), field numbers as in frame.proto.
/// The error says what is wrong with the bytes.
pub(crate) fn decode(buf: Bytes) -> Result<Incoming, String> {
    let (mut frame, type_name) = decode_fields(buf).map_err(|err| err.to_string())?;
    frame.type_name = Utf8Bytes::try_from(type_name)
        .map_err(|err| format!("the type name is not UTF-8: {err}"))?;
    Ok(frame)
}

fn decode_fields(mut buf: Bytes) -> Result<(Incoming, Bytes), prost::DecodeError> {
    use prost::encoding::{bytes, hash_map, int32, int64, message, string, uint32, uint64};
    let mut frame = Incoming::default();
    let mut type_name = Bytes::new();
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        let ctx = DecodeContext::default();
        match tag {
            1 => int32::merge(wire, &mut frame.kind, &mut buf, ctx)?,
            2 => uint64::merge(wire, &mut frame.id, &mut buf, ctx)?,
            3 => bytes::merge(wire, &mut type_name, &mut buf, ctx)?,
            4 => bytes::merge(wire, &mut frame.payload, &mut buf, ctx)?,
            5 => hash_map::merge(
                string::merge,
                string::merge,
                &mut frame.headers,
                &mut buf,
                ctx,
            )?,
            6 => uint32::merge(wire, &mut frame.timeout_ms, &mut buf, ctx)?,
            7 => message::merge(
                wire,
                frame.status.get_or_insert_with(proto::Status::default),
                &mut buf,
                ctx,
            )?,
            8 => string::merge(wire, &mut frame.topic, &mut buf, ctx)?,
            9 => string::merge(wire, &mut frame.queue_group, &mut buf, ctx)?,
            10 => int64::merge(wire, &mut frame.created_unix_us, &mut buf, ctx)?,
            _ => prost::encoding::skip_field(wire, tag, &mut buf, ctx)?,
        }
    }
    Ok((frame, type_name))
}

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
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
    use crate::proto::Status;

    #[test]
    fn in_place_payload_decodes_like_a_normal_frame() {
        let status = Status {
            code: 5,
            message: "hello".into(),
        };
        let frame = Frame {
            kind: FrameKind::Message as i32,
            r#type: "goomerang.v1.Status".into(),
            ..Frame::default()
        };
        let bytes = encode_with(&frame, &status);
        let decoded = Frame::decode(bytes).expect("decodes");
        assert_eq!(decoded.r#type, "goomerang.v1.Status");
        assert_eq!(Status::decode(decoded.payload).expect("payload"), status);
    }

    #[test]
    fn empty_payload_is_omitted() {
        let frame = Frame {
            kind: FrameKind::Message as i32,
            ..Frame::default()
        };
        let bytes = encode_with(&frame, &Status::default());
        assert_eq!(bytes, encode(&frame));
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
        }
    }

    #[test]
    fn decode_rejects_what_prost_rejects() {
        let mut bad_utf8 = BytesMut::new();
        encode_key(3, WireType::LengthDelimited, &mut bad_utf8);
        encode_varint(2, &mut bad_utf8);
        bad_utf8.extend_from_slice(&[0xc3, 0x28]);
        let truncated = Bytes::from_static(&[0x22, 0x05, 0x01]);
        for bytes in [bad_utf8.freeze(), truncated] {
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
