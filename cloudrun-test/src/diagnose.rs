//! What an answer from a Cloud Run service means, and the one command that fixes it:
//! the one engine behind the client's diagnoses and the `cloudrun-test` command's
//! (`curl` after a 401/403, `doctor` after its live request).
//!
//! [`Verdict::explain`] reads a status and what was sent ([`Sent`]) into a typed
//! [`Verdict`]: its [`Cause`], the evidence and the fix. [`NoAnswer::of`] says why a
//! request got no answer at all. The client's diagnosis goes to stderr (libtest
//! captures it and shows it when the test fails) and rides on the response as a
//! [`Diagnosis`]. Everything is built from the token's claims, never from the token.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode, Url};

use crate::resolve::{Target, origin};
use crate::retry;
use crate::token::{Claims, IdToken, Token};

mod place;

pub use place::Place;

/// The audience of the identity tokens gcloud prints for user accounts; Cloud Run
/// accepts it for development.
const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";

/// Why the service refused a request, or why it kept answering 429/503, with the fix.
/// Attached to the response:
///
/// ```no_run
/// # async fn f(client: cloudrun_test::Client) {
/// let response = client.get("/").send().await.unwrap();
/// if let Some(diagnosis) = response.extensions().get::<cloudrun_test::Diagnosis>() {
///     println!("{diagnosis}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    message: String,
}

impl Diagnosis {
    pub(crate) fn new(message: String) -> Diagnosis {
        Diagnosis { message }
    }

    /// The explanation and its `fix:` line.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What was sent, and where: the facts [`Verdict::explain`] reads an answer with.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    /// Where the request went.
    pub url: &'a Url,
    /// The audience tokens are minted for: the URL's origin, unless one was set.
    pub audience: &'a str,
    /// What the service accepts as audience, when known (from the Admin API); empty
    /// when not, and then the URL's origin is assumed.
    pub accepted_audiences: &'a [String],
    /// The token sent, `None` when none was.
    pub token: Option<&'a IdToken>,
    /// The identity of the credentials, when the token does not name it.
    pub identity: Option<&'a str>,
    /// The service's name, region and project, for the `gcloud` commands in fixes.
    pub service: Option<&'a str>,
    /// See [`Sent::service`].
    pub region: Option<&'a str>,
    /// See [`Sent::service`].
    pub project: Option<&'a str>,
}

impl<'a> Sent<'a> {
    /// What a client sent to `url`, for the service `target` living at `place`.
    pub(crate) fn by_client(
        target: &'a Target,
        place: &'a Place,
        url: &'a Url,
        token: Option<&'a IdToken>,
        identity: Option<&'a str>,
    ) -> Sent<'a> {
        Sent {
            url,
            audience: &target.audience,
            accepted_audiences: &target.accepted_audiences,
            token,
            identity,
            service: place.service.as_deref(),
            region: place.region.as_deref(),
            project: place.project.as_deref(),
        }
    }
}

/// What an answer says went wrong (or right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// 2xx or 3xx: the request went through.
    Accepted,
    /// Past Cloud Run's IAM check; the status (a 404, a 4xx) is the service's own.
    ServiceAnswered,
    /// Past Cloud Run's IAM check, but 429 or 5xx: the service failed or is starting.
    ServiceFailed,
    /// 401 or 403 and no token was sent.
    NoToken,
    /// 401: the token is not a JWT (e.g. an OAuth access token).
    NotAnIdentityToken,
    /// 401: a JWT, but not a Google identity token (no `aud`/`exp`, another issuer).
    NotGoogleIdentityToken,
    /// 401: the token has expired.
    Expired,
    /// 401: the token is for an audience the service does not accept.
    WrongAudience,
    /// 401: the token is for the caller's custom audience, which the service may not list.
    CustomAudience,
    /// 401: the claims are right, so the signature did not verify.
    BadSignature,
    /// 403: the identity lacks `roles/run.invoker` on the service.
    NotInvoker,
}

