//! Keeps `src/expansion.md` (shown in the crate docs) equal to what the macro really
//! emits for a sample test, rendered by `prettyplease`. After a change to the expansion:
//! `UPDATE_EXPANSION=1 cargo test -p cloudrun-test-macros`, then read the diff. The
//! workspace README's copy is checked against this file by the e2e crate
//! (`tests/readme_expansion.rs`), so the packaged crate reads nothing outside itself.

use std::path::Path;

use quote::{ToTokens, quote};

/// The sample test, and what the macro makes of it, as markdown.
fn sample() -> String {
    let args = quote!(service = "hello", timeout = "30s");
    let item = quote! {
        /// The home page answers.
        async fn root_answers(client: Client) {
            let res = client.get("/").send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    // As the user writes it: docs, then the attribute.
    let mut input: syn::ItemFn = syn::parse2(item.clone()).unwrap();
    input.attrs.push(syn::parse_quote!(#[cloudrun_test(#args)]));
    let output = crate::expand::cloudrun_test(args, item);
    format!(
        "```rust,ignore\n{}```\n\nexpands to\n\n```rust,ignore\n{}```\n",
        render(input.into_token_stream()),
        render(output)
    )
}

fn render(tokens: proc_macro2::TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as items");
    prettyplease::unparse(&file)
}

#[test]
fn the_documented_expansion_is_the_real_one() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let snapshot_path = crate_dir.join("src/expansion.md");
    let expected = sample();
    let update = std::env::var_os("UPDATE_EXPANSION").is_some();

    let snapshot = std::fs::read_to_string(&snapshot_path).unwrap_or_default();
    if update && snapshot != expected {
        std::fs::write(&snapshot_path, &expected).unwrap();
    } else {
        assert_eq!(
            snapshot, expected,
            "src/expansion.md is not what the macro emits; \
             rerun with UPDATE_EXPANSION=1 and read the diff"
        );
    }
}
