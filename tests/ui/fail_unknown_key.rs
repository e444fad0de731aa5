#[goomerang::handler(kind = "request")]
async fn keyed(_ctx: goomerang::Context, _n: u64) {}

fn main() {}
