//! `cloudrun-test`: identity tokens and an emulator for private Cloud Run services.
//!
//! Exit codes: 0 success; 1 a failure, explained on stderr; 2 bad usage;
//! `curl` exits with curl's status; `emulate -- COMMAND` exits with COMMAND's status.

// Unix only: curl gets the token through an inherited pipe (see `curl/unavailable.rs`).
#[cfg(unix)]
mod curl;
#[cfg(not(unix))]
#[path = "curl/unavailable.rs"]
mod curl;
mod doctor;
mod emulate;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cloudrun-test",
    version,
    about = "Identity tokens and a local emulator for testing private Cloud Run services",
    after_help = "Examples:\n  \
                  cloudrun-test token --audience https://hello-123456789.europe-west1.run.app\n  \
                  cloudrun-test curl https://hello-123456789.europe-west1.run.app/ -sS\n  \
                  cloudrun-test emulate --service hello -- cargo test\n\n\
                  Exit codes: 0 success, 1 failure (explained on stderr), 2 bad usage; \
                  `curl` exits with curl's status (e.g. 22 for an HTTP error with -f, 7 when \
                  it cannot connect); `emulate -- COMMAND` exits with COMMAND's status."
)]
struct Cli {
    /// Show the diagnostic log (tracing) on stderr; never shows tokens.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Token(token::TokenArgs),
    Curl(curl::CurlArgs),
    Doctor(doctor::DoctorArgs),
    // Boxed: its many options would make every `Command` as large.
    Emulate(Box<emulate::EmulateArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Token(_) | Command::Doctor(_)) {
        end_quietly_when_the_reader_goes();
    }
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                "cloudrun_test=debug,cloudrun_test_emulator=debug,cloudrun_test_cli=debug",
            )
            .init();
    }
    let result = match cli.command {
        Command::Token(args) => token::run(args),
        Command::Curl(args) => curl::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Emulate(args) => emulate::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            // Errors quote endpoints and programs: one last pass of the library's redaction.
            eprintln!("error: {}", cloudrun_test::redact(&message));
            ExitCode::FAILURE
        }
    }
}

/// `cloudrun-test doctor | head -1`: when the reader of our output goes away, end quietly
/// as other Unix tools do (SIGPIPE), instead of panicking in `println!`. Only for the
/// commands that print a report and serve nothing (Rust ignores SIGPIPE so that a
/// server, like `emulate`'s, sees a closed socket as an error instead).
fn end_quietly_when_the_reader_goes() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
