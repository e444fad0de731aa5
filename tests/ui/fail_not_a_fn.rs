#[goomerang::handler]
struct NotAFunction;

fn main() {}
