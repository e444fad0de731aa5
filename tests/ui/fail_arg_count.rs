#[goomerang::handler]
async fn one_argument(_ctx: goomerang::Context) {}

#[goomerang::handler]
async fn no_arguments() {}

fn main() {}
