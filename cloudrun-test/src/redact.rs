//! The one redaction every message goes through before it shows text that came from
//! outside: an endpoint's answer, a program's stderr, a header, a file.
//!
//! [`redact`] replaces, in this order:
//!
//! 1. private keys: a PEM block whose label says `PRIVATE KEY`, from `-----BEGIN` to
//!    its `-----END ...-----` (or to the end of the text, if cut short);
//! 2. the password of a URL's userinfo (`https://user:<redacted>@host/`);
//! 3. the value of every secret-named key, in the forms `key=value` (form bodies and
//!    query strings: `a=b&refresh_token=...`), `key: value` (headers, YAML, logs),
//!    `key => value`, URL-encoded `key%3Dvalue` and `key%3Avalue`, XML
//!    `<key>value</key>`, HTML `name="key" value="..."` and JSON `"key": "value"`
//!    (any spacing, quoted or escaped `\"`). A value that is a JSON array or object
//!    goes whole, to its closing bracket (or to the end of the text, if cut short).
//!    Secret names are matched whatever their case, `_` or `-`, by how they end:
//!    `token` (not `token_type`, `token_uri`...), `secret`, `password`, `passphrase`,
//!    `assertion`, `private_key`, `private_key_id`, `authorization`, `api_key`,
//!    `access_key` (`AWS_SECRET_ACCESS_KEY`), `cookie`, `saml_response`, `signature`,
//!    `sig`;
//! 4. words shaped like a credential wherever they stand: JWTs (`eyJ...`, and the
//!    rest of one split over two lines), Google access tokens (`ya29.`), refresh
//!    tokens (`1//`), OAuth client secrets (`GOCSPX-`), API keys (`AIza...`), the word
//!    after `Bearer`/`Basic`, and long base64 runs (key material);
//! 5. control characters but line feed and tab (C0 with `\r` and ESC, DEL, C1) become
//!    visible escapes (`\u{1b}`): a quoted text must not erase lines or forge
//!    others on a terminal.
//!
//! One allowance keeps sentences readable: after an unquoted `name: ` a plain
//! lowercase word or a `code` span is prose ("an identity token: `cloudrun-test
//! token`"), not a secret. For a name ending in `token`, `secret`, `key` or
//! `assertion` the word must also be followed by more words on its line
//! ("CLOUDRUN_TEST_ID_TOKEN: not set"): a lone lowercase word there is a value. After
//! a password's name nothing is prose. Every other value after a secret name is
//! removed, whatever it looks like.

use std::borrow::Cow;

const REDACTED: &str = "<redacted>";
const REDACTED_KEY: &str = "<redacted private key>";

/// `text` with every secret it holds replaced by `<redacted>` (see the module
/// documentation for what counts as a secret). Words that are not secrets are kept,
/// so that the message stays useful.
pub fn redact(text: &str) -> String {
    let text = private_keys(text);
    let text = url_passwords(&text);
    let text = key_values(&text);
    escape_controls(token_words(&text))
}

