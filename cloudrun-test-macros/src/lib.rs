//! The `#[cloudrun_test]` attribute. Use it through the `cloudrun-test` crate,
//! which re-exports it as `cloudrun_test::cloudrun_test` and `cloudrun_test::test`.
//!
//! The macro is thin: it checks the arguments and the signature, then hands the
//! function to `cloudrun_test::__private::cloudrun_test`, where the real work is. This is its
//! real output for a sample test (`src/expansion_snapshot.rs` renders it with
//! `prettyplease` and fails when this page no longer matches):
//!
#![doc = include_str!("expansion.md")]
//!
//! - The `#[test] fn` keeps the function's name and module, which is what
//!   `cargo test NAME` and rust-analyzer's "Run Test" look for; the user's function
//!   is inside it, unchanged, so rustc reports errors in the body on the user's tokens.
//! - The library's `__private::cloudrun_test` states its requirements on the parameter
//!   and return types as bounds. Each `PhantomData` argument is spanned on the user's
//!   type (the parameter's, then the return type's), and rustc blames an unmet bound on
//!   the argument that carries the type: a type the library cannot use is reported
//!   once, on the user's tokens, with the library's `on_unimplemented` message. Nothing
//!   generic is defined in the expansion, so a test costs rustc little beyond its body.
//! - Only the given arguments become `TestSpec` fields; the rest come from
//!   `TestSpec::DEFAULT`. The library's path is the `crate = "..."` argument when given.
//!
//! On a misuse (bad argument, not `async`, two parameters...) it still emits the
//! `#[test] fn` with the user's function inside, next to the `compile_error!`s, as
//! `#[tokio::test]` does: the IDE keeps completion in the body and the test's
//! "Run Test" button while the attribute is being fixed.
#![warn(missing_docs)]

use proc_macro::TokenStream;

mod args;
mod expand;
#[cfg(test)]
mod expansion_snapshot;
mod parametrised;

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
/// # Arguments
///
/// Exactly one of `service` and `url` is required; every other argument is optional.
/// An argument overrides the environment's setting of the same thing, which overrides
/// `cloudrun-test.toml`.
///
/// | Argument | Value | What it does |
/// |---|---|---|
/// | `service` | `"hello"` | The Cloud Run service, by name: its URL comes from `CLOUDRUN_TEST_URL_HELLO`, `cloudrun-test.toml`, or the Cloud Run Admin API (with a project and region). |
/// | `url` | `"https://hello-abc123-ew.a.run.app"` | The service's address (`https://`, or `http://` for one on this machine), skipping any lookup. |
/// | `audience` | `"https://hello.example.com"` | The token audience, for a service with a custom audience. Default: the URL's origin, which is what Cloud Run expects; leave it out unless the service sets one. |
/// | `tag` | `"canary"` | Test the revision behind this traffic tag (`https://canary---hello-...run.app`). |
/// | `project` | `"my-project"` | Where `service` is looked up (default `CLOUDRUN_TEST_PROJECT`, `cloudrun-test.toml`, gcloud's `core/project`). |
/// | `region` | `"europe-west1"` | Where `service` is looked up (default `CLOUDRUN_TEST_REGION`, `cloudrun-test.toml`, gcloud's `run/region`). |
/// | `impersonate` | `"tester@my-project.iam.gserviceaccount.com"` | Call the service as this service account: tokens are minted through IAM Credentials with the test's credentials as the caller, who needs `roles/iam.serviceAccountOpenIdTokenCreator` on it. |
/// | `timeout` | `"30s"`, `"500ms"`, `"1m30s"`, or `30` (seconds) | The limit for the whole test, setup included (`humantime` syntax, as every cloudrun-test duration). Default `CLOUDRUN_TEST_TIMEOUT`, else 10 minutes. |
/// | `flavor` | `"current_thread"` (default) or `"multi_thread"` | The tokio runtime, as in `#[tokio::test]`. |
/// | `worker_threads` | `4` | The threads of a `"multi_thread"` runtime. |
/// | `crate` | `"my_reexport::cloudrun_test"` | The library's path, when it is not reachable as `::cloudrun_test`. |
///
/// An unknown or misspelt argument, a value of the wrong type, an argument given twice,
/// or both `service` and `url`, is a compile error on that argument that says the fix.
///
/// `impersonate` without the argument: `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT`
/// applies to every test of the run.
///
/// # Signature
///
/// The function is `async`, takes no parameter or one of `Client`, `TestContext`
/// (the client and what it was built from) or `GrpcChannel` (feature `grpc`), chosen by
/// its type, and returns `()` or `Result<T, E: Debug>` (an `Err` fails the test). It
/// becomes a plain `#[test]` of the same name: `cargo test NAME`, nextest and the IDE's
/// "Run Test" button find it. A setup failure (no credentials, unknown service...)
/// fails the test with the cause and the fix.
///
/// # Parametrised tests
///
/// With `rstest` or `test-case`, write this attribute first, above `#[rstest]` or the
/// `#[test_case(...)]`s; the function then takes the case values and, anywhere among
/// them, the parameter chosen by type. Each case is a test of its own, named as those
/// crates name it (`answers::case_1_root`, `answers::test_case_1_root`):
///
/// ```ignore
/// #[cloudrun_test(service = "hello")]
/// #[rstest]
/// #[case::root("/", 200)]
/// #[case::missing("/missing", 404)]
/// async fn answers(#[case] path: &str, #[case] status: u16, client: Client) {
///     assert_eq!(client.get(path).send().await.unwrap().status(), status);
/// }
/// ```
///
/// Below their attributes it cannot work (they expand first and call the function with
/// the case values only); `#[case]` without `#[rstest]` is refused with this form.
#[proc_macro_attribute]
pub fn cloudrun_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cloudrun_test(args.into(), item.into()).into()
}
