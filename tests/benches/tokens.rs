//! Benchmarks of the token cache and of what `#[cloudrun_test]` costs over plain
//! `#[tokio::test]` + reqwest. Every figure is a ratio against a baseline measured in
//! the same run (mints are counts against tests). See BENCHMARKS.md.
//!
//!     cargo bench -p cloudrun-test-e2e --bench tokens                      # bounded: seconds
//!     CLOUDRUN_TEST_BENCH_FULL=1 cargo bench -p cloudrun-test-e2e --bench tokens
//!
//! The full run adds generated 40- and 1000-test crates under `cargo test` and
//! `cargo nextest run`, 1000 processes, and clean builds of examples/hello against a
//! reqwest + tokio baseline (minutes). The process exits non-zero when a correctness
//! figure is wrong (more than one mint, a second TLS or crypto stack); timing targets
//! are reported, not enforced: this machine is shared and noisy.
//!
//! Measurements that need settings from the environment (`run_test` reads the
//! credentials like a test does) run in a child process of this binary, started with
//! `CLOUDRUN_TEST_BENCH_CHILD` set, so nothing here ever calls `set_var`.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cloudrun_test::__private::{TestSpec, run_test};
use cloudrun_test::reqwest::header::{AUTHORIZATION, HeaderValue};
use cloudrun_test::{Client, Credentials};
use cloudrun_test_e2e::{Fixture, GeneratedCrate, TESTER, isolate, output_text, workspace_root};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

const CHILD: &str = "CLOUDRUN_TEST_BENCH_CHILD";
/// `cargo bench` builds optimised; the slow tier (`cargo test-slow`) runs this under the
/// test profile, reusing the test build, and then times less and judges no timing
/// (unoptimised code says little).
const OPTIMISED: bool = !cfg!(debug_assertions);

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(CHILD) {
        return child(&role);
    }
    let full = std::env::var("CLOUDRUN_TEST_BENCH_FULL").is_ok_and(|value| value == "1");
    let mut report = Report::default();
    println!(
        "cloudrun-test benchmarks, {}, {} cores (load average {}), {} build, {} mode",
        today(),
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|text| text
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        if cfg!(debug_assertions) {
            "unoptimised (dev)"
        } else {
            "optimised (bench)"
        },
        if full { "full" } else { "bounded" },
    );
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    // CLOUDRUN_TEST_BENCH_ONLY=per-request, cli-warm-path, build-cost or compile-loop:
    // that figure alone, e.g. while working on it.
    match std::env::var("CLOUDRUN_TEST_BENCH_ONLY").as_deref() {
        Ok("per-request") => {
            per_request(&fixture, &mut report);
            return report.print();
        }
        Ok("cli-warm-path") => {
            cli_warm_path(&fixture, &mut report, full);
            return report.print();
        }
        Ok("build-cost") => {
            build_cost(&mut report);
            return report.print();
        }
        Ok("compile-loop") => {
            compile_loop(&mut report);
            return report.print();
        }
        _ => {}
    }
    hot_path(&fixture, &mut report);
    per_request(&fixture, &mut report);
    per_test_setup(&fixture, &mut report);
    mints_in_one_process(
        &fixture,
        &mut report,
        if OPTIMISED || full {
            &[40, 1000]
        } else {
            &[40]
        },
    );
    mints_process_per_test(
        &fixture,
        &mut report,
        if full { &[40, 1000] } else { &[40] },
    );
    dependency_tree(&mut report);
    cli_warm_path(&fixture, &mut report, full);
    if full {
        mints_generated_crates(&fixture, &mut report, &[40, 1000]);
        build_cost(&mut report);
        compile_loop(&mut report);
    } else {
        println!(
            "\n(set CLOUDRUN_TEST_BENCH_FULL=1 for generated crates under cargo test and nextest, \
             1000 processes and clean builds)"
        );
    }
    report.print()
}

// ---------------------------------------------------------------------------------
// Reporting

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

struct Row {
    figure: String,
    measured: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: Verdict,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Miss,
    /// A correctness figure is wrong: the bench fails.
    Wrong,
    Info,
}

impl Report {
    fn add(&mut self, figure: &str, measured: String, baseline: String, ratio: String) -> &mut Row {
        let row = Row {
            figure: figure.into(),
            measured,
            baseline,
            ratio,
            target: "-".into(),
            verdict: Verdict::Info,
        };
        println!(
            "  {}: {} vs {} -> {}",
            row.figure, row.measured, row.baseline, row.ratio
        );
        self.rows.push(row);
        self.rows.last_mut().unwrap()
    }

