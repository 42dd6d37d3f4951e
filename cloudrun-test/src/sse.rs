//! Server-sent events (`text/event-stream`) read off a response as they arrive.
//!
//! Response bodies stream through the client: [`reqwest::Response::chunk`] hands over
//! each piece as it comes. [`EventStream`] parses those pieces by the WHATWG rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>):
//! `data`, `event`, `id` and `retry` fields, comments, lines ending in CR, LF or CRLF
//! (even split across pieces), multi-line data, a leading byte order mark; an event
//! cut off by the end of the stream is dropped. Memory is bounded: a line or an event
//! larger than the limit ([`EventStream::with_limit`]) is an error, never a buffer that
//! grows without end.
//!
//! ```no_run
//! # async fn f(client: cloudrun_test::Client) -> Result<(), cloudrun_test::Error> {
//! use cloudrun_test::sse::EventStream;
//!
//! let response = client.get("/events").header("accept", "text/event-stream").send().await?;
//! let mut events = EventStream::new(response);
//! while let Some(event) = events.next().await? {
//!     println!("{}: {}", event.event, event.data);
//! }
//! # Ok(()) }
//! ```
//!
//! # Time limits and tokens
//!
//! A client's time limit per request covers the whole exchange, body included (5
//! minutes unless [`ClientBuilder::timeout`](crate::ClientBuilder::timeout) says
//! otherwise), so it also ends a longer stream. Lift it for one request with
//! [`RequestBuilder::timeout`](crate::RequestBuilder::timeout) (a longer limit), or for
//! the client with [`ClientBuilder::no_timeout`](crate::ClientBuilder::no_timeout) (the
//! client `#[cloudrun_test]` gives is built so: the test's own limit covers it). Cloud
//! Run cuts every request at the service's own timeout too (300 s unless deployed with
//! `--timeout`, at most 3600 s).
//!
//! The token is checked when the request is sent, not per event: a stream that
//! outlives its token goes on, and a new request (to reconnect, with the
//! `Last-Event-ID` header set to [`EventStream::last_event_id`]) gets a fresh token.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// The largest line or event an [`EventStream`] holds unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Its type: the `event` field, else `message`.
    pub event: String,
    /// Its `data` lines, joined with `\n`.
    pub data: String,
    /// The last event ID when it was dispatched: the latest `id` field so far in the
    /// stream (an `id` persists across events), empty if none.
    pub id: String,
}

/// The events of a `text/event-stream` response, read as its body arrives; see the
/// [module documentation](self).
pub struct EventStream {
    response: reqwest::Response,
    parser: Parser,
    /// The body ended or broke off: no more events.
    done: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.response.url().as_str())
            .field("last_event_id", &self.parser.last_event_id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Reads `response`'s body as server-sent events, each line and event at most
    /// [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream::with_limit(response, DEFAULT_MAX_EVENT_BYTES)
    }

    /// Reads `response`'s body as server-sent events, each line and each event (its
    /// data and type) at most `max_event_bytes`: beyond that, [`EventStream::next`]
    /// fails.
    pub fn with_limit(response: reqwest::Response, max_event_bytes: usize) -> EventStream {
        EventStream {
            response,
            parser: Parser::new(max_event_bytes),
            done: false,
        }
    }

    /// The next event, as soon as its closing blank line arrives; `None` once the
    /// stream has ended. An error if the body broke off (a time limit, a reset) or a
    /// line or event passed the limit; after an error, `None`.
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(event) = self.parser.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let chunk = self.response.chunk().await;
            let failure = match chunk {
                Ok(Some(chunk)) => match self.parser.feed(&chunk) {
                    Ok(()) => continue,
                    Err(TooLarge) => Error::request(
                        "-",
                        self.response.url().as_str(),
                        format!(
                            "the event stream sent a line or an event over {} bytes, the \
                             limit of `EventStream`",
                            self.parser.limit
                        ),
                    )
                    .with_fix(
                        "raise it with `EventStream::with_limit`, if events this large are meant",
                    ),
                },
                Ok(None) => {
                    self.done = true;
                    continue;
                }
                Err(error) => broke_off(self.response.url().as_str(), error),
            };
            self.done = true;
            return Err(failure);
        }
    }

    /// The last event ID so far (the `id` of the latest dispatched event, or of a
    /// blank line after an `id` field): what to send as `Last-Event-ID` to resume.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// The reconnection time the stream asked for (its latest `retry` field), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.parser.retry
    }

    /// The response, for its status and headers.
    pub fn response(&self) -> &reqwest::Response {
        &self.response
    }
}

