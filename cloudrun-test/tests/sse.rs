//! `sse::EventStream` over a real chunked HTTP/1.1 stream on loopback, sent by a server
//! that writes each piece when the test says so: events arrive before the stream ends,
//! line endings split across pieces are read right, limits hold.

mod protocols;

use std::time::{Duration, Instant};

use cloudrun_test::sse::EventStream;
use protocols::{Identity, TESTER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A server answering one request with a `text/event-stream` whose pieces the test
/// sends through the channel, each as one HTTP chunk (`None` ends the stream). It
/// hands back the request's head.
struct Stream {
    url: String,
    pieces: mpsc::UnboundedSender<Option<Vec<u8>>>,
    head: tokio::sync::oneshot::Receiver<String>,
}

impl Stream {
    async fn start() -> Stream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (pieces, mut to_send) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
        let (head_sender, head) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = head_sender.send(read_head(&mut socket).await);
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                )
                .await
                .unwrap();
            while let Some(piece) = to_send.recv().await {
                let Some(piece) = piece else {
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                    break;
                };
                let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                chunk.extend_from_slice(&piece);
                chunk.extend_from_slice(b"\r\n");
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Held open until the test is done with it (a stream that never ends).
            std::future::pending::<()>().await;
        });
        Stream { url, pieces, head }
    }

    fn send(&self, piece: &str) {
        self.pieces.send(Some(piece.as_bytes().to_vec())).unwrap();
    }

    fn end(&self) {
        self.pieces.send(None).unwrap();
    }
}

async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn events_arrive_as_they_are_sent_with_the_token_on_the_request() {
    let identity = Identity::start();
    let stream = Stream::start().await;
    let client = identity
        .client_for(TESTER, &stream.url)
        .build()
        .await
        .unwrap();
    let response = client
        .get("/events")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut events = EventStream::new(response);

    stream.send("\u{feff}: hello\n\ndata: first\n\n");
    // The stream is still open: the first event is read before anything else is sent.
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the first event arrives while the stream is open")
        .unwrap()
        .unwrap();
    assert_eq!(first.event, "message");
    assert_eq!(first.data, "first");

    // Line endings cut across pieces, multi-line data, an id that persists.
    for piece in [
        "event: tick\r",
        "\ndata: a\r\ndata: b\r",
        "\nid: 9\r",
        "\r\ndata: c\n",
        "\n",
    ] {
        stream.send(piece);
    }
    let tick = events.next().await.unwrap().unwrap();
    assert_eq!(
        (tick.event.as_str(), tick.data.as_str(), tick.id.as_str()),
        ("tick", "a\nb", "9")
    );
    let next = events.next().await.unwrap().unwrap();
    assert_eq!(
        (next.event.as_str(), next.data.as_str(), next.id.as_str()),
        ("message", "c", "9")
    );
    assert_eq!(events.last_event_id(), "9");

    stream.send("retry: 2500\ndata: cut off by the end");
    stream.end();
    assert_eq!(
        events.next().await.unwrap(),
        None,
        "an unfinished event is dropped"
    );
    assert_eq!(events.next().await.unwrap(), None);
    assert_eq!(events.retry(), Some(Duration::from_millis(2500)));

    let head = stream.head.await.unwrap();
    let token = head
        .lines()
        .find_map(|line| line.strip_prefix("authorization: "))
        .expect("the request carried the token");
    assert!(
        identity.check(Some(token), &stream.url).is_ok(),
        "a valid token for the service"
    );
}

#[tokio::test]
async fn a_line_over_the_limit_is_an_error_not_a_growing_buffer() {
    let identity = Identity::start();
    let stream = Stream::start().await;
    let client = identity
        .client_for(TESTER, &stream.url)
        .build()
        .await
        .unwrap();
    let response = client.get("/events").send().await.unwrap();
    let mut events = EventStream::with_limit(response, 64);
    stream.send("data: small\n\n");
    assert_eq!(events.next().await.unwrap().unwrap().data, "small");
    // No line ending ever comes.
    for _ in 0..4 {
        stream.send(&"x".repeat(20));
    }
    let error = events.next().await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("over 64 bytes"), "{message}");
    assert!(message.contains("EventStream::with_limit"), "{message}");
    assert_eq!(
        events.next().await.unwrap(),
        None,
        "nothing after the error"
    );
}

