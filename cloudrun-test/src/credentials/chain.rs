//! The credential chain: which source gives the credentials, in one documented order,
//! and a record of why each earlier one was passed over.
//!
//! 1. `id-token`: `CLOUDRUN_TEST_ID_TOKEN`, a ready identity token used as is;
//! 2. `google-application-credentials`: the file `GOOGLE_APPLICATION_CREDENTIALS` names
//!    (`service_account`, `authorized_user`, `impersonated_service_account` or
//!    `external_account`);
//! 3. `adc`: gcloud's application default credentials file,
//!    `$CLOUDSDK_CONFIG/application_default_credentials.json` (default `~/.config/gcloud`);
//! 4. `gcloud`: the gcloud CLI's active account (read from its configuration files;
//!    gcloud itself runs only to mint);
//! 5. `metadata`: the metadata server, when `GCE_METADATA_HOST` is set or this is a
//!    Google Cloud machine (no network probe).
//!
//! The first source that is present wins; one that is present but broken (an
//! unreadable file) stops the chain with its error rather than being skipped.
//! `CLOUDRUN_TEST_CREDENTIALS=NAME` tries only that source.
//! `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT=SA` then makes the chosen credentials the
//! caller of IAM Credentials, minting as SA (gcloud does that itself).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::id_token_env::StaticIdToken;
use super::impersonated::Impersonated;
use super::metadata::MetadataServer;
use super::{CredentialSource, Credentials, gcloud, metadata};
use crate::error::Error;
use crate::settings::{env, gcloud_config_dir};

pub(crate) const FORCE_VARIABLE: &str = "CLOUDRUN_TEST_CREDENTIALS";
pub(crate) const IMPERSONATE_VARIABLE: &str = "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT";

/// Adds the offline way to `error` (no credentials) when no project is set either: that
/// is someone who may have no Google account at all, and `emulate` needs none.
fn offer_the_emulator(error: Error) -> Error {
    if env("CLOUDRUN_TEST_PROJECT").is_some() || env("GOOGLE_CLOUD_PROJECT").is_some() {
        return error;
    }
    let fix = error.fix().unwrap_or_default().to_owned();
    error.with_fix(format!("{fix}\n{NO_ACCOUNT}"))
}

/// How to run a suite without Google credentials.
pub(crate) const NO_ACCOUNT: &str = "no Google account? run the suite against the local \
     emulator: cloudrun-test emulate --serve 'NAME=cargo run' -- cargo test";

/// The sources in chain order: name, what is looked at, and how to set it up.
const SOURCES: [(&str, &str, &str); 5] = [
    (
        "id-token",
        "CLOUDRUN_TEST_ID_TOKEN",
        "set CLOUDRUN_TEST_ID_TOKEN to a ready identity token (e.g. from \
         `gcloud auth print-identity-token`)",
    ),
    (
        "google-application-credentials",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "set GOOGLE_APPLICATION_CREDENTIALS to a credentials file: a service-account key \
         (`gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`), or an \
         authorized_user, impersonated_service_account or external_account file",
    ),
    (
        "adc",
        "gcloud's application default credentials",
        "run `gcloud auth application-default login` (add \
         `--impersonate-service-account=SA_EMAIL` for tokens whose audience is the service URL)",
    ),
    (
        "gcloud",
        "the gcloud CLI",
        "run `gcloud auth login`, or `gcloud auth activate-service-account --key-file=KEY.json`",
    ),
    (
        "metadata",
        "the metadata server",
        "on Google Cloud (Compute Engine, GKE, Cloud Run, Cloud Build) it is found by itself; \
         elsewhere set GCE_METADATA_HOST=HOST:PORT",
    ),
];