    fn print(&self) -> ExitCode {
        println!("\n| figure | measured | baseline | ratio | target | |");
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            let verdict = match row.verdict {
                Verdict::Pass => "pass",
                Verdict::Miss => "MISS",
                Verdict::Wrong => "WRONG",
                Verdict::Info => "",
            };
            println!(
                "| {} | {} | {} | {} | {} | {verdict} |",
                row.figure, row.measured, row.baseline, row.ratio, row.target
            );
        }
        if self.rows.iter().any(|row| row.verdict == Verdict::Wrong) {
            eprintln!("a correctness figure is wrong (see WRONG above)");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

impl Row {
    /// A timing target: reported, never enforced.
    fn at_most(&mut self, ratio: f64, limit: f64) {
        self.timing_target(format!("≤ {limit}×"), ratio <= limit);
    }

    fn timing_target(&mut self, target: String, met: bool) {
        if !OPTIMISED {
            self.target = format!("{target} (judged in optimised builds only)");
            self.verdict = Verdict::Info;
            return;
        }
        self.target = target;
        self.verdict = if met { Verdict::Pass } else { Verdict::Miss };
    }

    /// A correctness target: the bench fails if it is not met.
    fn must(&mut self, ok: bool, target: &str) {
        self.target = target.into();
        self.verdict = if ok { Verdict::Pass } else { Verdict::Wrong };
    }
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown date".into())
}

fn format_time(time: Duration) -> String {
    let nanos = time.as_secs_f64() * 1e9;
    if nanos < 1e3 {
        format!("{nanos:.0} ns")
    } else if nanos < 1e6 {
        format!("{:.1} µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.1} ms", nanos / 1e6)
    } else {
        format!("{:.1} s", nanos / 1e9)
    }
}

// ---------------------------------------------------------------------------------
// Timing: baseline and subject measured in alternation, medians of many runs

struct Comparison {
    baseline: Duration,
    subject: Duration,
    ratio: f64,
    /// 25th and 75th percentile of the per-run subject/baseline ratios: the noise.
    spread: (f64, f64),
    /// The ratio of the fastest runs: other processes only ever add time, so on a
    /// loaded machine this is the closer estimate of the work itself.
    fastest: f64,
}

impl Comparison {
    fn ratio_text(&self) -> String {
        format!(
            "{:.3}× (fastest runs {:.3}×; runs p25–p75 {:.2}–{:.2})",
            self.ratio, self.fastest, self.spread.0, self.spread.1
        )
    }
}

/// Runs `baseline(n)` and `subject(n)` (each returns how long `n` iterations took)
/// `runs` times, alternating which goes first, and compares the median time per
/// iteration.
fn compare(
    runs: usize,
    iterations: u32,
    mut baseline: impl FnMut(u32) -> Duration,
    mut subject: impl FnMut(u32) -> Duration,
) -> Comparison {
    let (runs, iterations) = if OPTIMISED {
        (runs, iterations)
    } else {
        (runs.min(5), iterations.div_ceil(10))
    };
    // Warm up both: caches, connections, lazily built state.
    baseline(iterations.div_ceil(4));
    subject(iterations.div_ceil(4));
    let (mut base_times, mut subject_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (base, sub) = if run % 2 == 0 {
            let base = baseline(iterations);
            (base, subject(iterations))
        } else {
            let sub = subject(iterations);
            (baseline(iterations), sub)
        };
        base_times.push(base / iterations);
        subject_times.push(sub / iterations);
        ratios.push(sub.as_secs_f64() / base.as_secs_f64());
    }
    let baseline = median(&mut base_times);
    let subject = median(&mut subject_times);
    ratios.sort_by(f64::total_cmp);
    Comparison {
        baseline,
        subject,
        ratio: subject.as_secs_f64() / baseline.as_secs_f64(),
        spread: (ratios[ratios.len() / 4], ratios[ratios.len() * 3 / 4]),
        // Sorted by `median`.
        fastest: subject_times[0].as_secs_f64() / base_times[0].as_secs_f64(),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// A plain local HTTP server: keep-alive, `200 ok` to everything, no auth check. It runs
// on the measuring runtime itself, so that a request costs CPU work only: a server on
// another thread adds cross-CPU wake-ups that vary by tens of µs per connection on a
// shared VM and drown the differences measured here.

/// An audience for the figures that never contact the service.
const LOCAL_AUDIENCE: &str = "http://127.0.0.1:9";

fn start_plain_server(runtime: &tokio::runtime::Runtime) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_plain(stream));
        }
    });
    url
}

async fn serve_plain(stream: tokio::net::TcpStream) {
    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
    let _ = stream.set_nodelay(true);
    let mut pending = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        // Requests without bodies (GET): each ends at the blank line.
        while let Some(end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let mut sent = 0;
            while sent < ANSWER.len() {
                if stream.writable().await.is_err() {
                    return;
                }
                match stream.try_write(&ANSWER[sent..]) {
                    Ok(written) => sent += written,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// 1. The cached-token hot path

fn hot_path(fixture: &Fixture, report: &mut Report) {
    println!("\nhot path: Credentials::id_token on a warm cache");
    let credentials = Credentials::from_file(fixture.key_file(TESTER)).unwrap();
    let audience = LOCAL_AUDIENCE.to_owned();
    let runtime = current_thread_runtime();
    let token = runtime.block_on(credentials.id_token(&audience)).unwrap();
    // Baseline: the least a cache can do, a map lookup behind a lock and a refcount.
    let map: Mutex<HashMap<(String, String), Arc<str>>> = Mutex::new(HashMap::from([(
        ("fingerprint".to_owned(), audience.clone()),
        Arc::from(token.as_str()),
    )]));
    let key = ("fingerprint".to_owned(), audience.clone());
    let map_lookup = |iterations| {
        let started = Instant::now();
        for _ in 0..iterations {
            let token = map.lock().unwrap().get(black_box(&key)).cloned();
            black_box(token);
        }
        started.elapsed()
    };
    let result = compare(31, 20_000, map_lookup, |iterations| {
        runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(credentials.id_token(black_box(&audience)).await.unwrap());
            }
            started.elapsed()
        })
    });
    report_hot_path(report, "warm `Credentials::id_token`", &result);
    // What a request uses: the client's own copy of its token while it is fresh.
    let client = runtime
        .block_on(
            Client::builder()
                .url(LOCAL_AUDIENCE)
                .credentials(credentials.clone())
                .build(),
        )
        .unwrap();
    let result = compare(31, 20_000, map_lookup, |iterations| {
        runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(client.id_token().await.unwrap());
            }
            started.elapsed()
        })
    });
    report_hot_path(
        report,
        "warm `Client::id_token` (what a request uses)",
        &result,
    );
}

fn report_hot_path(report: &mut Report, figure: &str, result: &Comparison) {
    report
        .add(
            figure,
            format_time(result.subject),
            format!(
                "{} (Mutex<HashMap> + Arc<str> clone)",
                format_time(result.baseline)
            ),
            result.ratio_text(),
        )
        .timing_target(
            "< 1 µs absolute".into(),
            result.subject < Duration::from_micros(1),
        );
}

// ---------------------------------------------------------------------------------
// 2. Per-request overhead

/// The per-request subjects: the `Client` as `#[cloudrun_test]` builds it (no limit
/// per request: the test's limit covers them), one with `ClientBuilder`'s default
/// limit per request, and a static header for hand-written reqwest calls, against a
/// plain server on `runtime`. Runs in a child process, with the settings from the
/// environment.
struct RequestBench {
    runtime: tokio::runtime::Runtime,
    client: Client,
    limited: Client,
    header: HeaderValue,
    url: String,
}

impl RequestBench {
    fn start() -> RequestBench {
        let credentials = Credentials::from_env().unwrap();
        let runtime = current_thread_runtime();
        let server = start_plain_server(&runtime);
        let (client, limited, header) = runtime.block_on(async {
            let builder = || {
                Client::builder()
                    .url(server.as_str())
                    .credentials(credentials.clone())
            };
            let client = builder().no_timeout().build().await.unwrap();
            let limited = builder().build().await.unwrap();
            let token = client.id_token().await.unwrap();
            let mut header = HeaderValue::try_from(format!("Bearer {}", token.as_str())).unwrap();
            header.set_sensitive(true);
            (client, limited, header)
        });
        RequestBench {
            runtime,
            client,
            limited,
            header,
            url: format!("{server}/"),
        }
    }

