//! RFC 6455 violations from a client get a close frame (1002, or 1007 for bad UTF-8), are
//! counted and reported as protocol errors, and never end in a silent TCP drop.

use goomerang::{Incident, Initiator, Server};
use goomerang_tests::{TestServer, bounded, echo, start, still_serving};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What the server's hooks saw of one connection.
struct Seen {
    errors: mpsc::UnboundedReceiver<(u16, String)>,
    closes: mpsc::UnboundedReceiver<goomerang::CloseInfo>,
}

async fn server() -> (TestServer, Seen) {
    let (err_tx, errors) = mpsc::unbounded_channel();
    let (close_tx, closes) = mpsc::unbounded_channel();
    let server = start(echo(
        Server::builder()
            .on_error(move |err, _| {
                if let Incident::Protocol { close_code, detail } = err {
                    let _ = err_tx.send((*close_code, detail.clone()));
                }
            })
            .on_disconnect(move |_, info| {
                let _ = close_tx.send(info.clone());
            }),
    ))
    .await;
    (server, Seen { errors, closes })
}

/// A TCP connection upgraded by hand, so frames can be written byte by byte.
async fn upgraded(server: &TestServer) -> TcpStream {
    let addr = server.addr;
    let mut tcp = TcpStream::connect(addr).await.expect("tcp");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: goomerang.v1\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    // Read the response head byte by byte, so no frame byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("response"));
    }
    let head = String::from_utf8(head).expect("ascii");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// One WebSocket frame as bytes: FIN, RSV bits, opcode, and the payload,
/// masked (with a fixed key) when `masked`.
fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame; returns its code and reason.
async fn read_close(tcp: &mut TcpStream) -> (u16, String) {
    loop {
        let first = tcp
            .read_u8()
            .await
            .expect("a frame, not a dropped connection");
        let len = match tcp.read_u8().await.expect("length") & 0x7f {
            126 => usize::from(tcp.read_u16().await.expect("length")),
            127 => usize::try_from(tcp.read_u64().await.expect("length")).expect("size"),
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).await.expect("payload");
        if first & 0x0f == 0x8 {
            assert!(payload.len() >= 2, "close frame without a code");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
        }
    }
}

/// Sends `bytes` after the upgrade and checks the whole reaction: a close
/// frame with `code`, the `on_error` report, the disconnect, the error count.
async fn violation(bytes: Vec<u8>, code: u16, detail: &str) {
    bounded(async {
        let (server, mut seen) = server().await;
        let mut tcp = upgraded(&server).await;
        tcp.write_all(&bytes).await.expect("write");
        let (got, reason) = read_close(&mut tcp).await;
        assert_eq!(got, code, "close reason: {reason}");
        assert!(
            reason.contains(detail),
            "{reason:?} should mention {detail:?}"
        );
        let (reported, what) = seen.errors.recv().await.expect("reported");
        assert_eq!(reported, code);
        assert!(what.contains(detail), "{what:?} should mention {detail:?}");
        let info = seen.closes.recv().await.expect("disconnected");
        assert_eq!((info.code, info.initiator), (code, Initiator::Local));
        let metrics = server.server.metrics().render();
        assert!(
            metrics
                .lines()
                .any(|l| l == r#"goomerang_errors_total{side="server",kind="protocol"} 1"#),
            "{metrics}"
        );
        still_serving(&server).await;
        server.stop().await;
    })
    .await;
}

const BINARY: u8 = 0x2;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

#[tokio::test]
async fn an_unmasked_client_frame_gets_1002() {
    violation(frame(true, 0, BINARY, false, b"x"), 1002, "unmasked").await;
}

#[tokio::test]
async fn reserved_bits_without_an_extension_get_1002() {
    violation(
        frame(true, 0b100, BINARY, true, b"x"),
        1002,
        "Reserved bits",
    )
    .await;
}

#[tokio::test]
async fn a_reserved_data_opcode_gets_1002() {
    violation(frame(true, 0, 0x3, true, b"x"), 1002, "invalid opcode: 3").await;
}

#[tokio::test]
async fn a_reserved_control_opcode_gets_1002() {
    violation(frame(true, 0, 0xb, true, b""), 1002, "invalid opcode: 11").await;
}

#[tokio::test]
async fn a_continuation_without_a_start_gets_1002() {
    violation(frame(true, 0, 0x0, true, b"x"), 1002, "Continue frame").await;
}

#[tokio::test]
async fn a_fragmented_control_frame_gets_1002() {
    violation(
        frame(false, 0, PING, true, b"x"),
        1002,
        "Fragmented control frame",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_control_frame_gets_1002() {
    violation(
        frame(true, 0, PING, true, &[7; 126]),
        1002,
        "Control frame too big",
    )
    .await;
}

#[tokio::test]
async fn a_one_byte_close_payload_gets_1002() {
    violation(
        frame(true, 0, CLOSE, true, &[0x03]),
        1002,
        "Invalid close sequence",
    )
    .await;
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_gets_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xc3, 0x28]);
    violation(
        frame(true, 0, CLOSE, true, &payload),
        1007,
        "not valid UTF-8",
    )
    .await;
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_gets_1007() {
    violation(
        frame(true, 0, TEXT, true, &[0xff, 0xfe]),
        1007,
        "not valid UTF-8",
    )
    .await;
}
