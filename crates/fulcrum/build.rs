//! Records the commit fulcrum is built from (`fulcrum version`), when it is built from a git
//! checkout with git installed; otherwise the version alone is reported.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()));
    let described = commit.unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=FULCRUM_COMMIT={described}");
    // Rebuilt when the checkout moves to another commit.
    for path in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
