//! From the parsed function and arguments to the generated `#[test] fn`.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, Signature, Token, Visibility};

use crate::args::{Args, Errors, Flavor};
use crate::parametrised;

/// The annotated function. Like `syn::ItemFn`, except that the body stays raw
/// tokens: a half-typed body (the usual state while editing) must not stop the
/// macro, and it is handed to rustc untouched, so its errors keep their spans.
struct TestItem {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    /// `{ ... }`, braces included.
    body: TokenTree,
}

impl Parse for TestItem {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        // Anything but a function: say what the attribute goes on, rather than
        // syn's "expected `fn`" (kept for a function whose signature is malformed).
        let function = input.peek(Token![fn])
            || input.peek(Token![async])
            || input.peek(Token![const])
            || input.peek(Token![unsafe])
            || input.peek(Token![extern]);
        if !function {
            return Err(input.error("`#[cloudrun_test]` goes on an `async fn`"));
        }
        let sig: Signature = input.parse()?;
        let body: TokenTree = input.parse()?;
        match &body {
            TokenTree::Group(group) if group.delimiter() == Delimiter::Brace => {}
            _ => return Err(syn::Error::new(body.span(), "expected the function's body")),
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function's body"));
        }
        Ok(TestItem {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

pub(crate) fn cloudrun_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let test = match syn::parse2::<TestItem>(item.clone()) {
        Ok(test) => test,
        // Not a function we can even take apart: give the tokens back unchanged,
        // so the rest of the file still resolves, with the error.
        Err(error) => {
            let mut output = item;
            output.extend(error.into_compile_error());
            return output;
        }
    };

    let raw_args = args.clone();
    let args = Args::parse(args);
    let parametrised = parametrised::is_parametrised(&test.attrs);
    let signature = check_signature(&test, parametrised);
    match (args, signature) {
        (Ok(args), Ok(())) if parametrised => {
            let krate = match &args.krate {
                Some(path) => path.to_token_stream(),
                None => quote!(::cloudrun_test),
            };
            let TestItem {
                attrs,
                vis,
                sig,
                body,
            } = &test;
            parametrised::expand(attrs, vis, sig, body, &krate, &raw_args)
        }
        (Ok(args), Ok(())) => expand(&test, &args),
        (args, signature) => {
            let mut errors = Errors::default();
            for error in [args.err(), signature.err()].into_iter().flatten() {
                errors.combine(error);
            }
            let error = errors.finish().expect_err("one of the two failed");
            recover(&test, error)
        }
    }
}

/// Everything about the function that the attribute cannot work with. A
/// `parametrised` one (`#[rstest]`, `#[test_case]` below) also takes the cases' values.
fn check_signature(test: &TestItem, parametrised: bool) -> syn::Result<()> {
    let sig = &test.sig;
    let mut errors = Errors::default();

    for attr in test.attrs.iter().filter(|attr| is_test_attribute(attr)) {
        errors.combine(syn::Error::new_spanned(
            attr,
            "`#[cloudrun_test]` already makes this function a test: remove this attribute",
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(
            constness.span,
            "a `#[cloudrun_test]` function cannot be `const`",
        );
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        errors.push(
            unsafety.span,
            "a `#[cloudrun_test]` function cannot be `unsafe`",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.combine(syn::Error::new_spanned(
            abi,
            "a `#[cloudrun_test]` function cannot be `extern`",
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            "a `#[cloudrun_test]` function must be `async`: add `async` before `fn`",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        // `<T>` if there is one, else the `where` clause.
        let generics = match &sig.generics.where_clause {
            Some(where_clause) if sig.generics.params.is_empty() => where_clause.to_token_stream(),
            _ => sig.generics.to_token_stream(),
        };
        errors.combine(syn::Error::new_spanned(
            generics,
            "a `#[cloudrun_test]` function cannot be generic: what it receives is chosen \
             by its parameter's type, e.g. `client: Client` or `context: TestContext`",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.combine(syn::Error::new_spanned(
                receiver,
                "a `#[cloudrun_test]` function cannot take `self`: make it a free function, \
                 e.g. `async fn name(client: Client)`",
            )),
            FnArg::Typed(typed) => {
                if let syn::Type::ImplTrait(_) = &*typed.ty {
                    errors.combine(syn::Error::new_spanned(
                        &typed.ty,
                        "write the parameter's type out: `Client`, `TestContext` or `GrpcChannel`",
                    ));
                }
            }
        }
    }
    if parametrised {
        let injected = parametrised::injected(sig);
        if injected.len() > 1 {
            let extra: TokenStream = injected[1..].iter().map(|p| p.to_token_stream()).collect();
            errors.combine(syn::Error::new_spanned(
                extra,
                "a parametrised `#[cloudrun_test]` function takes at most one of `Client`, \
                 `TestContext` and `GrpcChannel`, besides the cases' values",
            ));
        }
    } else if let Some(error) = parametrised::leftovers(sig) {
        errors.combine(error);
    } else if sig.inputs.len() > 1 {
        // Span every parameter after the first: those are the ones to remove.
        let extra: TokenStream = sig
            .inputs
            .pairs()
            .skip(1)
            .map(|p| p.into_token_stream())
            .collect();
        errors.combine(syn::Error::new_spanned(
            extra,
            "a `#[cloudrun_test]` function takes at most one parameter: `client: Client`, \
             `context: TestContext` (which also holds the client) or `channel: GrpcChannel` \
             (feature `grpc`)",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.combine(syn::Error::new_spanned(
            variadic,
            "a `#[cloudrun_test]` function cannot be variadic",
        ));
    }
    errors.finish()
}

/// `#[test]`, `#[tokio::test]`, `#[cloudrun_test::test]`, `#[cloudrun_test]`...
/// placed after ours: a second test attribute would make a second, broken test.
fn is_test_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "test" || segment.ident == "cloudrun_test")
}

/// The normal expansion: a sync `#[test]` holding the user's `async fn` and one
/// call into the library, which does all the work.
fn expand(test: &TestItem, args: &Args) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::cloudrun_test),
    };
    let private = quote!(#krate::__private);
    let TestItem {
        attrs, vis, sig, ..
    } = test;
    let name = &sig.ident;
    let name_text = name.to_string();
    let inner = inner_fn(test);

    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let mut fields = TokenStream::new();
    for (field, value) in [
        ("service", &args.service),
        ("url", &args.url),
        ("audience", &args.audience),
        ("tag", &args.tag),
        ("project", &args.project),
        ("region", &args.region),
        ("impersonate", &args.impersonate),
    ] {
        if let Some(value) = value {
            let field = syn::Ident::new(field, value.span());
            let value = some(value.to_token_stream());
            fields.extend(quote!(#field: #value,));
        }
    }
    if let Some((millis, span)) = args.timeout {
        let value = some(quote_spanned!(span=> ::core::time::Duration::from_millis(#millis)));
        fields.extend(quote!(timeout: #value,));
    }
    if let Some(flavor) = args.flavor {
        let variant = match flavor {
            Flavor::CurrentThread => quote!(CurrentThread),
            Flavor::MultiThread => quote!(MultiThread),
        };
        fields.extend(quote!(flavor: #private::Flavor::#variant,));
    }
    if let Some(threads) = args.worker_threads {
        let value = some(quote!(#threads));
        fields.extend(quote!(worker_threads: #value,));
    }

    let spec = quote! {
        #private::TestSpec {
            name: ::core::concat!(::core::module_path!(), "::", #name_text),
            manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
            #fields
            ..#private::TestSpec::DEFAULT
        }
    };
    // The library's generic entry checks the parameter and return types: each is
    // carried by a `PhantomData` argument spanned on the user's type, so an unmet bound
    // is reported once, on the user's tokens (see `__private::cloudrun_test`). Nothing
    // generic is written here: rustc would type-check and compile it once per test.
    let output = match &sig.output {
        syn::ReturnType::Default => phantom(name),
        syn::ReturnType::Type(_, ty) => phantom(ty),
    };
    let call = match sig.inputs.first() {
        Some(FnArg::Typed(param)) => {
            let param = phantom(&param.ty);
            quote!(#private::cloudrun_test(#spec, #name, #param, #output))
        }
        _ => quote!(#private::cloudrun_test_without_parameter(#spec, #name, #output)),
    };
    quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() {
            #inner
            #call
        }
    }
}

/// `::core::marker::PhantomData`, spanned from the first to the last token of
/// `tokens` (a `Span` cannot be joined on stable; rustc joins an expression's
/// first and last tokens itself).
fn phantom(tokens: &impl ToTokens) -> TokenStream {
    let mut tokens = tokens.to_token_stream().into_iter();
    let first = tokens
        .next()
        .map_or_else(Span::call_site, |token| token.span());
    let last = tokens.last().map_or(first, |token| token.span());
    let path = quote_spanned!(first=> ::core::marker::);
    let ty = quote_spanned!(last=> PhantomData);
    quote!(#path #ty)
}

/// The user's function, as written, nested in the test so it keeps its name.
fn inner_fn(test: &TestItem) -> TokenStream {
    let TestItem { sig, body, .. } = test;
    quote!(#sig #body)
}

/// On a misuse, still emit a `#[test] fn` with the user's function inside, so
/// the IDE keeps completion and its "Run Test" button, plus the errors. Nothing
/// in it can fail to compile on its own, so the errors are the macro's only.
fn recover(test: &TestItem, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    // A method cannot become a `#[test]`; the errors alone are the least noise.
    if let Some(FnArg::Receiver(_)) = test.sig.inputs.first() {
        return errors;
    }
    let TestItem {
        attrs,
        vis,
        sig,
        body,
    } = test;
    // rstest's and test-case's attributes go too: they would make cases of the
    // `#[test]` (a second error) or are unknown without them.
    let attrs = attrs
        .iter()
        .filter(|attr| !is_test_attribute(attr) && !parametrised::is_case_attribute(attr));
    let name = &sig.ident;
    let mut inner = sig.clone();
    for input in &mut inner.inputs {
        if let FnArg::Typed(typed) = input {
            typed.attrs.clear();
        }
    }
    // `async` even when the user forgot it, so an `.await` in the body adds no
    // second error; the other qualifiers are what was reported.
    inner.asyncness = Some(Default::default());
    inner.constness = None;
    inner.safety = syn::Safety::Default;
    inner.abi = None;
    quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() {
            #[allow(dead_code)]
            #inner #body
        }
        #errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        cloudrun_test(args, item).to_string()
    }

    const TEST_ATTRIBUTE: &str = "# [:: core :: prelude :: v1 :: test]";

    #[test]
    fn wraps_the_function_in_a_test_of_the_same_name() {
        let output = expand(
            quote!(service = "hello", timeout = "30s"),
            quote! {
                /// docs
                #[ignore]
                pub async fn root_answers(client: Client) -> Result<(), MyErr> { body }
            },
        );
        let outer =
            format!("# [doc = r\" docs\"] # [ignore] {TEST_ATTRIBUTE} pub fn root_answers () {{");
        assert!(output.starts_with(&outer), "{output}");
        assert!(
            output.contains(
                "async fn root_answers (client : Client) -> Result < () , MyErr > { body }"
            )
        );
        assert!(output.contains("service : :: core :: option :: Option :: Some (\"hello\")"));
        assert!(output.contains("Duration :: from_millis (30000u64)"));
        assert!(output.contains(":: cloudrun_test :: __private :: cloudrun_test ("));
        assert!(!output.contains("compile_error"));
    }

    #[test]
    fn uses_the_crate_path_everywhere() {
        let output = expand(
            quote!(
                url = "https://a.run.app",
                crate = "my::lib",
                flavor = "multi_thread"
            ),
            quote!(
                async fn t() {}
            ),
        );
        assert!(output.contains("my :: lib :: __private :: cloudrun_test_without_parameter ("));
        assert!(output.contains("my :: lib :: __private :: Flavor :: MultiThread"));
        assert!(!output.contains("cloudrun_test ::"), "{output}");
    }

    #[test]
    fn a_test_named_like_the_library_entry_still_reaches_it_by_path() {
        let output = expand(
            quote!(service = "a"),
            quote!(
                async fn cloudrun_test() {}
            ),
        );
        assert!(
            output.contains(
                ":: cloudrun_test :: __private :: cloudrun_test_without_parameter (:: cloudrun_test"
            ),
            "{output}"
        );
        assert!(
            output.ends_with(", cloudrun_test , :: core :: marker :: PhantomData) }"),
            "{output}"
        );
    }

    #[test]
    fn misuse_still_emits_the_test_with_the_body() {
        // Not async, and an unknown argument: both reported, and the test is still
        // there, with the user's (now async) function inside, for the IDE.
        let output = expand(
            quote!(servce = "hello"),
            quote!(
                #[test]
                fn t(client: Client) {
                    client.get().await;
                }
            ),
        );
        assert!(
            output.starts_with(&format!("{TEST_ATTRIBUTE} fn t () {{")),
            "{output}"
        );
        assert!(output.contains("async fn t (client : Client) { client . get () . await ; }"));
        assert_eq!(output.matches("compile_error").count(), 3, "{output}");
        assert!(!output.contains("__private"));
    }

    #[test]
    fn a_method_gets_only_the_errors() {
        let output = expand(
            quote!(service = "a"),
            quote!(
                async fn t(&self) {}
            ),
        );
        assert!(output.starts_with(":: core :: compile_error !"), "{output}");
        assert!(!output.contains("fn t"));
    }

    #[test]
    fn not_a_function_is_given_back() {
        let output = expand(
            quote!(service = "a"),
            quote!(
                struct S;
            ),
        );
        assert!(output.starts_with("struct S ;"), "{output}");
        assert!(output.contains("goes on an `async fn`"));
    }
}
