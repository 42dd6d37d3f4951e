//! `cloudrun-test doctor`: which credentials are used and why, who they are, and what
//! the token for the service looks like. Never prints a token.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudrun_test::diagnose::{NoAnswer, Place};
use cloudrun_test::reqwest::{self, StatusCode};
use cloudrun_test::{ChainStep, Client, Credentials, IdToken, Probe, StepOutcome, Url};

/// Explain the credential choice: the source used and why earlier ones were skipped,
/// the identity, and the audience and expiry of a token (never the token).
///
/// Without --url, --audience or --service, a token is minted for a placeholder
/// audience to check that the credentials work. Examples:
///
///   cloudrun-test doctor
///   cloudrun-test doctor --url https://hello-123456789.europe-west1.run.app
///   cloudrun-test doctor --service hello     # looked up like #[cloudrun_test(service = "hello")]
///
/// With --url or --service it also sends one `GET` to the service and says whether
/// it was accepted; if not, why (401: wrong audience, expired, not an identity token;
/// 403: the identity lacks roles/run.invoker; no answer: the URL or the service's
/// ingress) and the command that fixes it. Exits 0 when all is well, 1 otherwise.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DoctorArgs {
    /// A URL of the service; the token audience is its origin.
    #[arg(long, conflicts_with_all = ["audience", "service"])]
    url: Option<String>,
    /// The token audience: the service URL (origin) or a custom audience.
    #[arg(long, conflicts_with = "service")]
    audience: Option<String>,
    /// A Cloud Run service name, resolved as the attribute does (environment,
    /// cloudrun-test.toml, Admin API).
    #[arg(long)]
    service: Option<String>,
}

/// For messages when no audience was asked for.
const PLACEHOLDER_AUDIENCE: &str = "https://cloudrun-test-doctor.invalid";
/// The limit for the live request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The emulator's explanation of a 401/403 (real Cloud Run sends no such header).
const EMULATOR_REASON: &str = "x-cloudrun-test-emulator-reason";