#[tokio::test]
async fn the_clients_time_limit_covers_the_stream_and_a_request_can_lift_it() {
    let identity = Identity::start();

    // The client's own limit ends a stream that goes on longer.
    let stream = Stream::start().await;
    let client = identity
        .client_for(TESTER, &stream.url)
        .timeout(Duration::from_millis(1500))
        .build()
        .await
        .unwrap();
    let mut events = EventStream::new(client.get("/").send().await.unwrap());
    stream.send("data: early\n\n");
    assert_eq!(events.next().await.unwrap().unwrap().data, "early");
    let error = events.next().await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let message = error.to_string();
    assert!(message.contains("RequestBuilder::timeout"), "{message}");

    // A longer limit for the one request lets the stream go on past the client's.
    let stream = Stream::start().await;
    let client = identity
        .client_for(TESTER, &stream.url)
        .timeout(Duration::from_millis(1500))
        .build()
        .await
        .unwrap();
    let mut events = EventStream::new(
        client
            .get("/")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stream.send("data: late\n\n");
    assert_eq!(events.next().await.unwrap().unwrap().data, "late");
}

/// Through the emulator's front, as through Cloud Run's: events stream through as they
/// are sent, about as soon as when read from the service directly.
#[tokio::test]
async fn events_stream_through_the_emulator_as_soon_as_directly() {
    use cloudrun_test_emulator::{Emulator, ServiceConfig, Upstream};

    let behind = Stream::start().await;
    let identity = Identity::with(
        Emulator::builder().service(
            ServiceConfig::new("events")
                .upstream(Upstream::Url(behind.url.parse().unwrap()))
                .invoker(&format!("serviceAccount:{TESTER}")),
        ),
    );
    let front = identity.emulator.service_url("events").unwrap().to_string();
    let client = identity.client_for(TESTER, &front).build().await.unwrap();
    let mut through = EventStream::new(client.get("/events").send().await.unwrap());

    let direct = Stream::start().await;
    let client = identity
        .client_for(TESTER, &direct.url)
        .build()
        .await
        .unwrap();
    let mut directly = EventStream::new(client.get("/events").send().await.unwrap());

    // The quickest of a few events each way, so that a busy machine's pause does not count.
    let mut quickest = [Duration::MAX; 2];
    for n in 0..5 {
        for (way, (stream, events)) in [(&behind, &mut through), (&direct, &mut directly)]
            .into_iter()
            .enumerate()
        {
            let sent = Instant::now();
            stream.send(&format!("data: {n}\n\n"));
            let event = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("the event arrives while the stream is open")
                .unwrap()
                .unwrap();
            assert_eq!(event.data, n.to_string());
            quickest[way] = quickest[way].min(sent.elapsed());
        }
    }
    let [through, directly] = quickest;
    assert!(
        through < directly + Duration::from_millis(50),
        "first event through the emulator after {through:?}, directly after {directly:?}"
    );

    let head = behind.head.await.unwrap();
    let forwarded = head
        .lines()
        .find_map(|line| line.strip_prefix("authorization: "))
        .expect("the front forwards the token");
    assert!(
        forwarded.ends_with(".SIGNATURE_REMOVED_BY_GOOGLE"),
        "the service gets no replayable token"
    );
}

/// A stream that outlives its token keeps going: Cloud Run (and the emulator's front)
/// checks the token when the request comes in, not per event. The next request then
/// carries a fresh token, which the front accepts although the first one has expired.
#[tokio::test]
async fn a_stream_outlives_its_token_and_the_next_request_gets_a_fresh_one() {
    use cloudrun_test_emulator::{Emulator, ServiceConfig};

    let lifetime = Duration::from_secs(1);
    let identity = Identity::with(
        Emulator::builder()
            .id_token_lifetime(lifetime)
            .service(ServiceConfig::new("ticker").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let front = identity.emulator.service_url("ticker").unwrap().to_string();
    let client = identity.client_for(TESTER, &front).build().await.unwrap();

    // Four ticks 800 ms apart: the stream lasts well past the token's second.
    let started = Instant::now();
    let response = client
        .get("/sse?count=4&interval_ms=800")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = EventStream::new(response);
    let mut ticks = Vec::new();
    while let Some(event) = events.next().await.unwrap() {
        ticks.push(event.data);
    }
    assert_eq!(ticks, ["1", "2", "3", "4"]);
    assert!(started.elapsed() > lifetime * 2, "{:?}", started.elapsed());
    let minted = identity.emulator.stats().id_tokens_minted;

    // The first token expired during the stream; a new request must not send it.
    let response = client.get("/").send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the front accepts the next request's token"
    );
    assert!(
        identity.emulator.stats().id_tokens_minted > minted,
        "the next request carried a newly minted token"
    );
}
