//! Procedural macros for goomerang: `#[goomerang::handler]` (re-exported by the `goomerang` crate).

mod handler;

use proc_macro::TokenStream;

/// Turns an `async fn (ctx, message) -> ...` into a handler registered for its
/// message type. The function becomes a unit struct of the same name that you
/// pass to `.service(..)`; the original function stays callable as `name::call`.
///
/// ```ignore
/// #[goomerang::handler]
/// async fn greet(ctx: goomerang::Context, req: HelloRequest) -> Result<HelloReply, goomerang::Status> {
///     Ok(HelloReply { greeting: format!("Hello, {}!", req.name) })
/// }
///
/// #[goomerang::handler]
/// async fn log_post(_ctx: goomerang::Context, post: Post) {
///     println!("{}", post.text);
/// }
///
/// let server = goomerang::Server::builder().service(greet).service(log_post).build().expect("valid routes");
/// ```
///
/// The return type picks the kind: `Result<Reply, Status>` answers requests;
/// no return type, `()` or `Result<(), Status>` handles one-way messages.
///
/// Options: `crate = path::to::goomerang` when goomerang is re-exported.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
