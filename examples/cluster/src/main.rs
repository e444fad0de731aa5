//! The cluster example: `cluster replica <redis-url>` serves one replica on a Redis backplane;
//! `cluster demo <ws-url>...` connects a client to each replica and shows messages crossing them.

use std::time::Duration;

use goomerang::{Client, Server};
use tokio::sync::mpsc;

/// `cluster.v1.Note`: what the clients publish.
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
}

impl prost::Name for Note {
    const NAME: &'static str = "Note";
    const PACKAGE: &'static str = "cluster.v1";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((mode, [redis])) if mode == "replica" => replica(redis).await,
        Some((mode, urls)) if mode == "demo" && !urls.is_empty() => demo(urls).await,
        _ => Err("usage: cluster replica <redis-url> | cluster demo <ws-url>...".into()),
    }
}

/// One replica: a server whose broadcasts, publishes and queue groups
/// reach the other replicas through Redis.
async fn replica(redis: &str) -> Result<(), Box<dyn std::error::Error>> {
    let backplane = goomerang_redis::Redis::builder(redis)
        .namespace("cluster-example")
        .connect()
        .await?;
    let server = Server::builder()
        .backplane(backplane)
        .on_error(|incident, _| eprintln!("[replica] {incident}"))
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    // run.sh reads this line to learn the address.
    println!("ws://{}{}", listener.local_addr()?, goomerang::DEFAULT_PATH);
    server.serve(listener).await?;
    Ok(())
}

/// One client per replica; messages published on one reach the others.
async fn demo(urls: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut heard) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let tx = tx.clone();
        let client = Client::builder()
            .message(move |ctx, note: Note| {
                let tx = tx.clone();
                async move {
                    let topic = ctx.metadata().topic().unwrap_or_default().to_owned();
                    let _ = tx.send((i + 1, topic, note.text));
                }
            })
            .connect(url)
            .await?;
        client.subscribe("room.lobby").await?;
        client.subscribe_group("jobs.*", "workers").await?;
        println!("[client {}] connected to replica {} ({url})", i + 1, i + 1);
        clients.push(client);
    }
    // Each replica registers its group member; give the registry a moment
    // to reach every replica before the jobs go out.
    tokio::time::sleep(Duration::from_millis(300)).await;

    clients[0]
        .publish(
            "room.lobby",
            Note {
                text: "hello from replica 1".into(),
            },
        )
        .await?;
    for _ in 0..clients.len() {
        let (who, topic, text) = recv(&mut heard).await?;
        println!("[client {who}] heard on {topic}: {text}");
    }
    let jobs = 6;
    for n in 1..=jobs {
        let from = &clients[n % clients.len()];
        from.publish(
            "jobs.resize",
            Note {
                text: format!("job {n}"),
            },
        )
        .await?;
    }
    for _ in 0..jobs {
        let (who, _, text) = recv(&mut heard).await?;
        println!("[client {who}] took {text} (one worker in the whole cluster)");
    }
    for client in clients {
        client.close().await?;
    }
    Ok(())
}

async fn recv(
    heard: &mut mpsc::UnboundedReceiver<(usize, String, String)>,
) -> Result<(usize, String, String), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .map_err(|_| "nothing arrived within 5 s")?
        .ok_or_else(|| "the clients are gone".into())
}
