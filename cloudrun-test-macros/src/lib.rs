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
//!     // The user's function, unchanged: same name, so the test path is the one
//!     // the user sees, and rust-analyzer's "Run Test" finds it.
//!     async fn root_answers(client: Client) -> Result<(), MyErr> { body }
//!     // Type assertions spanned on the parameter and return types, so a wrong
//!     // type is reported on the user's tokens with the library's message.
//!     let _ = <Client as ::cloudrun_test::__private::Inject>::inject;
//!     let _ = <Result<(), MyErr> as ::cloudrun_test::__private::TestOutcome>::into_result;
//!     ::cloudrun_test::__private::run_test(
//!         ::cloudrun_test::__private::TestSpec {
//!             name: ::core::concat!(::core::module_path!(), "::", "root_answers"),
//!             manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
//!             service: ::core::option::Option::Some("hello"),
//!             timeout: ::core::option::Option::Some(::core::time::Duration::from_millis(30000)),
//!             ..::cloudrun_test::__private::TestSpec::DEFAULT
//!         },
//!         root_answers,
//!     )
//! }
//! ```
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
/// `"1h"`, or a number of seconds), `flavor` (`"current_thread"`, the default, or
/// `"multi_thread"`), `worker_threads = N` (with `"multi_thread"`), and `crate = "path"`
/// when `cloudrun_test` is not reachable as `::cloudrun_test`.
///
/// The function takes no parameter, a `Client`, or a `TestContext`, and returns `()` or
/// `Result<T, E: Debug>`.
#[proc_macro_attribute]
pub fn cloudrun_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cloudrun_test(args.into(), item.into()).into()
}