    // Not inlined: `valgrind --tool=callgrind --toggle-collect` counts inside them.
    #[inline(never)]
    fn through_client(&self, client: &Client, iterations: u32) -> Duration {
        self.runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                let response = client.get("/").send().await.unwrap();
                black_box(response.bytes().await.unwrap());
            }
            started.elapsed()
        })
    }

    #[inline(never)]
    fn by_hand(&self, raw: &cloudrun_test::reqwest::Client, iterations: u32) -> Duration {
        self.runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                let response = raw
                    .get(self.url.as_str())
                    .header(AUTHORIZATION, self.header.clone())
                    .send()
                    .await
                    .unwrap();
                black_box(response.bytes().await.unwrap());
            }
            started.elapsed()
        })
    }
}

/// reqwest with the timeouts `Client` sets.
fn reqwest_with_client_timeouts() -> cloudrun_test::reqwest::Client {
    cloudrun_test::reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Timed in this many fresh processes: on this shared VM a process keeps its own bias
/// (where its memory landed, its neighbours), a few percent either way, so one
/// process's median is not enough.
const REQUEST_PROCESSES: usize = if OPTIMISED { 9 } else { 1 };

fn per_request(fixture: &Fixture, report: &mut Report) {
    println!("\nper request: Client::get(..).send() vs reqwest with a static Authorization header");
    let runs: Vec<HashMap<String, f64>> = (0..REQUEST_PROCESSES)
        .map(|_| {
            let output = run_child(fixture, &[], "requests", &[], Duration::from_secs(300));
            let text = output_text(&output);
            let values = child_values(&text);
            if values.is_empty() {
                eprintln!("{text}");
            }
            values
        })
        .collect();
    for (baseline, figure, name) in [
        (
            "plain",
            "request through `Client` as `#[cloudrun_test]` injects it",
            "reqwest::Client::new(), static header",
        ),
        (
            "timed",
            "request through `Client` with a 5 min limit per request (`ClientBuilder`'s default)",
            "reqwest with the same timeouts, static header",
        ),
    ] {
        let mut processes: Vec<(f64, f64, f64)> = runs
            .iter()
            .filter_map(|values| {
                let number = |key: &str| values.get(&format!("{baseline}_{key}")).copied();
                Some((
                    number("ratio")?,
                    number("baseline_ns")?,
                    number("subject_ns")?,
                ))
            })
            .collect();
        if processes.len() < REQUEST_PROCESSES {
            report
                .add(figure, "failed".into(), name.into(), "-".into())
                .must(false, "runs");
            continue;
        }
        processes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, baseline_ns, subject_ns) = processes[processes.len() / 2];
        let ratios: Vec<String> = processes
            .iter()
            .map(|run| format!("{:.3}", run.0))
            .collect();
        let row = report.add(
            figure,
            format_time(Duration::from_nanos(subject_ns as u64)),
            format!(
                "{} ({name})",
                format_time(Duration::from_nanos(baseline_ns as u64))
            ),
            format!(
                "{ratio:.3}× (median of {} processes: {})",
                processes.len(),
                ratios.join(", ")
            ),
        );
        if baseline == "plain" {
            row.at_most(ratio, 1.02);
        }
    }
    count_instructions(fixture, report);
}

/// The child side of [`per_request`]: medians of 41 alternating runs of 500 requests,
/// each `Client` against reqwest set up alike.
fn child_requests() -> ExitCode {
    let bench = RequestBench::start();
    for (name, client, raw) in [
        (
            "plain",
            &bench.client,
            cloudrun_test::reqwest::Client::new(),
        ),
        ("timed", &bench.limited, reqwest_with_client_timeouts()),
    ] {
        let result = compare(
            41,
            500,
            |n| bench.by_hand(&raw, n),
            |n| bench.through_client(client, n),
        );
        println!(
            "{name}_baseline_ns={} {name}_subject_ns={} {name}_ratio={}",
            result.baseline.as_nanos(),
            result.subject.as_nanos(),
            result.ratio,
        );
    }
    ExitCode::SUCCESS
}

