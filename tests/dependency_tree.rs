//! What a user pays for adding only `cloudrun-test` to `[dev-dependencies]`: not the
//! emulator or its server stack, and one TLS stack (rustls) on one crypto backend
//! (aws-lc-rs), the same that reqwest uses by default.

use cloudrun_test_e2e::user_dependencies;

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
