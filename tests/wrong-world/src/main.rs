//! A WASI command: a valid component, but not a `freellm:provider` adapter.
//! The hot-swap tests drop it in place of an adapter and expect it refused.

fn main() {
    println!("not an adapter");
}