pub fn run(args: DoctorArgs) -> Result<ExitCode, String> {
    let (credentials, steps) = Credentials::from_env_explained();
    println!("{}", chain_report(&steps));
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(error) => {
            if steps.is_empty() {
                println!("\nNo usable credentials: {error}");
            } else {
                println!(
                    "\nNo usable credentials: set up one of the sources above (`to use it:` says how)."
                );
            }
            // What the service says to a caller without a token.
            if let Some(url) = args.url.as_deref().filter(|url| Url::parse(url).is_ok())
                && let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            {
                let report = runtime.block_on(async {
                    match Client::builder().url(url).without_auth().build().await {
                        Ok(client) => live_request(&client, false).await.1,
                        Err(error) => format!(
                            "\nLive request: GET {url} (without a token)\nVerdict: NOT SENT\n  {}",
                            indent(&error.to_string())
                        ),
                    }
                });
                println!("{report}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("\nCredentials: {}", credentials.describe());
    if let Some(identity) = credentials.identity() {
        println!("Identity:    {identity}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the async runtime failed: {error}"))?;
    let minted = runtime.block_on(async {
        if let Some(service) = &args.service {
            let client = Client::builder()
                .credentials(credentials.clone())
                .service(service)
                .build()
                .await?;
            println!("Service:     {service} at {}", client.url());
            let token = client.id_token().await?;
            return Ok::<_, cloudrun_test::Error>((
                client.audience().to_owned(),
                token,
                Some(client),
            ));
        }
        if let Some(url) = &args.url {
            // Resolved as the attribute resolves `url = "..."` (audience settings included).
            let client = Client::builder()
                .credentials(credentials.clone())
                .url(url)
                .build()
                .await?;
            println!("Service URL: {}", client.url());
            let token = client.id_token().await?;
            return Ok((client.audience().to_owned(), token, Some(client)));
        }
        let audience = args
            .audience
            .clone()
            .unwrap_or_else(|| PLACEHOLDER_AUDIENCE.to_owned());
        let token = credentials.id_token(&audience).await?;
        Ok((audience, token, None))
    });
    match minted {
        Ok((audience, token, client)) => {
            println!("{}", token_report(&audience, &token));
            let Some(client) = client else {
                return Ok(ExitCode::SUCCESS);
            };
            // The live request: does the service accept the token?
            let (ok, report) = runtime.block_on(live_request(&client, true));
            println!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(error) => {
            // A refused setting (e.g. a plain-http URL, which may not get a token) is no
            // failed mint.
            use cloudrun_test::ErrorKind;
            let stage = match error.kind() {
                ErrorKind::NoCredentials
                | ErrorKind::CredentialsFile
                | ErrorKind::TokenEndpoint => "Minting a token failed",
                _ => "Setting up the client failed",
            };
            println!("\n{stage}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One `GET` of the service URL, sent once through the client (no retry, no redirect
/// followed, no new token forced), and what the answer (or the failure to get one)
/// means, with the fix: whether all is well, and the report.
async fn live_request(client: &Client, with_token: bool) -> (bool, String) {
    let url = client.url();
    let mut report = format!("\nLive request: GET {url}");
    if !with_token {
        report.push_str(" (without a token)");
    }
    let probe = client.get(url.as_str()).timeout(TIMEOUT).probe().await;
    match probe {
        Ok(Probe::Answered {
            response, verdict, ..
        }) => {
            let status = response.status();
            report.push_str(&format!(" -> {status}"));
            report.push_str(&format!(
                "\nVerdict: {}",
                if verdict.ok() { "OK" } else { "REFUSED" }
            ));
            report.push_str(&format!("\n  {}: {}", verdict.status, verdict.evidence));
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                && let Some(reason) = response
                    .headers()
                    .get(EMULATOR_REASON)
                    .and_then(|value| value.to_str().ok())
            {
                let reason = cloudrun_test::redact(reason);
                report.push_str(&format!("\n  (the emulator says: {reason})"));
            }
            if let Some(fix) = &verdict.fix {
                report.push_str(&format!("\n  fix: {fix}"));
            }
            (verdict.ok(), report)
        }
        Ok(Probe::Unanswered {
            cause,
            error,
            place,
            ..
        }) => {
            report.push_str(&unreachable_report(url, &place, cause, &error));
            (false, report)
        }
        Err(error) => {
            report.push_str(&format!(
                "\nVerdict: NOT SENT\n  {}",
                indent(&error.to_string())
            ));
            (false, report)
        }
    }
}

/// A multi-line message under a verdict line: its later lines indented alike.
fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// No answer at all: DNS, connection, TLS or time-out, and what to check.
fn unreachable_report(url: &Url, place: &Place, cause: NoAnswer, error: &reqwest::Error) -> String {
    let mut chain = String::new();
    // reqwest's own message repeats the URL: start from its causes.
    let mut source: Option<&dyn std::error::Error> =
        std::error::Error::source(error).or(Some(error as &dyn std::error::Error));
    while let Some(cause) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(0);
    let service = place.service.as_deref().unwrap_or("SERVICE");
    let region = place
        .region
        .as_deref()
        .map(|region| format!(" --region {region}"))
        .unwrap_or_default();
    let describe = format!("gcloud run services describe {service}{region}");
    // The client's rules for telling the causes apart, with doctor's words.
    let (what, fix) = match cause {
        NoAnswer::Dns => (
            format!("the host {host} does not resolve (DNS)"),
            format!(
                "check the URL for typos; the service's URL is shown by `{describe} --format='value(status.url)'`"
            ),
        ),
        NoAnswer::Timeout => (
            format!("no answer within {}s", TIMEOUT.as_secs()),
            format!(
                "a cold start this long means the container starts slowly or hangs; see its logs \
                 (`gcloud run services logs read {service}{region}`); if the connection itself never \
                 opens, check the service's ingress (below)"
            ),
        ),
        NoAnswer::Connect => (
            format!("could not connect to {host}:{port}"),
            format!(
                "check the URL (`{describe} --format='value(status.url)'`); a service whose ingress is \
                 `internal` or `internal-and-cloud-load-balancing` is reachable only from its VPC or \
                 through its load balancer: `{describe} --format='value(metadata.annotations.\"run.googleapis.com/ingress\")'`"
            ),
        ),
        _ => (
            "the request failed".to_owned(),
            format!("check the URL (`{describe} --format='value(status.url)'`)"),
        ),
    };
    format!("\nVerdict: UNREACHABLE\n  {what}: {chain}\n  fix: {fix}")
}

/// The chain, one numbered line per source looked at.
pub fn chain_report(steps: &[ChainStep]) -> String {
    let forced = std::env::var("CLOUDRUN_TEST_CREDENTIALS")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let mut report = match forced {
        Some(name) => {
            format!("Credential chain (only `{name}`: CLOUDRUN_TEST_CREDENTIALS is set):")
        }
        None => {
            "Credential chain (the first source present is used; CLOUDRUN_TEST_CREDENTIALS=NAME \
                 forces one):"
                .to_owned()
        }
    };
    let mut number = 0;
    for step in steps {
        let line = match &step.outcome {
            StepOutcome::Chosen { description } => {
                format!("chosen: {description}")
            }
            StepOutcome::Skipped { reason, setup } => {
                format!("skipped: {reason}\n        to use it: {setup}")
            }
            StepOutcome::Failed { error } => format!(
                "present but unusable, so the chain stopped:\n        {}",
                error.to_string().replace('\n', "\n        ")
            ),
            StepOutcome::Wraps { description } => {
                report.push_str(&format!("\n  then {}: {description}", step.looked_at));
                continue;
            }
            _ => format!("{step}"),
        };
        number += 1;
        report.push_str(&format!(
            "\n  {number}. {} [{}]: {line}",
            step.looked_at, step.source
        ));
    }
    report
}

/// Audience, identity and expiry of `token`, and what they mean; not the token.
pub fn token_report(requested: &str, token: &IdToken) -> String {
    let claims = token.claims();
    let placeholder = if requested == PLACEHOLDER_AUDIENCE {
        " (a placeholder: pass --url or --service for your service's)"
    } else {
        ""
    };
    let mut report = format!("\nToken minted for audience {requested}{placeholder}:");
    report.push_str(&format!(
        "\n  aud:   {}",
        claims.aud.as_deref().unwrap_or("(none)")
    ));
    report.push_str(&format!(
        "\n  email: {}",
        claims
            .email
            .as_deref()
            .unwrap_or("(none: Cloud Run needs an email claim to check roles/run.invoker)")
    ));
    let expires = token.expires_at();
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    report.push_str(&format!(
        "\n  expires: {} ({})",
        utc(expires),
        if left.is_zero() {
            "already expired".to_owned()
        } else {
            format!("in {} min {} s", left.as_secs() / 60, left.as_secs() % 60)
        }
    ));
    if let Some(note) = Credentials::audience_note(token, requested) {
        report.push_str(&format!("\nNote: {note}."));
    }
    report
}

/// `2026-01-31 12:00:00 UTC`.
fn utc(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