/// Removes the password of `scheme://user:password@host`, keeping the user and host.
fn url_passwords(text: &str) -> Cow<'_, str> {
    const SCHEME_END: &str = "://";
    let mut out = String::new();
    let (mut copied, mut search) = (0, 0);
    while let Some(found) = text[search..].find(SCHEME_END) {
        let start = search + found + SCHEME_END.len();
        let end = text[start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`')
            })
            .map_or(text.len(), |length| start + length);
        let authority = &text[start..end];
        if let Some(at_sign) = authority.rfind('@')
            && let Some(colon) = authority[..at_sign].find(':')
            && colon + 1 < at_sign
        {
            out.push_str(&text[copied..start + colon + 1]);
            out.push_str(REDACTED);
            copied = start + at_sign;
        }
        search = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Control characters as visible escapes, but for line feeds, tabs and the `\r` of a
/// `\r\n`: the text then cannot move the cursor, erase lines or retitle a terminal.
fn escape_controls(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let kept = matches!(c, '\n' | '\t') || c == '\r' && chars.peek() == Some(&'\n');
        if c.is_control() && !kept {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes PEM private key blocks.
fn private_keys(text: &str) -> Cow<'_, str> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    if !text.contains(BEGIN) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        // A header cut short holds no key material yet.
        let Some(end) = after_begin.find(DASHES) else {
            break;
        };
        let (label, after_label) = (&after_begin[..end], &after_begin[end + DASHES.len()..]);
        // A key's body follows its header: a line break (real or escaped) or base64. A
        // header named in a sentence ("no `-----BEGIN PRIVATE KEY-----` line") is kept.
        let body_follows = after_label
            .trim_start_matches([' ', '\t'])
            .starts_with(|c: char| {
                matches!(c, '\n' | '\r' | '\\' | '+' | '/') || c.is_ascii_alphanumeric()
            });
        let private = body_follows
            && !label.contains('\n')
            && label.to_ascii_uppercase().contains("PRIVATE KEY");
        if !private {
            let kept = rest.len() - after_label.len();
            out.push_str(&rest[..kept]);
            rest = after_label;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(REDACTED_KEY);
        rest = match after_label.find("-----END ") {
            Some(end) => {
                let footer = &after_label[end + "-----END ".len()..];
                match footer.find(DASHES) {
                    Some(close) => &footer[close + DASHES.len()..],
                    None => "",
                }
            }
            None => "",
        };
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// How a key name counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// A password: its value is always a secret, even a plain word.
    Password,
    /// A token, secret, key or assertion: after `name: ` (unquoted), a lowercase
    /// word followed by more words is prose (`CLOUDRUN_TEST_ID_TOKEN: not set`); a
    /// lone one is the value.
    Token,
    /// Any other secret name: after `name: ` (unquoted), a plain lowercase word is
    /// prose, not a secret.
    Named,
}

/// Whether `key` names a secret: compared lower-case, without `_` and `-`.
fn secret_key(key: &str) -> Option<Secret> {
    let normalized: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const TOKENS: [&str; 6] = [
        // Anything ending in `token`: `access_token`, `idToken`, `X-Auth-Token`...
        "token",
        "secret",
        "assertion",
        "privatekey",
        "apikey",
        // AWS: `SecretAccessKey`, `AWS_SECRET_ACCESS_KEY`.
        "accesskey",
    ];
    const NAMES: [&str; 6] = [
        "privatekeyid",
        "authorization",
        "cookie",
        "samlresponse",
        // Signed URLs: `X-Goog-Signature=`, `&sig=`.
        "signature",
        "sig",
    ];
    let named = |names: &[&str]| names.iter().any(|name| normalized.ends_with(name));
    if named(&["password", "passwd", "passphrase"]) {
        Some(Secret::Password)
    } else if named(&TOKENS) {
        Some(Secret::Token)
    } else if named(&NAMES) {
        Some(Secret::Named)
    } else {
        None
    }
}

fn is_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-')
}

/// Where an unquoted value ends.
fn ends_value(byte: u8) -> bool {
    byte.is_ascii_whitespace()
        || matches!(
            byte,
            b'&' | b',' | b';' | b'"' | b'\'' | b'\\' | b'<' | b'>' | b')' | b']' | b'}'
        )
}

/// Removes the values of secret-named keys. Every key is looked at, even inside the
/// value of another (`password: Bearer token: ...`), and the spans found are merged.
fn key_values(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut ends = Ends::new(bytes);
    let mut at = 0;
    let (mut scanned, mut slash_in_word) = (0, false);
    while at < bytes.len() {
        if !is_key_byte(bytes[at]) {
            at += 1;
            continue;
        }
        let key_end = bytes[at..]
            .iter()
            .position(|&byte| !is_key_byte(byte))
            .map_or(bytes.len(), |length| at + length);
        // A key right after `/` or `.`, or after `:` in a word with a `/`, is part of a
        // URL or path (`.../token: HTTP 400`, `.../EMAIL:generateIdToken`), not a name;
        // after a `:` elsewhere it is one (`user:password: ...`).
        // (The word's last `/` is tracked as the scan goes, which keeps it linear.)
        for &byte in &bytes[scanned..at] {
            if byte.is_ascii_whitespace() {
                slash_in_word = false;
            } else if byte == b'/' {
                slash_in_word = true;
            }
        }
        scanned = at;
        let in_path = at > 0
            && match bytes[at - 1] {
                b'/' | b'.' => true,
                b':' => slash_in_word,
                _ => false,
            };
        let key_start = at;
        at = key_end;
        if !in_path
            && let Some((start, end)) = secret_key(&text[key_start..key_end])
                .and_then(|secret| value_after(&mut ends, key_start, key_end, secret))
        {
            spans.push((start, end));
            // An array or object went whole: the keys inside it need no look, and
            // skipping them keeps each bracket scan to its own stretch of text.
            if matches!(bytes[start], b'[' | b'{') {
                at = end;
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        if end <= copied {
            continue;
        }
        if start >= copied {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
        }
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The span of the value that follows the key at `key_start..key_end`, if a separator
/// (`=`, `:`, `=>`, `%3D`, `%3A`) follows it, or it is an XML tag, and the value is
/// not empty.
fn value_after(
    ends: &mut Ends<'_>,
    key_start: usize,
    key_end: usize,
    secret: Secret,
) -> Option<(usize, usize)> {
    let bytes = ends.bytes;
    let quoted_key = key_start > 0 && matches!(bytes[key_start - 1], b'"' | b'\'');
    let skip_blanks = |mut at: usize, lines: bool| {
        while matches!(bytes.get(at), Some(b' ' | b'\t'))
            || lines && matches!(bytes.get(at), Some(b'\r' | b'\n'))
        {
            at += 1;
        }
        at
    };
    // XML: `<id_token>value</id_token>`, the value running to the next tag.
    if key_start > 0 && bytes[key_start - 1] == b'<' && bytes.get(key_end) == Some(&b'>') {
        let start = skip_blanks(key_end + 1, true);
        let end = ends.find(Ending::Quote(b'<'), start);
        return (start < end).then_some((start, end));
    }
    let mut at = key_end;
    // The key's closing quote: `"`, `'` or an escaped `\"`.
    if bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'"') {
        at += 2;
    } else if matches!(bytes.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at = skip_blanks(at, false);
    // HTML: `name="refresh_token" value="..."`.
    if quoted_key
        && bytes
            .get(at..at + 5)
            .is_some_and(|word| word.eq_ignore_ascii_case(b"value"))
    {
        at = skip_blanks(at + 5, false);
    }
    let rest = &bytes[at.min(bytes.len())..];
    let (separator_length, colon) = if rest.starts_with(b"=>") {
        (2, false)
    } else if rest.starts_with(b"=") {
        (1, false)
    } else if rest.starts_with(b":") {
        (1, true)
    } else if rest.len() >= 3
        && rest[0] == b'%'
        && (rest[1..3].eq_ignore_ascii_case(b"3D") || rest[1..3].eq_ignore_ascii_case(b"3A"))
    {
        (3, false)
    } else {
        return None;
    };
    // JSON written over several lines.
    at = skip_blanks(at + separator_length, quoted_key);
    let (start, end) = ends.value_span(at);
    if start == end {
        return None;
    }
    // After `name: `, a lowercase word or a `code` span reads as a sentence; after a
    // token's name, only a word followed by more words.
    let value = &bytes[start..end];
    let word_in_sentence = value.iter().all(u8::is_ascii_lowercase)
        && match secret {
            Secret::Password => false,
            Secret::Named => true,
            Secret::Token => {
                bytes.get(end) == Some(&b' ')
                    && bytes
                        .get(end + 1)
                        .is_some_and(|byte| !byte.is_ascii_whitespace())
            }
        };
    let prose = secret != Secret::Password
        && !quoted_key
        && colon
        && (word_in_sentence || value.starts_with(b"`"));
    (!prose).then_some((start, end))
}

/// What ends a value, by how it starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A delimiter ([`ends_value`]).
    Delimiter,
    /// This quote, unescaped.
    Quote(u8),
    /// An escaped quote, `\"`.
    EscapedQuote,
}