/// The verdict on an answer: what failed, the evidence, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The HTTP status answered.
    pub status: u16,
    /// What it means.
    pub cause: Cause,
    /// Why: what the status and the token's claims show (never the token).
    pub evidence: String,
    /// The command or setting that fixes it, for failures.
    pub fix: Option<String>,
}

impl Verdict {
    /// The verdict on `status`, answered to what `sent` describes. Its words quote the
    /// token's claims and the URL, redacted of anything secret.
    pub fn explain(status: u16, sent: &Sent<'_>) -> Verdict {
        let verdict = verdict(status, sent);
        Verdict {
            evidence: crate::redact::redact(&verdict.evidence),
            fix: verdict.fix.map(|fix| crate::redact::redact(&fix)),
            ..verdict
        }
    }

    /// Whether the request got past Cloud Run and the service did not fail.
    pub fn ok(&self) -> bool {
        matches!(self.cause, Cause::Accepted | Cause::ServiceAnswered)
    }
}

/// Why a request got no answer at all, by the client's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoAnswer {
    /// The host name does not resolve: the URL is likely wrong.
    Dns,
    /// No answer in time.
    Timeout,
    /// Nothing accepted the connection, or it was reset.
    Connect,
    /// Anything else (TLS, a malformed answer...).
    Other,
}

impl NoAnswer {
    /// Which of those `error` is.
    pub fn of(error: &reqwest::Error) -> NoAnswer {
        if retry::is_dns_failure(error) {
            NoAnswer::Dns
        } else if error.is_timeout() {
            NoAnswer::Timeout
        } else if error.is_connect() || retry::is_transient(error) {
            NoAnswer::Connect
        } else {
            NoAnswer::Other
        }
    }
}

/// [`Verdict::explain`], unredacted.
fn verdict(status: u16, sent: &Sent<'_>) -> Verdict {
    let (cause, evidence, fix) = match (status, sent.token) {
        (200..=399, _) => (Cause::Accepted, "the request was accepted".to_owned(), None),
        (401 | 403, None) => (
            Cause::NoToken,
            "no token was sent, and the service is private".to_owned(),
            Some(
                "configure credentials (GOOGLE_APPLICATION_CREDENTIALS or \
                 CLOUDRUN_TEST_ID_TOKEN); `cloudrun-test doctor` shows what is found"
                    .to_owned(),
            ),
        ),
        (401, Some(token)) => {
            let refused = classify_401(&token.0, sent.accepted_audiences, sent.audience, sent.url);
            let (evidence, fix) = explain_401(&refused, sent);
            (refused.cause(), evidence, Some(fix))
        }
        (403, Some(_)) => {
            let identity = identity(sent);
            let member = if identity.ends_with(".gserviceaccount.com") {
                format!("serviceAccount:{identity}")
            } else {
                format!("user:{identity}")
            };
            (
                Cause::NotInvoker,
                format!(
                    "the token is valid, but {identity} may not invoke the service (it lacks \
                     roles/run.invoker, if Cloud Run sent the 403 and not your app)"
                ),
                Some(grant_invoker(sent, &member, under_emulate())),
            )
        }
        (404, _) => (
            Cause::ServiceAnswered,
            "Cloud Run let the request through and the service answered 404 (its route for \
             this path is missing, not a permission problem)"
                .to_owned(),
            None,
        ),
        (429 | 500..=599, _) => (
            Cause::ServiceFailed,
            format!(
                "the token was accepted (past Cloud Run's IAM check), but the service failed: \
                 its code answered {status}, or Cloud Run could not start or reach an instance"
            ),
            Some(format!(
                "read the service's logs: gcloud run services logs read {}{}",
                sent.service.unwrap_or("SERVICE"),
                sent.region
                    .map(|region| format!(" --region {region}"))
                    .unwrap_or_default()
            )),
        ),
        (_, _) => (
            Cause::ServiceAnswered,
            "the token was accepted (past Cloud Run's IAM check); the status comes from the \
             service itself"
                .to_owned(),
            None,
        ),
    };
    Verdict {
        status,
        cause,
        evidence,
        fix,
    }
}

