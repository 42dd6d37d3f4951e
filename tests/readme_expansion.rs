//! The README shows what `#[cloudrun_test]` expands to. The macros crate keeps its own
//! `src/expansion.md` equal to the real expansion (its packaged crate reads nothing
//! outside itself); this test keeps the README's copy equal to that file.
//! `UPDATE_EXPANSION=1 cargo test -p cloudrun-test-e2e --test readme_expansion` rewrites it.

use std::path::Path;

const START: &str = "<!-- expansion: cloudrun-test-macros/src/expansion.md, kept equal by tests/readme_expansion.rs -->\n";
const END: &str = "<!-- end of expansion -->";

#[test]
fn the_readme_shows_the_documented_expansion() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let snapshot = std::fs::read_to_string(root.join("cloudrun-test-macros/src/expansion.md"))
        .expect("the macros crate's expansion snapshot");
    // GitHub highlights `rust ignore` (the first word names the language), not
    // `rust,ignore`; rustdoc reads either as "do not compile", and the README's blocks
    // are doc tests of the e2e crate (support/mod.rs): the expansion cannot compile alone.
    let expected = snapshot.replace("```rust,ignore", "```rust ignore");

    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let (before, rest) = readme
        .split_once(START)
        .expect("README.md has the expansion's start marker");
    let (copy, after) = rest
        .split_once(END)
        .expect("README.md has the expansion's end marker");
    if std::env::var_os("UPDATE_EXPANSION").is_some() && copy != expected {
        std::fs::write(
            &readme_path,
            format!("{before}{START}{expected}{END}{after}"),
        )
        .expect("rewriting README.md");
        return;
    }
    assert_eq!(
        copy, expected,
        "README.md's expansion is not cloudrun-test-macros/src/expansion.md; \
         rerun with UPDATE_EXPANSION=1 and read the diff"
    );
}
