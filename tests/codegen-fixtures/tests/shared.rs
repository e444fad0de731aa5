//! Routing by method: RPCs and services that share message types each reach their own handler,
//! with reply headers, scoped middleware and the `_full` stub forms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use goomerang::{BuildError, Code, Context, Message, Server, Status, middleware};
use goomerang_codegen_fixtures::fixtures::shared::v1 as s;
use goomerang_tests::wire::{Frame, FrameKind};
use goomerang_tests::{bounded, raw_peer, recv_frame, send_frame, start};
use prost::Message as _;
use tokio::sync::mpsc;

/// Implements both services. Derives `Clone` although `Stock` has an RPC
/// named `Clone`: `clone()` stays the copy, the RPC is `clone_`.
#[derive(Clone)]
struct Inventory {
    forgotten: mpsc::UnboundedSender<String>,
}

fn level(item: &s::Item, answered_by: &str) -> Result<s::Level, Status> {
    Ok(s::Level {
        sku: item.sku.clone(),
        count: item.count,
        answered_by: answered_by.into(),
    })
}

impl s::stock_server::Stock for Inventory {
    async fn adjust(&self, ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        ctx.set_reply_header("x-answered-by", "Stock/Adjust");
        level(&request, "Stock/Adjust")
    }
    async fn reserve(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Stock/Reserve")
    }
    async fn release(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Stock/Release")
    }
    async fn r#type(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Stock/Type")
    }
    async fn clone_(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Stock/Clone")
    }
    async fn drop_(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Stock/Drop")
    }
    async fn forget(&self, ctx: Context, message: s::Item) -> Result<(), Status> {
        let method = ctx.metadata().method().unwrap_or_default().to_owned();
        let _ = self.forgotten.send(format!("{method} {}", message.sku));
        Ok(())
    }
}

impl s::audit_server::Audit for Inventory {
    async fn adjust(&self, _ctx: Context, request: s::Item) -> Result<s::Level, Status> {
        level(&request, "Audit/Adjust")
    }
    async fn count(&self, ctx: Context, _request: ()) -> Result<s::Level, Status> {
        // Set by the middleware scoped to this service.
        let seen = ctx.extension::<Seen>().map_or(0, |seen| seen.0);
        Ok(s::Level {
            count: seen as i64,
            answered_by: "Audit/Count".into(),
            ..s::Level::default()
        })
    }
    async fn touch(&self, _ctx: Context, _request: ()) -> Result<(), Status> {
        Ok(())
    }
}

/// What the audit middleware hands the handlers.
#[derive(Clone)]
struct Seen(usize);

fn inventory() -> (Inventory, mpsc::UnboundedReceiver<String>) {
    let (forgotten, rx) = mpsc::unbounded_channel();
    (Inventory { forgotten }, rx)
}

