//! An IDE shows a "Run Test" button for every `#[cloudrun_test]`: `tests/ide/runnables.py`
//! asks rust-analyzer over LSP (about a minute from cold, in `target/ide-check`).

use std::process::Command;

use cloudrun_test_e2e::{output_text, tier, workspace_root};

#[test]
fn rust_analyzer_shows_every_cloudrun_test_as_a_runnable_test() {
    if !tier::tool("python3") || !tier::tool("rust-analyzer") {
        return;
    }
    let output = Command::new("python3")
        .arg(workspace_root().join("tests/ide/runnables.py"))
        .args(["--timeout", "900"])
        .output()
        .expect("python3 starts");
    assert!(output.status.success(), "{}", output_text(&output));
}