/// One step of the credential chain, as [`Credentials::from_env_explained`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChainStep {
    /// The source's name, as `CLOUDRUN_TEST_CREDENTIALS` takes it (`id-token`,
    /// `google-application-credentials`, `adc`, `gcloud`, `metadata`), or
    /// `impersonation` for `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT`.
    pub source: &'static str,
    /// What was looked at, e.g. `GOOGLE_APPLICATION_CREDENTIALS`.
    pub looked_at: &'static str,
    /// Whether the source was chosen, skipped (and how to set it up) or failed.
    pub outcome: StepOutcome,
}

/// What the chain made of one source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The credentials come from here.
    Chosen {
        /// The credentials in words, e.g. `service account key sa@p.iam.gserviceaccount.com`.
        description: String,
    },
    /// Not available here: why, and how to set it up.
    Skipped {
        /// Why the source was not used, e.g. `GOOGLE_APPLICATION_CREDENTIALS is not set`.
        reason: String,
        /// How to make the source available.
        setup: String,
    },
    /// Present but unusable: the chain stopped with this error.
    Failed {
        /// What was wrong with the source, with its fix.
        error: Error,
    },
    /// Impersonation applied to the chosen credentials.
    Wraps {
        /// The impersonated credentials in words.
        description: String,
    },
}

impl fmt::Display for ChainStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            StepOutcome::Chosen { description } => {
                write!(
                    f,
                    "{} ({}): chosen: {description}",
                    self.looked_at, self.source
                )
            }
            StepOutcome::Skipped { reason, .. } => {
                write!(f, "{} ({}): skipped: {reason}", self.looked_at, self.source)
            }
            StepOutcome::Failed { error } => {
                write!(f, "{} ({}): failed: {error}", self.looked_at, self.source)
            }
            StepOutcome::Wraps { description } => write!(f, "{}: {description}", self.looked_at),
        }
    }
}

/// What looking at one source found.
enum Found {
    Source(Arc<dyn CredentialSource>, String),
    Broken(Error),
    Absent(String),
}

fn look(name: &str, impersonate: Option<&str>, forced: bool) -> Found {
    let from_file = |path: PathBuf| match Credentials::from_file(&path) {
        Ok(credentials) => {
            let description = credentials.describe();
            Found::Source(credentials.source, description)
        }
        Err(error) => Found::Broken(error),
    };
    match name {
        "id-token" => match env("CLOUDRUN_TEST_ID_TOKEN") {
            Some(token) => {
                let source: Arc<dyn CredentialSource> = Arc::new(StaticIdToken::new(token));
                let description = source.describe();
                Found::Source(source, description)
            }
            None => Found::Absent("not set".into()),
        },
        "google-application-credentials" => {
            match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
                Some(path) if !path.is_empty() => from_file(PathBuf::from(path)),
                _ => Found::Absent("not set".into()),
            }
        }
        "adc" => match gcloud_config_dir() {
            Some(dir) => {
                let well_known = dir.join("application_default_credentials.json");
                if well_known.is_file() {
                    from_file(well_known)
                } else {
                    Found::Absent(format!("no file {}", well_known.display()))
                }
            }
            None => Found::Absent("neither CLOUDSDK_CONFIG nor HOME is set".into()),
        },
        "gcloud" => match gcloud::detect(impersonate) {
            Ok(Ok(cli)) => {
                let description = cli.describe();
                Found::Source(Arc::new(cli), description)
            }
            Ok(Err(error)) => Found::Broken(error),
            Err(reason) => Found::Absent(reason),
        },
        "metadata" => {
            let detected = match metadata::detect() {
                Ok(found) => Ok(found),
                // Forced: the user says this is Google Cloud.
                Err(_) if forced => Ok((
                    "169.254.169.254".to_owned(),
                    format!("{FORCE_VARIABLE}=metadata"),
                )),
                Err(reason) => Err(reason),
            };
            match detected {
                Ok((host, why)) => {
                    let server = MetadataServer::new(&host, &why);
                    let description = server.describe();
                    Found::Source(Arc::new(server), description)
                }
                Err(reason) => Found::Absent(reason),
            }
        }
        _ => Found::Absent("unknown source".into()),
    }
}

