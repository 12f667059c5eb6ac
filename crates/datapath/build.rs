//! Builds the kernel programs (clang -target bpf) and checks the ABI: a host C program prints the
//! layout of every struct in bpf/abi.h, and src/abi.rs asserts its mirrors match at compile time.
use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e} (install clang and libbpf-dev: scripts/setup.sh does)",
            cmd.get_program()
        )
    });
    if !out.status.success() {
        panic!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // The whole directory (cargo watches every file under it): a list of files went stale when
    // lib/endpoint.h was added, and edits to it did not rebuild the object.
    println!("cargo:rerun-if-changed={}", root.display());
    let arch_inc = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    run(
        Command::new("clang")
            .args([
                "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", &arch_inc, "-c",
            ])
            .arg(root.join("cellwall.bpf.c"))
            .arg("-o")
            .arg(out.join("cellwall.bpf.o")),
        "compiling bpf/cellwall.bpf.c",
    );
    let layout_bin = out.join("abi_layout");
    run(
        Command::new("cc")
            .arg(root.join("abi_layout.c"))
            .arg(format!("-I{}", root.display()))
            .arg("-o")
            .arg(&layout_bin),
        "compiling bpf/abi_layout.c",
    );
    let o = Command::new(&layout_bin).output().expect("run abi_layout");
    std::fs::write(out.join("abi_layout.rs"), o.stdout).unwrap();
}
