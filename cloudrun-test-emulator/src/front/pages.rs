//! The pages Cloud Run's front (the Google front end) answers refusals and
//! injected faults with: the same status codes and HTML bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request was refused, for people reading responses in tests. Cloud Run
/// says nothing; the reason never contains the token.
const REASON_HEADER: &str = "x-cloudrun-test-emulator-reason";

/// Cloud Run's (Google front end's) error pages.
pub(crate) fn error_page(status: StatusCode, path: &str, reason: &str) -> Response {
    let path = html_escape(path);
    let (title, heading, detail) = if status == StatusCode::UNAUTHORIZED {
        (
            "401 Unauthorized",
            "Unauthorized",
            format!(
                "Your client does not have permission to the requested URL <code>{path}</code>."
            ),
        )
    } else {
        (
            "403 Forbidden",
            "Forbidden",
            format!(
                "Your client does not have permission to get URL <code>{path}</code> from this server."
            ),
        )
    };
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n\
         <h1>Error: {heading}</h1>\n<h2>{detail}</h2>\n<h2></h2>\n</body></html>\n"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer error=\"invalid_token\" error_description=\"The access token could not be verified\"",
            ),
        );
    }
    // Header values must be visible ASCII; reasons are, apart from exotic emails.
    let reason: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&reason) {
        headers.insert(REASON_HEADER, value);
    }
    response
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// What Cloud Run's front end answers with `status` when a fault is injected.
pub(crate) fn fault_page(status: StatusCode, path: &str) -> Response {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return error_page(status, path, "injected fault");
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let detail = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            "The request was aborted because there was no available instance."
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "The service you requested is not available yet. Please try again in 30 seconds."
        }
        _ => "The server encountered an error and could not complete your request.",
    };
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{} {reason}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n\
         <h1>Error: {reason}</h1>\n<h2>{detail}</h2>\n<h2></h2>\n</body></html>\n",
        status.as_u16()
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert(REASON_HEADER, HeaderValue::from_static("injected fault"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_paths_in_error_pages() {
        assert_eq!(
            html_escape("/<script>&\"'"),
            "/&lt;script&gt;&amp;&quot;&#39;"
        );
    }
}
