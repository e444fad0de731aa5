//! The browser chat's server: serves the page (web/dist, built by `run.sh`) and the WebSocket
//! endpoint on one port. A tab joins with a name; the server greets it, asks it a question
//! through the tab's own service and tells the room the answer. Rooms are topics
//! (`room.<name>`): tabs publish lines and subscribe, the server only relays.
//!
//! `cargo run -p browser-chat -- [--port N] [--web DIR]` (default port 8080, web dir
//! `examples/browser-chat/web/dist`) prints `LISTENING <port>` once it accepts connections.

use std::path::PathBuf;
use std::sync::Arc;

use goomerang::{Context, Server, Status};
use tokio::net::TcpListener;

/// The generated messages (prost) and services (goomerang) of package `chat.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    goomerang::include_proto!("chat.v1");
}

use pb::lobby_server::{Lobby, LobbyServer};
use pb::tab_client::TabClient;
use pb::{JoinReply, JoinRequest, Line, Question};

/// The room every tab joins.
const ROOM: &str = "room.general";

struct ChatLobby {
    /// Set once serving: lets `join` publish to the room.
    server: std::sync::OnceLock<Server>,
}

impl Lobby for Arc<ChatLobby> {
    async fn join(&self, ctx: Context, request: JoinRequest) -> Result<JoinReply, Status> {
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(Status::invalid_argument("a name, please"));
        }
        // Ask the tab, on its own connection, once the join has been answered.
        let tab = TabClient::new(ctx.connection().clone());
        let lobby = Arc::clone(self);
        let asked = name.clone();
        tokio::spawn(async move {
            let question = Question {
                text: format!("{asked}, what brings you here?"),
            };
            if let Ok(answer) = tab.ask(question).await
                && let Some(server) = lobby.server.get()
            {
                let line = Line {
                    from: "server".into(),
                    text: format!("{asked} is here for {}", answer.text),
                };
                let _ = server.publish(ROOM, line);
            }
        });
        Ok(JoinReply {
            greeting: format!("Welcome, {name}!"),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 8080u16;
    let mut web = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--web" => web = PathBuf::from(args.next().ok_or("--web needs a value")?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !web.join("app.js").exists() {
        return Err(format!(
            "{} has no app.js: build the page first (bash examples/browser-chat/run.sh does)",
            web.display()
        )
        .into());
    }
    let lobby = Arc::new(ChatLobby {
        server: std::sync::OnceLock::new(),
    });
    let server = Server::builder()
        .service(LobbyServer::new(Arc::clone(&lobby)))
        .routes(axum::Router::new().fallback_service(tower_http::services::ServeDir::new(web)))
        .build()?;
    let _ = lobby.server.set(server.clone());
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "LISTENING {port}")?;
        writeln!(stdout, "open http://127.0.0.1:{port}/ in two tabs")?;
        stdout.flush()?;
    }
    server.serve(listener).await?;
    Ok(())
}
