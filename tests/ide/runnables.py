#!/usr/bin/env python3
"""Proves that an IDE shows a "Run Test" button for every `#[cloudrun_test]` function.

Starts rust-analyzer (the language server behind VS Code's, Zed's, Helix's, Neovim's
Rust support) over LSP on two crates, asks it for the file's runnables
(`experimental/runnables`, what draws the "Run Test" code lenses) and checks that
every `#[cloudrun_test]` function is a test with its own name and the command cargo
needs, e.g. `cargo test --package hello --test suite -- root_says_hello --exact`:

- examples/hello: every test of tests/suite.rs (found by reading the file), and each
  command, run with `--list`, selects exactly that one test;
- tests/ide/fixture: a test inside a module (two levels down) and tests whose
  attribute or signature is wrong, which keep their button (the macro's error
  recovery) while rust-analyzer shows the macro's error.

Usage: python3 tests/ide/runnables.py [--timeout SECONDS]   (needs `rust-analyzer`
on PATH: `rustup component add rust-analyzer`). Exits 0 when all holds, 1 otherwise.
"""

import argparse
import itertools
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"
FIXTURE = ROOT / "tests" / "ide" / "fixture"
# rust-analyzer's own build-script runs go here: its rustc wrapper records skipped
# `cargo check` units as fresh, which must not leak into a target folder cargo uses.
TARGET = ROOT / "target" / "ide-check"
# rust-analyzer's own log (its stderr).
LOG = TARGET / "rust-analyzer.log"

# The fixture's tests as `cargo test` names them, with the flags after `--exact`
# (rust-analyzer runs an `#[ignore]`d test with `--ignored`). `bad_arguments` and
# `not_async_yet` have a wrong attribute or signature; the last four are the cases of
# an rstest and a test-case test.
FIXTURE_TESTS = {
    "top_level": "",
    "nested::in_a_module": "",
    "nested::deeper::two_levels_down": " --ignored",
    "bad_arguments": "",
    "not_async_yet": "",
    "rstest_paths::case_1_first": "",
    "rstest_paths::case_2_second": "",
    "test_case_paths::test_case_1_first": "",
    "test_case_paths::test_case_2_second": "",
}
# What rust-analyzer must show on the broken tests: the macro's own messages.
FIXTURE_ERRORS = [
    "unknown argument `servce`: did you mean `service`?",
    "a `#[cloudrun_test]` function must be `async`",
    "invalid timeout `soon`",
]

SETTINGS = {
    "linkedProjects": [str(HELLO / "Cargo.toml"), str(FIXTURE / "Cargo.toml")],
    "cargo": {"targetDir": str(TARGET)},
    # Nothing but what the runnables need: no `cargo check` on save, no indexing of
    # every dependency up front (analysis is lazy, per request).
    "checkOnSave": False,
    "cachePriming": {"enable": False},
}


class Timeout(Exception):
    pass


class ContentModified(Exception):
    """rust-analyzer dropped the request because the project changed under it (still loading)."""


