//! `cloudrun-test token`: one identity token on stdout, for scripts and `curl`.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};

use cloudrun_test::{Credentials, IdToken};

/// Print an identity token for an audience (and a newline), nothing else, on stdout.
///
/// The credential source used is named on stderr. Examples:
///
///   cloudrun-test token --audience https://hello-123456789.europe-west1.run.app
///   cloudrun-test token --url https://hello-123456789.europe-west1.run.app/some/path
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TokenArgs {
    /// The token's audience: the service URL (origin, no path) or a custom audience.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    audience: Option<String>,
    /// A URL of the service; the audience is its origin.
    #[arg(long)]
    url: Option<String>,
}

pub fn run(args: TokenArgs) -> Result<ExitCode, String> {
    let audience = match (args.audience, args.url) {
        (Some(audience), _) => audience,
        (None, Some(url)) => {
            let url = reqwest_url(&url)?;
            url.origin().ascii_serialization()
        }
        (None, None) => unreachable!("clap requires --audience or --url"),
    };
    let credentials = Credentials::from_env().map_err(|error| error.to_string())?;
    let token = id_token(&credentials, &audience)?;
    eprintln!(
        "cloudrun-test: token for {audience} from {}",
        credentials.describe()
    );
    if let Some(note) = Credentials::audience_note(&token, &audience) {
        eprintln!("cloudrun-test: note: {note}");
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.as_str())
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("writing the token to stdout failed: {error}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The identity token for `audience`. A cached one (in memory or on disk) is ready at
/// the first poll, so the warm path starts no runtime; only a mint needs one.
pub(crate) fn id_token(credentials: &Credentials, audience: &str) -> Result<IdToken, String> {
    let mut future = std::pin::pin!(credentials.id_token(audience));
    let mut context = Context::from_waker(Waker::noop());
    let result = match future.as_mut().poll(&mut context) {
        Poll::Ready(result) => result,
        // Pending: the mint runs on the library's fetcher thread; this waits for it.
        Poll::Pending => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("starting the async runtime failed: {error}"))?
            .block_on(future),
    };
    result.map_err(|error| error.to_string())
}

fn reqwest_url(text: &str) -> Result<cloudrun_test::Url, String> {
    cloudrun_test::Url::parse(text)
        .map_err(|error| format!("--url {text:?} is not a URL ({error})"))
}
