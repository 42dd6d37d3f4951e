#!/usr/bin/env bash
# Follows README.md's "Quick start" as a new user would: a new crate outside the
# workspace (an axum service of its own), the dev-dependency as the README says to write
# it before the crate is on crates.io (a path to a clone), a test as in step 2, the
# command line installed as in step 4, and the suite run under `emulate` as in step 4.
# The crate uses the workspace's lock file so it builds the tested versions offline.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

# The clone the README tells a user to depend on until the crate is published.
ln -s "$repo" "$work/cloudrun-test"
cd "$work"
cargo new -q --bin my-service
cd my-service
cp "$repo/Cargo.lock" Cargo.lock

# Step 1: the dev-dependency, as the README writes it for an unpublished crate, and
# its optional profile line.
cat >> Cargo.toml <<'TOML'
axum = { version = "0.8", default-features = false, features = ["http1", "tokio"] }
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }

[dev-dependencies]
cloudrun-test = { path = "../cloudrun-test/cloudrun-test" }

[profile.dev.package.cloudrun-test]
debug = "line-tables-only"
TOML

# The user's own service: listens on $PORT, as Cloud Run requires.
cat > src/main.rs <<'RUST'
#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi\n" }));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
RUST

# Step 2: a test in tests/, as the README shows it.
mkdir tests
cat > tests/service.rs <<'RUST'
use cloudrun_test::{cloudrun_test, Client};

#[cloudrun_test(service = "hello")]
async fn root_answers(client: Client) {
    let res = client.get("/").send().await.unwrap();
    assert_eq!(res.status(), 200);
}
RUST

# Step 4: the command line, then the suite against the service behind the emulator.
# (`--debug` reuses the workspace's dev build instead of an optimised one; the README
# shows the same command without it.)
cargo install -q --debug --locked --path "$repo/cloudrun-test-cli" --root "$work/bin"
export PATH="$work/bin/bin:$PATH"
cloudrun-test emulate --serve 'hello=cargo run -q' -- cargo test 2>&1 | tee "$work/out.txt"
grep -q "test root_answers ... ok" "$work/out.txt" \
    || { echo "quick start: the test root_answers did not pass" >&2; exit 1; }
echo "quick start: followed as written, root_answers passed under emulate"
