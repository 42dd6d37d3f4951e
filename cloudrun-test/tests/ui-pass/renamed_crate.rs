//! `crate = "..."` when the library is reachable under another name.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

extern crate cloudrun_test as crt;

mod reexport {
    pub use ::cloudrun_test as library;
}

#[crt::test(service = "hello", crate = "crt")]
async fn renamed(client: crt::Client) {
    let _ = client;
}

#[crt::cloudrun_test(service = "hello", crate = "crate::reexport::library")]
async fn through_a_reexport(context: reexport::library::TestContext) {
    let _ = context;
}

fn main() {}
