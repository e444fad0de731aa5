#[goomerang::handler]
fn not_async(_ctx: goomerang::Context, _n: u64) {}

fn main() {}