/// Finds where values end, remembering the last search of each kind: keys nested in
/// one long value (`password=password=...`) then cost one scan, not one each, so a
/// hostile text of any length is redacted in linear time.
struct Ends<'a> {
    bytes: &'a [u8],
    /// Per kind: the last search's start and what it found.
    last: Vec<(Ending, usize, usize)>,
}

impl<'a> Ends<'a> {
    fn new(bytes: &'a [u8]) -> Ends<'a> {
        Ends {
            bytes,
            last: Vec::with_capacity(4),
        }
    }

    /// The first end of kind `ending` at or after `from` (or the text's end).
    fn find(&mut self, ending: Ending, from: usize) -> usize {
        // Nothing ended between the last search's start and its end, so nothing does
        // from `from` either.
        if let Some(&(.., end)) = self
            .last
            .iter()
            .find(|(kind, start, end)| *kind == ending && (*start..=*end).contains(&from))
        {
            return end;
        }
        let bytes = self.bytes;
        let end = match ending {
            Ending::Delimiter => (from..bytes.len())
                .find(|&index| ends_value(bytes[index]))
                .unwrap_or(bytes.len()),
            // A quoted value also ends at a line's end: JSON strings hold none, and a
            // quote left open (a cut text) must not swallow the lines after it.
            Ending::EscapedQuote => (from..bytes.len())
                .find(|&index| {
                    matches!(bytes[index], b'\n' | b'\r')
                        || bytes[index] == b'\\' && bytes.get(index + 1) == Some(&b'"')
                })
                .unwrap_or(bytes.len()),
            Ending::Quote(quote) => {
                let mut index = from;
                while index < bytes.len() && !matches!(bytes[index], b'\n' | b'\r') {
                    if bytes[index] == quote {
                        break;
                    }
                    // A JSON escape (`\"`) stays inside the value.
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
                index.min(bytes.len())
            }
        };
        self.last.retain(|(kind, ..)| *kind != ending);
        self.last.push((ending, from, end));
        end
    }

    /// The end of the JSON array or object opening at `from`: after its matching
    /// close, brackets inside strings not counted; the text's end if it never closes
    /// (a cut text: what follows may still be the secret's).
    fn bracket_end(&self, from: usize) -> usize {
        let bytes = self.bytes;
        let (mut depth, mut in_string, mut index) = (0usize, false, from);
        while index < bytes.len() {
            match bytes[index] {
                b'\\' if in_string => index += 1,
                b'"' => in_string = !in_string,
                b'[' | b'{' if !in_string => depth += 1,
                b']' | b'}' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        return index + 1;
                    }
                }
                _ => {}
            }
            index += 1;
        }
        bytes.len()
    }

