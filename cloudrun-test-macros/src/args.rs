//! The attribute's arguments: `service = "hello", timeout = "30s", ...`.
//!
//! Parsing is in two steps. First the syntax (`key = value, ...`); a syntax error
//! stops there, since nothing after it can be trusted. Then every entry is
//! checked on its own and the errors are collected, so one build shows every
//! mistake in the attribute, each spanned on its own tokens.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr, Token};

/// Every key the attribute accepts, in the order the docs list them.
const KEYS: &[&str] = &[
    "service",
    "url",
    "audience",
    "tag",
    "project",
    "region",
    "impersonate",
    "timeout",
    "flavor",
    "worker_threads",
    "crate",
];

/// The example shown whenever the attribute lacks its target.
const EXAMPLE: &str = "#[cloudrun_test(service = \"hello\")]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
}

/// The validated arguments.
#[derive(Default)]
pub(crate) struct Args {
    /// `crate = "path"`: where the library is; `None` means `::cloudrun_test`.
    pub krate: Option<syn::Path>,
    pub service: Option<LitStr>,
    pub url: Option<LitStr>,
    pub audience: Option<LitStr>,
    pub tag: Option<LitStr>,
    pub project: Option<LitStr>,
    pub region: Option<LitStr>,
    /// `impersonate = "sa@project.iam.gserviceaccount.com"`: the identity the test calls as.
    pub impersonate: Option<LitStr>,
    /// The timeout in milliseconds, with the span of its value.
    pub timeout: Option<(u64, Span)>,
    pub flavor: Option<Flavor>,
    pub worker_threads: Option<usize>,
}

/// One `key = value` entry, before validation.
struct Entry {
    key: Ident,
    value: Expr,
}

impl Args {
    /// Parses and validates the attribute's arguments (the tokens between its parentheses).
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let entries = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(tokens)?;

        let mut args = Args::default();
        let mut errors = Errors::default();
        let mut seen: HashMap<String, Span> = HashMap::new();
        // Whether a key meant to name the target was given, even misspelt or with
        // a bad value: then "needs the service" would only repeat that error.
        let mut target_given = false;
        for entry in &entries {
            let key = entry.key.unraw().to_string();
            if !KEYS.contains(&key.as_str()) {
                target_given |= matches!(closest_key(&key), Some("service" | "url"));
                errors.push(entry.key.span(), unknown_key_message(&key));
                continue;
            }
            target_given |= key == "service" || key == "url";
            if seen.insert(key.clone(), entry.key.span()).is_some() {
                errors.push(
                    entry.key.span(),
                    format!("`{key}` is given twice; keep only one"),
                );
                continue;
            }
            let other = match key.as_str() {
                "service" => "url",
                "url" => "service",
                _ => "",
            };
            if seen.contains_key(other) {
                // Reported on the second of the two: that is the one to reconsider.
                errors.push(
                    entry.key.span(),
                    "give either `service` or `url`, not both: `service` looks the URL up \
                     (environment, `cloudrun-test.toml`, Cloud Run Admin API), `url` skips that",
                );
                continue;
            }
            if let Err(error) = args.set(&key, &entry.value) {
                errors.combine(error);
            }
        }

        if !target_given {
            errors.push(
                Span::call_site(),
                format!(
                    "`#[cloudrun_test]` needs the service to test: name it with `service = \"...\"` \
                     (its Cloud Run name) or give its address with `url = \"https://...\"`, \
                     e.g. `{EXAMPLE}`"
                ),
            );
        }

        if args.worker_threads.is_some() {
            match args.flavor {
                Some(Flavor::MultiThread) => {}
                // A bad `flavor` was reported already; one error is enough.
                None if seen.contains_key("flavor") => {}
                Some(Flavor::CurrentThread) => errors.push(
                    seen["worker_threads"],
                    "`worker_threads` does not apply to `flavor = \"current_thread\"`, \
                     which runs the test on its own thread: use `flavor = \"multi_thread\"`, \
                     or remove `worker_threads`",
                ),
                None => errors.push(
                    seen["worker_threads"],
                    "`worker_threads` only applies to the multi-threaded runtime: \
                     add `flavor = \"multi_thread\"` (the default runs the test on its own thread)",
                ),
            }
        }

