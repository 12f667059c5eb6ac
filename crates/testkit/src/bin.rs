//! Built binaries. Cargo tells a package's own tests and benches where its binaries are
//! (`CARGO_BIN_EXE_<name>`, at compile time): [`bin!`](crate::bin!) reads it in the caller's
//! crate. A lab started by `cellwall` runs `cellwall-manager` and `cellwall-agent` found beside
//! it (`cargo build --workspace`, or `--release` for benches), see [`Bin::sibling`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary `name` of the calling package: `bin!("cellwall")`.
#[macro_export]
macro_rules! bin {
    ($name:literal) => {
        $crate::bin::Bin::at(env!(concat!("CARGO_BIN_EXE_", $name)))
    };
}

/// A built binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    path: PathBuf,
}

impl Bin {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary `name` in the same directory (what `cellwall lab` starts).
    pub fn sibling(&self, name: &str) -> Bin {
        Bin::at(self.path.with_file_name(name))
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        Command::new(&self.path)
    }

    /// Runs with `args`: (success, stdout, stderr), for tests that expect refusals as well.
    pub fn result(&self, args: &[&str]) -> (bool, String, String) {
        let o = self.command().args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }

    /// Runs with `args`; fails (panics) with its stderr if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// [`Bin::run`] with extra environment variables (also for what it starts, e.g. a lab's
    /// agent).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.path.display()));
        assert!(
            out.status.success(),
            "{} {}: {}",
            self.name(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// [`Bin::run`], returning stdout.
    pub fn stdout(&self, args: &[&str]) -> String {
        self.stdout_env(args, &[])
    }

    /// [`Bin::run_env`], returning stdout.
    pub fn stdout_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        String::from_utf8_lossy(&self.run_env(args, env).stdout).to_string()
    }

    /// Runs with `args` and ignores the outcome (cleanup).
    pub fn quietly(&self, args: &[&str]) {
        let _ = self.command().args(args).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_reports() {
        let sh = Bin::at("/bin/sh");
        assert_eq!(sh.stdout(&["-c", "echo hi"]), "hi\n");
        assert_eq!(sh.stdout_env(&["-c", "echo $X"], &[("X", "y")]), "y\n");
        let (ok, _, err) = sh.result(&["-c", "echo no >&2; exit 3"]);
        assert!(!ok);
        assert_eq!(err, "no\n");
        assert_eq!(sh.sibling("ls").path(), Path::new("/bin/ls"));
        let r = std::panic::catch_unwind(|| sh.run(&["-c", "echo broken >&2; exit 1"]));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.starts_with("sh -c echo broken"), "{msg}");
        assert!(msg.ends_with("broken\n"), "{msg}");
    }
}