/// The error for a body that broke off.
fn broke_off(url: &str, error: reqwest::Error) -> Error {
    let limit = if error.is_timeout() {
        " (the client's time limit covers the whole body: lift it with \
         `RequestBuilder::timeout` or `ClientBuilder::no_timeout`)"
    } else {
        ""
    };
    Error::request(
        "-",
        url,
        format!(
            "the event stream broke off: {}{limit}",
            crate::error::describe_http_error(&error)
        ),
    )
    .with_source(error)
}

/// A line or an event over the limit.
#[derive(Debug, PartialEq, Eq)]
struct TooLarge;

/// The WHATWG event-stream parser, fed with pieces of the body as they come.
#[derive(Debug)]
struct Parser {
    limit: usize,
    /// The bytes of the line not ended yet.
    line: Vec<u8>,
    /// Whether the last piece ended with CR: an LF opening the next one ends nothing.
    after_cr: bool,
    /// Whether a line was read yet (the first one may start with a byte order mark).
    started: bool,
    data: String,
    event_type: String,
    /// The last event ID buffer: set by `id` fields, kept from event to event.
    id: String,
    /// The buffer's value at the latest dispatch.
    last_event_id: String,
    retry: Option<Duration>,
    /// Events dispatched and not yet handed out (one piece may hold several).
    ready: VecDeque<Event>,
}

impl Parser {
    fn new(limit: usize) -> Parser {
        Parser {
            limit,
            line: Vec::new(),
            after_cr: false,
            started: false,
            data: String::new(),
            event_type: String::new(),
            id: String::new(),
            last_event_id: String::new(),
            retry: None,
            ready: VecDeque::new(),
        }
    }

