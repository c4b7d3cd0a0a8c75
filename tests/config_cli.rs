//! Configuration errors: a clear message naming the problem, and a failing exit code.

use testkit::agent::run_cli;

fn config_error(text: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut full = vec!["--config", path.to_str().unwrap()];
    full.extend_from_slice(args);
    let (status, stderr) = run_cli(&full);
    assert!(!status.success(), "expected failure for {text:?}");
    assert_ne!(status.code(), Some(0));
    stderr
}

#[test]
fn unknown_key_is_named() {
    let e = config_error("[intercept]\nlisten_prot = 1\n", &["run"]);
    assert!(e.contains("listen_prot"), "{e}");
}

#[test]
fn bad_address_is_named() {
    let e = config_error(
        "[[providers]]\nhost = \"api.openai.com\"\naddresses = [\"127.0.0.999\"]\n",
        &["run"],
    );
    assert!(
        e.contains("providers[0].addresses[0]") && e.contains("127.0.0.999"),
        "{e}"
    );
}

#[test]
fn missing_cgroup_is_named() {
    let e = config_error(
        "[intercept]\ncgroup = \"/sys/fs/cgroup/does-not-exist\"\n",
        &["run"],
    );
    assert!(
        e.contains("intercept.cgroup") && e.contains("does-not-exist"),
        "{e}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let (status, e) = run_cli(&["--config", "/nonexistent/llmtrace.toml", "run"]);
    assert!(!status.success());
    assert!(e.contains("/nonexistent/llmtrace.toml"), "{e}");
}

#[test]
fn status_without_an_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let e = config_error(
        &format!(
            "state_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:1\"\n",
            dir.path().display()
        ),
        &["status"],
    );
    assert!(e.contains("llmtrace run"), "{e}");
}
