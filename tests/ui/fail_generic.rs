#[goomerang::handler]
async fn generic<M>(_ctx: goomerang::Context, _message: M) {}

fn main() {}
