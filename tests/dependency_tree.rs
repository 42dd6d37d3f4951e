//! What a user pays for adding only `cloudrun-test` to `[dev-dependencies]`: not the
//! emulator or its server stack, and one TLS stack (rustls) on one crypto backend
//! (aws-lc-rs), the same that reqwest uses by default. The protocols beyond HTTP (gRPC,
//! WebSocket) cost nothing unless their feature is on, and bring no other TLS stack
//! and no server when it is.

use cloudrun_test_e2e::{cargo_command, output_text, user_dependencies, workspace_root};

#[test]
fn the_emulator_is_not_in_a_users_tree() {
    let names = user_dependencies();
    assert!(
        names.iter().any(|name| name == "cloudrun-test-macros"),
        "{names:?}"
    );
    for absent in [
        "cloudrun-test-emulator",
        "axum",
        "clap",
        "tempfile",
        "trybuild",
        "proptest",
    ] {
        assert!(
            !names.iter().any(|name| name == absent),
            "{absent} is in a user's tree: {names:?}"
        );
    }
}

#[test]
fn one_tls_stack_and_one_crypto_backend() {
    let names = user_dependencies();
    for present in ["rustls", "aws-lc-rs"] {
        assert!(
            names.iter().any(|name| name == present),
            "{present} missing: {names:?}"
        );
    }
    for absent in [
        "ring",
        "openssl",
        "openssl-sys",
        "native-tls",
        "rsa",
        "boring",
    ] {
        assert!(
            !names.iter().any(|name| name == absent),
            "{absent} is in a user's tree: {names:?}"
        );
    }
}

#[test]
fn no_protocol_beyond_http_without_its_feature() {
    let names = user_dependencies();
    for absent in [
        // grpc
        "tonic",
        "hyper-timeout",
        "tokio-stream",
        // websocket
        "tokio-tungstenite",
        "tungstenite",
        "sha1",
    ] {
        assert!(
            !names.iter().any(|name| name == absent),
            "{absent} is in a user's tree: {names:?}"
        );
    }
}

#[test]
fn the_protocol_features_bring_no_other_tls_stack_and_no_server() {
    let tree = tree_with_protocols(&["--prefix", "none", "--format", "{p}"]);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for present in ["tonic", "tokio-tungstenite", "rustls", "aws-lc-rs"] {
        assert!(names.contains(&present), "{present} missing: {names:?}");
    }
    for absent in [
        "ring",
        "openssl",
        "openssl-sys",
        "native-tls",
        "webpki-roots",
        "boring",
    ] {
        assert!(
            !names.contains(&absent),
            "{absent} comes with the protocol features: {names:?}"
        );
    }
    // The HTTP/2 and HTTP/1 stacks as clients only: the servers are the tests' own.
    let features = tree_with_protocols(&["-e", "features", "--prefix", "none"]);
    assert!(features.contains("hyper feature \"client\""), "{features}");
    for server in ["hyper feature \"server\"", "hyper-util feature \"server"] {
        assert!(
            !features.contains(server),
            "{server} comes with the protocol features:\n{features}"
        );
    }
}

/// `cargo tree` of a user's `cloudrun-test` with features `grpc` and `websocket` on.
fn tree_with_protocols(args: &[&str]) -> String {
    let mut command = cargo_command(&[
        "tree",
        "--offline",
        "-p",
        "cloudrun-test",
        "--features",
        "grpc,websocket",
        "-e",
        "normal,build",
    ]);
    let output = command
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
