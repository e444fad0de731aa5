//! Observability: tracing spans per connection and per handled message (type, correlation id, traceparent).

use std::io::Write;
use std::sync::{Arc, Mutex};

use goomerang::{Message, Server, Status};
use goomerang_tests::*;
use tracing_subscriber::fmt::format::FmtSpan;

/// A writer collecting everything the subscriber prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn spans_name_the_connection_and_each_message_with_its_traceparent() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every task runs here, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let server = start(Server::builder().request(|_ctx, p: Ping| async move {
            tracing::info!("inside the handler");
            Ok::<_, Status>(Pong {
                n: p.n,
                text: p.text,
            })
        }))
        .await;
        let client = server.client().await;
        client
            .request::<_, Pong>(
                Message::new(Ping {
                    n: 1,
                    text: String::new(),
                })
                .header("traceparent", TRACEPARENT),
            )
            .await
            .expect("reply");
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
    let text = captured.text();
    assert!(text.contains("goomerang.connection{conn=1"), "{text}");
    let handled = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .expect("the handler's event was logged");
    assert!(
        handled.contains("goomerang.handle{type=test.v1.Ping id=1"),
        "{handled}"
    );
    assert!(handled.contains(TRACEPARENT), "{handled}");
}
