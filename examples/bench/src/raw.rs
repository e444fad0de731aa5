//! The baseline: the same scenarios over bare tokio-tungstenite, writes batched (feed, drain, one flush).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Sample, percentiles};

type Error = Box<dyn std::error::Error>;
type ClientWs = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// An error that can leave a spawned task.
type SendError = Box<dyn std::error::Error + Send + Sync>;

/// Accepts connections forever, running `serve_one` on each.
async fn listen<F, Fut>(serve_one: F) -> Result<String, Error>
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    tokio::spawn(accept(listener, serve_one));
    Ok(url)
}

/// Accepts WebSocket connections on `listener`, each served by `serve_one`.
async fn accept<F, Fut>(listener: TcpListener, serve_one: F)
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
            tokio::spawn(serve_one(ws));
        }
    }
}

async fn connect(url: &str) -> Result<ClientWs, Error> {
    Ok(
        tokio_tungstenite::connect_async_with_config(url, None, true)
            .await?
            .0,
    )
}

/// A server that answers every binary message with a small reply, flushing once per ready batch.
async fn echo(ws: WebSocketStream<TcpStream>) {
    let (mut sink, mut stream) = ws.split();
    let reply = Bytes::from_static(b"ok");
    while let Some(Ok(msg)) = stream.next().await {
        if !msg.is_binary() {
            continue;
        }
        if sink.feed(Message::Binary(reply.clone())).await.is_err() {
            return;
        }
        while let Some(Some(Ok(msg))) = stream.next().now_or_never() {
            if msg.is_binary() && sink.feed(Message::Binary(reply.clone())).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// `n` request/reply round trips, `window` in flight on one connection.
/// The client runs as a task on the runtime, as goomerang's callers do.
pub(crate) async fn sync(n: usize, window: usize) -> Result<Sample, Error> {
    let url = listen(echo).await?;
    sync_against(&url, n, window).await
}

/// Serves the echo of the request scenarios on `listener`, forever.
pub(crate) async fn serve_echo(listener: TcpListener) {
    accept(listener, echo).await;
}

/// The client side of [`sync`], against the echo server at `url`.
pub(crate) async fn sync_against(url: &str, n: usize, window: usize) -> Result<Sample, Error> {
    let ws = connect(url).await?;
    let client = tokio::spawn(async move {
        sync_client(ws, n, window)
            .await
            .map_err(|err| err.to_string())
    });
    Ok(client.await??)
}

async fn sync_client(mut ws: ClientWs, n: usize, window: usize) -> Result<Sample, SendError> {
    let payload = Bytes::from(vec![7u8; 32]);
    for _ in 0..1_000 {
        ws.send(Message::Binary(payload.clone())).await?;
        ws.next().await.ok_or("closed")??;
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    if window == 1 {
        latencies.reserve(n);
        for _ in 0..n {
            let t = Instant::now();
            ws.send(Message::Binary(payload.clone())).await?;
            ws.next().await.ok_or("closed")??;
            latencies.push(t.elapsed());
        }
    } else {
        let mut sent = 0;
        while sent < window.min(n) {
            ws.feed(Message::Binary(payload.clone())).await?;
            sent += 1;
        }
        ws.flush().await?;
        let mut received = 0;
        while received < n {
            ws.next().await.ok_or("closed")??;
            received += 1;
            if sent < n {
                ws.feed(Message::Binary(payload.clone())).await?;
                sent += 1;
            }
            while let Some(Some(msg)) = ws.next().now_or_never() {
                msg?;
                received += 1;
                if sent < n {
                    ws.feed(Message::Binary(payload.clone())).await?;
                    sent += 1;
                }
            }
            ws.flush().await?;
        }
    }
    let elapsed = started.elapsed();
    let (p50_us, p99_us) = percentiles(latencies);
    Ok(Sample {
        value: n as f64 / elapsed.as_secs_f64(),
        p50_us,
        p99_us,
    })
}

/// `n` round trips from `tasks` caller tasks sharing one connection, as
/// goomerang's callers do: the least a multiplexing client does. Each caller
/// hands its request to the connection's writer task through a channel and
/// waits on a oneshot; the writer feeds what is queued and flushes once; the
/// reader task answers the callers in order (the echo server answers in order,
/// so no ids are needed).
pub(crate) async fn sync_tasks(n: usize, tasks: usize) -> Result<Sample, Error> {
    let url = listen(echo).await?;
    let ws = connect(&url).await?;
    let (mut sink, mut stream) = ws.split();
    let payload = Bytes::from(vec![7u8; 32]);
    for _ in 0..1_000 {
        sink.send(Message::Binary(payload.clone())).await?;
        stream.next().await.ok_or("closed")??;
    }
    let waiting = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<
        oneshot::Sender<()>,
    >::new()));
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let writer = tokio::spawn({
        let (waiting, payload) = (Arc::clone(&waiting), payload.clone());
        async move {
            while let Some(first) = rx.recv().await {
                let mut count = 1;
                waiting.lock().expect("not poisoned").push_back(first);
                while let Ok(next) = rx.try_recv() {
                    waiting.lock().expect("not poisoned").push_back(next);
                    count += 1;
                }
                for _ in 0..count {
                    sink.feed(Message::Binary(payload.clone())).await?;
                }
                sink.flush().await?;
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        }
    });
    let reader = tokio::spawn({
        let waiting = Arc::clone(&waiting);
        async move {
            while let Some(Ok(_)) = stream.next().await {
                let caller = waiting.lock().expect("not poisoned").pop_front();
                if let Some(caller) = caller {
                    let _ = caller.send(());
                }
            }
        }
    });
    let per_caller = n / tasks;
    let started = Instant::now();
    let callers: Vec<_> = (0..tasks)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for _ in 0..per_caller {
                    let t = Instant::now();
                    let (answer, answered) = oneshot::channel();
                    tx.send(answer).map_err(|_| "writer stopped")?;
                    answered.await.map_err(|_| "connection ended")?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, &'static str>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for caller in callers {
        latencies.extend(caller.await??);
    }
    let elapsed = started.elapsed();
    drop(tx);
    writer.await??;
    reader.abort();
    let (p50_us, p99_us) = percentiles(latencies);
    Ok(Sample {
        value: (per_caller * tasks) as f64 / elapsed.as_secs_f64(),
        p50_us,
        p99_us,
    })
}

/// `n` one-way messages of `size` bytes, counted by the server.
pub(crate) async fn oneway(n: usize, size: usize) -> Result<Sample, Error> {
    let done = Arc::new(Notify::new());
    let target = n + 1_000;
    let url = listen({
        let done = Arc::clone(&done);
        move |ws| {
            let done = Arc::clone(&done);
            async move {
                let (_sink, mut stream) = ws.split();
                let mut count = 0;
                while let Some(Ok(msg)) = stream.next().await {
                    if msg.is_binary() {
                        count += 1;
                        if count == target {
                            done.notify_one();
                        }
                    }
                }
            }
        }
    })
    .await?;
    let mut ws = connect(&url).await?;
    let payload = Bytes::from(vec![7u8; size]);
    let send_batch = async |ws: &mut ClientWs, count: usize| -> Result<(), Error> {
        for i in 0..count {
            ws.feed(Message::Binary(payload.clone())).await?;
            if i % 256 == 255 {
                ws.flush().await?;
            }
        }
        ws.flush().await?;
        Ok(())
    };
    send_batch(&mut ws, 1_000).await?;
    let started = Instant::now();
    send_batch(&mut ws, n).await?;
    done.notified().await;
    let elapsed = started.elapsed();
    Ok(Sample {
        value: n as f64 / elapsed.as_secs_f64(),
        ..Sample::default()
    })
}

/// `clients` connections; the server writes `count` 32-byte messages to each
/// (one writer task per connection, draining its queue with one flush per batch).
pub(crate) async fn broadcast(clients: usize, count: usize) -> Result<Sample, Error> {
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<mpsc::UnboundedSender<Bytes>>();
    let url = listen(move |ws| {
        let conn_tx = conn_tx.clone();
        async move {
            let (mut sink, _stream) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
            if conn_tx.send(tx).is_err() {
                return;
            }
            while let Some(first) = rx.recv().await {
                if sink.feed(Message::Binary(first)).await.is_err() {
                    return;
                }
                while let Ok(next) = rx.try_recv() {
                    if sink.feed(Message::Binary(next)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    })
    .await?;
    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let mut readers = Vec::new();
    for _ in 0..clients {
        let ws = connect(&url).await?;
        let (finished, done) = (Arc::clone(&finished), Arc::clone(&done));
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut got = 0;
            while got < count {
                match stream.next().await {
                    Some(Ok(msg)) if msg.is_binary() => got += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            if finished.fetch_add(1, Ordering::Relaxed) + 1 == clients {
                done.notify_one();
            }
        }));
    }
    let mut writers = Vec::with_capacity(clients);
    while writers.len() < clients {
        writers.push(conn_rx.recv().await.ok_or("server stopped")?);
    }
    let payload = Bytes::from(vec![7u8; 32]);
    let started = Instant::now();
    for _ in 0..count {
        for writer in &writers {
            let _ = writer.send(payload.clone());
        }
    }
    done.notified().await;
    let elapsed = started.elapsed();
    for reader in readers {
        reader.abort();
    }
    Ok(Sample {
        value: elapsed.as_secs_f64(),
        ..Sample::default()
    })
}
