use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
struct NotAFunction;

fn main() {}
