use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async unsafe fn unsafe_test() {}

#[cloudrun_test(service = "hello")]
async extern "C" fn extern_test() {}

fn main() {}