/// Instructions per request under `valgrind --tool=callgrind`: unlike time, they do not
/// move with the machine's load. (They do not see cache misses, which time does.)
fn count_instructions(fixture: &Fixture, report: &mut Report) {
    const REQUESTS: u32 = 2000;
    if !OPTIMISED {
        return;
    }
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        println!("  (valgrind not found: instruction counts not taken)");
        return;
    }
    // CLOUDRUN_TEST_BENCH_PROFILES=DIR keeps the profiles, for `callgrind_annotate`.
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = std::env::var_os("CLOUDRUN_TEST_BENCH_PROFILES")
        .map_or_else(|| out_dir.path().to_owned(), std::path::PathBuf::from);
    let count = |way: &str, requests: u32| -> Option<f64> {
        let (env, _cache) = fresh_environment(fixture);
        let mut command = Command::new("valgrind");
        isolate(&mut command);
        let output = command
            .args([
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=tokens::RequestBench::through_client",
                "--toggle-collect=tokens::RequestBench::by_hand",
            ])
            .arg(format!(
                "--callgrind-out-file={}",
                out_path.join(format!("{way}-{requests}.out")).display()
            ))
            .arg(std::env::current_exe().unwrap())
            .args([way, &requests.to_string()])
            .envs(env)
            .env(CHILD, "count")
            .output()
            .unwrap();
        let text = output_text(&output);
        let collected = text
            .lines()
            .find_map(|line| line.split_once("Collected : ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok());
        if collected.is_none() {
            eprintln!("{text}");
        }
        collected
    };
    // The start (one warm-up request each way) is the same for both: counted once.
    let counts = (
        count("client", 0),
        count("client", REQUESTS),
        count("reqwest", REQUESTS),
    );
    let (Some(start), Some(client), Some(raw)) = counts else {
        report
            .add(
                "instructions per request",
                "failed".into(),
                "-".into(),
                "-".into(),
            )
            .must(false, "runs");
        return;
    };
    let per_request = |total: f64| (total - start) / f64::from(REQUESTS);
    let (client, raw) = (per_request(client), per_request(raw));
    report.add(
        "instructions per request (callgrind)",
        format!("{client:.0}"),
        format!("{raw:.0} (reqwest::Client::new(), static header)"),
        format!("{:.3}×", client / raw),
    );
}

/// The child side of [`count_instructions`]: `requests` requests one way, after one
/// warm-up request each way (so that 0 requests has built the same lazy state).
fn child_count(way: &str, requests: u32) -> ExitCode {
    let bench = RequestBench::start();
    let raw = cloudrun_test::reqwest::Client::new();
    bench.through_client(&bench.client, 1);
    bench.by_hand(&raw, 1);
    match way {
        "client" => black_box(bench.through_client(&bench.client, requests)),
        _ => black_box(bench.by_hand(&raw, requests)),
    };
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------
// 3. Per-test setup: run_test vs a #[tokio::test] that builds a reqwest client

fn per_test_setup(fixture: &Fixture, report: &mut Report) {
    println!(
        "\nper-test setup: run_test (runtime, resolution, warm token, client) vs runtime + reqwest::Client::new()"
    );
    let output = run_child(
        fixture,
        &[],
        "setup",
        &[LOCAL_AUDIENCE],
        Duration::from_secs(300),
    );
    let text = output_text(&output);
    let values = child_values(&text);
    let number = |name: &str| values.get(name).copied();
    let (Some(baseline), Some(subject), Some(ratio), Some(fastest), Some(low), Some(high)) = (
        number("baseline_ns"),
        number("subject_ns"),
        number("ratio"),
        number("fastest"),
        number("low"),
        number("high"),
    ) else {
        report
            .add("per-test setup", "failed".into(), "-".into(), "-".into())
            .must(false, "runs");
        eprintln!("{text}");
        return;
    };
    let result = Comparison {
        baseline: Duration::from_nanos(baseline as u64),
        subject: Duration::from_nanos(subject as u64),
        ratio,
        spread: (low, high),
        fastest,
    };
    report
        .add(
            "per-test setup (`run_test`)",
            format_time(result.subject),
            format!(
                "{} (runtime + reqwest::Client::new())",
                format_time(result.baseline)
            ),
            result.ratio_text(),
        )
        .at_most(ratio, 1.1);
}

/// The child side of [`per_test_setup`]: settings from the environment, as in a test.
fn child_setup(url: &str) -> ExitCode {
    let spec = TestSpec {
        name: "bench::setup",
        url: Some(Box::leak(url.to_owned().into_boxed_str())),
        ..TestSpec::DEFAULT
    };
    let result = compare(
        21,
        40,
        |iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                // What #[tokio::test] does, and a client built by hand.
                current_thread_runtime().block_on(async {
                    black_box(cloudrun_test::reqwest::Client::new());
                });
            }
            started.elapsed()
        },
        |iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                run_test(spec, |client: Client| async move {
                    black_box(client);
                });
            }
            started.elapsed()
        },
    );
    println!(
        "baseline_ns={} subject_ns={} ratio={} fastest={} low={} high={}",
        result.baseline.as_nanos(),
        result.subject.as_nanos(),
        result.ratio,
        result.fastest,
        result.spread.0,
        result.spread.1
    );
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------
// 4. Mints per run

/// `tests` tests on as many threads, each with its own runtime, started together, as
/// `cargo test --test-threads N` runs them: one child process.
fn mints_in_one_process(fixture: &Fixture, report: &mut Report, sizes: &[usize]) {
    println!("\nmints, one process, a thread and a runtime per test (cargo test)");
    let url = fixture.emulator.service_url("hello").unwrap().to_string();
    for &tests in sizes {
        fixture.emulator.reset_stats();
        let started = Instant::now();
        let output = run_child(
            fixture,
            &[],
            "threads",
            &[&tests.to_string(), &url],
            Duration::from_secs(300),
        );
        let elapsed = started.elapsed();
        let stats = fixture.emulator.stats();
        let ok = output.status.success() && stats.front_accepted == tests as u64;
        if !output.status.success() {
            eprintln!("{}", output_text(&output));
        }
        report
            .add(
                &format!("{tests} tests, threads in one process"),
                format!(
                    "{} mint / {} passed",
                    stats.id_tokens_minted, stats.front_accepted
                ),
                format!("{tests} tests (a mint each without a cache)"),
                format!(
                    "1/{:.0} ({})",
                    tests as f64 / stats.id_tokens_minted.max(1) as f64,
                    format_time(elapsed)
                ),
            )
            .must(ok && stats.id_tokens_minted == 1, "1 mint");
    }
}

fn child_threads(tests: usize, url: &str) -> ExitCode {
    let spec = TestSpec {
        name: "bench::threads",
        url: Some(Box::leak(url.to_owned().into_boxed_str())),
        ..TestSpec::DEFAULT
    };
    let start = Arc::new(Barrier::new(tests));
    let threads: Vec<_> = (0..tests)
        .map(|_| {
            let start = start.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    run_test(spec, |client: Client| async move {
                        let response = client.get("/").send().await.unwrap();
                        assert_eq!(response.status(), 200);
                    });
                })
                .unwrap()
        })
        .collect();
    let failed = threads
        .into_iter()
        .map(|thread| thread.join().is_err())
        .filter(|failed| *failed)
        .count();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {tests} tests failed");
        ExitCode::FAILURE
    }
}

/// A process per test (`token-probe`, as nextest runs them), with the disk cache and,
/// as the baseline, without it.
fn mints_process_per_test(fixture: &Fixture, report: &mut Report, sizes: &[usize]) {
    println!("\nmints, a process per test (cargo nextest run)");
    let url = fixture.emulator.service_url("hello").unwrap().to_string();
    let parallel = std::thread::available_parallelism().map_or(2, |cores| cores.get()) * 2;
    for &tests in sizes {
        let mut counts = Vec::new();
        for disk_cache in ["on", "off"] {
            fixture.emulator.reset_stats();
            let (mut env, _cache) = fresh_environment(fixture);
            env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), disk_cache.into()));
            let started = Instant::now();
            let failures = run_processes(tests, parallel, || {
                let mut command = Command::new(env!("CARGO_BIN_EXE_token-probe"));
                isolate(&mut command);
                command.arg(&url).envs(env.iter().cloned());
                command
            });
            let stats = fixture.emulator.stats();
            counts.push((
                stats.id_tokens_minted,
                stats.front_accepted,
                failures,
                started.elapsed(),
            ));
        }
        let (on, off) = (counts[0], counts[1]);
        report
            .add(
                &format!("{tests} tests, a process each"),
                format!("{} mint / {} passed ({})", on.0, on.1, format_time(on.3)),
                format!(
                    "{} mints / {} passed with CLOUDRUN_TEST_DISK_CACHE=off ({})",
                    off.0,
                    off.1,
                    format_time(off.3)
                ),
                format!("1/{:.0}", off.0 as f64 / on.0.max(1) as f64),
            )
            .must(
                on.0 == 1 && on.1 == tests as u64 && on.2 == 0 && off.2 == 0,
                "1 mint",
            );
    }
}

