//! `#[cloudrun_test(...)]` above `#[rstest]` or `#[test_case(...)]`: a test per case.
//!
//! Those crates make one test per case, each calling the function with the case's
//! values only. So the attribute, which runs first, moves its injected parameter into
//! the body (`let client: Client = injected();`, built from the running test's context
//! by the library) and hands the function on with `#[cloudrun_test::test(...)]` last:
//! rstest takes an attribute whose path ends in `test` as the cases' test attribute,
//! test-case copies an async function's attributes onto its cases, and each case
//! becomes a `#[cloudrun_test]` test of its own, named `function::case_1` (rstest) or
//! `function::test_case_1_...` (test-case).

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Signature, Visibility};

/// The supported form, named in every error about parametrised tests.
pub(crate) const FORM: &str = "write `#[cloudrun_test(...)]` first, above `#[rstest]` and its \
     `#[case(...)]`s or above the `#[test_case(...)]`s, and take the case values and \
     `client: Client` (or `TestContext`, `GrpcChannel`) as parameters";

/// The attributes of rstest and test-case that make cases of the function.
fn is_case_maker(attr: &Attribute) -> bool {
    let Some(last) = attr.path().segments.last() else {
        return false;
    };
    ["rstest", "test_case", "test_matrix"]
        .iter()
        .any(|name| last.ident == name)
}

/// rstest's and test-case's attributes on the function, cases included.
pub(crate) fn is_case_attribute(attr: &Attribute) -> bool {
    is_case_maker(attr)
        || attr
            .path()
            .segments
            .last()
            .is_some_and(|last| last.ident == "case")
}

/// Whether the function is parametrised by a `#[rstest]` or `#[test_case]` below ours.
pub(crate) fn is_parametrised(attrs: &[Attribute]) -> bool {
    attrs.iter().any(is_case_maker)
}

/// rstest's attributes on a parameter (`#[case] n: u32`): on a function that is not
/// parametrised, they are left over from writing the attributes in another order.
pub(crate) fn leftovers(sig: &Signature) -> Option<syn::Error> {
    let mut error: Option<syn::Error> = None;
    for input in &sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        for attr in &typed.attrs {
            let Some(last) = attr.path().segments.last() else {
                continue;
            };
            let name = last.ident.to_string();
            if [
                "case", "values", "with", "from", "future", "by_ref", "files",
            ]
            .contains(&&*name)
            {
                let found = syn::Error::new_spanned(
                    attr,
                    format!(
                        "`#[{name}]` is rstest's, but no `#[rstest]` follows `#[cloudrun_test]`: {FORM}"
                    ),
                );
                match &mut error {
                    Some(error) => error.combine(found),
                    None => error = Some(found),
                }
            }
        }
    }
    error
}

/// The parameter the test receives from the library, chosen by its type (the other
/// parameters are the cases' values): `Client`, `TestContext` or `GrpcChannel`.
pub(crate) fn injected(sig: &Signature) -> Vec<&syn::PatType> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) if typed.attrs.is_empty() => Some(typed),
            _ => None,
        })
        .filter(|typed| match &*typed.ty {
            syn::Type::Path(path) => path.path.segments.last().is_some_and(|last| {
                ["Client", "TestContext", "GrpcChannel"]
                    .iter()
                    .any(|name| last.ident == name)
            }),
            _ => false,
        })
        .collect()
}

/// The function with its injected parameter moved into the body and our attribute,
/// with the same arguments, after the user's (rstest's or test-case's) attributes.
pub(crate) fn expand(
    attrs: &[Attribute],
    vis: &Visibility,
    sig: &Signature,
    body: &TokenTree,
    krate: &TokenStream,
    args: &TokenStream,
) -> TokenStream {
    let injected = injected(sig).first().map(|typed| (*typed).clone());
    let mut sig = sig.clone();
    let mut binding = TokenStream::new();
    if let Some(param) = &injected {
        // syn's `PartialEq` is behind a feature: compare the tokens.
        let text = param.to_token_stream().to_string();
        let is_injected = |input: &FnArg| matches!(input, FnArg::Typed(typed) if typed.to_token_stream().to_string() == text);
        sig.inputs = sig
            .inputs
            .iter()
            .filter(|input| !is_injected(input))
            .cloned()
            .collect();
        let syn::PatType { pat, ty, .. } = param;
        // Spanned on the user's type: a type the library cannot build is reported there.
        let call = quote_spanned!(ty.span()=> #krate::__private::injected::<#ty>());
        binding = quote!(let #pat: #ty = #call;);
    }
    let sig = sig.to_token_stream();
    quote! {
        #(#attrs)*
        #[#krate::test(#args)]
        #vis #sig {
            #binding
            #body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_text(args: TokenStream, item: TokenStream) -> String {
        crate::expand::cloudrun_test(args, item).to_string()
    }

    #[test]
    fn the_injected_parameter_moves_into_the_body_and_our_attribute_goes_last() {
        let output = expand_text(
            quote!(service = "hello"),
            quote! {
                #[rstest]
                #[case(1)]
                async fn cases(#[case] n: u32, client: Client) { body }
            },
        );
        assert_eq!(
            output,
            "# [rstest] # [case (1)] # [:: cloudrun_test :: test (service = \"hello\")] \
             async fn cases (# [case] n : u32) { let client : Client = \
             :: cloudrun_test :: __private :: injected :: < Client > () ; { body } }"
        );
    }

    #[test]
    fn test_case_keeps_every_value_and_the_crate_path() {
        let output = expand_text(
            quote!(service = "hello", crate = "my::lib"),
            quote! {
                #[test_case(1, 2)]
                async fn cases(context: TestContext, a: u32, b: u32) -> Result<(), E> { body }
            },
        );
        assert!(
            output.contains("# [my :: lib :: test (service = \"hello\" , crate = \"my::lib\")]"),
            "{output}"
        );
        assert!(output.contains("async fn cases (a : u32 , b : u32) -> Result < () , E >"));
        assert!(output.contains("let context : TestContext = my :: lib :: __private :: injected"));
    }

    #[test]
    fn a_case_without_rstest_names_the_supported_form() {
        let output = expand_text(
            quote!(service = "hello"),
            quote! {
                async fn cases(#[case] n: u32, client: Client) {}
            },
        );
        assert!(output.contains("`#[case]` is rstest's"), "{output}");
        assert!(output.contains("above `#[rstest]`"), "{output}");
        // The recovered test keeps no `#[case]`, which would be a second error.
        assert!(!output.contains("# [case]"), "{output}");
    }
}
