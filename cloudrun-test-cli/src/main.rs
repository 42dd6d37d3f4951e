//! `cloudrun-test`: identity tokens and an emulator for private Cloud Run services.
//!
//! Exit codes: 0 success; 1 a failure, explained on stderr; 2 bad usage;
//! `emulate -- COMMAND` exits with COMMAND's status.

mod emulate;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cloudrun-test",
    version,
    about = "Identity tokens and a local emulator for testing private Cloud Run services",
    after_help = "Exit codes: 0 success, 1 failure (explained on stderr), 2 bad usage; \
                  `emulate -- COMMAND` exits with COMMAND's status."
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
    Emulate(emulate::EmulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Emulate(args) => emulate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
