//! Handlers written with `#[goomerang::handler]` serve requests and one-way messages.

use goomerang::{Context, Server, Status};
use goomerang_tests::*;
use tokio::sync::mpsc;

/// Doubles.
#[goomerang::handler]
async fn double(_ctx: Context, ping: Ping) -> Result<Pong, Status> {
    Ok(Pong {
        n: ping.n * 2,
        text: ping.text,
    })
}

#[goomerang::handler]
async fn echo_note(ctx: Context, note: Note) -> Result<(), Status> {
    ctx.connection()
        .send(Done {
            id: note.text.len() as u64,
        })
        .await
        .map_err(Status::from)
}

#[tokio::test]
async fn macro_handlers_answer_and_consume() {
    bounded(async {
        let server = start(Server::builder().service(double).service(echo_note)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client = server
            .connect(
                goomerang::Client::builder().message(move |_ctx, done: Done| {
                    let tx = tx.clone();
                    async move { tx.send(done.id).expect("test alive") }
                }),
            )
            .await;
        let pong: Pong = client
            .request(Ping {
                n: 21,
                text: "x".into(),
            })
            .await
            .expect("reply")
            .into_inner();
        assert_eq!(pong.n, 42);
        client
            .send(Note {
                text: "four".into(),
            })
            .await
            .expect("send");
        assert_eq!(rx.recv().await, Some(4));
        // The function is still callable directly.
        let ctx_free = double::call;
        let _ = ctx_free;
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
