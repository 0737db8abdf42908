//! Real Python client libraries, for the tests that check tracegate against
//! what they send. Such a test skips when no Python with the library is
//! at hand.

use std::process::Command;

/// The interpreter named by the environment variable `var` (`python3` when
/// unset), if it can import `module`; otherwise says the test is skipped
/// and what to `pip install` (`packages`) to run it.
pub fn with_module(var: &str, module: &str, packages: &str) -> Option<String> {
    let python = std::env::var(var).unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: no Python with {module} (pip install {packages}; set {var})");
    }
    ok.then_some(python)
}

/// Runs `python` with `args` off the async workers; it must succeed.
/// Returns what it printed.
pub async fn run(python: String, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