        errors.finish()?;
        Ok(args)
    }

    /// Validates one known, not yet seen key's value and stores it.
    fn set(&mut self, key: &str, value: &Expr) -> syn::Result<()> {
        match key {
            "service" => self.service = Some(non_empty_string(key, value, "hello")?),
            "url" => {
                let url = non_empty_string(key, value, "https://hello-abc123-ew.a.run.app")?;
                let text = url.value();
                if !(text.starts_with("https://") || text.starts_with("http://")) {
                    return Err(syn::Error::new(
                        url.span(),
                        "`url` must be an absolute `https://` (or `http://`) URL, \
                         e.g. `url = \"https://hello-abc123-ew.a.run.app\"`",
                    ));
                }
                self.url = Some(url);
            }
            "audience" => {
                self.audience = Some(non_empty_string(key, value, "https://hello.example.com")?)
            }
            "tag" => self.tag = Some(non_empty_string(key, value, "canary")?),
            "project" => self.project = Some(non_empty_string(key, value, "my-project")?),
            "region" => self.region = Some(non_empty_string(key, value, "europe-west1")?),
            "impersonate" => {
                let email =
                    non_empty_string(key, value, "tester@my-project.iam.gserviceaccount.com")?;
                if !email.value().contains('@') || email.value().contains(char::is_whitespace) {
                    return Err(syn::Error::new(
                        email.span(),
                        "`impersonate` must be a service account's email, \
                         e.g. `impersonate = \"tester@my-project.iam.gserviceaccount.com\"`",
                    ));
                }
                self.impersonate = Some(email);
            }
            "timeout" => {
                let (text, span) = match literal(value) {
                    Some(Lit::Str(lit)) => (lit.value(), lit.span()),
                    // A bare integer means seconds, as in the string form.
                    Some(Lit::Int(lit)) if lit.suffix().is_empty() => {
                        (lit.base10_digits().to_owned(), lit.span())
                    }
                    _ => return Err(wrong_type(key, value, "a duration", "\"30s\"")),
                };
                let millis = parse_timeout(&text).map_err(|why| syn::Error::new(span, why))?;
                self.timeout = Some((millis, span));
            }
            "flavor" => {
                let lit = string(key, value, "\"multi_thread\"")?;
                let flavor = match lit.value().as_str() {
                    "current_thread" => Flavor::CurrentThread,
                    "multi_thread" => Flavor::MultiThread,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown flavor `{other}`: use `\"current_thread\"` (the default) \
                                 or `\"multi_thread\"`"
                            ),
                        ));
                    }
                };
                self.flavor = Some(flavor);
            }
            "worker_threads" => {
                let lit = match literal(value) {
                    Some(Lit::Int(lit)) => lit,
                    _ => return Err(wrong_type(key, value, "a number", "4")),
                };
                self.worker_threads = Some(positive(lit)?);
            }
            "crate" => {
                let lit = string(key, value, "\"cloudrun_test\"")?;
                let path = lit.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        "`crate` must be the path to the `cloudrun_test` library, \
                         e.g. `crate = \"my_reexport::cloudrun_test\"`",
                    )
                })?;
                self.krate = Some(path);
            }
            _ => unreachable!("`{key}` is in KEYS but not handled"),
        }
        Ok(())
    }
}

impl syn::parse::Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `parse_any` also takes keywords, for `crate = "..."`.
        let key = match Ident::parse_any(input) {
            Ok(key) => key,
            Err(_) => {
                return Err(input.error(format!(
                    "expected `key = value` arguments, e.g. `{EXAMPLE}`"
                )));
            }
        };
        if !input.peek(Token![=]) {
            let name = key.unraw().to_string();
            let message = if KEYS.contains(&name.as_str()) {
                format!("`{name}` needs a value: `{name} = ...`")
            } else {
                format!("expected `key = value`; {}", unknown_key_message(&name))
            };
            return Err(syn::Error::new(key.span(), message));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(Entry { key, value })
    }
}

