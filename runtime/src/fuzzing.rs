//! Entry points for the fuzz targets (feature `fuzzing`, not an API): frame decoding checked against prost, WebSocket framing checked against tungstenite, the handshake's parsing, topics.

use bytes::Bytes;
use prost::Message as _;

use crate::wire::{frame, proto, topic};

/// Decodes `data` as the reader does and as prost does; panics if they
/// disagree (one accepts what the other refuses, or a field differs).
pub fn frame_against_prost(data: &[u8]) {
    let ours = frame::decode(Bytes::copy_from_slice(data));
    let prost = proto::Frame::decode(data);
    match (ours, prost) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours.kind, theirs.kind, "kind");
            assert_eq!(ours.id, theirs.id, "id");
            assert_eq!(ours.type_name.as_str(), theirs.r#type, "type");
            assert_eq!(ours.payload, theirs.payload, "payload");
            assert_eq!(ours.headers, theirs.headers, "headers");
            assert_eq!(ours.timeout_ms, theirs.timeout_ms, "timeout_ms");
            assert_eq!(ours.status, theirs.status, "status");
            assert_eq!(ours.topic, theirs.topic, "topic");
            assert_eq!(ours.queue_group, theirs.queue_group, "queue_group");
            assert_eq!(
                ours.created_unix_us, theirs.created_unix_us,
                "created_unix_us"
            );
            assert_eq!(ours.method.as_str(), theirs.method, "method");
            assert_eq!(ours.offset, theirs.offset, "offset");
            assert_eq!(ours.epoch, theirs.epoch, "epoch");
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!(
            "the decoders disagree: ours {:?}, prost {:?}",
            ours.map(|_| ()),
            theirs.map(|_| ())
        ),
    }
}

/// Reads `data` as a connection's received bytes with goomerang's WebSocket
/// reader and with tungstenite's; panics if they disagree. The first byte
/// picks the side (server or client) and the message size limit.
pub fn websocket_against_tungstenite(data: &[u8]) {
    crate::ws::read::against_tungstenite(data);
}

/// Runs what the server does with an upgrade request's parts: the method,
/// the upgrade headers, the offered subprotocols and the query. `data` is
/// split into a method, a URI and header lines.
pub fn handshake(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = http::Method::from_bytes(lines.next().unwrap_or("").trim().as_bytes())
        .unwrap_or(http::Method::GET);
    let uri: http::Uri = lines
        .next()
        .unwrap_or("/")
        .trim()
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    crate::server::fuzz_upgrade(&method, &uri, &headers);
}

/// Validates `data` as a topic and as a pattern, and matches it against a
/// small subscription table; must never panic.
pub fn topic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, topic_name) = text.split_once('\n').unwrap_or((&text, "a.b"));
    let _ = topic::validate(topic_name, false);
    if topic::validate(pattern, true).is_ok() && topic::validate(topic_name, false).is_ok() {
        crate::pubsub::fuzz_match(pattern, topic_name);
    }
}