/// Whether this process runs under `cloudrun-test emulate` (which says so in
/// `CLOUDRUN_TEST_EMULATOR`): its fixes are then the command's flags.
fn under_emulate() -> bool {
    matches!(crate::settings::Emulated::get(), Ok(Some(_)))
}

/// How `member` gets `roles/run.invoker` on the service: the `emulate` command's
/// `--invoker` flag under it (the emulator's grants are the command's flags), else
/// gcloud's binding.
fn grant_invoker(sent: &Sent<'_>, member: &str, under_emulate: bool) -> String {
    if under_emulate {
        return format!(
            "add `--invoker {member}` to the `cloudrun-test emulate` command (without \
             --invoker, only the --as account may invoke)"
        );
    }
    let project = sent
        .project
        .map(|project| format!(" --project {project}"))
        .unwrap_or_default();
    format!(
        "gcloud run services add-iam-policy-binding {} --region {}{project} \
         --member={member} --role=roles/run.invoker",
        sent.service.unwrap_or("SERVICE"),
        sent.region.unwrap_or("REGION"),
    )
}

/// Who the request was sent as: the token's email, else the credentials' identity.
fn identity(sent: &Sent<'_>) -> String {
    sent.token
        .and_then(|token| token.claims().email.clone())
        .or_else(|| sent.identity.map(str::to_owned))
        .unwrap_or_else(|| "the caller".into())
}

/// Which of the reasons Cloud Run has for a 401 the token shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a JWT at all (e.g. an OAuth access token).
    NotAnIdentityToken,
    /// A JWT, but not one Google issues as an identity token (no `aud`/`exp`, other issuer).
    NotGoogleIdentityToken(String),
    Expired {
        ago: Duration,
    },
    WrongAudience {
        audience: String,
        accepted: Vec<String>,
        /// Whether the Admin API said what the service accepts (else it is the URL).
        known: bool,
    },
    /// The token is for the client's custom audience, not the service URL, and what
    /// the service accepts is unknown (its URL was given, no Admin API lookup).
    CustomAudience {
        audience: String,
        url: String,
    },
    /// Nothing wrong in the claims: the signature does not verify.
    BadSignature,
}

impl Refused {
    fn cause(&self) -> Cause {
        match self {
            Refused::NotAnIdentityToken => Cause::NotAnIdentityToken,
            Refused::NotGoogleIdentityToken(_) => Cause::NotGoogleIdentityToken,
            Refused::Expired { .. } => Cause::Expired,
            Refused::WrongAudience { .. } => Cause::WrongAudience,
            Refused::CustomAudience { .. } => Cause::CustomAudience,
            Refused::BadSignature => Cause::BadSignature,
        }
    }
}

/// Reads the reason for a 401 off the token's claims. `accepted` is what the service
/// accepts as audience, when the Admin API said so; else the URL's origin is, and a
/// token for `expected` (the audience the client mints for) may be.
pub(crate) fn classify_401(
    token: &Token,
    accepted: &[String],
    expected: &str,
    url: &Url,
) -> Refused {
    let Some(claims) = Claims::decode_unverified(token.secret()) else {
        return Refused::NotAnIdentityToken;
    };
    let (Some(audience), Some(exp)) = (claims.aud.clone(), claims.exp) else {
        return Refused::NotGoogleIdentityToken("it has no `aud` or no `exp` claim".to_owned());
    };
    match claims.iss.as_deref() {
        Some("https://accounts.google.com" | "accounts.google.com") => {}
        other => {
            return Refused::NotGoogleIdentityToken(format!(
                "its issuer is {}, not https://accounts.google.com",
                other.unwrap_or("missing")
            ));
        }
    }
    // An `exp` past what the clock holds has not come.
    if let Some(expires) = crate::token::unix_time(exp)
        && let Ok(ago) = SystemTime::now().duration_since(expires)
    {
        return Refused::Expired { ago };
    }
    let bare = |aud: &str| aud.trim_end_matches('/').to_owned();
    let known = !accepted.is_empty();
    let mut accepted = accepted.to_vec();
    if !known {
        let here = origin(url);
        if bare(&audience) == bare(expected) && bare(expected) != bare(&here) {
            return Refused::CustomAudience {
                audience,
                url: here,
            };
        }
        accepted.push(here);
    }
    let fits = audience == GCLOUD_CLIENT_ID
        || accepted
            .iter()
            .any(|accepted| bare(accepted) == bare(&audience));
    if !fits {
        return Refused::WrongAudience {
            audience,
            accepted,
            known,
        };
    }
    Refused::BadSignature
}

