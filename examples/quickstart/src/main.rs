//! The quickstart: a chat server and two members in one process, talking through code generated
//! from `proto/quickstart/v1/chat.proto` (see build.rs; no protoc needed).
//!
//! Run it with `cargo run -p quickstart`. It exercises every messaging pattern and prints what happened.

use std::time::{Duration, Instant};

use goomerang::{Client, Context, Message, Server, Status, middleware};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The generated messages (prost) and services (goomerang) of package `quickstart.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    goomerang::include_proto!("quickstart.v1");
}

use pb::chat_client::ChatClient;
use pb::chat_server::{Chat, ChatServer};
use pb::member_client::MemberClient;
use pb::member_server::{Member, MemberServer};
use pb::{
    Announcement, Answer, ChatMessage, HelloReply, HelloRequest, Question, WorkReply, WorkRequest,
};

/// The server side of the `Chat` service.
struct ChatRoom {
    /// Tells main when a posted message has been fully handled.
    handled: mpsc::UnboundedSender<String>,
}

impl Chat for ChatRoom {
    async fn say_hello(&self, _ctx: Context, request: HelloRequest) -> Result<HelloReply, Status> {
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        Ok(HelloReply {
            greeting: format!("Hello, {}!", request.name),
        })
    }

    async fn post(&self, ctx: Context, message: ChatMessage) -> Result<(), Status> {
        println!("[server] {} posted {:?}", message.from, message.text);
        // Server → client request, on the connection the post came from.
        let member = MemberClient::new(ctx.connection().clone());
        let answer = member
            .ask(Question {
                text: format!("{}, are you sure about {:?}?", message.from, message.text),
            })
            .await?;
        println!("[server] {} answered {:?}", message.from, answer.text);
        // Server → client one-way message.
        member
            .announce(Announcement {
                text: format!("{} said {:?}", message.from, message.text),
            })
            .await?;
        let _ = self.handled.send(message.text);
        Ok(())
    }

    async fn work(&self, _ctx: Context, request: WorkRequest) -> Result<WorkReply, Status> {
        /// Prints when the runtime drops the handler (cancellation) before it finished.
        struct Cancelled(bool);
        impl Drop for Cancelled {
            fn drop(&mut self) {
                if !self.0 {
                    println!("[server] work was cancelled: the caller stopped waiting");
                }
            }
        }
        let mut guard = Cancelled(false);
        tokio::time::sleep(Duration::from_millis(u64::from(request.millis))).await;
        guard.0 = true;
        Ok(WorkReply {
            millis: request.millis,
        })
    }
}

/// The client side of the `Member` service.
struct Person {
    name: &'static str,
    /// Tells main when an announcement arrived.
    heard: mpsc::UnboundedSender<&'static str>,
}

impl Member for Person {
    async fn ask(&self, _ctx: Context, question: Question) -> Result<Answer, Status> {
        println!("[{}] was asked {:?}", self.name, question.text);
        Ok(Answer {
            text: format!("yes, {} is sure", self.name),
        })
    }

    async fn announce(&self, ctx: Context, announcement: Announcement) -> Result<(), Status> {
        match ctx.metadata().topic() {
            Some(topic) => println!("[{}] heard on {topic}: {}", self.name, announcement.text),
            None => println!("[{}] heard: {}", self.name, announcement.text),
        }
        let _ = self.heard.send(self.name);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A server on an ephemeral port, with logging middleware and hooks.
    let (handled, mut posts_done) = mpsc::unbounded_channel();
    let server = Server::builder()
        .service(ChatServer::new(ChatRoom { handled }))
        .middleware(middleware::logging())
        .metrics_path("/metrics") // Prometheus, on the same port as the WebSocket
        .on_connect(|conn| {
            println!(
                "[server] connection {} opened from {:?}",
                conn.id(),
                conn.peer_addr()
            )
        })
        .on_disconnect(|conn, info| {
            println!(
                "[server] connection {} closed: code {} {:?} (initiator: {:?})",
                conn.id(),
                info.code,
                info.reason,
                info.initiator
            )
        })
        .build()
        .expect("valid routes");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}{}", listener.local_addr()?, goomerang::DEFAULT_PATH);
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    println!("[server] listening on {url}");

    // 2. Two clients; each implements the Member service for the server's calls.
    let (heard, mut announcements) = mpsc::unbounded_channel();
    let ada = Client::builder()
        .service(MemberServer::new(Person {
            name: "ada",
            heard: heard.clone(),
        }))
        .connect(&url)
        .await?;
    let bob = Client::builder()
        .service(MemberServer::new(Person { name: "bob", heard }))
        .connect(&url)
        .await?;
    let chat = ChatClient::new(ada.clone());

    // 3. Request/reply, and a typed error.
    let reply = chat.say_hello(HelloRequest { name: "ada".into() }).await?;
    println!("[ada] request/reply: {:?}", reply.greeting);
    match chat.say_hello(HelloRequest::default()).await {
        Ok(reply) => println!("[ada] unexpected greeting {:?}", reply.greeting),
        Err(err) => println!(
            "[ada] request/reply error: {} ({:?})",
            err.code(),
            err.message()
        ),
    }

    // 4. One-way; the server's handler calls back into the client (request and one-way).
    chat.post(ChatMessage {
        from: "ada".into(),
        text: "goomerang is typed".into(),
    })
    .await?;
    let done = posts_done.recv().await;
    announcements.recv().await;
    println!("[server] finished handling post {done:?}");

    // 5. Thirty-two requests in flight at once, multiplexed on one connection.
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32 {
        let chat = chat.clone();
        calls.spawn(async move {
            chat.say_hello(HelloRequest {
                name: format!("caller {i}"),
            })
            .await
        });
    }
    let ok = calls.join_all().await.iter().filter(|r| r.is_ok()).count();
    println!(
        "[ada] {ok}/32 concurrent requests answered in {:?}",
        started.elapsed()
    );

    // 6. A deadline: the caller gives up after 100 ms, the server's handler is cancelled.
    let slow = chat
        .work(Message::new(WorkRequest { millis: 5_000 }).timeout(Duration::from_millis(100)))
        .await;
    match slow {
        Ok(_) => println!("[ada] work finished (unexpected)"),
        Err(status) => println!(
            "[ada] work failed: {} ({})",
            status.code(),
            status.message()
        ),
    }

    // 7. The server calls every connected client from outside any handler.
    for conn in server.connections() {
        let answer = MemberClient::new(conn.clone())
            .ask(Question {
                text: "still there?".into(),
            })
            .await?;
        println!(
            "[server] connection {} answered {:?}",
            conn.id(),
            answer.text
        );
    }

    // 8. Broadcast: one frame, encoded once, to every connection.
    let reached = server.broadcast(Announcement {
        text: "the room closes in a minute".into(),
    })?;
    println!("[server] broadcast reached {reached} connections");
    for _ in 0..reached {
        announcements.recv().await;
    }

    // 9. Topic pub/sub: bob subscribes with a wildcard; ada publishes through the server.
    bob.subscribe("room.>").await?;
    ada.publish(
        "room.general",
        Announcement {
            text: "ada published this".into(),
        },
    )
    .await?;
    announcements.recv().await;

    // 10. Plain HTTP on the same port: the Prometheus metrics.
    let metrics = http_get(
        &url.replace("ws://", "")
            .replace(goomerang::DEFAULT_PATH, ""),
        "/metrics",
    )
    .await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("goomerang_received_messages_total"))
    {
        println!("[metrics] {line}");
    }

    // 11. Clean shutdown: clients close (1000), then the server drains and stops.
    ada.close().await?;
    bob.close().await?;
    server.shutdown(Duration::from_secs(5)).await?;
    serving.await??;
    println!("[server] state {}; done", server.state());
    Ok(())
}

/// A minimal HTTP/1.1 GET (keeps the example's dependencies to goomerang and tokio).
async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned())
}