/// Runs `count` commands, `parallel` at a time; returns how many failed.
fn run_processes(count: usize, parallel: usize, command: impl Fn() -> Command + Sync) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < count {
                    let output = command().stdout(Stdio::null()).output().unwrap();
                    if !output.status.success() {
                        eprintln!("{}", output_text(&output));
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    failed.into_inner()
}

/// Generated crates of `tests` `#[cloudrun_test]`s under the real runners (full mode).
fn mints_generated_crates(fixture: &Fixture, report: &mut Report, sizes: &[usize]) {
    println!("\nmints, generated crates under cargo test and cargo nextest run");
    for &tests in sizes {
        let mut source = String::from("use cloudrun_test::{cloudrun_test, Client};\n");
        for index in 0..tests {
            source.push_str(&format!(
                "\n#[cloudrun_test(service = \"hello\")]\nasync fn t{index}(client: Client) {{\n    \
                 assert_eq!(client.get(\"/\").send().await.unwrap().status(), 200);\n}}\n"
            ));
        }
        let krate = GeneratedCrate::new(&format!("bench-{tests}"), &source);
        let cargo = |args: &[&str], env: &[(String, String)]| {
            let mut command = cloudrun_test_e2e::cargo_command(args);
            command
                .current_dir(krate.dir.path())
                .envs(env.iter().cloned());
            let output = command.output().unwrap();
            if !output.status.success() {
                eprintln!("{}", output_text(&output));
            }
            output
        };
        let started = Instant::now();
        let build = cargo(&["test", "--offline", "--no-run"], &[]);
        let build_time = started.elapsed();
        if !build.status.success() {
            report
                .add(
                    &format!("{tests}-test crate"),
                    "did not build".into(),
                    "-".into(),
                    "-".into(),
                )
                .must(false, "builds");
            continue;
        }
        for (runner, args) in [
            ("cargo test", vec!["test", "--offline", "-q"]),
            ("cargo nextest run", vec!["nextest", "run", "--offline"]),
        ] {
            fixture.emulator.reset_stats();
            let (env, _cache) = fresh_environment(fixture);
            let started = Instant::now();
            let output = cargo(&args, &env);
            let elapsed = started.elapsed();
            let stats = fixture.emulator.stats();
            report
                .add(
                    &format!("{tests} generated tests, {runner}"),
                    format!(
                        "{} mint / {} passed",
                        stats.id_tokens_minted, stats.front_accepted
                    ),
                    format!("{tests} tests (built in {})", format_time(build_time)),
                    format!(
                        "1/{:.0} ({})",
                        tests as f64 / stats.id_tokens_minted.max(1) as f64,
                        format_time(elapsed)
                    ),
                )
                .must(
                    output.status.success()
                        && stats.id_tokens_minted == 1
                        && stats.front_accepted == tests as u64,
                    "1 mint",
                );
        }
    }
}

// ---------------------------------------------------------------------------------
// 5. Dependencies and build cost

/// One TLS stack (rustls) and one crypto backend (aws-lc-rs) in what users compile.
fn dependency_tree(report: &mut Report) {
    println!("\ndependency tree of cloudrun-test (normal and build dependencies)");
    let crates = cloudrun_test_e2e::user_dependencies();
    let has = |name: &str| crates.iter().any(|krate| krate == name);
    let tls: Vec<&str> = ["rustls", "native-tls", "openssl", "hyper-tls"]
        .into_iter()
        .filter(|name| has(name))
        .collect();
    let crypto: Vec<&str> = ["aws-lc-rs", "ring", "openssl-sys"]
        .into_iter()
        .filter(|name| has(name))
        .collect();
    report
        .add(
            "TLS stacks / crypto backends",
            format!("{} / {}", tls.join(", "), crypto.join(", ")),
            format!("{} crates in the tree", crates.len()),
            format!("{} / {}", tls.len(), crypto.len()),
        )
        .must(
            tls == ["rustls"] && crypto == ["aws-lc-rs"],
            "rustls / aws-lc-rs only",
        );
}

/// Clean `cargo test --no-run` of examples/hello against the same crate with its suite
/// written on reqwest + tokio alone (full mode; minutes).
fn build_cost(report: &mut Report) {
    println!(
        "\nbuild cost: clean `cargo test --no-run` of examples/hello vs reqwest + tokio alone"
    );
    let root = workspace_root();
    let suite = std::fs::read_to_string(root.join("examples/hello/tests/suite.rs")).unwrap();
    let (hello, baseline) = example_crates(&suite, BASELINE_SUITE);

    // Two clean builds each, in the order hello, baseline, baseline, hello, so that a
    // load change during the run weighs on both. Wall time is what a user waits; CPU time
    // (user + system of every compiler process) is what the work costs, and varies far
    // less with what else runs on this shared machine: it is the one judged.
    let mut totals = [(Duration::ZERO, Duration::ZERO); 2];
    let mut all_built = true;
    for index in [0, 1, 1, 0] {
        let (name, dir) = [("hello", hello.path()), ("baseline", baseline.path())][index];
        let target = tempfile::tempdir().unwrap();
        let mut command = timed_build(&["test", "--offline", "--no-run"]);
        command
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target.path());
        let (cpu_before, started) = (children_cpu_time(), Instant::now());
        let output = command.output().unwrap();
        let (wall, cpu) = (started.elapsed(), children_cpu_time() - cpu_before);
        println!(
            "  {name}: {} wall, {} CPU",
            format_time(wall),
            format_time(cpu)
        );
        if !output.status.success() {
            eprintln!("{name}: {}", output_text(&output));
            all_built = false;
        }
        totals[index].0 += wall;
        totals[index].1 += cpu;
    }
    let [(hello_wall, hello_cpu), (base_wall, base_cpu)] = totals;
    let wall_ratio = hello_wall.as_secs_f64() / base_wall.as_secs_f64();
    let cpu_ratio = hello_cpu.as_secs_f64() / base_cpu.as_secs_f64();
    report.add(
        "clean build of examples/hello's tests, wall",
        format_time(hello_wall / 2),
        format!("{} (reqwest + tokio)", format_time(base_wall / 2)),
        format!("{wall_ratio:.3}×"),
    );
    let row = report.add(
        "clean build of examples/hello's tests, CPU",
        format_time(hello_cpu / 2),
        format!("{} (reqwest + tokio)", format_time(base_cpu / 2)),
        format!("{cpu_ratio:.3}×"),
    );
    if all_built {
        row.at_most(cpu_ratio, 1.25);
    } else {
        row.must(false, "builds");
    }
}

