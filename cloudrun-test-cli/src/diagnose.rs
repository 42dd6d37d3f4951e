//! What a Cloud Run answer means for the caller, and the fix: shared by `curl` (after
//! a 401/403) and `doctor` (after its live request). Works from the token's claims,
//! never prints the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudrun_test::{Claims, Url};

/// The audience of the ID tokens `gcloud auth print-identity-token` prints for a user
/// account; Cloud Run accepts it for development.
pub const GCLOUD_USER_AUDIENCE: &str = "32555940559.apps.googleusercontent.com";

/// What we know about the request that was answered.
pub struct Sent<'a> {
    pub url: &'a Url,
    /// The audience the token should have had (the URL's origin, or a custom audience).
    pub expected_audience: &'a str,
    /// The claims of the token sent, `None` when no token was sent.
    pub claims: Option<&'a Claims>,
    /// The token was not a JWT (e.g. an OAuth access token).
    pub token_unreadable: bool,
    /// The identity of the credentials, when the token does not say.
    pub identity: Option<String>,
    /// The service's name, region and project, for the `gcloud` fix.
    pub service: Option<&'a str>,
    pub region: Option<&'a str>,
    pub project: Option<&'a str>,
}

/// The verdict on an HTTP status: a one-line summary and, for failures, the fix.
pub struct Verdict {
    pub ok: bool,
    pub summary: String,
    pub fix: Option<String>,
}

/// The verdict on `status`. Its words quote the token's claims (a ready token's are
/// anything its maker wrote) and the URL: they go through the library's redaction.
pub fn explain(status: u16, sent: &Sent<'_>) -> Verdict {
    let Verdict { ok, summary, fix } = verdict(status, sent);
    Verdict {
        ok,
        summary: cloudrun_test::redact(&summary),
        fix: fix.map(|fix| cloudrun_test::redact(&fix)),
    }
}

fn verdict(status: u16, sent: &Sent<'_>) -> Verdict {
    match status {
        200..=399 => Verdict {
            ok: true,
            summary: format!("{status}: the request was accepted"),
            fix: None,
        },
        401 => explain_401(sent),
        403 => explain_403(sent),
        404 => Verdict {
            ok: true,
            summary: "404: Cloud Run let the request through and the service answered 404 \
                      (its route for this path is missing, not a permission problem)"
                .into(),
            fix: None,
        },
        429 | 500..=599 => Verdict {
            ok: false,
            summary: format!(
                "{status}: the token was accepted (past Cloud Run's IAM check), but the service \
                 failed: its code answered {status}, or Cloud Run could not start or reach an \
                 instance"
            ),
            fix: Some(format!(
                "read the service's logs: gcloud run services logs read {}{}",
                sent.service.unwrap_or("SERVICE"),
                sent.region
                    .map(|region| format!(" --region {region}"))
                    .unwrap_or_default()
            )),
        },
        _ => Verdict {
            ok: true,
            summary: format!(
                "{status}: the token was accepted (past Cloud Run's IAM check); the status \
                 comes from the service itself"
            ),
            fix: None,
        },
    }
}

fn explain_401(sent: &Sent<'_>) -> Verdict {
    let origin = sent.url.origin().ascii_serialization();
    let Some(claims) = sent.claims.filter(|_| !sent.token_unreadable) else {
        return Verdict {
            ok: false,
            summary: "401: the token sent is not an identity token (a JWT); an OAuth access \
                      token (`ya29.`...) is refused by Cloud Run"
                .into(),
            fix: Some(format!(
                "send an identity token: `cloudrun-test token --audience {origin}` (not \
                 `gcloud auth print-access-token`); unset CLOUDRUN_TEST_ID_TOKEN if it holds \
                 something else"
            )),
        };
    };
    let now = SystemTime::now();
    if let Some(exp) = claims.exp {
        let expires = UNIX_EPOCH + Duration::from_secs(exp);
        if expires <= now {
            let ago = now.duration_since(expires).unwrap_or_default().as_secs();
            return Verdict {
                ok: false,
                summary: format!("401: the token expired {ago}s ago"),
                fix: Some(
                    "use a fresh token: unset CLOUDRUN_TEST_ID_TOKEN (or set it to a new one) \
                     so a token is minted from your credentials"
                        .into(),
                ),
            };
        }
    }
    match claims.aud.as_deref() {
        None => Verdict {
            ok: false,
            summary: "401: the token has no audience (`aud`): it is not an identity token"
                .into(),
            fix: Some(format!(
                "send an identity token: `cloudrun-test token --audience {origin}`"
            )),
        },
        Some(aud)
            if aud != sent.expected_audience
                && aud.trim_end_matches('/') != origin
                && aud != GCLOUD_USER_AUDIENCE =>
        {
            Verdict {
                ok: false,
                summary: format!(
                    "401: wrong audience: the token is for {aud}, but the request went to {origin}"
                ),
                fix: Some(format!(
                    "mint the token for the service: `--audience {origin}` (or one of the \
                     service's custom audiences); a token from CLOUDRUN_TEST_ID_TOKEN is used \
                     as is, whatever its audience"
                )),
            }
        }
        Some(aud) if aud.trim_end_matches('/') != origin && aud != GCLOUD_USER_AUDIENCE => {
            let service = sent.service.unwrap_or("SERVICE");
            Verdict {
                ok: false,
                summary: format!(
                    "401: wrong audience: the token is for {aud}, which the service does not \
                     accept (it accepts its URL, {origin}, and its custom audiences)"
                ),
                fix: Some(format!(
                    "use the URL as audience (drop the audience setting), or add it to the \
                     service: gcloud run services update {service} --add-custom-audiences={aud}"
                )),
            }
        }
        Some(aud) => Verdict {
            ok: false,
            summary: format!(
                "401: the token (audience {aud}, issuer {}) was refused although it has not \
                 expired: it was not signed by Google, or {aud} is not an audience this \
                 service accepts",
                claims.iss.as_deref().unwrap_or("unknown")
            ),
            fix: Some(
                "mint the token from Google credentials (not a hand-made or another \
                 environment's token); for a custom audience, check the service's \
                 customAudiences (`gcloud run services describe SERVICE --format='value(metadata.annotations)'`)"
                    .into(),
            ),
        },
    }
}

