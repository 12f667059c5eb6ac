//! Builds the web console (`ui/`, TypeScript bundled by esbuild) into `OUT_DIR/ui`, which
//! `src/rest/console.rs` embeds: the manager binary always carries the console of its own
//! source. Needs Node.js and `npm ci --prefix ui` (scripts/setup.sh runs it).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ui = manifest.join("../../ui");
    for p in [
        "src",
        "index.html",
        "style.css",
        "build.mjs",
        "package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", ui.join(p).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("ui");
    if !ui.join("node_modules/esbuild").is_dir() {
        panic!(
            "the web console's build tools are missing: run `npm ci --prefix ui` in the \
             repository (scripts/setup.sh does it), then build again"
        );
    }
    let status = Command::new("node")
        .arg(ui.join("build.mjs"))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running node to build the web console (ui/): {e}"));
    if !status.success() {
        panic!("building the web console (node ui/build.mjs) failed: {status}");
    }
}