/// examples/hello twice, with `tests/suite.rs` written as given: once as it is (the
/// library by absolute path with its default features) and once with reqwest + tokio
/// as its only dev-dependencies, a token from the environment.
fn example_crates(suite: &str, baseline_suite: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let root = workspace_root();
    let hello = tempfile::tempdir().unwrap();
    let baseline = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(root.join("examples/hello/Cargo.toml")).unwrap();
    let main = std::fs::read_to_string(root.join("examples/hello/src/main.rs")).unwrap();
    let lock = root.join("examples/hello/Cargo.lock");
    // The example with the library by absolute path and its default features: the
    // suite in tests/suite.rs needs no other (the WebSocket tests, which need the
    // `websocket` feature, live apart in tests/websocket.rs), and a user who enables
    // no protocol feature must pay for none.
    let hello_manifest = manifest.replace(
        "path = \"../../cloudrun-test\", features = [\"websocket\"]",
        &format!("path = \"{}\"", root.join("cloudrun-test").display()),
    );
    assert_ne!(
        hello_manifest, manifest,
        "examples/hello's dependency on cloudrun-test moved"
    );
    write_crate(
        hello.path(),
        &hello_manifest,
        &main,
        &lock,
        &[("tests/suite.rs", suite)],
    );
    let (dependencies, _) = manifest.split_once("[dev-dependencies]").unwrap();
    let baseline_manifest = format!(
        "{dependencies}[dev-dependencies]\n\
         reqwest = {{ version = \"0.13\", default-features = false, features = [\"rustls\", \"json\", \"form\", \"query\", \"http2\"] }}\n\
         tokio = {{ version = \"1\", features = [\"rt\", \"macros\"] }}\n"
    );
    write_crate(
        baseline.path(),
        &baseline_manifest,
        &main,
        &lock,
        &[("tests/suite.rs", baseline_suite)],
    );
    (hello, baseline)
}

/// The loop a test author lives in (dev profile, each crate warm in its own target
/// folder): rebuild after editing one test body of a 40-test suite, and compiling a new
/// 1000-test file, `#[cloudrun_test]` against `#[tokio::test]` + reqwest. Rounds
/// alternate the two crates so that a load change weighs on both; CPU time (of the
/// compiler processes) is judged, as for the clean build.
fn compile_loop(report: &mut Report) {
    println!("\ncompile loop: #[cloudrun_test] vs #[tokio::test] + reqwest, dev profile");
    let (hello, baseline) =
        example_crates(&loop_suite(40, None, false), &loop_suite(40, None, true));
    // The example as shipped follows the README's optional profile line (the library
    // with line tables only); a copy without it shows what a user who skips it gets.
    let default_debug = tempfile::tempdir().unwrap();
    let read = |path: &str| std::fs::read_to_string(hello.path().join(path)).unwrap();
    let manifest = read("Cargo.toml");
    let (without_line, _) = manifest
        .split_once("\n[profile.dev.package.cloudrun-test]")
        .expect("examples/hello has the README's profile line");
    write_crate(
        default_debug.path(),
        without_line,
        &read("src/main.rs"),
        &hello.path().join("Cargo.lock"),
        &[("tests/suite.rs", &read("tests/suite.rs"))],
    );
    let targets = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let crates = [hello.path(), baseline.path(), default_debug.path()];
    const NAMES: [&str; 3] = ["hello", "baseline", "hello without the profile line"];
    let build = |index: usize, test: &str| {
        let mut command = timed_build(&["test", "--offline", "--no-run", "--test", test]);
        command
            .current_dir(crates[index])
            .env("CARGO_TARGET_DIR", targets[index].path());
        let (cpu_before, started) = (children_cpu_time(), Instant::now());
        let output = command.output().unwrap();
        let (wall, cpu) = (started.elapsed(), children_cpu_time() - cpu_before);
        assert!(
            output.status.success(),
            "{test} in {}: {}",
            NAMES[index],
            output_text(&output)
        );
        (wall, cpu)
    };
    for index in [0, 1, 2] {
        let (wall, _) = build(index, "suite");
        println!("  {}: first build {}", NAMES[index], format_time(wall));
    }

    let rounds = if OPTIMISED { 7 } else { 2 };
    let mut edits: [Vec<(Duration, Duration)>; 3] = Default::default();
    for round in 0..rounds {
        for index in if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] } {
            let suite = loop_suite(40, Some(round), index == 1);
            std::fs::write(crates[index].join("tests/suite.rs"), suite).unwrap();
            edits[index].push(build(index, "suite"));
        }
    }
    let [hello_edits, baseline_edits, default_edits] = edits;
    report_loop(
        report,
        "rebuild after editing one test of 40, CPU",
        "rebuild after editing one test of 40, wall",
        &mut [hello_edits, baseline_edits.clone()],
        Some(1.15),
    );
    report_loop(
        report,
        "the same without the README's profile line, CPU",
        "the same without the README's profile line, wall",
        &mut [default_edits, baseline_edits],
        None,
    );

    let files = if OPTIMISED { 3 } else { 1 };
    let mut thousands: [Vec<(Duration, Duration)>; 2] = Default::default();
    for file in 0..files {
        for index in if file % 2 == 0 { [0, 1] } else { [1, 0] } {
            let name = format!("thousand_{file}");
            let suite = loop_suite(1000, Some(file), index == 1);
            std::fs::write(crates[index].join(format!("tests/{name}.rs")), suite).unwrap();
            thousands[index].push(build(index, &name));
        }
    }
    report_loop(
        report,
        "a new 1000-test file compiled, CPU",
        "a new 1000-test file compiled, wall",
        &mut thousands,
        Some(1.25),
    );
}

