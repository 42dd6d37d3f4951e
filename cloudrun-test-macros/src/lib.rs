//! The `#[cloudrun_test]` attribute. Use it through the `cloudrun-test` crate,
//! which re-exports it as `cloudrun_test::cloudrun_test` and `cloudrun_test::test`.
//!
//! The macro is thin: it checks the arguments and the signature, then hands the
//! function to `cloudrun_test::__private::run_test`, where the real work is. This is its
//! real output for a sample test (`src/expansion_snapshot.rs` renders it with
//! `prettyplease` and fails when this page no longer matches):
//!
#![doc = include_str!("expansion.md")]
//!
//! - The `#[test] fn` keeps the function's name and module, which is what
//!   `cargo test NAME` and rust-analyzer's "Run Test" look for; the user's function
//!   is inside it, unchanged, so rustc reports errors in the body on the user's tokens.
//! - The local `cloudrun_test` function states the library's requirements on the
//!   parameter and return types as bounds. Each `PhantomData` argument is spanned on
//!   the user's type (the parameter's, then the return type's), and rustc blames an
//!   unmet bound on the argument that carries the type: a type the library cannot use
//!   is reported once, on the user's tokens, with the library's `on_unimplemented`
//!   message. Inside, the bounds hold, so `run_test` cannot fail a second time.
//! - Only the given arguments become `TestSpec` fields; the rest come from
//!   `TestSpec::DEFAULT`. The library's path is the `crate = "..."` argument when given.
//!
//! On a misuse (bad argument, not `async`, two parameters...) it still emits the
//! `#[test] fn` with the user's function inside, next to the `compile_error!`s, as
//! `#[tokio::test]` does: the IDE keeps completion in the body and the test's
//! "Run Test" button while the attribute is being fixed.

use proc_macro::TokenStream;

mod args;
mod expand;
mod parametrised;
#[cfg(test)]
mod expansion_snapshot;

/// Turns an `async fn` into a test of a Cloud Run service.
///
/// ```ignore
/// use cloudrun_test::{cloudrun_test, Client};
///
/// #[cloudrun_test(service = "hello")]
/// async fn root_answers(client: Client) {
///     let res = client.get("/").send().await.unwrap();
///     assert_eq!(res.status(), 200);
/// }
/// ```
///
/// Arguments: `service = "name"` or `url = "https://..."` (exactly one), and optionally
/// `audience`, `tag`, `project`, `region` (strings), `timeout` (`"500ms"`, `"30s"`, `"2m"`,
/// `"1h"`, `"1m30s"`: the `humantime` syntax of every cloudrun-test duration, or a
/// number of seconds; default
/// `CLOUDRUN_TEST_TIMEOUT`, else 10 minutes), `flavor` (`"current_thread"`, the default, or
/// `"multi_thread"`), `worker_threads = N` (with `"multi_thread"`), and `crate = "path"`
/// when `cloudrun_test` is not reachable as `::cloudrun_test`.
///
/// The function takes no parameter, a `Client`, or a `TestContext`, and returns `()` or
/// `Result<T, E: Debug>`.
#[proc_macro_attribute]
pub fn cloudrun_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cloudrun_test(args.into(), item.into()).into()
}
