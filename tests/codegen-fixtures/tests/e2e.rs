//! Generated code end to end: server traits implemented here, called through the generated stubs, both directions.

use goomerang::{Client, Context, Server, Status};
use goomerang_codegen_fixtures::fixtures::features::v1 as f;
use goomerang_codegen_fixtures::fixtures::hazards as h;
use goomerang_codegen_fixtures::fixtures::other::v1::Record;
use goomerang_codegen_fixtures::{nopackage, outer};
use goomerang_tests::{bounded, start};
use tokio::sync::mpsc;

struct FeaturesImpl {
    fired: mpsc::UnboundedSender<String>,
}

impl f::features_server::Features for FeaturesImpl {
    async fn echo(&self, ctx: Context, request: f::Ping) -> Result<f::Pong, Status> {
        // Server → client through the client-side service's stub.
        let callbacks = f::callbacks_client::CallbacksClient::new(ctx.connection().clone());
        if request.note.as_deref() == Some("call back") {
            let confirmed = callbacks.confirm(Record { id: "r1".into() }).await?;
            callbacks
                .notify(f::Ping {
                    n: confirmed.n,
                    note: None,
                })
                .await?;
            return Ok(f::Pong { n: confirmed.n });
        }
        Ok(f::Pong { n: request.n + 1 })
    }

    async fn fire(&self, _ctx: Context, message: f::envelope::Part) -> Result<(), Status> {
        let _ = self.fired.send(message.text);
        Ok(())
    }

    async fn lookup(&self, _ctx: Context, request: f::Tick) -> Result<Record, Status> {
        let seconds = request.at.map_or(0, |t| t.seconds);
        Ok(Record {
            id: format!("at-{seconds}"),
        })
    }

    async fn open(
        &self,
        _ctx: Context,
        request: f::Envelope,
    ) -> Result<prost_types::Timestamp, Status> {
        let len = request.part.map_or(0, |p| p.text.len());
        Ok(prost_types::Timestamp {
            seconds: len as i64,
            nanos: 0,
        })
    }

    async fn old(&self, _ctx: Context, request: f::Legacy) -> Result<f::Pong, Status> {
        Ok(f::Pong { n: request.n })
    }
}

struct CallbacksImpl {
    notified: mpsc::UnboundedSender<u64>,
}

impl f::callbacks_server::Callbacks for CallbacksImpl {
    async fn confirm(&self, _ctx: Context, request: Record) -> Result<f::Pong, Status> {
        Ok(f::Pong {
            n: request.id.len() as u64 * 100,
        })
    }

    async fn notify(&self, _ctx: Context, message: f::Ping) -> Result<(), Status> {
        let _ = self.notified.send(message.n);
        Ok(())
    }
}

