//! The lab server: implements `lab.v1.Lab` for the TypeScript client's tests and serves a
//! directory of static files (the browser test's page) on the same port.
//!
//! `goomerang-lab-server [--port N] [--static DIR]` (files served by tower-http's `ServeDir`) prints `LISTENING <port>` once it accepts
//! connections, then serves until killed. A connection whose handshake carries the token `bad`
//! (query `?token=bad` or subprotocol `token.bad`) is refused with 401. Topics `hist.*` keep a
//! history; `Login` gives the connection a session.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use goomerang::{Accept, Context, Reject, Server, Status};
use tokio::net::TcpListener;

/// The generated messages (prost) and services (goomerang) of package `lab.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    goomerang::include_proto!("lab.v1");
}

use pb::lab_server::{Lab, LabServer};
use pb::member_client::MemberClient;
use pb::{Answer, Count, EchoReply, EchoRequest, Note, Question, SlowRequest, SlowState};

#[derive(Default)]
struct LabImpl {
    posted: AtomicU32,
    slow: Mutex<HashMap<String, SlowState>>,
}

impl LabImpl {
    fn echo(&self, ctx: &Context, request: EchoRequest, shout: bool) -> Result<EchoReply, Status> {
        if request.fail_code != 0 {
            return Err(Status::new(
                goomerang::Code::from_u32(request.fail_code),
                format!("failed on purpose: {}", request.text),
            ));
        }
        ctx.set_reply_header("x-lab", "echoed");
        let text = if shout {
            request.text.to_uppercase()
        } else {
            request.text
        };
        Ok(EchoReply {
            text,
            headers: ctx.headers().clone().into_iter().collect(),
            method: ctx.metadata().method().unwrap_or_default().to_owned(),
        })
    }
}

/// Records a Slow call's cancellation when its handler is dropped before finishing.
struct CancelGuard {
    lab: Arc<LabImpl>,
    key: String,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(state) = self.lab.slow.lock().expect("lock").get_mut(&self.key) {
            state.cancelled = true;
        }
    }
}

#[derive(Clone)]
struct Shared(Arc<LabImpl>);

impl Lab for Shared {
    async fn echo(&self, ctx: Context, request: EchoRequest) -> Result<EchoReply, Status> {
        self.0.echo(&ctx, request, false)
    }

    async fn shout(&self, ctx: Context, request: EchoRequest) -> Result<EchoReply, Status> {
        self.0.echo(&ctx, request, true)
    }

    async fn slow(&self, ctx: Context, request: SlowRequest) -> Result<(), Status> {
        let timeout_ms = ctx
            .deadline()
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
            .map_or(0, |left| {
                u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1)
            });
        self.0.slow.lock().expect("lock").insert(
            request.key.clone(),
            SlowState {
                started: true,
                cancelled: false,
                timeout_ms,
            },
        );
        let _guard = CancelGuard {
            lab: Arc::clone(&self.0),
            key: request.key,
        };
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn slow_status(&self, _ctx: Context, request: SlowRequest) -> Result<SlowState, Status> {
        Ok(self
            .0
            .slow
            .lock()
            .expect("lock")
            .get(&request.key)
            .cloned()
            .unwrap_or_default())
    }

    async fn post(&self, _ctx: Context, _note: Note) -> Result<(), Status> {
        self.0.posted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn posted(&self, _ctx: Context, _request: ()) -> Result<Count, Status> {
        Ok(Count {
            n: self.0.posted.load(Ordering::SeqCst),
        })
    }

    async fn ask_me(&self, ctx: Context, question: Question) -> Result<Answer, Status> {
        MemberClient::new(ctx.connection().clone())
            .ask(question)
            .await
    }

    async fn login(&self, ctx: Context, note: Note) -> Result<Note, Status> {
        ctx.connection().create_session(&note).await?;
        Ok(note)
    }

    async fn who_am_i(&self, ctx: Context, _request: ()) -> Result<Note, Status> {
        Ok(ctx.connection().session::<Note>().unwrap_or_default())
    }

    async fn kick(&self, ctx: Context, _request: ()) -> Result<(), Status> {
        let conn = ctx.connection().clone();
        tokio::spawn(async move { conn.close_with(1012, "kicked").await });
        Ok(())
    }

    async fn tell_me(&self, ctx: Context, note: Note) -> Result<(), Status> {
        MemberClient::new(ctx.connection().clone()).tell(note).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 0u16;
    let mut static_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--static" => {
                static_dir = Some(PathBuf::from(args.next().ok_or("--static needs a value")?))
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let mut builder = Server::builder()
        .service(LabServer::new(Shared(Arc::new(LabImpl::default()))))
        // Tabs and tests broadcast; a real server would decide per connection.
        .allow_client_broadcast(|_conn| true)
        // Topics with history, for the recovery tests.
        .history(
            "hist.*",
            goomerang::pubsub::History::new(100, std::time::Duration::from_secs(60)),
        )
        .on_open(|hs| async move {
            let bad_subprotocol = hs.subprotocols().iter().any(|p| p == "token.bad");
            if hs.query("token").as_deref() == Some("bad") || bad_subprotocol {
                return Err(Reject::unauthorized("bad token"));
            }
            Ok(Accept::new())
        });
    if let Some(dir) = static_dir {
        builder = builder
            .routes(axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir)));
    }
    let server = builder.build()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "LISTENING {port}")?;
        stdout.flush()?;
    }
    server.serve(listener).await?;
    Ok(())
}
