//! The chaos suite's toolkit. The scenarios themselves are the integration tests in
//! `chaos/tests/` (run them with `bash chaos/run.sh`); each starts the real collector
//! and a real nats-server, drives exporter traffic whose every record can be told apart
//! ([`exporter`]), injects one fault — NATS killed, wiped or frozen, the network cut,
//! slowed or thinned ([`netns`], [`proxy`]), exporters misbehaving, actors failing,
//! overload, SIGTERM — and ends with one [`verdict::Verdict`] line: every record sent
//! is in JetStream exactly once or in a drop counter with its reason, the collector
//! recovered by itself within the stated time, and its memory stayed bounded.

pub mod exporter;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod verdict;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How much traffic and time the scenarios take: `CHAOS_MODE=quick` (default; the whole
/// suite in a few minutes, for CI) or `CHAOS_MODE=full` (longer faults, more traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quick,
    Full,
}

impl Mode {
    /// From `CHAOS_MODE`; anything but `full` is quick.
    pub fn from_env() -> Mode {
        match std::env::var("CHAOS_MODE").as_deref() {
            Ok("full") => Mode::Full,
            _ => Mode::Quick,
        }
    }

    /// `quick` or `full` by mode.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Mode::Quick => quick,
            Mode::Full => full,
        }
    }

    pub fn name(self) -> &'static str {
        self.pick("quick", "full")
    }
}

/// The collector binary the launcher starts: `serviceradar-flow-collector` of this
/// target directory and profile (`cargo test --release -p flow-chaos` tests the release
/// build), built first (`cargo build --bin serviceradar-flow-collector`, once per test
/// process: a no-op when it is up to date; `chaos/run.sh` builds it before the tests).
/// When the build fails (a tree mid-edit) the binary already there is used.
pub fn collector_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let binary = PathBuf::from(env!("CHAOS_COLLECTOR_BIN"));
            let profile_dir = PathBuf::from(env!("CHAOS_PROFILE_DIR"));
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            build
                .current_dir(&workspace)
                .args(["build", "--bin", "serviceradar-flow-collector"])
                .env("CARGO_TARGET_DIR", target_dir(&profile_dir));
            // What cargo set for this test process would look like a changed build
            // environment to build scripts that watch it (ring's): leave it out, so the
            // build is the same as `cargo build` from a shell and nothing is rebuilt.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let from_cargo_test = name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || name.starts_with("CARGO_BIN_EXE_")
                    || matches!(
                        &*name,
                        "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
                    );
                if from_cargo_test {
                    build.env_remove(&*name);
                }
            }
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    build.arg("--release");
                }
                Some(profile) => {
                    build.args(["--profile", profile]);
                }
            }
            let status = build.status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()) || binary.exists(),
                "cannot build the collector ({status:?}); run `cargo build --bin serviceradar-flow-collector`"
            );
            binary
        })
        .clone()
}

/// The target directory holding `profile_dir` (`<target>/<profile>`).
fn target_dir(profile_dir: &std::path::Path) -> PathBuf {
    profile_dir.parent().unwrap_or(profile_dir).to_path_buf()
}

/// Polls `condition` every 20 ms until it holds (returns how long that took) or
/// `timeout` passes (returns `None`).
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if condition() {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] for async conditions.
pub async fn wait_for_async<F, Fut>(timeout: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
