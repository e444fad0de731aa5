//! An independent WebSocket implementation, Python's `websockets`, speaks to a goomerang
//! server with frames encoded from PROTOCOL.md: the subprotocol, fragmented and 1 MiB
//! messages both ways, pipelined requests, ping/pong, one-way messages, an unknown type, and
//! the close codes. `bash scripts/test` installs the library; without it the test says it
//! skipped, or fails under `GOOMERANG_REQUIRE_TOOLS`.

use std::process::Stdio;

use goomerang::{CloseInfo, Initiator, Server};
use goomerang_tests::{Note, bounded, echo, start};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Whether `python3` can import `websockets`; when it cannot, fails under
/// `GOOMERANG_REQUIRE_TOOLS` and otherwise says the test is skipped.
async fn have_python_websockets() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("GOOMERANG_REQUIRE_TOOLS").is_none(),
            "python3 with the websockets library is required (GOOMERANG_REQUIRE_TOOLS is set): \
             python3 -m pip install websockets, or run `bash scripts/test`"
        );
        eprintln!("SKIPPING: python3 -m pip install websockets (or run `bash scripts/test`)");
    }
    found
}

#[tokio::test]
async fn pythons_websockets_library_speaks_to_a_goomerang_server() {
    bounded(async {
        if !have_python_websockets().await {
            return;
        }
        let (note_tx, mut notes) = mpsc::unbounded_channel();
        let (close_tx, mut closes) = mpsc::unbounded_channel::<CloseInfo>();
        let server = start(echo(
            Server::builder()
                .message(move |_ctx, note: Note| {
                    let note_tx = note_tx.clone();
                    async move {
                        let _ = note_tx.send(note.text);
                    }
                })
                .on_disconnect(move |_, info| {
                    let _ = close_tx.send(info.clone());
                }),
        ))
        .await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/python_websockets.py");
        let output = Command::new("python3")
            .arg(script)
            .arg(server.url())
            .kill_on_drop(true)
            .output()
            .await
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the Python client failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            [
                "subprotocol goomerang.v1",
                "request and reply",
                "fragmented request",
                "1 MiB request and reply",
                "ping answered",
                "three one-way notes sent",
                "300 pipelined requests, each answered once",
                "unknown type answered with ERROR 12",
                "text frame closed with 1003",
                "client close 1000 answered with 1000",
                "ok",
            ]
        );
        // The server closed the first connection for the text frame, and the
        // client closed the second.
        let mut seen = Vec::new();
        for _ in 0..2 {
            let info = closes.recv().await.expect("a close");
            seen.push((info.code, info.initiator));
        }
        seen.sort_by_key(|(code, _)| *code);
        assert_eq!(seen, [(1000, Initiator::Remote), (1003, Initiator::Local)]);
        // The notes arrived in order, each once: the first connection is
        // over, and no fourth is waiting.
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(notes.recv().await.expect("a note"));
        }
        assert_eq!(got, ["one", "two", "three"]);
        assert_eq!(notes.try_recv(), Err(mpsc::error::TryRecvError::Empty));
        server.stop().await;
    })
    .await;
}
