#!/usr/bin/env bash
# The example's #[cloudrun_test] suite built for Windows (x86_64-pc-windows-gnu) and run
# under Wine against the emulator on loopback: the emulator and the example service run
# natively, the Windows test binary reaches them at 127.0.0.1 with the environment
# `cloudrun-test emulate` gives it (Wine maps /tmp/... to Z:\tmp\...).
# .ci/run runs it; by hand: bash .ci/wine/run-suite.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
target=target/windows
command -v wine >/dev/null || { apt-get update -q && apt-get install -y -q wine wine64; }
command -v x86_64-w64-mingw32-gcc >/dev/null \
    || { apt-get update -q && apt-get install -y -q gcc-mingw-w64-x86-64; }
rustup target add x86_64-pc-windows-gnu >/dev/null
# Wine 8 has no bcryptprimitives.dll (ProcessPrng, which Rust's std imports): a stand-in,
# found next to the test binary.
mkdir -p "$target/wine"
x86_64-w64-mingw32-gcc -shared -O2 -Wl,--kill-at -o "$target/wine/bcryptprimitives.dll" \
    .ci/wine/bcryptprimitives.c -ladvapi32
suite=$(CARGO_TARGET_DIR="$PWD/$target" cargo test --manifest-path examples/hello/Cargo.toml \
    --locked --target x86_64-pc-windows-gnu --test suite --no-run --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "suite" and m.get("executable"):
        print(m["executable"])')
cp "$suite" "$target/wine/suite.exe"
cargo build -q --locked -p cloudrun-test-cli
WINEDEBUG=-all "${CARGO_TARGET_DIR:-target}/debug/cloudrun-test" emulate \
    --serve 'hello=cargo run -q --manifest-path examples/hello/Cargo.toml' \
    -- wine "$target/wine/suite.exe"
# Wine leaves its server running for a while; nothing else needs it.
wineserver -k 2>/dev/null || true
