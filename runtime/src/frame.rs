//! Frame encoding helpers: one buffer per frame, the payload written in place (never encoded twice).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::message::{Message, Payload};
use crate::proto::{Frame, FrameKind};

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
    fn creation_time_round_trips() {
        let us = now_us();
        assert!(us > 0);
        assert!(created(us).is_some());
        assert_eq!(created(0), None);
        assert_eq!(created(-5), None);
    }
}
