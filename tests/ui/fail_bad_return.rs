#[goomerang::handler]
async fn bare_reply(_ctx: goomerang::Context, n: u64) -> u64 {
    n
}

fn main() {}