#[tokio::test]
async fn features_service_in_both_directions() {
    bounded(async {
        let (fired_tx, mut fired) = mpsc::unbounded_channel();
        let server = start(
            Server::builder().service(f::features_server::FeaturesServer::new(FeaturesImpl {
                fired: fired_tx,
            })),
        )
        .await;
        let (notified_tx, mut notified) = mpsc::unbounded_channel();
        let client = server
            .connect(
                Client::builder().service(f::callbacks_server::CallbacksServer::new(
                    CallbacksImpl {
                        notified: notified_tx,
                    },
                )),
            )
            .await;
        let stub = f::features_client::FeaturesClient::new(client.clone());

        assert_eq!(
            stub.echo(f::Ping { n: 1, note: None })
                .await
                .expect("ping")
                .n,
            2
        );
        stub.fire(f::envelope::Part {
            text: "bang".into(),
        })
        .await
        .expect("fire");
        assert_eq!(fired.recv().await.as_deref(), Some("bang"));
        let tick = f::Tick {
            at: Some(prost_types::Timestamp {
                seconds: 42,
                nanos: 0,
            }),
        };
        assert_eq!(stub.lookup(tick).await.expect("lookup").id, "at-42");
        let envelope = f::Envelope {
            part: Some(f::envelope::Part {
                text: "four".into(),
            }),
        };
        assert_eq!(stub.open(envelope).await.expect("open").seconds, 4);
        #[allow(deprecated)]
        let old = stub.old(f::Legacy { n: 9 }).await.expect("old");
        assert_eq!(old.n, 9);

        // The server handler calls the client's service (request, then one-way).
        let pong = stub
            .echo(f::Ping {
                n: 0,
                note: Some("call back".into()),
            })
            .await
            .expect("ping with callback");
        assert_eq!(pong.n, 200);
        assert_eq!(notified.recv().await, Some(200));

        // And the server can call the client from outside any handler.
        let conn = server.server.connections().pop().expect("connection");
        let callbacks = f::callbacks_client::CallbacksClient::new(conn);
        assert_eq!(
            callbacks
                .confirm(Record { id: "abc".into() })
                .await
                .expect("confirm")
                .n,
            300
        );

        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

/// Derives `Clone` and `Default` beside implementing RPCs named `Clone` and
/// `New`: both stay usable (`hazards.clone()` copies, `clone_` is the RPC).
#[derive(Clone, Debug, Default)]
struct Hazards;

fn reply(method: &str) -> Result<h::Reply, Status> {
    Ok(h::Reply {
        method: method.into(),
    })
}

impl h::result_server::Result for Hazards {
    async fn clone_(&self, _ctx: Context, _r: h::CloneRequest) -> Result<h::Reply, Status> {
        reply("clone")
    }
    async fn drop_(&self, _ctx: Context, _r: h::DropRequest) -> Result<h::Reply, Status> {
        reply("drop")
    }
    async fn r#type(&self, _ctx: Context, _r: h::TypeRequest) -> Result<h::Reply, Status> {
        reply("type")
    }
    async fn self_(&self, _ctx: Context, _r: h::SelfRequest) -> Result<h::Reply, Status> {
        reply("self")
    }
    async fn new_(&self, _ctx: Context, _r: h::NewRequest) -> Result<h::Reply, Status> {
        reply("new")
    }
}

impl h::greeter_server::Greeter for Hazards {
    async fn greet(
        &self,
        _ctx: Context,
        request: h::GreeterServer,
    ) -> Result<h::GreeterClient, Status> {
        Ok(h::GreeterClient { name: request.name })
    }
    async fn meet(
        &self,
        _ctx: Context,
        request: h::greeting::Greeter,
    ) -> Result<h::greeting::Greeter, Status> {
        Ok(request)
    }
}

impl nopackage::solo_server::Solo for Hazards {
    async fn ask(
        &self,
        _ctx: Context,
        request: nopackage::Lonely,
    ) -> Result<nopackage::LonelyReply, Status> {
        Ok(nopackage::LonelyReply { text: request.text })
    }
}

impl outer::inner::deep::deep_server::Deep for Hazards {
    async fn reach(
        &self,
        _ctx: Context,
        request: outer::other::Far,
    ) -> Result<outer::inner::deep::Near, Status> {
        Ok(outer::inner::deep::Near { text: request.text })
    }
}

#[tokio::test]
async fn naming_hazards_work_at_run_time() {
    bounded(async {
        let server = start(
            Server::builder()
                .service(h::result_server::ResultServer::new(Hazards))
                .service(h::greeter_server::GreeterServer::new(Hazards))
                .service(nopackage::solo_server::SoloServer::new(Hazards))
                .service(outer::inner::deep::deep_server::DeepServer::new(Hazards)),
        )
        .await;
        let client = server.client().await;
        let stub = h::result_client::ResultClient::new(client.clone());
        // `clone()` still copies the stub (the RPC is `clone_`), on the server type too.
        let result = stub.clone();
        let _copy: Hazards = Hazards.clone();
        assert_eq!(
            result
                .clone_(h::CloneRequest {})
                .await
                .expect("clone")
                .method,
            "clone"
        );
        assert_eq!(
            result.drop_(h::DropRequest {}).await.expect("drop").method,
            "drop"
        );
        assert_eq!(
            result.r#type(h::TypeRequest {}).await.expect("type").method,
            "type"
        );
        assert_eq!(
            result.self_(h::SelfRequest {}).await.expect("self").method,
            "self"
        );
        assert_eq!(
            result.new_(h::NewRequest {}).await.expect("new").method,
            "new"
        );

        let greeter = h::greeter_client::GreeterClient::new(client.clone());
        let greeted = greeter
            .greet(h::GreeterServer { name: "ada".into() })
            .await
            .expect("greet");
        assert_eq!(greeted.name, "ada");
        let met = greeter
            .meet(h::greeting::Greeter { name: "bob".into() })
            .await
            .expect("meet");
        assert_eq!(met.name, "bob");

        let solo = nopackage::solo_client::SoloClient::new(client.clone());
        assert_eq!(
            solo.ask(nopackage::Lonely { text: "hi".into() })
                .await
                .expect("ask")
                .text,
            "hi"
        );
        let deep = outer::inner::deep::deep_client::DeepClient::new(client.clone());
        assert_eq!(
            deep.reach(outer::other::Far { text: "far".into() })
                .await
                .expect("reach")
                .text,
            "far"
        );

        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}
