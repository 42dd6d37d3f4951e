//! The running test's context, for parametrised tests (`rstest`, `test-case`).
//!
//! Those crates turn one function into a test per case that calls the function with
//! the case's values only, so `#[cloudrun_test]` cannot pass the injected parameter in.
//! Instead the attribute, written above `#[rstest]` or `#[test_case]`, moves the
//! parameter into the body (`let client: Client = injected();`), and the entry runs each
//! test inside [`scope`], where [`current`] finds its context.

use std::future::Future;

use crate::context::TestContext;

tokio::task_local! {
    static CONTEXT: TestContext;
}

/// Runs `test` with `context` as the current test's context.
pub(crate) async fn scope<F: Future>(context: TestContext, test: F) -> F::Output {
    CONTEXT.scope(context, test).await
}

/// The context of the `#[cloudrun_test]` test running this task, if any.
pub(crate) fn current() -> Option<TestContext> {
    CONTEXT.try_with(TestContext::clone).ok()
}