/// Medians of `times` (hello's, then the baseline's), as CPU and wall rows; CPU judged
/// against `limit`, if any.
fn report_loop(
    report: &mut Report,
    cpu_figure: &str,
    wall_figure: &str,
    times: &mut [Vec<(Duration, Duration)>; 2],
    limit: Option<f64>,
) {
    let medians = times.each_mut().map(|runs| {
        let mut wall: Vec<Duration> = runs.iter().map(|run| run.0).collect();
        let mut cpu: Vec<Duration> = runs.iter().map(|run| run.1).collect();
        (median(&mut wall), median(&mut cpu))
    });
    let [(hello_wall, hello_cpu), (base_wall, base_cpu)] = medians;
    println!(
        "  {cpu_figure}: hello {} CPU / {} wall, baseline {} CPU / {} wall ({} runs each)",
        format_time(hello_cpu),
        format_time(hello_wall),
        format_time(base_cpu),
        format_time(base_wall),
        times[0].len()
    );
    let cpu_ratio = hello_cpu.as_secs_f64() / base_cpu.as_secs_f64();
    report.add(
        wall_figure,
        format_time(hello_wall),
        format!("{} (tokio + reqwest)", format_time(base_wall)),
        format!("{:.3}×", hello_wall.as_secs_f64() / base_wall.as_secs_f64()),
    );
    let row = report.add(
        cpu_figure,
        format_time(hello_cpu),
        format!("{} (tokio + reqwest)", format_time(base_cpu)),
        format!("{cpu_ratio:.3}×"),
    );
    if let Some(limit) = limit {
        row.at_most(cpu_ratio, limit);
    }
}

/// A suite of `tests` tests of the example, written with `#[cloudrun_test]` or, for the
/// `baseline`, `#[tokio::test]` + reqwest. `edit` changes one test's body (test 17, or
/// the last) to a new text each time, as a test author does.
fn loop_suite(tests: usize, edit: Option<usize>, baseline: bool) -> String {
    let mut suite = if baseline {
        "use reqwest::StatusCode;\n\n\
         fn url(path: &str) -> String {\n    \
             format!(\"{}{path}\", std::env::var(\"SERVICE_URL\").unwrap())\n}\n\n\
         fn token() -> String {\n    \
             format!(\"Bearer {}\", std::env::var(\"ID_TOKEN\").unwrap())\n}\n"
            .to_owned()
    } else {
        "use cloudrun_test::reqwest::StatusCode;\nuse cloudrun_test::{Client, cloudrun_test};\n"
            .to_owned()
    };
    let edited = 17.min(tests - 1);
    for test in 0..tests {
        let name = match edit {
            Some(edit) if test == edited => format!("{test}-edit-{edit}"),
            _ => test.to_string(),
        };
        let request = if baseline {
            format!(
                "reqwest::Client::new().get(url(\"/hello/{name}\"))\n        \
                 .header(\"authorization\", token()).send().await.unwrap()"
            )
        } else {
            format!("client.get(\"/hello/{name}\").send().await.unwrap()")
        };
        let (attribute, parameter) = if baseline {
            ("#[tokio::test]", "")
        } else {
            ("#[cloudrun_test(service = \"hello\")]", "client: Client")
        };
        suite.push_str(&format!(
            "\n{attribute}\nasync fn greets_{test}({parameter}) {{\n    \
             let response = {request};\n    \
             assert_eq!(response.status(), StatusCode::OK);\n    \
             assert!(response.text().await.unwrap().contains(\"{name}\"));\n}}\n"
        ));
    }
    suite
}

/// `cargo ARGS` for a build that is timed: with cargo's own build settings, whatever the
/// caller's environment says (CI turns incremental builds and most debug information off).
fn timed_build(args: &[&str]) -> Command {
    let mut command = cloudrun_test_e2e::cargo_command(args);
    command.env_remove("CARGO_INCREMENTAL");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CARGO_PROFILE_") {
            command.env_remove(name);
        }
    }
    command
}

