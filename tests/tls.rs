//! TLS (wss) with certificates made at test time, and handshakes too slow to finish (slowloris).

use std::time::Duration;

use goomerang::{Client, Config, Error, Server, Status, tls};
use goomerang_tests::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A test CA and a `localhost` certificate it signed: (CA PEM, chain PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "goomerang test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&key, &ca)
        .expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn echo() -> goomerang::ServerBuilder {
    Server::builder().request(|_ctx, p: Ping| async move {
        Ok::<_, Status>(Pong {
            n: p.n + 1,
            text: p.text,
        })
    })
}

#[tokio::test]
async fn wss_round_trip_with_a_test_ca() {
    bounded(async {
        let (ca, chain, key) = test_pki();
        let server = start(
            echo().tls(tls::server_config(chain.as_bytes(), key.as_bytes()).expect("server tls")),
        )
        .await;
        let url = format!("wss://localhost:{}/ws", server.addr.port());
        let client = Client::builder()
            .tls(tls::client_config(ca.as_bytes()).expect("client tls"))
            .connect(&url)
            .await
            .expect("wss connects");
        let pong: Pong = client
            .request(Ping {
                n: 41,
                text: String::new(),
            })
            .await
            .expect("reply")
            .into_inner();
        assert_eq!(pong.n, 42);
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn untrusted_or_unconfigured_tls_fails_typed() {
    bounded(async {
        let (_ca, chain, key) = test_pki();
        let (other_ca, _, _) = test_pki();
        let server = start(
            echo().tls(tls::server_config(chain.as_bytes(), key.as_bytes()).expect("server tls")),
        )
        .await;
        let url = format!("wss://localhost:{}/ws", server.addr.port());
        let untrusted = Client::builder()
            .tls(tls::client_config(other_ca.as_bytes()).expect("client tls"))
            .connect(&url)
            .await;
        // The handshake error keeps rustls' reason as its source.
        match untrusted {
            Err(Error::Tls(tls::TlsError::Handshake(io))) => {
                let inner = io.get_ref().expect("rustls' error inside");
                assert!(
                    inner.downcast_ref::<tls::rustls::Error>().is_some(),
                    "{inner:?}"
                );
            }
            other => panic!("expected a TLS handshake error, got {other:?}"),
        }
        let unconfigured = Client::builder().connect(&url).await;
        assert!(
            matches!(unconfigured, Err(Error::Tls(tls::TlsError::NotConfigured))),
            "{unconfigured:?}"
        );
        assert!(matches!(
            tls::server_config(b"not pem", b"nor this"),
            Err(Error::Tls(tls::TlsError::Empty("certificate chain")))
        ));
        assert!(matches!(
            tls::client_config(b""),
            Err(Error::Tls(tls::TlsError::Empty("root certificate")))
        ));
        server.stop().await;
    })
    .await;
}

/// Sends a partial request and then nothing; returns once the server hangs up.
async fn dribble(addr: std::net::SocketAddr, first: &[u8]) -> Duration {
    let started = std::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    tcp.write_all(first).await.expect("write");
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    started.elapsed()
}

#[tokio::test]
async fn slow_handshakes_are_cut_off() {
    bounded(async {
        let config = Config::default().handshake_timeout(Duration::from_millis(300));
        let server = start(echo().config(config.clone())).await;
        // HTTP headers that never finish.
        let took = dribble(
            server.addr,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
        )
        .await;
        assert!(took < Duration::from_secs(10), "cut off after {took:?}");
        // The server still serves.
        let client = server.client().await;
        assert_eq!(
            client
                .request::<_, Pong>(Ping::default())
                .await
                .expect("reply")
                .into_inner()
                .n,
            1
        );
        client.close().await.expect("close");
        server.stop().await;

        // A TLS server: a client that never sends its ClientHello.
        let (_, chain, key) = test_pki();
        let server = start(
            echo()
                .config(config)
                .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).expect("tls")),
        )
        .await;
        let took = dribble(server.addr, b"").await;
        assert!(took < Duration::from_secs(10), "cut off after {took:?}");
        server.stop().await;
    })
    .await;
}
