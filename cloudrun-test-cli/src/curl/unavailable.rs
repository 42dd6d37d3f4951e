//! `cloudrun-test curl` on Windows: refused, with the way to do it there.
//!
//! The Unix implementation hands curl the token through an inherited pipe that curl
//! opens as `/dev/fd/N`. Windows has no such path to an inherited handle, and the
//! alternatives leak: an argument is visible to every process of the machine, a
//! file or environment variable outlives the call, a named pipe is reachable by
//! name. The token never goes on a command line, so the command says what to do
//! instead.

use std::process::ExitCode;

#[path = "args.rs"]
mod args;

pub use args::CurlArgs;

pub fn run(_args: CurlArgs) -> Result<ExitCode, String> {
    Err(UNAVAILABLE.into())
}

const UNAVAILABLE: &str = "`cloudrun-test curl` is not available on Windows: it hands curl the \
token through an inherited pipe (`-H @/dev/fd/N`), which Windows does not have, and a token never \
goes on a command line\nfix: in PowerShell, keep the token in a variable and let PowerShell send \
it: `$token = cloudrun-test token --audience URL; Invoke-WebRequest URL -Headers @{ Authorization \
= \"Bearer $token\" }` (or run `cloudrun-test curl` under WSL)";