/// Runs the chain; see the module documentation.
pub(crate) fn explain() -> (Result<Credentials, Error>, Vec<ChainStep>) {
    let mut steps = Vec::new();
    let forced = match env(FORCE_VARIABLE) {
        None => None,
        Some(name) => {
            let name = name.to_ascii_lowercase();
            let name = match name.as_str() {
                "file" | "credentials-file" | "google_application_credentials" => {
                    "google-application-credentials".to_owned()
                }
                "metadata-server" | "gce" => "metadata".to_owned(),
                "gcloud-cli" => "gcloud".to_owned(),
                _ => name,
            };
            match SOURCES.iter().find(|(known, _, _)| *known == name) {
                Some((known, _, _)) => Some(*known),
                None => {
                    let names: Vec<&str> = SOURCES.iter().map(|(name, _, _)| *name).collect();
                    return (
                        Err(Error::setting(
                            format!("{FORCE_VARIABLE} is `{name}`, which is no credential source"),
                            format!("use one of {}, or unset it", names.join(", ")),
                        )),
                        steps,
                    );
                }
            }
        }
    };
    let impersonate = env(IMPERSONATE_VARIABLE);
    let mut chosen = None;
    for (name, looked_at, setup) in SOURCES {
        if forced.is_some_and(|forced| forced != name) {
            continue;
        }
        let error = match look(name, impersonate.as_deref(), forced.is_some()) {
            Found::Source(source, description) => {
                steps.push(ChainStep {
                    source: name,
                    looked_at,
                    outcome: StepOutcome::Chosen { description },
                });
                chosen = Some((name, source));
                break;
            }
            Found::Absent(reason) if forced.is_none() => {
                steps.push(ChainStep {
                    source: name,
                    looked_at,
                    outcome: StepOutcome::Skipped {
                        reason,
                        setup: setup.to_owned(),
                    },
                });
                continue;
            }
            // A forced source must be there.
            Found::Absent(reason) => Error::setting(
                format!("{FORCE_VARIABLE}={name}, but {looked_at}: {reason}"),
                format!("{setup}; or unset {FORCE_VARIABLE} to try every source"),
            ),
            Found::Broken(error) => error,
        };
        // A present but broken source (or a forced, absent one) stops the chain.
        steps.push(ChainStep {
            source: name,
            looked_at,
            outcome: StepOutcome::Failed {
                error: error.clone(),
            },
        });
        return (Err(error), steps);
    }
    let Some((name, source)) = chosen else {
        let tried: Vec<String> = steps
            .iter()
            .filter_map(|step| match &step.outcome {
                StepOutcome::Skipped { reason, setup } => Some(format!(
                    "  - {}: {reason}\n      to use it: {setup}",
                    step.looked_at
                )),
                _ => None,
            })
            .collect();
        return (
            Err(offer_the_emulator(Error::no_credentials(tried.join("\n")))),
            steps,
        );
    };
    let source = match impersonate {
        None => source,
        Some(email) => {
            let (source, description) = match name {
                "id-token" => (
                    source,
                    format!(
                        "{IMPERSONATE_VARIABLE} ({email}) is ignored: CLOUDRUN_TEST_ID_TOKEN is used as is"
                    ),
                ),
                "gcloud" => (
                    source,
                    format!("gcloud impersonates {email} itself (--impersonate-service-account)"),
                ),
                _ => {
                    let wrapped: Arc<dyn CredentialSource> =
                        Arc::new(Impersonated::wrap(source, &email, IMPERSONATE_VARIABLE));
                    (
                        wrapped,
                        format!(
                            "tokens are minted as {email} through IAM Credentials, with the chosen \
                             credentials as the caller"
                        ),
                    )
                }
            };
            steps.push(ChainStep {
                source: "impersonation",
                looked_at: IMPERSONATE_VARIABLE,
                outcome: StepOutcome::Wraps { description },
            });
            source
        }
    };
    (Ok(Credentials::new(source)), steps)
}
