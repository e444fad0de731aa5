// Both handler kinds, a doc comment, a re-exported crate path, and a direct call.
use goomerang::{Context, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(uint64, tag = "1")]
    pub n: u64,
}
impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "ui";
}

/// Answers pings.
#[goomerang::handler]
async fn answer(_ctx: Context, ping: Ping) -> Result<Ping, Status> {
    Ok(Ping { n: ping.n + 1 })
}

#[goomerang::handler]
async fn swallow(_ctx: Context, _ping: Ping) {}

mod reexport {
    pub use goomerang as rt;
}

#[goomerang::handler(crate = reexport::rt)]
pub async fn checked(_ctx: Context, _ping: Ping) -> Result<(), Status> {
    Ok(())
}

fn main() {
    let _server = goomerang::Server::builder().service(answer).build().expect("valid routes");
    let _client = goomerang::Client::builder().service(swallow).build().expect("valid routes");
    let _other = goomerang::Server::builder().service(checked).build().expect("valid routes");
    let _future = answer::call;
}
