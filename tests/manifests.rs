//! The Kubernetes manifests in deploy/kubernetes: the kustomize base renders, every object
//! validates offline against the Kubernetes schemas (strict), and the promises the deployment
//! README makes (capabilities, CA Secret mode and mount, readiness, Pod Security) hold.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Runs the renderer/validator on `dir`: (success, stdout, stderr).
fn render(dir: &Path) -> (bool, String, String) {
    let out = Command::new(testkit::python())
        .arg(workspace().join("tests/k8s/render_validate.py"))
        .arg(dir)
        .output()
        .expect("run python");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_kustomize_base_renders_and_validates() {
    let (ok, rendered, err) = render(&workspace().join("deploy/kubernetes"));
    assert!(ok, "{err}");
    for kind in [
        "kind: Namespace",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ConfigMap",
        "kind: DaemonSet",
    ] {
        assert!(rendered.contains(kind), "{kind} missing from:\n{rendered}");
    }
}

/// A copy of the base with `edit` applied to one file must be refused with `expected`: the
/// validation is able to fail.
fn refused_after(file: &str, from: &str, to: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = workspace().join("deploy/kubernetes");
    for entry in std::fs::read_dir(&base).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} no longer contains {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let (ok, _, err) = render(dir.path());
    assert!(!ok, "an edited base ({from:?} → {to:?}) was accepted");
    assert!(err.contains(expected), "{err}");
}

#[test]
fn schema_errors_and_broken_promises_are_refused() {
    refused_after(
        "daemonset.yaml",
        "hostPID: true",
        "hostPID: true\n      hostNetwrk: true",
        "'hostNetwrk' was unexpected",
    );
    refused_after(
        "daemonset.yaml",
        "secretName: llmtrace-ca, defaultMode: 0400",
        "secretName: llmtrace-ca, defaultMode: 0644",
        "defaultMode 0400",
    );
    refused_after(
        "daemonset.yaml",
        "drop: [ALL]",
        "drop: [NET_RAW]",
        "drop ALL",
    );
    refused_after(
        "configmap.yaml",
        "dir = \"/etc/llmtrace-ca\"",
        "dir = \"/var/lib/llmtrace/ca\"",
        "[ca] dir",
    );
    refused_after(
        "namespace-pod-security.yaml",
        "enforce: privileged",
        "enforce: baseline",
        "pod-security",
    );
}