fn explain_403(sent: &Sent<'_>) -> Verdict {
    let Some(claims) = sent.claims else {
        return Verdict {
            ok: false,
            summary: "403: no token was sent, and the service is private".into(),
            fix: Some(
                "configure credentials (GOOGLE_APPLICATION_CREDENTIALS or \
                 CLOUDRUN_TEST_ID_TOKEN); `cloudrun-test doctor` shows what is found"
                    .into(),
            ),
        };
    };
    let identity = claims
        .email
        .clone()
        .or_else(|| sent.identity.clone())
        .unwrap_or_else(|| "the caller".into());
    let member = if identity.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{identity}")
    } else {
        format!("user:{identity}")
    };
    let service = sent.service.unwrap_or("SERVICE");
    let region = sent.region.unwrap_or("REGION");
    let project = sent
        .project
        .map(|project| format!(" --project {project}"))
        .unwrap_or_default();
    Verdict {
        ok: false,
        summary: format!(
            "403: the token is valid, but {identity} may not invoke the service (it lacks \
             roles/run.invoker)"
        ),
        fix: Some(format!(
            "gcloud run services add-iam-policy-binding {service} --region {region}{project} \
             --member={member} --role=roles/run.invoker"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent<'a>(url: &'a Url, claims: Option<&'a Claims>) -> Sent<'a> {
        Sent {
            url,
            expected_audience: "https://hello-1.europe-west1.run.app",
            claims,
            token_unreadable: false,
            identity: None,
            service: Some("hello"),
            region: Some("europe-west1"),
            project: None,
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn each_401_cause_is_told_apart() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/x").unwrap();
        let expired = Claims {
            aud: Some("https://hello-1.europe-west1.run.app".into()),
            exp: Some(now() - 10),
            ..Claims::default()
        };
        assert!(
            explain(401, &sent(&url, Some(&expired)))
                .summary
                .contains("expired")
        );
        let wrong = Claims {
            aud: Some("https://other.run.app".into()),
            exp: Some(now() + 100),
            ..Claims::default()
        };
        let verdict = explain(401, &sent(&url, Some(&wrong)));
        assert!(
            verdict.summary.contains("wrong audience"),
            "{}",
            verdict.summary
        );
        assert!(
            verdict
                .fix
                .unwrap()
                .contains("https://hello-1.europe-west1.run.app")
        );
        let mut unreadable = sent(&url, Some(&wrong));
        unreadable.token_unreadable = true;
        assert!(
            explain(401, &unreadable)
                .summary
                .contains("not an identity token")
        );
        let user = Claims {
            aud: Some(GCLOUD_USER_AUDIENCE.into()),
            exp: Some(now() + 100),
            ..Claims::default()
        };
        assert!(
            !explain(401, &sent(&url, Some(&user)))
                .summary
                .contains("wrong audience")
        );
    }

    #[test]
    fn claims_that_carry_secrets_are_redacted() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/").unwrap();
        let claims = Claims {
            aud: Some("access_token=SECRET1".into()),
            email: Some("password: SECRET2".into()),
            exp: Some(now() + 100),
            ..Claims::default()
        };
        for status in [401, 403] {
            let verdict = explain(status, &sent(&url, Some(&claims)));
            let text = format!("{} {}", verdict.summary, verdict.fix.unwrap_or_default());
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn a_403_names_the_member_to_grant() {
        let url = Url::parse("https://hello-1.europe-west1.run.app/").unwrap();
        let claims = Claims {
            email: Some("me@example.com".into()),
            ..Claims::default()
        };
        let verdict = explain(403, &sent(&url, Some(&claims)));
        assert!(!verdict.ok);
        assert!(verdict.summary.contains("me@example.com"));
        assert_eq!(
            verdict.fix.unwrap(),
            "gcloud run services add-iam-policy-binding hello --region europe-west1 \
             --member=user:me@example.com --role=roles/run.invoker"
        );
        assert!(explain(403, &sent(&url, None)).summary.contains("no token"));
    }
}