/// What the client knows about a request the service refused with 401 or 403.
pub(crate) struct Refusal<'a> {
    pub target: &'a Target,
    pub identity: Option<String>,
    pub token: &'a Token,
    /// Whether a new token was forced after the 401, and what came of it.
    pub reminted: Reminted,
    pub method: &'a Method,
    pub url: &'a Url,
    pub status: StatusCode,
    /// The emulator's `x-cloudrun-test-emulator-reason` header, if any.
    pub reason: Option<&'a str>,
}

/// What became of forcing a new token after a 401 ([`crate::remint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reminted {
    /// No new token was forced (a 403, or the request could not be sent again).
    No,
    /// A new token was forced, and sent; after a 401, it was refused too.
    Forced,
    /// Not tried: this long ago a freshly minted token for the same credentials and
    /// audience was refused too.
    HeldOff(Duration),
}

/// The explanation of a 401 or 403 from Cloud Run, with the fix.
pub(crate) fn explain_refusal(refusal: &Refusal<'_>) -> String {
    let Refusal {
        target,
        method,
        url,
        status,
        ..
    } = refusal;
    let token = IdToken((*refusal.token).clone());
    let place = Place::of(target);
    let sent = Sent::by_client(
        target,
        &place,
        url,
        Some(&token),
        refusal.identity.as_deref(),
    );
    // Unredacted: the caller redacts the whole message.
    let verdict = verdict(status.as_u16(), &sent);
    let identity = identity(&sent);
    let mut message = format!("cloudrun-test: {method} {url} answered {status} for {identity}");
    if *status == StatusCode::FORBIDDEN {
        message.push_str(&format!(".\n  {}.", capitalized(&verdict.evidence)));
    } else {
        message.push_str(&format!(
            ".\n  Cloud Run rejects bad, expired or wrong-audience tokens with 401: {}.",
            verdict.evidence
        ));
        let audience = token.claims().aud.as_deref().unwrap_or("?");
        if let Some(note) = remint_note(verdict.cause, audience, refusal.reminted) {
            message.push_str(&format!("\n  {note}"));
        }
    }
    if let Some(fix) = &verdict.fix {
        message.push_str(&format!("\n  fix: {fix}"));
    }
    if let Some(reason) = refusal.reason {
        message.push_str(&format!("\n  the emulator says: {reason}"));
    }
    message
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Why a 401 happened, and its fix.
fn explain_401(refused: &Refused, sent: &Sent<'_>) -> (String, String) {
    let here = origin(sent.url);
    let service = sent.service.unwrap_or("SERVICE");
    // An audience set to something else than the URL, and where it may come from.
    let configured = (sent.audience.trim_end_matches('/') != here).then(|| {
        format!(
            "remove `audience = \"{}\"` (from the attribute, `ClientBuilder::audience`, \
             [services.{service}] in cloudrun-test.toml, or the command's `--audience`) so that \
             tokens are minted for the service URL {here}",
            sent.audience
        )
    });
    match refused {
        Refused::NotAnIdentityToken => (
            "the token sent is not an identity token (not a JWT; an OAuth access token, such as \
             `gcloud auth print-access-token` prints, is refused)"
                .to_owned(),
            format!(
                "give an identity token: unset CLOUDRUN_TEST_ID_TOKEN to mint one from your \
                 credentials, or set it to `gcloud auth print-identity-token` (or \
                 `cloudrun-test token --audience {here}`) output"
            ),
        ),
        Refused::NotGoogleIdentityToken(why) => (
            format!("the token is not a Google identity token: {why}"),
            "mint it from Google credentials: `gcloud auth print-identity-token`, or a \
             service-account key in GOOGLE_APPLICATION_CREDENTIALS"
                .to_owned(),
        ),
        Refused::Expired { ago } => (
            format!("the token expired {}s ago", ago.as_secs()),
            "use a fresh token: unset CLOUDRUN_TEST_ID_TOKEN (or set it to a new one), and check \
             this machine's clock"
                .to_owned(),
        ),
        Refused::WrongAudience {
            audience,
            accepted,
            known,
        } => {
            let first = accepted
                .first()
                .map(String::as_str)
                .unwrap_or("https://...");
            let minted_here = audience.trim_end_matches('/') == sent.audience.trim_end_matches('/');
            // The URL's origin is what tokens are minted for without `audience`.
            let origin_accepted = accepted
                .iter()
                .any(|accepted| accepted.trim_end_matches('/') == here);
            let fix = match &configured {
                // Removing the setting is the whole fix: naming an accepted audience
                // would hard-code, say, the emulator's random port.
                Some(_) if minted_here && origin_accepted => format!(
                    "remove `audience = \"{}\"` (from the attribute, `ClientBuilder::audience`, \
                     [services.{service}] in cloudrun-test.toml, or the command's `--audience`): \
                     it defaults to the URL's origin, {here}, which the service accepts",
                    sent.audience
                ),
                Some(remove) if minted_here => {
                    format!(
                        "{remove}, or set it to one the service accepts (e.g. `audience = \"{first}\"`)"
                    )
                }
                _ => format!(
                    "mint tokens for one of those: `audience = \"{first}\"` in the attribute (or \
                     `audience` under [services.{service}] in cloudrun-test.toml, or the \
                     command's `--audience {first}`); a token in CLOUDRUN_TEST_ID_TOKEN is sent \
                     as is, whatever its audience"
                ),
            };
            let evidence = if *known {
                format!(
                    "wrong audience: the token is for {audience}, but the service accepts {}",
                    accepted.join(", ")
                )
            } else {
                format!(
                    "wrong audience: the token is for {audience}, but the request went to {here}"
                )
            };
            (evidence, fix)
        }
        Refused::CustomAudience { audience, url } => (
            format!(
                "maybe a wrong audience: the token is for {audience} (the client's `audience`), \
                 not for the service URL {url}: Cloud Run accepts it only if the service lists it \
                 among its custom audiences"
            ),
            format!(
                "{}, or add it to the service: `gcloud run services update {service} \
                 --add-custom-audiences={audience}`",
                configured.unwrap_or_else(|| format!("mint tokens for {url}"))
            ),
        ),
        Refused::BadSignature => (
            format!(
                "the token's claims are right (audience {}, not expired), so its signature \
                 did not verify: it was not issued by Google, was altered, or was signed by a \
                 key that has since been rotated out",
                sent.token
                    .and_then(|token| token.claims().aud.as_deref())
                    .unwrap_or("?"),
            ),
            "mint tokens from Google credentials (not from another environment or an emulator \
             the service does not trust); `cloudrun-test doctor --url URL` checks the whole chain"
                .to_owned(),
        ),
    }
}

/// After a 401 that a new token did not fix (or that a recent one did not): that
/// re-minting does not help, and why, for the `cause` of the refusal.
fn remint_note(cause: Cause, audience: &str, reminted: Reminted) -> Option<String> {
    let why = match cause {
        Cause::WrongAudience | Cause::CustomAudience => {
            format!("every new token is for the same audience, {audience}, which is the problem")
        }
        Cause::BadSignature => {
            "the service does not trust the keys that sign these credentials' tokens".to_owned()
        }
        _ => "the credentials give the same kind of token every time".to_owned(),
    };
    let hold_off = crate::remint::HOLD_OFF.as_secs();
    match reminted {
        Reminted::No => None,
        Reminted::Forced => Some(format!(
            "Re-minting did not help: a freshly minted token was refused too ({why}). No new \
             token is forced for this identity and audience for {hold_off}s: requests meanwhile \
             get their 401 at once."
        )),
        Reminted::HeldOff(ago) => Some(format!(
            "Re-minting does not help: {}s ago a freshly minted token for this identity and \
             audience was refused too ({why}), so this 401 was not retried with a new one (at \
             most one forced re-mint per identity and audience every {hold_off}s).",
            ago.as_secs()
        )),
    }
}

/// After retries ran out on 429/503 (or the like): the service is starting or overloaded.
pub(crate) fn explain_unavailable(
    target: &Target,
    method: &Method,
    url: &Url,
    status: StatusCode,
    retries: u32,
    waited: Duration,
) -> String {
    let service = target.service.as_deref().unwrap_or("SERVICE");
    let region = target.region.as_deref().unwrap_or("REGION");
    format!(
        "cloudrun-test: {method} {url} answered {status} after {retries} retries over {:.1}s: the \
         service is starting (a cold start) or has no free instance.\n  fix: wait for it before the \
         tests with `ClientBuilder::wait_until_ready`, allow more retries with \
         `ClientBuilder::retry(RetryPolicy::default().max_retries(N))`, or keep an instance warm: \
         `gcloud run services update {service} --region {region} --min-instances 1`",
        waited.as_secs_f64()
    )
}

/// A request that got no answer: whether the URL or the network (ingress, proxy,
/// firewall) is the likely cause, and the fix. Starts with what went wrong.
pub(crate) fn explain_no_answer(
    target: &Target,
    url: &Url,
    error: &reqwest::Error,
    retries: u32,
) -> String {
    let host = url.host_str().unwrap_or("?");
    let service = target.service.as_deref().unwrap_or("SERVICE");
    let region = target.region.as_deref().unwrap_or("REGION");
    let describe = format!(
        "`gcloud run services describe {service} --region {region} --format='value(status.url)'`"
    );
    let what = crate::error::describe_http_error(error);
    let after = if retries > 0 {
        format!(" (after {retries} retries)")
    } else {
        String::new()
    };
    match NoAnswer::of(error) {
        NoAnswer::Dns => format!(
            "{what}{after}\n  the host name {host} does not resolve: the service URL is likely wrong \
             (a typo, a deleted service, another project's URL).\n  fix: get the URL with {describe} \
             and give it with `url = \"...\"` or CLOUDRUN_TEST_URL_{}",
            service.to_ascii_uppercase().replace('-', "_")
        ),
        NoAnswer::Timeout => format!(
            "{what}{after}\n  no answer in time: the service is slow to answer, or the network drops \
             the connection (a proxy, a firewall, or an ingress setting that only admits internal \
             traffic).\n  fix: raise the limit (`ClientBuilder::timeout`, `RequestBuilder::timeout`), or \
             check the ingress: `gcloud run services describe {service} --region {region} \
             --format='value(spec.template.metadata.annotations)'`; `--ingress all` admits callers \
             from outside Google Cloud"
        ),
        NoAnswer::Connect => {
            let local = crate::transport::is_loopback(url);
            let hint = if local {
                format!(
                    "is the service running on {host}:{}?",
                    url.port_or_known_default().unwrap_or(0)
                )
            } else {
                format!(
                    "check the service URL ({describe}); behind a custom domain or a load balancer, the \
                 service's ingress setting may admit internal traffic only: allow outside callers \
                 with `gcloud run services update {service} --region {region} --ingress all`"
                )
            };
            format!(
                "{what}{after}\n  the connection to {host} failed: nothing accepted it, or it was reset.\n  fix: {hint}"
            )
        }
        NoAnswer::Other => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::time::UNIX_EPOCH;

    fn jwt(claims: serde_json::Value) -> Token {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        Token::from_jwt(format!("{header}.{payload}.c2lnbmF0dXJl"))
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_401_is_classified_from_the_claims() {
        let url: Url = "https://hello-1.europe-west1.run.app/x".parse().unwrap();
        let expected = "https://hello-1.europe-west1.run.app";
        let google = "https://accounts.google.com";
        let classify =
            |token: &Token, accepted: &[String]| classify_401(token, accepted, expected, &url);

        let opaque = Token::from_access_token("ya29.opaque".into(), Duration::from_secs(60));
        assert_eq!(classify(&opaque, &[]), Refused::NotAnIdentityToken);
        let no_aud = jwt(serde_json::json!({"iss": google, "exp": now() + 60}));
        assert!(matches!(
            classify(&no_aud, &[]),
            Refused::NotGoogleIdentityToken(_)
        ));
        let other_issuer =
            jwt(serde_json::json!({"iss": "me", "aud": expected, "exp": now() + 60}));
        assert!(
            matches!(classify(&other_issuer, &[]), Refused::NotGoogleIdentityToken(why) if why.contains("me"))
        );
        let expired = jwt(serde_json::json!({"iss": google, "aud": expected, "exp": now() - 100}));
        assert!(
            matches!(classify(&expired, &[]), Refused::Expired { ago } if ago >= Duration::from_secs(100))
        );
        let elsewhere = jwt(
            serde_json::json!({"iss": google, "aud": "https://other.example.com", "exp": now() + 60}),
        );
        assert!(
            matches!(classify(&elsewhere, &[]), Refused::WrongAudience { accepted, known: false, .. } if accepted == [expected])
        );
        let fine = jwt(
            serde_json::json!({"iss": google, "aud": format!("{expected}/"), "exp": now() + 60}),
        );
        assert_eq!(classify(&fine, &[]), Refused::BadSignature);

        // What the Admin API says the service accepts wins over the client's guess.
        let custom = vec!["https://hello.example.com".to_owned()];
        assert!(matches!(
            classify(&fine, &custom),
            Refused::WrongAudience { known: true, .. }
        ));
        let for_custom = jwt(
            serde_json::json!({"iss": google, "aud": "https://hello.example.com", "exp": now() + 60}),
        );
        assert_eq!(classify(&for_custom, &custom), Refused::BadSignature);
        let gcloud_user =
            jwt(serde_json::json!({"iss": google, "aud": GCLOUD_CLIENT_ID, "exp": now() + 60}));
        assert_eq!(classify(&gcloud_user, &custom), Refused::BadSignature);

        // The client's own custom audience, with nothing known of what the service
        // accepts: the audience, not the signature, is the suspect.
        assert_eq!(
            classify_401(&for_custom, &[], "https://hello.example.com", &url),
            Refused::CustomAudience {
                audience: "https://hello.example.com".into(),
                url: expected.into(),
            }
        );
    }

    /// An `audience` set to something the service does not accept, when the URL's
    /// origin is accepted: the fix is removing it, not naming an accepted one (under
    /// the emulator, a random port).
    #[test]
    fn a_wrong_configured_audience_is_removed_when_the_origin_is_accepted() {
        let url = Url::parse("http://127.0.0.1:40041/x").unwrap();
        let configured = "https://hello.example.com";
        let token = IdToken(jwt(serde_json::json!({
            "iss": "https://accounts.google.com",
            "aud": configured,
            "exp": now() + 100,
        })));
        let explain = |accepted: &[String]| {
            Verdict::explain(
                401,
                &Sent {
                    audience: configured,
                    accepted_audiences: accepted,
                    ..sent(&url, Some(&token))
                },
            )
        };
        let origin = ["http://127.0.0.1:40041/".to_owned()];
        let verdict = explain(&origin);
        assert_eq!(verdict.cause, Cause::WrongAudience);
        assert_eq!(
            verdict.fix.unwrap(),
            "remove `audience = \"https://hello.example.com\"` (from the attribute, \
             `ClientBuilder::audience`, [services.hello] in cloudrun-test.toml, or the command's \
             `--audience`): it defaults to the URL's origin, http://127.0.0.1:40041, which the \
             service accepts"
        );
        // When the origin is not accepted either, an accepted audience is named.
        let elsewhere = ["https://hello-1.europe-west1.run.app".to_owned()];
        let fix = explain(&elsewhere).fix.unwrap();
        assert!(
            fix.ends_with(
                "or set it to one the service accepts (e.g. `audience = \
                 \"https://hello-1.europe-west1.run.app\"`)"
            ),
            "{fix}"
        );
    }

    fn sent<'a>(url: &'a Url, token: Option<&'a IdToken>) -> Sent<'a> {
        Sent {
            url,
            audience: "https://hello-1.europe-west1.run.app",
            accepted_audiences: &[],
            token,
            identity: None,
            service: Some("hello"),
            region: Some("europe-west1"),
            project: None,
        }
    }

    #[test]
    fn each_401_cause_is_told_apart() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/x").unwrap();
        let google = "https://accounts.google.com";
        let explain = |claims: serde_json::Value| {
            Verdict::explain(401, &sent(&url, Some(&IdToken(jwt(claims)))))
        };
        let expired = explain(
            serde_json::json!({"iss": google, "aud": "https://hello-1.europe-west1.run.app", "exp": now() - 10}),
        );
        assert_eq!(expired.cause, Cause::Expired);
        assert!(expired.evidence.contains("expired"), "{}", expired.evidence);
        let wrong = explain(
            serde_json::json!({"iss": google, "aud": "https://other.run.app", "exp": now() + 100}),
        );
        assert_eq!(wrong.cause, Cause::WrongAudience);
        assert!(
            wrong.evidence.contains(
                "wrong audience: the token is for https://other.run.app, but the request went to \
                 https://hello-1.europe-west1.run.app"
            ),
            "{}",
            wrong.evidence
        );
        assert!(
            wrong
                .fix
                .unwrap()
                .contains("--audience https://hello-1.europe-west1.run.app")
        );
        let opaque = IdToken(Token::from_access_token(
            "ya29.opaque".into(),
            Duration::from_secs(60),
        ));
        let verdict = Verdict::explain(401, &sent(&url, Some(&opaque)));
        assert_eq!(verdict.cause, Cause::NotAnIdentityToken);
        assert!(verdict.evidence.contains("not an identity token"));
        let user = explain(
            serde_json::json!({"iss": google, "aud": GCLOUD_CLIENT_ID, "exp": now() + 100}),
        );
        assert_eq!(user.cause, Cause::BadSignature);
        assert!(!user.ok());
    }

    #[test]
    fn claims_that_carry_secrets_are_redacted() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/").unwrap();
        let token = IdToken(jwt(serde_json::json!({
            "iss": "https://accounts.google.com",
            "aud": "access_token=SECRET1",
            "email": "password: SECRET2",
            "exp": now() + 100,
        })));
        for status in [401, 403] {
            let verdict = Verdict::explain(status, &sent(&url, Some(&token)));
            let text = format!("{} {}", verdict.evidence, verdict.fix.unwrap_or_default());
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn a_403_names_the_member_to_grant() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/").unwrap();
        let token = IdToken(jwt(serde_json::json!({"email": "me@example.com"})));
        let verdict = Verdict::explain(403, &sent(&url, Some(&token)));
        assert_eq!(verdict.cause, Cause::NotInvoker);
        assert!(verdict.evidence.contains("me@example.com"));
        assert_eq!(
            verdict.fix.unwrap(),
            "gcloud run services add-iam-policy-binding hello --region europe-west1 \
             --member=user:me@example.com --role=roles/run.invoker"
        );
        // Under `cloudrun-test emulate`, the grant is the command's flag.
        let emulated = grant_invoker(&sent(&url, Some(&token)), "user:me@example.com", true);
        assert_eq!(
            emulated,
            "add `--invoker user:me@example.com` to the `cloudrun-test emulate` command \
             (without --invoker, only the --as account may invoke)"
        );
        let none = Verdict::explain(403, &sent(&url, None));
        assert_eq!(none.cause, Cause::NoToken);
        assert!(none.evidence.contains("no token"));
        assert!(Verdict::explain(404, &sent(&url, None)).ok());
        assert!(!Verdict::explain(503, &sent(&url, None)).ok());
    }
}