#[tokio::test]
async fn every_rpc_sharing_an_input_type_reaches_its_own_handler() {
    bounded(async {
        let (inventory, mut forgotten) = inventory();
        let _copy: Inventory = inventory.clone();
        let server = start(
            Server::builder()
                .service(s::stock_server::StockServer::new(inventory.clone()))
                .service(s::audit_server::AuditServer::new(inventory)),
        )
        .await;
        let client = server.client().await;
        let stock = s::stock_client::StockClient::new(client.clone());
        let audit = s::audit_client::AuditClient::new(client.clone());
        let item = || s::Item {
            sku: "sku-1".into(),
            count: 3,
        };
        let answers = [
            stock.adjust(item()).await.expect("adjust"),
            stock.reserve(item()).await.expect("reserve"),
            stock.release(item()).await.expect("release"),
            stock.r#type(item()).await.expect("type"),
            stock.clone_(item()).await.expect("clone"),
            stock.drop_(item()).await.expect("drop"),
            audit.adjust(item()).await.expect("audit adjust"),
            audit.count(()).await.expect("count"),
        ];
        let by: Vec<&str> = answers.iter().map(|l| l.answered_by.as_str()).collect();
        assert_eq!(
            by,
            [
                "Stock/Adjust",
                "Stock/Reserve",
                "Stock/Release",
                "Stock/Type",
                "Stock/Clone",
                "Stock/Drop",
                "Audit/Adjust",
                "Audit/Count",
            ]
        );
        assert_eq!(answers[0].sku, "sku-1");
        assert_eq!(answers[0].count, 3);
        audit.touch(()).await.expect("touch");
        // The stub's `clone()` copies the stub; the copy calls the same server.
        let copy = stock.clone();
        assert_eq!(
            copy.reserve(item()).await.expect("copy").answered_by,
            "Stock/Reserve"
        );
        // One-way by method; the handler sees the method it was called as.
        stock.forget(item()).await.expect("forget");
        assert_eq!(
            forgotten.recv().await.expect("forgotten"),
            "fixtures.shared.v1.Stock/Forget sku-1"
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn full_forms_carry_headers_both_ways() {
    bounded(async {
        let (inventory, _forgotten) = inventory();
        let echo_header = middleware::from_fn(|ctx, payload, next| async move {
            // A request header the caller set, answered in a reply header.
            if let Some(value) = ctx.header("x-request") {
                ctx.set_reply_header("x-echo", value);
            }
            next.run(ctx, payload).await
        });
        let server = start(
            Server::builder()
                .middleware(echo_header)
                .service(s::stock_server::StockServer::new(inventory)),
        )
        .await;
        let client = server.client().await;
        let stock = s::stock_client::StockClient::new(client.clone());
        let response = stock
            .adjust_full(
                Message::new(s::Item {
                    sku: "a".into(),
                    count: 1,
                })
                .header("x-request", "hello"),
            )
            .await
            .expect("adjust");
        assert_eq!(response.get_ref().answered_by, "Stock/Adjust");
        assert_eq!(
            response.headers().get("x-answered-by").map(String::as_str),
            Some("Stock/Adjust")
        );
        assert_eq!(
            response.headers().get("x-echo").map(String::as_str),
            Some("hello")
        );
        assert_eq!(response.metadata().type_name(), "fixtures.shared.v1.Level");
        // A handler that sets no header gets none back.
        let plain = stock
            .reserve_full(s::Item::default())
            .await
            .expect("reserve");
        assert!(plain.headers().get("x-answered-by").is_none());
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn middleware_scoped_to_a_service_or_method_wraps_only_it() {
    bounded(async {
        let (inventory, _forgotten) = inventory();
        let audit_calls = Arc::new(AtomicUsize::new(0));
        let method_calls = Arc::new(Mutex::new(Vec::new()));
        let counted = Arc::clone(&audit_calls);
        let on_audit = middleware::from_fn(move |ctx, payload, next| {
            let seen = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                ctx.insert_extension(Seen(seen));
                next.run(ctx, payload).await
            }
        });
        let recorded = Arc::clone(&method_calls);
        let on_release = middleware::from_fn(move |ctx, payload, next| {
            let method = ctx.metadata().method().unwrap_or_default().to_owned();
            recorded.lock().expect("lock").push(method);
            async move { next.run(ctx, payload).await }
        });
        let server = start(
            Server::builder()
                .service(s::stock_server::StockServer::new(inventory.clone()))
                .service(s::audit_server::AuditServer::new(inventory))
                .middleware_for(s::audit_server::SERVICE, on_audit)
                .middleware_for("fixtures.shared.v1.Stock/Release", on_release),
        )
        .await;
        let client = server.client().await;
        let stock = s::stock_client::StockClient::new(client.clone());
        let audit = s::audit_client::AuditClient::new(client.clone());
        stock.adjust(s::Item::default()).await.expect("adjust");
        stock.release(s::Item::default()).await.expect("release");
        audit
            .adjust(s::Item::default())
            .await
            .expect("audit adjust");
        // The extension the scoped middleware set reaches the handler.
        assert_eq!(audit.count(()).await.expect("count").count, 2);
        assert_eq!(audit_calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            *method_calls.lock().expect("lock"),
            ["fixtures.shared.v1.Stock/Release"]
        );
        client.close().await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_method_call_with_the_wrong_input_type_is_refused() {
    bounded(async {
        let (inventory, _forgotten) = inventory();
        let server =
            start(Server::builder().service(s::stock_server::StockServer::new(inventory))).await;
        let mut peer = raw_peer(&server).await;
        let frame = |id, method: &str, type_name: &str| Frame {
            kind: FrameKind::Request as i32,
            id,
            method: method.into(),
            r#type: type_name.into(),
            payload: s::Item::default().encode_to_vec().into(),
            ..Frame::default()
        };
        send_frame(
            &mut peer,
            &frame(
                1,
                "fixtures.shared.v1.Stock/Adjust",
                "fixtures.shared.v1.Level",
            ),
        )
        .await;
        let answer = recv_frame(&mut peer).await;
        assert_eq!((answer.kind, answer.id), (FrameKind::Error as i32, 1));
        let status = answer.status.expect("status");
        assert_eq!(status.code, Code::InvalidArgument as u32);
        assert!(
            status.message.contains("takes fixtures.shared.v1.Item"),
            "{}",
            status.message
        );
        // An unknown method is UNIMPLEMENTED, named in the message.
        send_frame(
            &mut peer,
            &frame(
                2,
                "fixtures.shared.v1.Stock/Nope",
                "fixtures.shared.v1.Item",
            ),
        )
        .await;
        let answer = recv_frame(&mut peer).await;
        assert_eq!((answer.kind, answer.id), (FrameKind::Error as i32, 2));
        let status = answer.status.expect("status");
        assert_eq!(status.code, Code::Unimplemented as u32);
        assert!(
            status.message.contains("fixtures.shared.v1.Stock/Nope"),
            "{}",
            status.message
        );
        // By type, the payload cannot be routed: every Stock method takes an Item.
        send_frame(&mut peer, &frame(3, "", "fixtures.shared.v1.Item")).await;
        let answer = recv_frame(&mut peer).await;
        let status = answer.status.expect("status");
        assert_eq!(status.code, Code::Unimplemented as u32);
        assert!(
            status.message.contains("fixtures.shared.v1.Stock/Adjust")
                && status.message.contains("fixtures.shared.v1.Stock/Forget")
                && status.message.contains("name the method"),
            "{}",
            status.message
        );
        // The right call still works on the same connection.
        send_frame(
            &mut peer,
            &frame(
                4,
                "fixtures.shared.v1.Stock/Drop",
                "fixtures.shared.v1.Item",
            ),
        )
        .await;
        let answer = recv_frame(&mut peer).await;
        assert_eq!((answer.kind, answer.id), (FrameKind::Reply as i32, 4));
        let level = s::Level::decode(answer.payload).expect("level");
        assert_eq!(level.answered_by, "Stock/Drop");
        server.stop().await;
    })
    .await;
}

#[test]
fn registering_a_service_twice_is_a_build_error() {
    let (inventory, _forgotten) = inventory();
    let err = Server::builder()
        .service(s::stock_server::StockServer::new(inventory.clone()))
        .service(s::stock_server::StockServer::new(inventory))
        .build()
        .expect_err("duplicate");
    match err {
        BuildError::DuplicateRoute { route } => {
            assert_eq!(route, r#"method "fixtures.shared.v1.Stock/Adjust""#);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn middleware_scoped_to_nothing_is_a_build_error() {
    let (inventory, _forgotten) = inventory();
    let err = Server::builder()
        .service(s::stock_server::StockServer::new(inventory))
        .middleware_for("fixtures.shared.v1.Stok", middleware::logging())
        .build()
        .expect_err("typo");
    assert!(
        matches!(&err, BuildError::UnknownScope { scope } if scope == "fixtures.shared.v1.Stok"),
        "{err:?}"
    );
}
