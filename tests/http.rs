//! Same-port HTTP routes, mounting into an outside axum app, handshake auth with typed state, origins, connection limits.

use std::net::SocketAddr;
use std::time::Duration;

use goomerang::{Accept, Client, Config, Error, Reject, Server, Status};
use goomerang_tests::*;
use tokio::net::TcpListener;

async fn ping(client: &Client) -> u64 {
    client
        .request::<_, Pong>(Ping {
            n: 9,
            text: String::new(),
        })
        .await
        .expect("reply")
        .into_inner()
        .n
}

#[tokio::test]
async fn custom_routes_share_the_port_with_the_websocket() {
    bounded(async {
        let health = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        let server = start(echo(Server::builder()).routes(health)).await;
        let response = http_get(server.addr, "/health").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("ok"), "{response}");
        assert!(
            http_get(server.addr, "/nope")
                .await
                .starts_with("HTTP/1.1 404")
        );
        let client = server.client().await;
        assert_eq!(ping(&client).await, 9);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn goomerang_mounts_inside_an_outside_axum_app() {
    bounded(async {
        let server = echo(Server::builder())
            .path("/rpc")
            .build()
            .expect("valid routes");
        let app = axum::Router::new()
            .route("/outer", axum::routing::get(|| async { "outer app" }))
            .merge(server.mount().expect("mount"));
        assert!(matches!(server.mount(), Err(Error::AlreadyRunning)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let outer = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
        });
        assert!(http_get(addr, "/outer").await.ends_with("outer app"));
        let client = Client::builder()
            .connect(&format!("ws://{addr}/rpc"))
            .await
            .expect("connect");
        assert_eq!(ping(&client).await, 9);
        assert!(
            server.connections()[0].peer_addr().is_some(),
            "peer address from the outer app"
        );
        client.close().await.expect("close");
        server
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        let _ = stop_tx.send(());
        outer.await.expect("join").expect("outer app stops");
    })
    .await;
}

#[derive(Clone, Debug, PartialEq)]
struct User(String);

fn authed() -> goomerang::ServerBuilder {
    Server::builder()
        .on_open(|hs| async move {
            let bearer = hs
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let token = bearer.or_else(|| hs.query("token")).or_else(|| {
                hs.subprotocols()
                    .iter()
                    .find_map(|p| p.strip_prefix("token.").map(str::to_owned))
            });
            match token.as_deref() {
                Some("good") => Ok(Accept::new()
                    .with(User(hs.query("user").unwrap_or_else(|| "anonymous".into())))),
                Some(_) => Err(Reject::forbidden("token not valid")),
                None => Err(Reject::unauthorized("missing or wrong token")),
            }
        })
        .request(|ctx, _p: Ping| async move {
            let user = ctx
                .connection()
                .state::<User>()
                .cloned()
                .ok_or_else(|| Status::internal("no user"))?;
            Ok::<_, Status>(Pong { n: 0, text: user.0 })
        })
}

#[tokio::test]
async fn handshakes_are_refused_with_a_status_the_client_sees() {
    bounded(async {
        let server = start(authed()).await;
        let missing = Client::builder()
            .connect(&server.url())
            .await
            .expect_err("refused");
        match missing {
            Error::Refused {
                status: 401,
                reason,
            } => assert_eq!(reason, "missing or wrong token"),
            other => panic!("expected a 401, got {other:?}"),
        }
        let wrong = Client::builder()
            .header("authorization", "Bearer bad")
            .connect(&server.url())
            .await;
        assert!(
            matches!(wrong, Err(Error::Refused { status: 403, .. })),
            "{wrong:?}"
        );
        assert!(server.server.connections().is_empty());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn accepted_handshakes_attach_typed_state_for_handlers() {
    bounded(async {
        let server = start(authed()).await;
        // A header (non-browser clients) ...
        let by_header = Client::builder()
            .header("authorization", "Bearer good")
            .connect(&format!("{}?user=ada", server.url()))
            .await
            .expect("accepted");
        // ... a query parameter, and a subprotocol (what browsers can do).
        let by_query = Client::builder()
            .connect(&format!("{}?token=good&user=bob", server.url()))
            .await
            .expect("accepted");
        let by_protocol = Client::builder()
            .subprotocol("token.good")
            .connect(&format!("{}?user=eve", server.url()))
            .await
            .expect("accepted");
        for (client, name) in [
            (&by_header, "ada"),
            (&by_query, "bob"),
            (&by_protocol, "eve"),
        ] {
            let pong: Pong = client
                .request(Ping::default())
                .await
                .expect("reply")
                .into_inner();
            assert_eq!(pong.text, name);
        }
        for client in [by_header, by_query, by_protocol] {
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    bounded(async {
        let server = start(
            echo(Server::builder())
                .allowed_origins(["https://app.example.com", "https://*.example.org"]),
        )
        .await;
        let evil = Client::builder()
            .header("origin", "https://evil.com")
            .connect(&server.url())
            .await;
        match evil {
            Err(Error::Refused {
                status: 403,
                reason,
            }) => assert!(reason.contains("https://evil.com"), "{reason}"),
            other => panic!("expected a 403, got {other:?}"),
        }
        let app = Client::builder()
            .header("origin", "https://app.example.com")
            .connect(&server.url())
            .await
            .expect("allowed");
        let sub = Client::builder()
            .header("origin", "https://eu.example.org")
            .connect(&server.url())
            .await
            .expect("allowed");
        let no_origin = server.client().await;
        for client in [app, sub, no_origin] {
            assert_eq!(ping(&client).await, 9);
            client.close().await.expect("close");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    bounded(async {
        let server =
            start(echo(Server::builder()).config(Config::default().max_connections(2))).await;
        let (a, b) = (server.client().await, server.client().await);
        let third = Client::builder().connect(&server.url()).await;
        assert!(
            matches!(third, Err(Error::Refused { status: 503, .. })),
            "{third:?}"
        );
        a.close().await.expect("close");
        // Once a slot frees up, a new connection is accepted.
        while server.server.connections().len() > 1 {
            tokio::task::yield_now().await;
        }
        let c = server.client().await;
        assert_eq!(ping(&c).await, 9);
        b.close().await.expect("close");
        c.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
