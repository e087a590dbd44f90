//! Shared helpers for the CLI tests: a temporary workspace with small specs, and a way to run
//! the `limaml` binary in it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

/// A tiny synthetic experiment: two methods, one seed, a few epochs. Seconds to run.
pub const TINY_SPEC: &str = r#"
[experiment]
name = "tiny"
seeds = [1]

[data]
source = "synthetic"

[data.synthetic]
n_users = 80
n_items = 40
mean_interactions = 20

[train]
epochs = 2

[methods.global]
kind = "global"
hidden = [16]

[methods.limaml]
kind = "limaml"
hidden = [16]
meta_embedding_dim = 4
meta_hidden = [8]
"#;

impl Workspace {
    pub fn new() -> Self {
        let workspace = Workspace { dir: tempfile::tempdir().expect("temp dir") };
        std::fs::create_dir(workspace.temp()).expect("temp folder");
        workspace.write("tiny.toml", TINY_SPEC);
        workspace
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write spec");
        path
    }

    /// The temporary folder the workspace's `limaml` commands use (`TMPDIR`).
    fn temp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A `limaml` command run inside the workspace, with its own store and its own temporary
    /// folder (`TMPDIR`), so what it leaves there (a failed command method's exchange folder,
    /// kept for inspection) goes when the workspace does.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_limaml"));
        command
            .current_dir(self.dir.path())
            .env("LIMAML_STORE", self.store())
            .env("TMPDIR", self.temp())
            .env_remove("RUST_LOG")
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("limaml runs")
    }

    /// `limaml run SPEC --json` parsed; panics with stderr when it did not print JSON.
    pub fn run_json(&self, spec: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = vec!["run", spec, "--json"];
        args.extend_from_slice(extra);
        let output = self.run(&args);
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("no JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&output.stderr))
        });
        (output, json)
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Per-method metrics of a `run --json` document.
pub fn methods(json: &serde_json::Value) -> serde_json::Value {
    json["methods"].clone()
}

/// Whether the external `program` runs (`program --version`). Under CI its absence fails the
/// calling test; elsewhere the test prints that it skipped and returns.
pub fn required_tool(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").is_err(), "{program} is needed under CI");
        eprintln!("SKIPPED: {program} not found");
    }
    found
}