    /// The value starting at `at`: the inside of its quotes, or up to the next
    /// delimiter; after an authorization scheme (`Bearer ...`), the credential after it.
    fn value_span(&mut self, at: usize) -> (usize, usize) {
        let bytes = self.bytes;
        match bytes.get(at) {
            Some(b'[' | b'{') => (at, self.bracket_end(at)),
            Some(b'\\') if bytes.get(at + 1) == Some(&b'"') => {
                (at + 2, self.find(Ending::EscapedQuote, at + 2))
            }
            Some(&quote @ (b'"' | b'\'')) => (at + 1, self.find(Ending::Quote(quote), at + 1)),
            _ => {
                let word_end = self.find(Ending::Delimiter, at);
                if !is_auth_scheme(&bytes[at..word_end]) {
                    return (at, word_end);
                }
                let after_scheme = (word_end..bytes.len())
                    .find(|&index| !matches!(bytes[index], b' ' | b'\t'))
                    .unwrap_or(bytes.len());
                if after_scheme > word_end {
                    (after_scheme, self.find(Ending::Delimiter, after_scheme))
                } else {
                    (at, word_end)
                }
            }
        }
    }
}

fn is_auth_scheme(word: &[u8]) -> bool {
    ["bearer", "basic", "digest", "negotiate", "token", "oauth"]
        .iter()
        .any(|scheme| word.eq_ignore_ascii_case(scheme.as_bytes()))
}

/// A character of a credential-shaped word (base64, base64url, URL-encoded, dotted).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '%')
}