    fn feed(&mut self, mut piece: &[u8]) -> Result<(), TooLarge> {
        if self.after_cr && !piece.is_empty() {
            self.after_cr = false;
            if piece[0] == b'\n' {
                piece = &piece[1..];
            }
        }
        while let Some(end) = piece.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.take(&piece[..end])?;
            let line = std::mem::take(&mut self.line);
            self.line_ended(&line)?;
            // Kept for the next line: its capacity.
            self.line = line;
            self.line.clear();
            let mut rest = end + 1;
            if piece[end] == b'\r' {
                match piece.get(rest) {
                    Some(b'\n') => rest += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            piece = &piece[rest..];
        }
        self.take(piece)
    }

    /// Adds `bytes` to the line not ended yet.
    fn take(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if self.line.len() + bytes.len() > self.limit {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_ended(&mut self, mut line: &[u8]) -> Result<(), TooLarge> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        if self.data.len() + self.event_type.len() > self.limit {
            return Err(TooLarge);
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.id);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop();
        let event_type = std::mem::take(&mut self.event_type);
        self.ready.push_back(Event {
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: &str) -> Event {
        Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.to_owned(),
        }
    }

    /// The events of `stream` fed whole, and fed split at every byte (which must not
    /// change them: pieces arrive cut anywhere).
    fn parse(stream: &str) -> Vec<Event> {
        let whole = {
            let mut parser = Parser::new(DEFAULT_MAX_EVENT_BYTES);
            parser.feed(stream.as_bytes()).unwrap();
            Vec::from(parser.ready)
        };
        for cut in 0..=stream.len() {
            let mut parser = Parser::new(DEFAULT_MAX_EVENT_BYTES);
            let (a, b) = stream.as_bytes().split_at(cut);
            parser.feed(a).unwrap();
            parser.feed(b"").unwrap();
            parser.feed(b).unwrap();
            assert_eq!(Vec::from(parser.ready), whole, "cut at {cut} in {stream:?}");
        }
        let mut bytewise = Parser::new(DEFAULT_MAX_EVENT_BYTES);
        for byte in stream.as_bytes() {
            bytewise.feed(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(Vec::from(bytewise.ready), whole, "byte by byte: {stream:?}");
        whole
    }

    #[test]
    fn fields_events_and_defaults() {
        assert_eq!(
            parse("data: one\n\nevent: tick\ndata: two\nid: 7\n\n"),
            [event("message", "one", ""), event("tick", "two", "7")]
        );
    }

    #[test]
    fn multi_line_data_keeps_inner_newlines_and_drops_the_last() {
        assert_eq!(
            parse("data: a\ndata\ndata:  b\n\n"),
            [event("message", "a\n\n b", "")]
        );
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let expected = [event("message", "a", ""), event("x", "b", "")];
        assert_eq!(parse("data: a\r\rdata: b\revent: x\r\r"), expected);
        assert_eq!(
            parse("data: a\r\n\r\ndata: b\r\nevent: x\r\n\r\n"),
            expected
        );
        assert_eq!(parse("data: a\n\r\ndata: b\revent: x\n\r"), expected);
    }

    #[test]
    fn comments_unknown_fields_and_a_space_in_the_name_are_ignored() {
        assert_eq!(
            parse(": hello\ndata :x\nfoo: bar\ndata: kept\n:\n\n"),
            [event("message", "kept", "")]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_but_its_id_counts() {
        let mut parser = Parser::new(DEFAULT_MAX_EVENT_BYTES);
        parser
            .feed(b"event: nothing\nid: 3\n\ndata: x\n\n")
            .unwrap();
        assert_eq!(Vec::from(parser.ready), [event("message", "x", "3")]);
        assert_eq!(parser.last_event_id, "3");
    }

    #[test]
    fn ids_persist_reset_when_empty_and_refuse_nul() {
        assert_eq!(
            parse("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 2\0\ndata: d\n\n"),
            [
                event("message", "a", "1"),
                event("message", "b", "1"),
                event("message", "c", ""),
                event("message", "d", ""),
            ]
        );
    }

    #[test]
    fn retry_takes_digits_only() {
        let mut parser = Parser::new(DEFAULT_MAX_EVENT_BYTES);
        parser
            .feed(b"retry: 1500\n\nretry: 2s\n\nretry:\n\n")
            .unwrap();
        assert_eq!(parser.retry, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn one_leading_byte_order_mark_is_dropped() {
        assert_eq!(
            parse("\u{feff}data: a\n\n\u{feff}data: b\n\n"),
            [event("message", "a", "")]
        );
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_not_dispatched() {
        assert_eq!(parse("data: a\n\ndata: b\n"), [event("message", "a", "")]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut parser = Parser::new(DEFAULT_MAX_EVENT_BYTES);
        parser.feed(b"data: \xff\xfe ok\n\n").unwrap();
        assert_eq!(parser.ready[0].data, "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn lines_and_events_over_the_limit_are_errors() {
        let mut parser = Parser::new(16);
        assert_eq!(parser.feed(&[b'x'; 17]), Err(TooLarge));

        let mut parser = Parser::new(16);
        for _ in 0..16 {
            parser.feed(b"x").unwrap();
        }
        assert_eq!(
            parser.feed(b"y"),
            Err(TooLarge),
            "a line grown piece by piece"
        );

        let mut parser = Parser::new(16);
        parser.feed(b"data: 12345\ndata: 12345\n").unwrap();
        assert_eq!(
            parser.feed(b"data: 12345\n"),
            Err(TooLarge),
            "an event of many lines"
        );

        let mut parser = Parser::new(16);
        parser
            .feed(b"data: 1234567890\n\ndata: 1234567890\n\n")
            .unwrap();
        assert_eq!(
            parser.ready.len(),
            2,
            "the limit is per event, not per stream"
        );
    }
}
