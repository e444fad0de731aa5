//! `WsRead`: received bytes to WebSocket messages, unmasked in place and split off one buffer that exists only while data streams in.
//!
//! Reads go straight into the buffer frames are split from (no copy, no
//! zeroing). At rest the buffer is small ([`Limits::read_buffer`] bytes); a
//! read that fills what it was given means more is waiting, so the next
//! reads get a [`CHUNK`]: a burst of small frames then costs one system call,
//! not one per few frames. Once the connection is quiet (two reads in a row
//! found nothing: the second comes from the reader's timers, such as the
//! keepalive check) the buffer is given back, so an idle connection holds
//! none. A received payload is a slice of the buffer, so the buffer lives on
//! with the payloads still in use.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncRead;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};

use crate::ws::header::{self, Header};
use crate::ws::{Limits, Role};

/// Bytes read per system call while data streams in, at least.
pub(crate) const CHUNK: usize = 16 << 10;

/// The read half of a WebSocket connection, as a stream of messages.
///
/// Ends (`None`) after the close handshake or at an error. A data message
/// is whole: fragments are joined, within the size limit. Pings and pongs
/// are passed up; answering a ping is the caller's.
#[derive(Debug)]
pub(crate) struct WsRead<R> {
    io: R,
    role: Role,
    limits: Limits,
    /// Received bytes not yet consumed; no allocation while at rest.
    buf: BytesMut,
    /// The last read filled what it was given: more is waiting.
    streaming: bool,
    /// Reads in a row that found nothing.
    empty_polls: u8,
    /// The header of the frame whose payload is awaited.
    header: Option<Header>,
    /// A fragmented message so far.
    partial: Option<Partial>,
    /// The peer's close frame arrived (no data frame may follow).
    close_received: bool,
    /// Nothing more comes: the handshake ended, or an error did.
    ended: bool,
}

impl<R: AsyncRead + Unpin> WsRead<R> {
    /// Reads `io`, starting with `leftover` (bytes that came with the handshake).
    pub(crate) fn new(io: R, leftover: BytesMut, role: Role, limits: Limits) -> WsRead<R> {
        WsRead {
            io,
            role,
            limits,
            buf: leftover,
            streaming: false,
            empty_polls: 0,
            header: None,
            partial: None,
            close_received: false,
            ended: false,
        }
    }