/// Replaces credential-shaped words, and the word after `Bearer`/`Basic`.
fn token_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let (mut after_scheme, mut after_credential) = (false, false);
    while let Some(start) = rest.find(is_word_char) {
        let (between, from) = rest.split_at(start);
        let mut length = from.find(|c| !is_word_char(c)).unwrap_or(from.len());
        // Base64 padding belongs to the word.
        length += from[length..].len() - from[length..].trim_start_matches('=').len();
        let (word, after) = from.split_at(length);
        let credential =
            after_scheme && !between.is_empty() && between.trim_matches([' ', '\t']).is_empty();
        // A JWT cut over two lines: the word that starts the next line is its rest.
        let rest_of_credential = after_credential
            && between.contains('\n')
            && between.trim().is_empty()
            && is_credential_rest(word);
        out.push_str(between);
        after_credential = credential || rest_of_credential || looks_like_credential(word);
        if after_credential {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        after_scheme = ["bearer", "basic"]
            .iter()
            .any(|scheme| word.eq_ignore_ascii_case(scheme));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// base64url with dots and padding, not a plain or capitalized word (`fix`, `See`).
fn is_credential_rest(word: &str) -> bool {
    let mut letters = word.chars();
    let capitalized = letters.next().is_some_and(|c| c.is_ascii_alphabetic())
        && letters.all(|c| c.is_ascii_lowercase());
    word.len() >= 8
        && !capitalized
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='))
}

fn looks_like_credential(word: &str) -> bool {
    // A JWT's header (and payload) is base64url JSON, which starts `eyJ` (`{"`).
    let jwt = word.match_indices("eyJ").any(|(index, _)| {
        word[..index]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
    }) && word.len() >= 10;
    let prefixed = ["ya29.", "1//", "1%2F%2F", "GOCSPX-"]
        .iter()
        .any(|prefix| word.starts_with(prefix) && word.len() > prefix.len() + 4)
        || word.starts_with("AIza") && word.len() >= 35;
    jwt || prefixed || is_dotted_token(word) || is_key_material(word)
}

/// Dot-separated base64url parts: three long ones with a capital (a JWS without the
/// usual header), or any number with one of 20 or more mixing capitals, small letters
/// and digits (a JWT's signature, cut from the rest). Host names have no capitals.
fn is_dotted_token(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    let base64url = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let mixed = |part: &&str| {
        part.len() >= 20
            && part.contains(|c: char| c.is_ascii_uppercase())
            && part.contains(|c: char| c.is_ascii_lowercase())
            && part.contains(|c: char| c.is_ascii_digit())
    };
    let jws = word.len() >= 40
        && parts.len() == 3
        && parts.iter().all(|part| part.len() >= 8)
        && word.contains(|c: char| c.is_ascii_uppercase());
    base64url && parts.len() >= 2 && (jws || parts.iter().any(mixed))
}

/// A long run of base64 with capitals, small letters and digits well mixed, as key
/// material and opaque tokens are; paths and identifiers rarely are.
fn is_key_material(word: &str) -> bool {
    let body = word.trim_end_matches('=');
    if body.len() < 32
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_'))
    {
        return false;
    }
    let count = |test: fn(&char) -> bool| body.chars().filter(test).count();
    let (upper, lower, digits) = (
        count(char::is_ascii_uppercase),
        count(char::is_ascii_lowercase),
        count(char::is_ascii_digit),
    );
    upper * 8 >= body.len() && lower * 8 >= body.len() && digits >= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_forms_lose_their_values_and_keep_their_keys() {
        assert_eq!(
            redact(r#"{"access_token": "S1", "token_type": "Bearer", "expires_in": 3599}"#),
            r#"{"access_token": "<redacted>", "token_type": "Bearer", "expires_in": 3599}"#
        );
        assert_eq!(
            redact(r#"{"id_token":"S2","refresh_token" :  "S3"}"#),
            r#"{"id_token":"<redacted>","refresh_token" :  "<redacted>"}"#
        );
        // Quoted inside another string, as `{:?}` or a log line shows it.
        assert_eq!(
            redact(r#"body: "{\"token\": \"S4\", \"error\": \"x\"}""#),
            r#"body: "{\"token\": \"<redacted>\", \"error\": \"x\"}""#
        );
        // camelCase, as IAM Credentials answers.
        assert_eq!(
            redact(r#"{"accessToken": "S5", "expireTime": "2024-01-01T00:00:00Z"}"#),
            r#"{"accessToken": "<redacted>", "expireTime": "2024-01-01T00:00:00Z"}"#
        );
        // Over several lines.
        assert_eq!(
            redact("{\n  \"client_secret\":\n    \"S6\"\n}"),
            "{\n  \"client_secret\":\n    \"<redacted>\"\n}"
        );
    }

    #[test]
    fn a_quote_left_open_ends_with_its_line() {
        assert_eq!(
            redact("answer: {\"client_secret\":\"S1\nfix: retry"),
            "answer: {\"client_secret\":\"<redacted>\nfix: retry"
        );
    }

    #[test]
    fn form_and_query_forms_lose_their_values() {
        assert_eq!(
            redact(
                "grant_type=refresh_token&client_id=abc&client_secret=S1&refresh_token=1%2F%2FS2"
            ),
            "grant_type=refresh_token&client_id=abc&client_secret=<redacted>&refresh_token=<redacted>"
        );
        assert_eq!(
            redact("https://x.example/cb?code=ok&access_token=S3&state=kept"),
            "https://x.example/cb?code=ok&access_token=<redacted>&state=kept"
        );
        assert_eq!(
            redact("assertion=S4 subject_token='S5' password=\"S6\""),
            "assertion=<redacted> subject_token='<redacted>' password=\"<redacted>\""
        );
    }

    #[test]
    fn header_forms_lose_their_credentials_and_keep_their_scheme() {
        assert_eq!(
            redact("Authorization: Bearer S1\nX-Other: kept"),
            "Authorization: Bearer <redacted>\nX-Other: kept"
        );
        assert_eq!(
            redact("x-serverless-authorization:Basic S2"),
            "x-serverless-authorization:Basic <redacted>"
        );
        assert_eq!(redact("Cookie: session=S3"), "Cookie: <redacted>");
        assert_eq!(
            redact("sent Bearer S4 there"),
            "sent Bearer <redacted> there"
        );
        assert_eq!(redact("x-goog-api-key: S5"), "x-goog-api-key: <redacted>");
        // A password is one even when it reads as a word.
        assert_eq!(redact("password: hunter"), "password: <redacted>");
        // What the emulator says about a missing token stays readable.
        let advice = "no identity token: send `Authorization: Bearer <ID token>`";
        assert_eq!(redact(advice), advice);
    }

    #[test]
    fn private_keys_go_whole() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            redact(&format!("before {key}after")),
            "before <redacted private key>\nafter"
        );
        // As a JSON string, and cut short.
        let escaped = r#"{"private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n", "client_email": "a@b"}"#;
        assert_eq!(
            redact(escaped),
            r#"{"private_key": "<redacted>", "client_email": "a@b"}"#
        );
        assert_eq!(
            redact("oops -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI"),
            "oops <redacted private key>"
        );
        assert_eq!(
            redact("flat -----BEGIN PRIVATE KEY----- MIIEvQ -----END PRIVATE KEY----- end"),
            "flat <redacted private key> end"
        );
        // Named in a sentence, or cut in its header: no key material to remove.
        for kept in [
            "field `private_key` has no `-----BEGIN PRIVATE KEY-----` line",
            "cut -----BEGIN PRIVATE KE",
        ] {
            assert_eq!(redact(kept), kept);
        }
        // A certificate is public.
        let certificate = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----";
        assert_eq!(redact(certificate), certificate);
    }

    #[test]
    fn credential_shaped_words_go_wherever_they_stand() {
        let text = "bad token eyJhbGciOi.eyJzdWIi.c2ln and ya29.abcdef, \"1//refresh-token\" here";
        assert_eq!(
            redact(text),
            "bad token <redacted> and <redacted>, \"<redacted>\" here"
        );
        assert_eq!(redact("key=eyJhbGciOiJSUzI1NiJ9"), "key=<redacted>");
        assert_eq!(
            redact("secret GOCSPX-abcdefghijkl and AIzaSyA1234567890abcdefghijklmnopqrs"),
            "secret <redacted> and <redacted>"
        );
        // Key material: a line of a PEM body whose header was cut off.
        assert_eq!(
            redact("| kZ3Qx8Lm2NpQ7rT9vWbYc4dF6gH1jK0lA5sE+/Uo= |"),
            "| <redacted> |"
        );
    }

    #[test]
    fn a_key_after_a_colon_is_a_name_unless_the_word_is_a_path() {
        assert_eq!(
            redact("--member=user:password: SECRET2 --role=x"),
            "--member=user:password: <redacted> --role=x"
        );
        let path =
            "https://iam.example/v1/projects/-/serviceAccounts/a@b:generateIdToken: HTTP 403";
        assert_eq!(redact(path), path);
    }

    #[test]
    fn arrays_and_objects_after_a_secret_name_go_whole() {
        assert_eq!(
            redact(r#"{"accessToken":["S1", "S2"],"x":1}"#),
            r#"{"accessToken":<redacted>,"x":1}"#
        );
        assert_eq!(
            redact(r#"{"id_token": {"value": "S3", "a": [1, "]}"]}, "kept": true}"#),
            r#"{"id_token": <redacted>, "kept": true}"#
        );
        assert_eq!(
            redact("{\"client_secret\": {\n  \"v\": \"S4\"\n}\n}\nnext"),
            "{\"client_secret\": <redacted>\n}\nnext"
        );
        // Cut short: the rest of the text may be the secret's.
        assert_eq!(redact("token=[\"S5\", \nS6"), "token=<redacted>");
    }

    #[test]
    fn more_separators_lose_their_values() {
        assert_eq!(
            redact("refresh_token%3DS1%26x%3Dy and id_token%3aS2"),
            "refresh_token%3D<redacted> and id_token%3a<redacted>"
        );
        assert_eq!(
            redact("{:refresh_token => \"S3\", access_token=>S4}"),
            "{:refresh_token => \"<redacted>\", access_token=><redacted>}"
        );
        assert_eq!(
            redact("<r><id_token>S5</id_token><Password> S6 </Password></r>"),
            "<r><id_token><redacted></id_token><Password> <redacted></Password></r>"
        );
        assert_eq!(
            redact(r#"<input name="refresh_token" value="S7">"#),
            r#"<input name="refresh_token" value="<redacted>">"#
        );
    }

    #[test]
    fn more_secret_names() {
        assert_eq!(
            redact("AWS_SECRET_ACCESS_KEY=S1 SecretAccessKey: S2 aws_access_key_id=AKIAKEPT"),
            "AWS_SECRET_ACCESS_KEY=<redacted> SecretAccessKey: <redacted> aws_access_key_id=AKIAKEPT"
        );
        assert_eq!(
            redact("https://b.example/o?X-Goog-Signature=S3&sig=S4&x=kept"),
            "https://b.example/o?X-Goog-Signature=<redacted>&sig=<redacted>&x=kept"
        );
    }

    #[test]
    fn a_lone_lowercase_word_after_a_token_name_is_its_value() {
        assert_eq!(redact("access_token: abcdefgh"), "access_token: <redacted>");
        assert_eq!(
            redact("client_secret: hunter\nnext"),
            "client_secret: <redacted>\nnext"
        );
        assert_eq!(redact("api_key: abc, x"), "api_key: <redacted>, x");
        // Followed by more words it is a sentence.
        let prose = "CLOUDRUN_TEST_ID_TOKEN: not set";
        assert_eq!(redact(prose), prose);
        // Other secret names keep the old allowance.
        let prose = "authorization: missing";
        assert_eq!(redact(prose), prose);
    }

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(
            redact("a\u{1b}[2K\u{1b}[1A\rfix: run\u{1b}]0;pwned\u{7}\u{7f}\u{9b}b"),
            "a\\u{1b}[2K\\u{1b}[1A\\u{d}fix: run\\u{1b}]0;pwned\\u{7}\\u{7f}\\u{9b}b"
        );
        let kept = "line\tone\r\nline two\n";
        assert_eq!(redact(kept), kept);
    }

    #[test]
    fn url_passwords_go_and_users_and_hosts_stay() {
        assert_eq!(
            redact("to https://oauth:UriPassw0rd9@127.0.0.1:1/token failed"),
            "to https://oauth:<redacted>@127.0.0.1:1/token failed"
        );
        assert_eq!(
            redact("proxy http://u:p%40ss@proxy:3128 and https://user@host/x:y@z"),
            "proxy http://u:<redacted>@proxy:3128 and https://user@host/x:y@z"
        );
    }

    #[test]
    fn a_jwt_split_over_two_lines_goes_whole() {
        assert_eq!(
            redact("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4\nIn0.LEAKSIGNATUREabcdef\nfix: retry"),
            "token <redacted>\n<redacted>\nfix: retry"
        );
        // A signature on its own.
        assert_eq!(
            redact("sig part In0.LEAKsig0123456789abcdefXYZ here"),
            "sig part <redacted> here"
        );
        let kept = "see com.google.auth.ServiceAccountCredentials and oauth2.googleapis.com";
        assert_eq!(redact(kept), kept);
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "HTTP 400 Bad Request, invalid_grant: Invalid JWT Signature.",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/tester@p.iam.gserviceaccount.com:generateIdToken",
            "CLOUDRUN_TEST_ID_TOKEN (id-token): skipped: not set",
            "set CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT=tester@p.iam.gserviceaccount.com",
            "token_type: Bearer, token_uri=https://oauth2.googleapis.com/token, expires_in=3599",
            "give an identity token: unset CLOUDRUN_TEST_ID_TOKEN",
            "send an identity token: `cloudrun-test token --audience https://a.run.app`",
            "CLOUDRUN_TEST_ID_TOKEN: not set; GOOGLE_APPLICATION_CREDENTIALS=key.json",
            "the access token: refused before it was minted",
            "hello-123456789.europe-west1.run.app and cloudrun-test-emulated-service.example.com",
            "/v2/projects/emulated-project/locations/europe-west1/services/hello",
            "SIGNATURE_REMOVED_BY_GOOGLE",
            "0123456789abcdef0123456789abcdef01234567",
            "<redacted>",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn long_hostile_text_is_redacted_in_linear_time() {
        let started = std::time::Instant::now();
        for unit in [
            "password=",
            "token: \"",
            "Authorization: Bearer ",
            "'secret': 'x",
            "eyJ.a",
            "token=token=token=token=        ",
            "token: [token: {\"",
            "token: [\n",
            "<token>x",
            "https://a:b@https://",
            "eyJabcdefgh1\n",
        ] {
            let text = unit.repeat(200_000 / unit.len());
            let redacted = redact(&text);
            assert_ne!(redacted, text, "{unit}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    /// A secret as tokens are spelled: base64url, dots, slashes, `+`, `=`, `~`, `%`.
    /// Not a single lowercase word, which after an unquoted `name: ` is prose.
    fn secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._~+/%-]{4,40}[A-Za-z0-9=]"
            .prop_filter("a lowercase word is prose", |secret| {
                !secret.bytes().all(|byte| byte.is_ascii_lowercase())
            })
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "access_token",
            "id_token",
            "token",
            "refresh_token",
            "assertion",
            "subject_token",
            "client_secret",
            "private_key",
            "private_key_id",
            "password",
            "Authorization",
            "X-Serverless-Authorization",
            "accessToken",
            "apiKey",
        ])
        .prop_map(str::to_owned)
    }

    /// Each way a secret is written next to its name.
    fn embedded(key: &str, secret: &str, form: usize) -> String {
        match form {
            0 => format!("{key}={secret}"),
            1 => format!("a=b&{key}={secret}&c=d"),
            2 => format!("{key}: {secret}"),
            3 => format!("{key}:{secret}"),
            4 => format!("\"{key}\": \"{secret}\""),
            5 => format!("{{\"{key}\":\"{secret}\",\"x\":1}}"),
            6 => format!("{{\\\"{key}\\\": \\\"{secret}\\\"}}"),
            7 => format!("'{key}' : '{secret}'"),
            8 => format!("{key}: Bearer {secret}"),
            9 => format!("{key} = \"{secret}\""),
            _ => format!("Bearer {secret}"),
        }
    }

    proptest! {
        #[test]
        fn no_embedded_secret_survives(
            key in key(),
            secret in secret(),
            form in 0usize..11,
            before in "[ -~]{0,30}",
            after in "[ -~\n]{0,30}",
        ) {
            // What surrounds the secret may hold anything but its first or last letter
            // glued to it (then the secret is another, longer word).
            let text = format!("{before} {} {after}", embedded(&key, &secret, form));
            let redacted = redact(&text);
            prop_assert!(!redacted.contains(&secret), "{text:?} -> {redacted:?}");
        }

        #[test]
        fn jwts_and_private_keys_never_survive(
            payload in "[A-Za-z0-9_-]{10,60}",
            body in "[A-Za-z0-9+/]{16,64}",
            before in "[ -~]{0,30}",
        ) {
            let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.{payload}");
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----");
            let redacted = redact(&format!("{before} {jwt} | {pem} done"));
            prop_assert!(!redacted.contains(&payload), "{redacted}");
            prop_assert!(!redacted.contains(&body), "{redacted}");
            prop_assert!(redacted.ends_with(" done"), "{redacted}");
        }

        #[test]
        fn redacting_twice_changes_nothing_more(text in "[ -~\n]{0,80}") {
            let once = redact(&text);
            prop_assert_eq!(redact(&once), once.clone());
        }
    }
}
