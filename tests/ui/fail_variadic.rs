#[goomerang::handler]
async fn variadic(_ctx: goomerang::Context, _rest: ...) {}

fn main() {}