    /// Whether the read buffer is allocated now.
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// The next whole message in the buffer, if it holds one; consumes the
    /// frames it reads (a fragment, a control frame) either way.
    fn parse(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let header = match self.header {
                Some(header) => header,
                None => {
                    let Some((header, len)) = Header::parse(&self.buf)? else {
                        return Ok(None);
                    };
                    if header.len > self.limits.max_message as u64 {
                        return Err(too_long(header.len, self.limits.max_message));
                    }
                    self.buf.advance(len);
                    self.header = Some(header);
                    header
                }
            };
            // At most `max_message`, checked above.
            let len = header.len as usize;
            if self.buf.len() < len {
                return Ok(None);
            }
            self.header = None;
            let mut payload = self.buf.split_to(len);
            match (self.role, header.mask) {
                (Role::Server, Some(mask)) => header::apply_mask(&mut payload, mask),
                (Role::Server, None) => {
                    return Err(Error::Protocol(ProtocolError::UnmaskedFrameFromClient));
                }
                (Role::Client, _) => {}
            }
            if self.close_received {
                return Err(Error::Protocol(ProtocolError::ReceivedAfterClosing));
            }
            if header.rsv != 0 {
                return Err(Error::Protocol(ProtocolError::NonZeroReservedBits));
            }
            if self.role == Role::Client && header.mask.is_some() {
                return Err(Error::Protocol(ProtocolError::MaskedFrameFromServer));
            }
            if header.is_control() {
                return self.control(header, payload).map(Some);
            }
            if let Some(message) = self.data(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn control(&mut self, header: Header, payload: BytesMut) -> Result<Message, Error> {
        if !header.fin {
            return Err(Error::Protocol(ProtocolError::FragmentedControlFrame));
        }
        if payload.len() > 125 {
            return Err(Error::Protocol(ProtocolError::ControlFrameTooBig));
        }
        let payload = payload.freeze();
        Ok(match header.opcode {
            header::PING => Message::Ping(payload),
            header::PONG => Message::Pong(payload),
            _ => {
                let frame = match payload.len() {
                    0 => None,
                    1 => return Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
                    _ => {
                        let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = Utf8Bytes::try_from(payload.slice(2..))?;
                        // A code that may not be sent is the peer's protocol error.
                        Some(if code.is_allowed() {
                            CloseFrame { code, reason }
                        } else {
                            CloseFrame {
                                code: CloseCode::Protocol,
                                reason: Utf8Bytes::from_static("Protocol violation"),
                            }
                        })
                    }
                };
                self.close_received = true;
                Message::Close(frame)
            }
        })
    }

    /// A data frame: the whole message it ends, if it ends one.
    fn data(&mut self, header: Header, payload: BytesMut) -> Result<Option<Message>, Error> {
        match (header.opcode, self.partial.as_mut()) {
            (header::CONTINUATION, None) => {
                return Err(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
            }
            (header::CONTINUATION, Some(partial)) => {
                partial.extend(&payload, self.limits.max_message)?;
            }
            (opcode, Some(_)) => {
                let data = if opcode == header::TEXT {
                    Data::Text
                } else {
                    Data::Binary
                };
                return Err(Error::Protocol(ProtocolError::ExpectedFragment(data)));
            }
            (opcode, None) if header.fin => {
                return whole(opcode == header::TEXT, payload).map(Some);
            }
            (opcode, None) => {
                let mut partial = Partial {
                    text: opcode == header::TEXT,
                    bytes: payload,
                    checked: 0,
                };
                partial.check()?;
                self.partial = Some(partial);
            }
        }
        if !header.fin {
            return Ok(None);
        }
        let Partial { text, bytes, .. } = self.partial.take().expect("a message in parts");
        whole(text, bytes).map(Some)
    }

    /// Reads more bytes into the buffer: how many (0 at the end of the stream).
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // What the frame being read still needs, when its header is known.
        let needed = match self.header {
            Some(header) => header.len as usize - self.buf.len(),
            None => header::MAX_LEN,
        };
        let room = if self.streaming {
            CHUNK
        } else {
            self.limits.read_buffer
        };
        let spare = self.buf.capacity() - self.buf.len();
        if spare < needed.min(room) || spare == 0 {
            // A large frame's buffer grows as its bytes arrive, at most a
            // chunk ahead: a header alone never makes the connection
            // allocate the whole length it declares.
            self.buf.reserve(needed.min(CHUNK).max(room));
        }
        let spare = self.buf.capacity() - self.buf.len();
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
            Poll::Ready(Ok(n)) => {
                self.empty_polls = 0;
                self.streaming = n == spare;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                // Caught up. A second empty poll in a row comes from the
                // reader's timers, not the socket: the connection has been
                // quiet a while, and gives its buffer back.
                self.empty_polls = self.empty_polls.saturating_add(1);
                if self.empty_polls >= 2 && self.buf.is_empty() {
                    self.streaming = false;
                    self.buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for WsRead<R> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.parse() {
                Ok(Some(message)) => {
                    // The server closes the TCP connection once it has the
                    // peer's close: nothing more is read.
                    if this.close_received && this.role == Role::Server {
                        this.ended = true;
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(err) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            let read = ready!(this.fill(cx));
            match read {
                Ok(0) => {
                    this.ended = true;
                    if this.close_received {
                        return Poll::Ready(None);
                    }
                    let reset = ProtocolError::ResetWithoutClosingHandshake;
                    return Poll::Ready(Some(Err(Error::Protocol(reset))));
                }
                Ok(_) => {}
                Err(err) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Error::Io(err))));
                }
            }
        }
    }
}

/// A whole data message: text (which must be UTF-8) or binary.
fn whole(text: bool, bytes: BytesMut) -> Result<Message, Error> {
    let bytes = bytes.freeze();
    Ok(if text {
        Message::Text(Utf8Bytes::try_from(bytes)?)
    } else {
        Message::Binary(bytes)
    })
}

/// A message that came in fragments, so far.
#[derive(Debug)]
struct Partial {
    text: bool,
    bytes: BytesMut,
    /// Text: how many leading bytes are known to be UTF-8.
    checked: usize,
}

impl Partial {
    /// Appends a fragment, within `max` bytes in all.
    fn extend(&mut self, fragment: &[u8], max: usize) -> Result<(), Error> {
        let size = self.bytes.len() + fragment.len();
        if size > max {
            return Err(too_long(size as u64, max));
        }
        self.bytes.extend_from_slice(fragment);
        self.check()
    }

    /// Text is refused as soon as it cannot be UTF-8, as tungstenite did
    /// (a character cut between fragments is not yet wrong).
    fn check(&mut self) -> Result<(), Error> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.bytes[self.checked..]) {
            Ok(_) => self.checked = self.bytes.len(),
            Err(err) if err.error_len().is_none() => self.checked += err.valid_up_to(),
            Err(err) => return Err(Error::from(err)),
        }
        Ok(())
    }
}

