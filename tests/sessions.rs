//! Sessions: created by a handler, announced to the client, resumed when it reconnects (by header or query), ended, and forgotten when unknown.

use std::time::Duration;

use goomerang::session::MemorySessions;
use goomerang::{Client, Reconnect, Server, Status};
use goomerang_tests::wire::{FrameKind, Session};
use goomerang_tests::*;
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A server whose `Ping` with text `login:<name>` creates a session holding
/// `Note { text: name }`, with text `logout` ends it, and otherwise answers
/// with the session's name (empty without one).
async fn server() -> TestServer {
    start(
        Server::builder()
            .sessions(MemorySessions::new(), Duration::from_secs(60))
            .request(|ctx, ping: Ping| async move {
                let conn = ctx.connection();
                if let Some(name) = ping.text.strip_prefix("login:") {
                    conn.create_session(&Note { text: name.into() })
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                } else if ping.text == "logout" {
                    conn.end_session()
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                let name = conn.session::<Note>().map(|n| n.text).unwrap_or_default();
                Ok::<_, Status>(Pong {
                    n: ping.n,
                    text: name,
                })
            }),
    )
    .await
}

async fn ask(client: &Client, text: &str) -> String {
    client
        .request::<_, Pong>(Ping {
            n: 1,
            text: text.into(),
        })
        .await
        .expect("answered")
        .into_inner()
        .text
}

fn reconnecting() -> goomerang::ClientBuilder {
    Client::builder().reconnect(Some(
        Reconnect::default().backoff(Duration::from_millis(5), Duration::from_millis(20)),
    ))
}

/// Closes every connection from the server's side; waits until none is
/// left, then until the (reconnecting) client is back.
async fn drop_connections(server: &TestServer) {
    for conn in server.server.connections() {
        conn.close_with(1012, "restarting").await.expect("close");
    }
    while !server.server.connections().is_empty() {
        tokio::task::yield_now().await;
    }
    while server.server.connections().is_empty() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_session_survives_a_reconnection() {
    bounded(async {
        let server = server().await;
        let client = server.connect(reconnecting()).await;
        assert_eq!(client.session_key(), None);
        assert_eq!(ask(&client, "who").await, "");
        // The key is announced before the reply that follows the login.
        assert_eq!(ask(&client, "login:ada").await, "ada");
        let key = client.session_key().expect("a key");
        assert_eq!(key.len(), 64);
        assert_eq!(ask(&client, "who").await, "ada");

        drop_connections(&server).await;
        // Back, with the key presented: the session is there again.
        assert_eq!(ask(&client, "who").await, "ada");
        assert_eq!(client.session_key().as_deref(), Some(key.as_str()));
        let conn = server.server.connections().pop().expect("reconnected");
        assert_eq!(conn.session_key().as_deref(), Some(key.as_str()));

        // A new login replaces it; ending it tells the client to forget.
        assert_eq!(ask(&client, "login:bob").await, "bob");
        assert_ne!(client.session_key().as_deref(), Some(key.as_str()));
        assert_eq!(ask(&client, "logout").await, "");
        assert_eq!(client.session_key(), None);
        drop_connections(&server).await;
        assert_eq!(ask(&client, "who").await, "");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_saved_key_resumes_in_a_new_client_and_an_unknown_one_is_forgotten() {
    bounded(async {
        let server = server().await;
        let first = server.client().await;
        assert_eq!(ask(&first, "login:ada").await, "ada");
        let key = first.session_key().expect("a key");
        first.close().await.expect("close");

        let second = server
            .connect(Client::builder().session_key(key.clone()))
            .await;
        assert_eq!(ask(&second, "who").await, "ada");
        second.close().await.expect("close");

        let stranger = server
            .connect(Client::builder().session_key("0".repeat(64)))
            .await;
        // The server's empty Session comes first on the connection, so it is
        // handled before the reply.
        assert_eq!(ask(&stranger, "who").await, "");
        assert_eq!(stranger.session_key(), None);
        stranger.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn browsers_present_the_key_in_the_query_and_clients_cannot_create_sessions() {
    bounded(async {
        let server = server().await;
        let client = server.client().await;
        assert_eq!(ask(&client, "login:ada").await, "ada");
        let key = client.session_key().expect("a key");
        // A browser cannot set headers: the query parameter does the same.
        let mut request = format!("{}?goomerang_session={key}", server.url())
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            goomerang::SUBPROTOCOL.parse().expect("header"),
        );
        let (mut raw, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("raw connect");
        let first = recv_frame(&mut raw).await;
        assert_eq!(
            (first.kind, first.r#type.as_str()),
            (FrameKind::Message as i32, "goomerang.v1.Session")
        );
        assert_eq!(Session::decode(first.payload).expect("decodes").key, key);
        drop(raw);

        // Sessions are the server's.
        let conn = client.connection().expect("connected");
        let err = conn
            .create_session(&Note::default())
            .await
            .expect_err("a client cannot");
        assert!(matches!(err, goomerang::Error::Session(_)), "{err:?}");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
