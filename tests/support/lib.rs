//! Shared helpers for the integration tests: test message types, a server on 127.0.0.1:0, raw WebSocket peers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use goomerang::proto::{Frame, FrameKind};
use goomerang::{Client, ClientBuilder, Error, Server, ServerBuilder};
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

macro_rules! named {
    ($($name:ident),*) => {$(
        impl prost::Name for $name {
            const NAME: &'static str = stringify!($name);
            const PACKAGE: &'static str = "test.v1";
        }
    )*};
}
named!(Ping, Pong, Note, Work, Done, Blob, Seq);

/// `test.v1.Ping`: a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// A number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Some text.
    #[prost(string, tag = "2")]
    pub text: String,
}

/// `test.v1.Pong`: a reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    /// A number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Some text.
    #[prost(string, tag = "2")]
    pub text: String,
}

/// `test.v1.Note`: a one-way message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Note {
    /// Some text.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// `test.v1.Work`: a request whose handler takes `ms` milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Work {
    /// How long the handler works.
    #[prost(uint64, tag = "1")]
    pub ms: u64,
    /// Which piece of work.
    #[prost(uint64, tag = "2")]
    pub id: u64,
}

/// `test.v1.Done`: a reply to [`Work`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {
    /// Which piece of work.
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// `test.v1.Blob`: bytes of any size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// `test.v1.Seq`: a sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Seq {
    /// The number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
}

/// Every test body runs under this bound, so a hang fails instead of stalling CI.
pub const TEST_BOUND: Duration = Duration::from_secs(30);

/// Runs `f` with the test time bound.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its time bound")
}

/// A server serving on an ephemeral loopback port.
#[derive(Debug)]
pub struct TestServer {
    /// The server handle.
    pub server: Server,
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<Result<(), Error>>,
}

/// Binds 127.0.0.1:0 first, then serves `builder`'s server on it.
pub async fn start(builder: ServerBuilder) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = builder.build().expect("valid routes");
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    TestServer { server, addr, task }
}

impl TestServer {
    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, goomerang::DEFAULT_PATH)
    }

    /// Connects a default client.
    pub async fn client(&self) -> Client {
        self.connect(Client::builder()).await
    }

    /// Connects a client built from `builder`.
    pub async fn connect(&self, builder: ClientBuilder) -> Client {
        builder.connect(&self.url()).await.expect("client connects")
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(self) {
        self.server
            .shutdown(Duration::from_secs(5))
            .await
            .expect("clean shutdown");
        self.task
            .await
            .expect("serve task")
            .expect("serve returns Ok");
    }
}

/// `builder` with a request handler answering each `Ping` with a `Pong` echoing it.
pub fn echo(builder: ServerBuilder) -> ServerBuilder {
    builder.request(|_ctx, p: Ping| async move {
        Ok::<_, goomerang::Status>(Pong {
            n: p.n,
            text: p.text,
        })
    })
}

/// Asserts that `server` (serving [`echo`]) still answers a new client.
pub async fn still_serving(server: &TestServer) {
    let client = server.client().await;
    let pong: Pong = client
        .request(Ping {
            n: 5,
            text: String::new(),
        })
        .await
        .expect("served")
        .into_inner();
    assert_eq!(pong.n, 5);
    client.close().await.expect("close");
}

/// A plain HTTP/1.1 GET over TCP (`Connection: close`); returns the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(addr).await.expect("tcp");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    response
}

/// A raw WebSocket peer speaking frames by hand.
pub type RawPeer = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a raw WebSocket peer offering the goomerang subprotocol.
pub async fn raw_peer(server: &TestServer) -> RawPeer {
    let mut request = server.url().into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        goomerang::SUBPROTOCOL.parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("raw connect")
        .0
}

/// Sends one frame from a raw peer.
pub async fn send_frame(peer: &mut RawPeer, frame: &Frame) {
    peer.send(WsMessage::Binary(Bytes::from(frame.encode_to_vec())))
        .await
        .expect("raw send");
}

/// Reads the next frame a raw peer receives (skipping pings); panics on anything else.
pub async fn recv_frame(peer: &mut RawPeer) -> Frame {
    loop {
        match peer.next().await.expect("stream open").expect("read") {
            WsMessage::Binary(bytes) => return Frame::decode(bytes).expect("frame decodes"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Reads until the peer's close frame, then on to the end of the stream (which
/// sends the close reply, completing the handshake); returns code and reason.
pub async fn recv_close<S>(peer: &mut WebSocketStream<S>) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut close = None;
    while let Some(message) = peer.next().await {
        match message {
            Ok(WsMessage::Close(frame)) => {
                close = Some(frame.map_or((1005, String::new()), |f| {
                    (f.code.into(), f.reason.to_string())
                }));
            }
            Ok(_) => continue,
            Err(_) if close.is_some() => break,
            Err(err) => panic!("connection failed before a close frame: {err}"),
        }
    }
    close.expect("connection ended without a close frame")
}

/// Accepts one connection on `listener` as a hand-written goomerang server
/// (answers the subprotocol, nothing else).
pub async fn accept_raw(listener: &TcpListener) -> WebSocketStream<TcpStream> {
    let (tcp, _) = listener.accept().await.expect("accept");
    #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
    let answer =
        |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
         mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                goomerang::SUBPROTOCOL.parse().expect("header"),
            );
            Ok(response)
        };
    tokio_tungstenite::accept_hdr_async(tcp, answer)
        .await
        .expect("handshake")
}

/// A MESSAGE or REQUEST frame carrying `payload`.
pub fn frame_for<T: prost::Message + prost::Name>(kind: FrameKind, id: u64, payload: &T) -> Frame {
    Frame {
        kind: kind as i32,
        id,
        r#type: T::full_name(),
        payload: Bytes::from(payload.encode_to_vec()),
        ..Frame::default()
    }
}
