//! The `#[cloudrun_test]` attribute. Use it through the `cloudrun-test` crate,
//! which re-exports it as `cloudrun_test::cloudrun_test` and `cloudrun_test::test`.
//!
//! The macro is thin: it checks the arguments and the signature, then hands the
//! function to `cloudrun_test::__private::run_test`, where the real work is.
//!
//! ```ignore
//! /// docs
//! #[cloudrun_test(service = "hello", timeout = "30s")]
//! async fn root_answers(client: Client) -> Result<(), MyErr> { body }
//! ```
//!
//! becomes
//!
//! ```ignore
//! /// docs
//! #[::core::prelude::v1::test]
//! fn root_answers() {
//!     // The user's function, unchanged: the test keeps its name and module, which
//!     // is what `cargo test NAME` and rust-analyzer's "Run Test" look for.
//!     async fn root_answers(client: Client) -> Result<(), MyErr> { body }
//!     // The library's requirements on the parameter and return types, as bounds
//!     // (see `expand.rs`: a wrong type is reported once, on the user's tokens).
//!     fn cloudrun_test<F, P, Fut, R>(spec: TestSpec, test: F, _: PhantomData<P>, _: PhantomData<R>)
//!     where
//!         F: FnOnce(P) -> Fut,
//!         P: Inject,
//!         Fut: Future<Output = R> + 'static,
//!         R: TestOutcome,
//!     {
//!         ::cloudrun_test::__private::run_test::<F, (P,)>(spec, test)
//!     }
//!     cloudrun_test(
//!         ::cloudrun_test::__private::TestSpec {
//!             name: ::core::concat!(::core::module_path!(), "::", "root_answers"),
//!             manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
//!             service: ::core::option::Option::Some("hello"),
//!             timeout: ::core::option::Option::Some(::core::time::Duration::from_millis(30000)),
//!             ..::cloudrun_test::__private::TestSpec::DEFAULT
//!         },
//!         root_answers,
//!         PhantomData, // spanned on `Client`
//!         PhantomData, // spanned on `Result<(), MyErr>`
//!     )
//! }
//! ```
//!
//! (Every path in the real expansion is absolute, and the library's is the
//! `crate = "..."` argument when given.)
//!
//! On a misuse (bad argument, not `async`, two parameters...) it still emits the
//! `#[test] fn` with the user's function inside, next to the `compile_error!`s, as
//! `#[tokio::test]` does: the IDE keeps completion in the body and the test's
//! "Run Test" button while the attribute is being fixed.

use proc_macro::TokenStream;

mod args;
mod expand;

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
/// `"1h"`, compounds such as `"1m30s"`, or a number of seconds), `flavor` (`"current_thread"`, the default, or
/// `"multi_thread"`), `worker_threads = N` (with `"multi_thread"`), and `crate = "path"`
/// when `cloudrun_test` is not reachable as `::cloudrun_test`.
///
/// The function takes no parameter, a `Client`, or a `TestContext`, and returns `()` or
/// `Result<T, E: Debug>`.
#[proc_macro_attribute]
pub fn cloudrun_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cloudrun_test(args.into(), item.into()).into()
}
