//! A Rust program that does nothing: the bench's floor for the start-up of any Rust
//! program, such as a wrapper that starts curl.

fn main() {}
