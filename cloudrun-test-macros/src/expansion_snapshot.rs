//! Keeps `src/expansion.md` (shown in the crate docs) and the README's copy of it
//! equal to what the macro really emits for a sample test, rendered by `prettyplease`.
//! After a change to the expansion: `UPDATE_EXPANSION=1 cargo test -p cloudrun-test-macros`,
//! then read the diff.

use std::path::Path;

use quote::{ToTokens, quote};

const README_START: &str =
    "<!-- expansion: written by cloudrun-test-macros/src/expansion_snapshot.rs -->\n";
const README_END: &str = "<!-- end of expansion -->";

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
    let readme_path = crate_dir.join("../README.md");
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

    // GitHub highlights `rust`, not `rust,ignore`.
    let expected = expected.replace("```rust,ignore", "```rust");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (before, rest) = readme
        .split_once(README_START)
        .expect("README.md has the expansion markers");
    let (copy, after) = rest
        .split_once(README_END)
        .expect("README.md has the end marker");
    if update && copy != expected {
        std::fs::write(
            &readme_path,
            format!("{before}{README_START}{expected}{README_END}{after}"),
        )
        .unwrap();
    } else {
        assert_eq!(
            copy, expected,
            "README.md's expansion is not what the macro emits; \
             rerun with UPDATE_EXPANSION=1 and read the diff"
        );
    }
}