/// Reads `data` (its first byte picks the role and the size limit, the
/// rest is the stream) with [`WsRead`] and with tungstenite's reader;
/// panics if they read different messages or stop at different errors.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn against_tungstenite(data: &[u8]) {
    use tokio_tungstenite::tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};

    /// The stream tungstenite reads (and writes its pongs and close replies to).
    struct Bytes<'a>(&'a [u8]);
    impl io::Read for Bytes<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            io::Read::read(&mut self.0, buf)
        }
    }
    impl io::Write for Bytes<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    /// An error as the driver acts on it (UTF-8 errors differ in wording only).
    fn kind(err: &Error) -> String {
        match err {
            Error::Utf8(_) => "not UTF-8".to_owned(),
            other => other.to_string(),
        }
    }

    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let role = if pick & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max_message = [16, 125, 1000, 1 << 20][usize::from(pick >> 1 & 3)];
    let limits = Limits {
        max_message,
        read_buffer: 512,
    };

    let mut ours = Vec::new();
    let mut read = WsRead::new(stream, BytesMut::new(), role, limits);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        match Pin::new(&mut read).poll_next(&mut cx) {
            Poll::Ready(Some(next)) => ours.push(next.map_err(|err| kind(&err))),
            Poll::Ready(None) => break,
            Poll::Pending => unreachable!("a slice never waits"),
        }
    }

    let mut theirs = Vec::new();
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let their_role = match role {
        Role::Server => TRole::Server,
        Role::Client => TRole::Client,
    };
    let mut ws = WebSocket::from_raw_socket(Bytes(stream), their_role, Some(config));
    loop {
        match ws.read() {
            Ok(message) => theirs.push(Ok(message)),
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => break,
            Err(err) => {
                theirs.push(Err(kind(&err)));
                break;
            }
        }
    }
    assert_eq!(ours, theirs, "{role:?}, max {max_message}");
}