/// "unknown argument `servce`: did you mean `service`?"
fn unknown_key_message(key: &str) -> String {
    match closest_key(key) {
        Some(known) => format!("unknown argument `{key}`: did you mean `{known}`?"),
        None => format!(
            "unknown argument `{key}`: expected one of {}",
            KEYS.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The valid key a mistyped one most likely meant, if any is close enough.
fn closest_key(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    // A key that contains or is contained in a valid one (`threads`, `service_name`)
    // is a better hint than raw distance.
    let by_distance = KEYS
        .iter()
        .map(|known| (strsim::levenshtein(&key, known), *known))
        .filter(|(distance, known)| *distance <= (known.len() / 3).max(1))
        .min();
    by_distance.map(|(_, known)| known).or_else(|| {
        KEYS.iter()
            .find(|known| key.len() >= 3 && (known.contains(&key) || key.contains(*known)))
            .copied()
    })
}

/// Parses `timeout = "..."` into milliseconds, in the one duration syntax of
/// cloudrun-test (`cloudrun_test::parse_duration`, which this crate cannot call: it is
/// the library's dependency): the `humantime` crate's durations (`500ms`, `30s`, `2m`,
/// `1h`, `1m30s`, `1.5s`), or a bare number of seconds. Zero, sub-millisecond parts and
/// values beyond `u64` milliseconds are errors.
fn parse_timeout(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let parsed = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        // humantime wants a unit; a bare number means seconds.
        trimmed
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| "the number is too large".to_owned())
    } else {
        humantime::parse_duration(trimmed).map_err(|error| error.to_string())
    };
    let duration = parsed.map_err(|why| {
        format!(
            "invalid timeout `{text}` ({why}): write a duration such as `500ms`, `30s`, `2m`, \
             `1h` or `1m30s` (a bare number means seconds)"
        )
    })?;
    if duration.is_zero() {
        return Err(format!(
            "timeout `{text}` is zero: give a positive duration such as `30s`, \
             or leave `timeout` out for the default (CLOUDRUN_TEST_TIMEOUT, else 10 minutes)"
        ));
    }
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "timeout `{text}` is not a whole number of milliseconds: round it, e.g. to `1ms`"
        ));
    }
    u64::try_from(duration.as_millis()).map_err(|_| format!("timeout `{text}` is too large"))
}

fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        _ => None,
    }
}

fn string(key: &str, value: &Expr, example: &str) -> syn::Result<LitStr> {
    match literal(value) {
        Some(Lit::Str(lit)) => Ok(lit.clone()),
        _ => Err(wrong_type(key, value, "a string", example)),
    }
}