class Server:
    """A rust-analyzer process spoken to over stdio, JSON-RPC with Content-Length framing."""

    def __init__(self, log):
        self.process = subprocess.Popen(
            ["rust-analyzer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        self.ids = itertools.count(1)
        self.messages = queue.Queue()
        self.status = {}  # the last `experimental/serverStatus`
        self.progress = {}  # token -> title of each piece of work in progress
        self.diagnostics = {}  # uri -> the last published diagnostics
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self.messages.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(stream.read(length)))

    def send(self, message):
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def notify(self, method, params):
        self.send({"method": method, "params": params})

    def request(self, method, params, deadline):
        id = next(self.ids)
        self.send({"id": id, "method": method, "params": params})
        while True:
            message = self.next_message(deadline)
            if message.get("id") == id and "method" not in message:
                if message.get("error", {}).get("code") == -32801:
                    raise ContentModified()
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message["result"]

    def wait_until(self, condition, deadline):
        while not condition():
            self.next_message(deadline)

    def next_message(self, deadline):
        """The next message, after answering it if it is a request to the client."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        try:
            message = self.messages.get(timeout=remaining)
        except queue.Empty:
            raise Timeout() from None
        if message is None:
            raise RuntimeError(f"rust-analyzer exited; see its log, {LOG}")
        method = message.get("method")
        params = message.get("params") or {}
        if method and "id" in message:
            # Requests from the server: configuration, progress tokens, registrations.
            result = None
            if method == "workspace/configuration":
                result = [SETTINGS for _ in params.get("items", [])]
            self.send({"id": message["id"], "result": result})
        elif method == "experimental/serverStatus":
            self.status = params
        elif method == "$/progress":
            value = params.get("value", {})
            if value.get("kind") == "begin":
                self.progress[params["token"]] = value.get("title", "")
            elif value.get("kind") == "end":
                self.progress.pop(params["token"], None)
        elif method == "textDocument/publishDiagnostics":
            self.diagnostics[params["uri"]] = params["diagnostics"]
        return message

    def stop(self):
        try:
            deadline = time.monotonic() + 10
            self.request("shutdown", None, deadline)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()


def test_names(source):
    """The `#[cloudrun_test]` functions of a test file at its top level, in order."""
    pattern = re.compile(
        r"^#\[cloudrun_test(?:::(?:test|cloudrun_test))?\b(?:[^\n]*\n)*?(?:pub\s+)?async fn (\w+)",
        re.MULTILINE,
    )
    return pattern.findall(source)


def command(runnable):
    """The command line an IDE runs for `runnable`, as one string."""
    args = runnable["args"]
    executable = [
        a for a in args.get("executableArgs", []) if a not in ("--show-output", "--nocapture")
    ]
    return shlex.join(["cargo", *args["cargoArgs"], "--", *executable])


def tests_of(runnables):
    """{test path: runnable} for the runnables that are single tests."""
    found = {}
    for runnable in runnables:
        label = runnable.get("label", "")
        if (
            runnable.get("kind") == "cargo"
            and label.startswith("test ")
            and "--exact" in runnable["args"].get("executableArgs", [])
        ):
            found[label.removeprefix("test ")] = runnable
    return found


def runnables(server, path, names, deadline):
    """The file's tests, asked again while rust-analyzer is still settling (a request
    can be cancelled, or answered before the proc macros are loaded) for up to a minute."""
    settled = min(deadline, time.monotonic() + 60)
    while True:
        try:
            found = tests_of(
                server.request(
                    "experimental/runnables", {"textDocument": {"uri": path.as_uri()}}, deadline
                )
            )
            if all(name in found for name in names) or time.monotonic() > settled:
                return found
        except ContentModified:
            pass
        try:
            # Any news (progress, status) or a second, whichever comes first.
            server.next_message(min(deadline, time.monotonic() + 1))
        except Timeout:
            if time.monotonic() >= deadline:
                raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("IDE_CHECK_TIMEOUT", 900)),
        help="seconds before giving up (default 900, or $IDE_CHECK_TIMEOUT)",
    )
    options = parser.parse_args()

    if shutil.which("rust-analyzer") is None:
        sys.exit("rust-analyzer is not on PATH: run `rustup component add rust-analyzer`")
    # The fixture resolves offline to the versions the workspace uses (rstest and
    # test-case included).
    shutil.copy(ROOT / "Cargo.lock", FIXTURE / "Cargo.lock")

    hello_file = HELLO / "tests" / "suite.rs"
    fixture_file = FIXTURE / "tests" / "suite.rs"
    hello_tests = test_names(hello_file.read_text())
    assert hello_tests, f"no #[cloudrun_test] found in {hello_file}"
    expected = {
        hello_file: ("hello", dict.fromkeys(hello_tests, "")),
        fixture_file: ("ide-fixture", FIXTURE_TESTS),
    }

    started = time.monotonic()
    deadline = started + options.timeout
    TARGET.mkdir(parents=True, exist_ok=True)
    server = Server(open(LOG, "wb"))
    phase = "starting rust-analyzer"
    failures = []
    try:
        server.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": ROOT.as_uri(),
                "workspaceFolders": [{"uri": ROOT.as_uri(), "name": "cloudrun-test"}],
                "capabilities": {
                    "experimental": {"serverStatusNotification": True},
                    "window": {"workDoneProgress": True},
                    "textDocument": {"publishDiagnostics": {}},
                },
                "initializationOptions": SETTINGS,
            },
            deadline,
        )
        server.notify("initialized", {})
        for path in expected:
            server.notify(
                "textDocument/didOpen",
                {
                    "textDocument": {
                        "uri": path.as_uri(),
                        "languageId": "rust",
                        "version": 1,
                        "text": path.read_text(),
                    }
                },
            )

        # Loading: cargo metadata, then the build scripts and proc macros (the
        # attribute expands only once its macro is built), then quiescent.
        phase = "loading the projects (cargo metadata, build scripts, proc macros)"
        server.wait_until(lambda: server.status.get("quiescent") is True, deadline)
        loaded = time.monotonic()
        print(f"rust-analyzer loaded the projects in {loaded - started:.0f}s")
        if server.status.get("health") not in ("ok", None):
            print(f"rust-analyzer says: {server.status.get('message')}")

        for path, (package, names) in expected.items():
            phase = f"asking for the runnables of {path.relative_to(ROOT)}"
            found = runnables(server, path, names, deadline)
            print(f"\n{path.relative_to(ROOT)}:")
            for name, flags in names.items():
                runnable = found.pop(name, None)
                want = f"cargo test --package {package} --test suite -- {name} --exact{flags}"
                if runnable is None:
                    failures.append(f"{path.name}: no runnable for `{name}`")
                    print(f"  MISSING  {name}")
                    continue
                got = command(runnable)
                print(f"  ok       {got}" if got == want else f"  WRONG    {got}")
                if got != want:
                    failures.append(f"`{name}`: rust-analyzer runs `{got}`, expected `{want}`")
            for name in found:
                failures.append(f"{path.name}: unexpected runnable `{name}`")

        phase = "waiting for the macro's errors on the fixture"
        fixture_uri = fixture_file.as_uri()

        def shown():
            messages = [d["message"] for d in server.diagnostics.get(fixture_uri, [])]
            return [e for e in FIXTURE_ERRORS if any(e in m for m in messages)]

        try:
            server.wait_until(
                lambda: len(shown()) == len(FIXTURE_ERRORS), min(deadline, time.monotonic() + 60)
            )
        except Timeout:
            pass
        for error in FIXTURE_ERRORS:
            if error not in shown():
                failures.append(
                    f"rust-analyzer does not show the macro's error `{error}` on the fixture"
                )
        print(
            f"\nrust-analyzer shows the macro's errors on the fixture: {len(shown())}/{len(FIXTURE_ERRORS)}"
        )
    except Timeout:
        working = ", ".join(sorted(set(server.progress.values()))) or "nothing reported"
        failures.append(
            f"rust-analyzer did not answer within {options.timeout:.0f}s while {phase} "
            f"(in progress: {working}; status: {server.status.get('message') or server.status}). "
            "Raise the limit with --timeout or IDE_CHECK_TIMEOUT on a slow machine."
        )
    finally:
        server.stop()

    # The commands must select exactly their test (hello only: the fixture does not compile).
    if not failures:
        print("\ncargo agrees (each command, run with --list, lists exactly its test):")
        for name in hello_tests:
            argv = [
                "cargo",
                "test",
                "--quiet",
                "--package",
                "hello",
                "--test",
                "suite",
                "--",
                name,
                "--exact",
                "--list",
            ]
            listed = subprocess.run(
                argv,
                cwd=HELLO,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1),
            )
            tests = [
                line.removesuffix(": test")
                for line in listed.stdout.splitlines()
                if line.endswith(": test")
            ]
            print(f"  {'ok' if tests == [name] else 'WRONG':<8} {name}: {tests}")
            if tests != [name]:
                failures.append(f"`{shlex.join(argv)}` lists {tests}\n{listed.stderr}")

    print(f"\ntook {time.monotonic() - started:.0f}s")
    if failures:
        print("\nFAILED:\n- " + "\n- ".join(failures), file=sys.stderr)
        print(f"(rust-analyzer's log: {LOG})", file=sys.stderr)
        sys.exit(1)
    print("every #[cloudrun_test] function is a runnable test in rust-analyzer")


if __name__ == "__main__":
    main()
