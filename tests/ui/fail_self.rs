struct Handlers;

impl Handlers {
    #[goomerang::handler]
    async fn with_self(&self, _ctx: goomerang::Context, _n: u64) {}
}

fn main() {}