fn non_empty_string(key: &str, value: &Expr, example: &str) -> syn::Result<LitStr> {
    let lit = string(key, value, &format!("{example:?}"))?;
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{key}` is empty: e.g. `{key} = {example:?}`"),
        ));
    }
    Ok(lit)
}

fn positive(lit: &LitInt) -> syn::Result<usize> {
    match lit.base10_parse::<usize>() {
        Ok(0) => Err(syn::Error::new(
            lit.span(),
            "`worker_threads` must be at least 1 (leave it out for one per CPU core)",
        )),
        Ok(n) => Ok(n),
        Err(error) => Err(error),
    }
}

/// "`service` takes a string, e.g. `service = "hello"`", spanned on the value.
fn wrong_type(key: &str, value: &Expr, what: &str, example: &str) -> syn::Error {
    // A macro sees tokens, not values: a constant's name is all it would get.
    let why = match value {
        Expr::Path(_) | Expr::Macro(_) | Expr::Call(_) => {
            " (an attribute sees tokens: it cannot compute a constant's or an expression's value)"
        }
        _ => "",
    };
    syn::Error::new_spanned(
        value,
        format!("`{key}` takes {what}, e.g. `{key} = {example}`{why}"),
    )
}

/// Collects errors so that every mistake is reported in one build.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.combine(syn::Error::new(span, message));
    }

    pub(crate) fn combine(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms"), Ok(500));
        assert_eq!(parse_timeout("30s"), Ok(30_000));
        assert_eq!(parse_timeout("30"), Ok(30_000));
        assert_eq!(parse_timeout("2m"), Ok(120_000));
        assert_eq!(parse_timeout("1h"), Ok(3_600_000));
        assert_eq!(parse_timeout("1m30s"), Ok(90_000));
        assert_eq!(parse_timeout("2s500ms"), Ok(2_500));
        assert_eq!(parse_timeout("1h0m5s"), Ok(3_605_000));
        assert_eq!(parse_timeout("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_timeout("90s"), Ok(90_000));
        // humantime's forms, as everywhere else in cloudrun-test.
        assert_eq!(parse_timeout("1.5s"), Ok(1_500));
        assert_eq!(parse_timeout("1m 30s"), Ok(90_000));
        assert_eq!(parse_timeout("30 sec"), Ok(30_000));
        assert_eq!(parse_timeout("2min"), Ok(120_000));
        for bad in ["", "s", "-1s", "ms500", "1m30", "5S", "soon", "1.2.3s"] {
            let error = parse_timeout(bad).unwrap_err();
            assert!(error.starts_with("invalid timeout"), "{bad:?}: {error}");
            assert!(
                error.contains("write a duration such as"),
                "{bad:?}: {error}"
            );
        }
        for zero in ["0", "0s", "0m0s"] {
            assert!(parse_timeout(zero).unwrap_err().contains("zero"), "{zero}");
        }
        assert!(
            parse_timeout("1500us")
                .unwrap_err()
                .contains("whole number of milliseconds")
        );
        for too_large in [
            "99999999999999999h",
            "99999999999999999999",
            "5124095576030h9999m",
            "18446744073709551615s",
        ] {
            let error = parse_timeout(too_large).unwrap_err();
            assert!(error.contains("too large"), "{too_large}: {error}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest_key("servce"), Some("service"));
        assert_eq!(closest_key("Service"), Some("service"));
        assert_eq!(closest_key("URL"), Some("url"));
        assert_eq!(closest_key("flavour"), Some("flavor"));
        assert_eq!(closest_key("time_out"), Some("timeout"));
        assert_eq!(closest_key("threads"), Some("worker_threads"));
        assert_eq!(closest_key("service_name"), Some("service"));
        assert_eq!(closest_key("project_id"), Some("project"));
        assert_eq!(closest_key("banana"), None);
        assert_eq!(closest_key("x"), None);
    }

    fn parse(tokens: TokenStream) -> Result<Args, String> {
        Args::parse(tokens).map_err(|errors| {
            errors
                .into_iter()
                .map(|error| error.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn valid_arguments() {
        let args = parse(quote!(
            service = "hello",
            timeout = 5,
            flavor = "multi_thread",
            worker_threads = 2,
            crate = "my::cloudrun_test",
        ))
        .unwrap();
        assert_eq!(args.service.unwrap().value(), "hello");
        assert_eq!(args.timeout.unwrap().0, 5_000);
        assert_eq!(args.flavor.unwrap(), Flavor::MultiThread);
        assert_eq!(args.worker_threads.unwrap(), 2);
        assert!(args.krate.is_some());
    }

    #[test]
    fn invalid_arguments() {
        let cases = [
            (quote!(), "needs the service"),
            (quote!(timeout = "5s"), "needs the service"),
            (quote!(timeout = "soon"), "needs the service"),
            (quote!(timeout = "soon"), "invalid timeout"),
            (quote!(service = "a", url = "https://a"), "not both"),
            (quote!(service = "a", service = "b"), "given twice"),
            (quote!(servce = "a"), "did you mean `service`?"),
            (quote!(banana = "a"), "needs the service"),
            (quote!(service = 3), "takes a string"),
            (quote!(service = ""), "is empty"),
            (quote!(url = "hello"), "absolute"),
            (quote!(service = "a", timeout = "soon"), "invalid timeout"),
            (quote!(service = "a", flavor = "fast"), "unknown flavor"),
            (
                quote!(service = "a", worker_threads = 2),
                "flavor = \"multi_thread\"",
            ),
            (
                quote!(service = "a", flavor = "multi_thread", worker_threads = 0),
                "at least 1",
            ),
            (quote!(service), "needs a value"),
            (quote!("hello"), "expected `key = value`"),
        ];
        for (tokens, expected) in cases {
            let input = tokens.to_string();
            let error = parse(tokens).err().unwrap_or_default();
            assert!(
                error.contains(expected),
                "`{input}`: expected an error containing {expected:?}, got {error:?}"
            );
        }
    }
}