/// User + system time of the finished child processes of this one (and theirs), from
/// `/proc/self/stat` (`cutime`, `cstime`, in clock ticks of 1/100 s).
fn children_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // After the name: state is field 3, cutime field 16 and cstime field 17.
    let ticks = fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn write_crate(dir: &Path, manifest: &str, main: &str, lock: &Path, files: &[(&str, &str)]) {
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(lock, dir.join("Cargo.lock")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The example's suite as one writes it without cloudrun-test.
const BASELINE_SUITE: &str = r#"
use reqwest::StatusCode;
use serde_json::{Value, json};

fn url(path: &str) -> String {
    format!("{}{path}", std::env::var("SERVICE_URL").unwrap())
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn token() -> String {
    format!("Bearer {}", std::env::var("ID_TOKEN").unwrap())
}

#[tokio::test]
async fn root_says_hello() {
    let response = client().get(url("/")).header("authorization", token()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "Hello from Cloud Run!\n");
}

#[tokio::test]
async fn greets_by_name() {
    let greeting: Value = client().get(url("/hello/Ada")).header("authorization", token())
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(greeting, json!({ "greeting": "Hello, Ada!" }));
}

#[tokio::test]
async fn echoes_json() {
    let sent = json!({ "numbers": [1, 2, 3], "nested": { "ok": true } });
    let response = client().post(url("/echo")).header("authorization", token())
        .json(&sent).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), sent);
}

#[tokio::test]
async fn is_private() {
    let response = client().get(url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
"#;

// ---------------------------------------------------------------------------------
// 6. The CLI's warm path: a new process served from the disk cache

/// `cloudrun-test token` on a disk cache hit against `cloudrun-test --version` (process
/// start-up), and `cloudrun-test curl` on a hit against curl with the same token as a
/// static header, both on the emulator's front. Medians of alternating runs of process
/// starts. The limits are asserted in the full optimised run, reported otherwise.
fn cli_warm_path(fixture: &Fixture, report: &mut Report, full: bool) {
    println!("\nCLI warm path: token and curl served from the disk cache");
    // CLOUDRUN_TEST_BENCH_CLI=PATH measures that binary instead (e.g. an older build).
    let cli = std::env::var_os("CLOUDRUN_TEST_BENCH_CLI")
        .map_or_else(build_cli, |path| Some(path.into()));
    let Some(cli) = cli else {
        report
            .add("CLI warm path", "not built".into(), "-".into(), "-".into())
            .must(false, "builds");
        return;
    };
    let (env, cache) = fresh_environment(fixture);
    let url = fixture.emulator.service_url("hello").unwrap();
    let audience = url.origin().ascii_serialization();
    let run = |args: &[&str]| {
        let mut command = Command::new(&cli);
        isolate(&mut command);
        command.args(args).envs(env.iter().cloned());
        command.output().unwrap()
    };
    // The first call mints and stores the token: every later one is a disk cache hit.
    let minted = run(&["token", "--audience", &audience]);
    if !minted.status.success() {
        eprintln!("{}", output_text(&minted));
        report
            .add("CLI warm path", "failed".into(), "-".into(), "-".into())
            .must(false, "runs");
        return;
    }
    let timed = |args: &[&str], n: u32| {
        let started = Instant::now();
        for _ in 0..n {
            let output = run(args);
            assert!(output.status.success(), "{}", output_text(&output));
        }
        started.elapsed()
    };
    let token_args = ["token", "--audience", audience.as_str()];
    let result = compare(
        61,
        2,
        |n| timed(&["--version"], n),
        |n| timed(&token_args, n),
    );
    let row = report.add(
        "`cloudrun-test token`, disk cache hit",
        format_time(result.subject),
        format!(
            "{} (`cloudrun-test --version`)",
            format_time(result.baseline)
        ),
        result.ratio_text(),
    );
    judge(row, result.ratio, 1.25, full);
    let start_up = result.baseline;

    let curl_found = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !curl_found {
        println!("  (curl not found: the curl figure is not taken)");
        return;
    }
    // The baseline reads the header from a file, as `cloudrun-test curl` hands it over
    // (a pipe): the token goes on no command line.
    let header = cache.path().join("header");
    let token = String::from_utf8(minted.stdout).unwrap();
    std::fs::write(
        &header,
        format!("Authorization: Bearer {}\n", token.trim_end()),
    )
    .unwrap();
    let plain = |n: u32| {
        time_processes(n, || {
            let mut command = Command::new("curl");
            command
                .args(["-sS", "-f", "-o", "/dev/null", "-H"])
                .arg(format!("@{}", header.display()))
                .arg(url.as_str());
            command
        })
    };
    let curl_args = ["curl", url.as_str(), "-sS", "-f", "-o", "/dev/null"];
    let result = compare(61, 2, plain, |n| timed(&curl_args, n));
    let row = report.add(
        "`cloudrun-test curl`, disk cache hit",
        format_time(result.subject),
        format!(
            "{} (curl, static `Authorization` header, same server)",
            format_time(result.baseline)
        ),
        result.ratio_text(),
    );
    judge(row, result.ratio, 1.2, full);
    // What no wrapper can beat: its own process start (`--version`) plus curl.
    report.add(
        "`cloudrun-test curl` floor: `--version` + curl",
        format_time(start_up + result.baseline),
        format_time(result.baseline),
        format!(
            "{:.3}×",
            (start_up + result.baseline).as_secs_f64() / result.baseline.as_secs_f64()
        ),
    );
    // And what no Rust wrapper can beat: the start of a program that does nothing.
    let empty = |n: u32| time_processes(n, || Command::new(env!("CARGO_BIN_EXE_empty-program")));
    let floor = compare(61, 2, plain, empty);
    report.add(
        "floor of any Rust wrapper: (empty Rust program + curl) / curl",
        format_time(floor.subject + floor.baseline),
        format_time(floor.baseline),
        format!("{:.3}×", 1.0 + floor.ratio),
    );
}

/// How long `n` runs of the program `command` builds take, one after another; each must
/// succeed.
fn time_processes(n: u32, command: impl Fn() -> Command) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let mut command = command();
        let status = command.status().unwrap();
        assert!(status.success(), "{command:?} failed: {status}");
    }
    started.elapsed()
}

/// A limit asserted in the full optimised run (the bench fails if it is missed), and
/// reported in the bounded one, which runs on busy CI machines.
fn judge(row: &mut Row, ratio: f64, limit: f64, full: bool) {
    if full && OPTIMISED {
        row.must(ratio <= limit, &format!("≤ {limit}× (asserted)"));
    } else {
        row.at_most(ratio, limit);
    }
}

/// The `cloudrun-test` binary, built with this bench's optimisation (release for
/// `cargo bench`, dev under the slow tier) in the workspace's target folder.
fn build_cli() -> Option<std::path::PathBuf> {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace_root())
        .args(["build", "-p", "cloudrun-test-cli", "--bin", "cloudrun-test"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit());
    if OPTIMISED {
        command.arg("--release");
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "cloudrun-test")
        .find_map(|message| message["executable"].as_str().map(Into::into))
}

// ---------------------------------------------------------------------------------
// Child processes

fn run_child(
    fixture: &Fixture,
    extra_env: &[(String, String)],
    role: &str,
    args: &[&str],
    limit: Duration,
) -> std::process::Output {
    let (mut env, _cache) = fresh_environment(fixture);
    env.extend(extra_env.iter().cloned());
    let mut command = Command::new(std::env::current_exe().unwrap());
    isolate(&mut command);
    command
        .args(args)
        .envs(env)
        .env(CHILD, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            eprintln!("child `{role}` did not finish within {limit:?}: killed");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The settings a test run gets, with a disk cache of its own (cold, and removed with
/// the returned folder).
fn fresh_environment(fixture: &Fixture) -> (Vec<(String, String)>, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let mut env = fixture.environment(TESTER);
    env.retain(|(name, _)| name != "CLOUDRUN_TEST_CACHE_DIR");
    env.push((
        "CLOUDRUN_TEST_CACHE_DIR".into(),
        cache.path().display().to_string(),
    ));
    (env, cache)
}

fn child_values(text: &str) -> HashMap<String, f64> {
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

fn child(role: &str) -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    match (role, args.as_slice()) {
        ("setup", [url]) => child_setup(url),
        ("threads", [tests, url]) => child_threads(tests.parse().unwrap(), url),
        ("requests", []) => child_requests(),
        ("count", [way, requests]) => child_count(way, requests.parse().unwrap()),
        _ => {
            eprintln!("unknown child role {role} {args:?}");
            ExitCode::from(2)
        }
    }
}
