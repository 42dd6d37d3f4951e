use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async fn generic<T: Default>() {
    let _ = T::default();
}

#[cloudrun_test(service = "hello")]
async fn where_clause()
where
    String: Clone,
{
}

fn main() {}