fn too_long(size: u64, max_size: usize) -> Error {
    Error::Capacity(CapacityError::MessageTooLong {
        size: usize::try_from(size).unwrap_or(usize::MAX),
        max_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;

    const LIMITS: Limits = Limits {
        max_message: 1 << 20,
        read_buffer: 512,
    };

    /// A client's frame: masked, with `fin` and `opcode` as given.
    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mask = [9, 8, 7, 6];
        header::put(&mut out, opcode, payload.len(), Some(mask));
        if !fin {
            out[0] &= 0x7F;
        }
        let start = out.len();
        out.extend_from_slice(payload);
        header::apply_mask(&mut out[start..], mask);
        out
    }

    fn server_reading(bytes: &[u8]) -> WsRead<&[u8]> {
        WsRead::new(bytes, BytesMut::new(), Role::Server, LIMITS)
    }

    async fn all(mut read: WsRead<&[u8]>) -> Vec<Result<Message, String>> {
        let mut got = Vec::new();
        while let Some(next) = read.next().await {
            got.push(next.map_err(|err| err.to_string()));
        }
        got
    }

    #[tokio::test]
    async fn messages_are_unmasked_and_fragments_joined_around_control_frames() {
        let mut bytes = masked(true, header::BINARY, b"one");
        bytes.extend(masked(false, header::BINARY, b"tw"));
        bytes.extend(masked(true, header::PING, b"p"));
        bytes.extend(masked(true, header::CONTINUATION, b"o"));
        bytes.extend(masked(true, header::TEXT, "é".as_bytes()));
        bytes.extend(masked(true, header::BINARY, &[5; 70_000]));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        bytes.extend(masked(true, header::CLOSE, &close));
        bytes.extend(masked(true, header::BINARY, b"never read"));
        let got = all(server_reading(&bytes)).await;
        assert_eq!(
            got,
            vec![
                Ok(Message::binary(&b"one"[..])),
                Ok(Message::Ping(bytes::Bytes::from_static(b"p"))),
                Ok(Message::binary(&b"two"[..])),
                Ok(Message::text("é")),
                Ok(Message::binary(vec![5; 70_000])),
                Ok(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                }))),
            ]
        );
    }

    #[tokio::test]
    async fn violations_end_the_stream_with_their_error() {
        let long = masked(true, header::BINARY, &[0; 2000]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![0x82, 1, b'x'],
                "Received an unmasked frame from client",
            ),
            (
                masked(true, 0x40 | header::BINARY, b"x"),
                "Reserved bits are non-zero",
            ),
            (
                masked(true, header::CONTINUATION, b"x"),
                "Continue frame but nothing to continue",
            ),
            (masked(false, header::PING, b""), "Fragmented control frame"),
            (
                masked(true, header::PING, &[0; 126]),
                "Control frame too big",
            ),
            (masked(true, header::CLOSE, &[3]), "Invalid close sequence"),
            (masked(true, header::TEXT, &[0xff]), "UTF-8 encoding error"),
            (
                [
                    masked(false, header::BINARY, b"a"),
                    masked(true, header::TEXT, b"b"),
                ]
                .concat(),
                "While waiting for more fragments received: TEXT",
            ),
            (
                masked(true, header::BINARY, b"cut")[..5].to_vec(),
                "Connection reset without closing handshake",
            ),
        ];
        for (bytes, want) in cases {
            let got = all(server_reading(&bytes)).await;
            assert_eq!(got.len(), 1, "{want}: {got:?}");
            let err = got[0].as_ref().expect_err(want);
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
        let small = Limits {
            max_message: 1000,
            read_buffer: 512,
        };
        let read = WsRead::new(&long[..], BytesMut::new(), Role::Server, small);
        assert_eq!(
            all(read).await,
            vec![Err(
                "Space limit exceeded: Message too long: 2000 > 1000".to_owned()
            )]
        );
        let parts = [
            masked(false, header::BINARY, &[0; 600]),
            masked(true, 0, &[0; 600]),
        ]
        .concat();
        let read = WsRead::new(&parts[..], BytesMut::new(), Role::Server, small);
        assert_eq!(
            all(read).await,
            vec![Err(
                "Space limit exceeded: Message too long: 1200 > 1000".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn a_client_refuses_masked_frames_and_reads_unmasked_ones() {
        let mut plain = Vec::new();
        header::put(&mut plain, header::BINARY, 2, None);
        plain.extend_from_slice(b"ok");
        let read = WsRead::new(&plain[..], BytesMut::from(&b""[..]), Role::Client, LIMITS);
        assert_eq!(
            all(read).await,
            vec![
                Ok(Message::binary(&b"ok"[..])),
                Err(
                    "WebSocket protocol error: Connection reset without closing handshake"
                        .to_owned()
                )
            ]
        );
        let bytes = masked(true, header::BINARY, b"x");
        let read = WsRead::new(&bytes[..], BytesMut::new(), Role::Client, LIMITS);
        assert_eq!(
            all(read).await,
            vec![Err(
                "WebSocket protocol error: Received a masked frame from server".to_owned()
            )]
        );
    }

    /// A small deterministic generator (xorshift), for the inputs below.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
        fn one_in(&mut self, n: u64) -> bool {
            self.next().is_multiple_of(n)
        }
    }

    #[test]
    fn the_reader_agrees_with_tungstenite_on_generated_streams() {
        let mut rng = Gen(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut data = vec![rng.byte()];
            for _ in 0..rng.next() % 5 {
                // Mostly well-formed frames with random flags, opcodes,
                // masks and payloads (text that is and is not UTF-8); now
                // and then garbage, or a cut.
                let roll = rng.next() % 16;
                if roll == 0 {
                    data.extend((0..rng.next() % 8).map(|_| rng.byte()));
                    continue;
                }
                let opcode = match rng.next() % 12 {
                    0..=2 => header::BINARY,
                    3..=4 => header::TEXT,
                    5..=6 => header::CONTINUATION,
                    7 => header::PING,
                    8 => header::PONG,
                    9 => header::CLOSE,
                    _ => rng.byte() & 0xF,
                };
                let len = match rng.next() % 8 {
                    0 => 0,
                    1 => 2,
                    2 => 126 + (rng.next() % 1000) as usize,
                    _ => (rng.next() % 20) as usize,
                };
                let mut payload: Vec<u8> = match rng.next() % 3 {
                    0 => "héllo wörld ".bytes().cycle().take(len).collect(),
                    _ => (0..len).map(|_| rng.byte()).collect(),
                };
                if opcode == header::CLOSE && len >= 2 && rng.one_in(2) {
                    let code: u16 =
                        [1000, 1001, 1005, 1006, 999, 3000, 4000, 5000][(rng.next() % 8) as usize];
                    payload[..2].copy_from_slice(&code.to_be_bytes());
                }
                let mask =
                    (!rng.one_in(8)).then(|| [rng.byte(), rng.byte(), rng.byte(), rng.byte()]);
                let start = data.len();
                header::put(&mut data, opcode, payload.len(), mask);
                if rng.one_in(4) {
                    data[start] &= 0x7F; // not final
                }
                if rng.one_in(16) {
                    data[start] |= (rng.byte() & 0x7) << 4; // RSV bits
                }
                let body = data.len();
                data.extend_from_slice(&payload);
                if let Some(mask) = mask {
                    header::apply_mask(&mut data[body..], mask);
                }
                if roll == 1 {
                    data.truncate(start + (rng.next() as usize % (data.len() - start)));
                }
            }
            against_tungstenite(&data);
        }
    }

    #[tokio::test]
    async fn a_declared_length_is_allocated_as_its_bytes_arrive() {
        let (mut far, near) = tokio::io::duplex(64 << 10);
        let mut read = WsRead::new(near, BytesMut::new(), Role::Server, LIMITS);
        let message = masked(true, header::BINARY, &vec![9; 1 << 19]);
        // The header and a few bytes: a 512 KiB frame is announced.
        far.write_all(&message[..100]).await.expect("write");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Read until the 86 bytes after the 14-byte header are in.
        for _ in 0..100 {
            assert!(Pin::new(&mut read).poll_next(&mut cx).is_pending());
            if read.buf.len() == 86 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(read.buf.len(), 86);
        assert!(read.buf.capacity() <= 2 * CHUNK, "{}", read.buf.capacity());
        // The rest arrives: the message is whole.
        let writing = tokio::spawn(async move {
            far.write_all(&message[100..]).await.expect("write");
            far
        });
        let got = read.next().await.expect("a message").expect("valid");
        assert_eq!(got, Message::binary(vec![9; 1 << 19]));
        drop(writing.await.expect("writer"));
    }

    #[tokio::test]
    async fn leftover_handshake_bytes_are_read_first() {
        let frame = masked(true, header::BINARY, b"early late");
        let (first, rest) = frame.split_at(9);
        let read = WsRead::new(rest, BytesMut::from(first), Role::Server, LIMITS);
        assert_eq!(all(read).await[0], Ok(Message::binary(&b"early late"[..])));
    }

    #[tokio::test]
    async fn a_burst_goes_through_one_chunk_and_a_quiet_socket_holds_no_buffer() {
        let (mut far, near) = tokio::io::duplex(64 << 10);
        let mut read = WsRead::new(near, BytesMut::new(), Role::Server, LIMITS);
        // A small message fits the resting buffer.
        far.write_all(&masked(true, header::BINARY, b"hello"))
            .await
            .expect("write");
        assert_eq!(
            read.next().await.expect("one").expect("ok"),
            Message::binary(&b"hello"[..])
        );
        assert!(
            read.buf.capacity() <= LIMITS.read_buffer,
            "{}",
            read.buf.capacity()
        );
        // A burst fills it: the next reads take a chunk.
        let burst: Vec<u8> = (0..400)
            .flat_map(|_| masked(true, header::BINARY, &[7; 20]))
            .collect();
        far.write_all(&burst).await.expect("write");
        let mut largest = 0;
        for _ in 0..400 {
            let message = read.next().await.expect("more").expect("ok");
            assert_eq!(message, Message::binary(vec![7; 20]));
            largest = largest.max(read.buf.capacity());
        }
        assert!(
            largest > CHUNK / 2,
            "{largest}: a read that filled its buffer asks for a chunk"
        );
        // Caught up: the next read finds nothing (the buffer stays for what
        // comes next); one more, later, with still nothing: the buffer goes.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for (poll, holds) in [(1, true), (2, false)] {
            assert!(Pin::new(&mut read).poll_next(&mut cx).is_pending());
            assert_eq!(read.holds_buffer(), holds, "after empty poll {poll}");
        }
        // A dropped connection without a close frame is an error, then the end.
        drop(far);
        let reset = read.next().await.expect("error").expect_err("reset");
        assert_eq!(
            reset.to_string(),
            "WebSocket protocol error: Connection reset without closing handshake"
        );
        assert!(read.next().await.is_none());
    }
}
