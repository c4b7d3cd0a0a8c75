use std::sync::{Arc, Mutex};

use super::*;

/// Records commands instead of running them; can be told to fail.
#[derive(Debug, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
    fail: bool,
}

impl CommandRunner for Recorder {
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String> {
        let name = program.file_name().unwrap().to_string_lossy();
        self.calls
            .lock()
            .unwrap()
            .push(format!("{name} {}", args.join(" ")).trim().to_string());
        if self.fail {
            Err("tool failed".into())
        } else {
            Ok(())
        }
    }
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

fn system(tool: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let tool_path = root.path().join(tool);
    fs::create_dir_all(tool_path.parent().unwrap()).unwrap();
    fs::write(&tool_path, "#!/bin/sh\n").unwrap();
    for file in extra {
        let p = root.path().join(file);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }
    let pem = root.path().join("ca.pem");
    fs::write(&pem, PEM).unwrap();
    (root, pem)
}

fn store(root: &Path) -> (TrustStore, Arc<Mutex<Vec<String>>>) {
    let recorder = Recorder::default();
    let calls = recorder.calls.clone();
    (TrustStore::new(root, Box::new(recorder)), calls)
}

#[test]
fn debian_install_and_uninstall() {
    let (root, pem) = system("usr/sbin/update-ca-certificates", &[]);
    let (store, calls) = store(root.path());
    let installed = store.install(&pem).unwrap();
    assert_eq!(installed.flavor, Flavor::Debian);
    let anchor = root
        .path()
        .join("usr/local/share/ca-certificates/llmtrace.crt");
    assert_eq!(installed.anchor, anchor);
    assert_eq!(fs::read_to_string(&anchor).unwrap(), PEM);
    assert!(store.is_installed());
    assert_eq!(
        installed.bundle,
        root.path().join("etc/ssl/certs/ca-certificates.crt")
    );
    assert_eq!(store.uninstall().unwrap().unwrap().anchor, anchor);
    assert!(!anchor.exists());
    assert_eq!(
        *calls.lock().unwrap(),
        ["update-ca-certificates", "update-ca-certificates"]
    );
    // A second uninstall has nothing to do and runs nothing.
    assert!(store.uninstall().unwrap().is_none());
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[test]
fn redhat_layout_uses_anchors_and_update_ca_trust() {
    let (root, pem) = system("usr/bin/update-ca-trust", &[]);
    let (store, calls) = store(root.path());
    let installed = store.install(&pem).unwrap();
    assert_eq!(installed.flavor, Flavor::RedHat);
    assert!(
        root.path()
            .join("etc/pki/ca-trust/source/anchors/llmtrace.crt")
            .is_file()
    );
    assert_eq!(*calls.lock().unwrap(), ["update-ca-trust extract"]);
}

#[test]
fn alpine_is_detected_by_its_release_file() {
    let (root, pem) = system("usr/sbin/update-ca-certificates", &["etc/alpine-release"]);
    let (store, _) = store(root.path());
    assert_eq!(store.install(&pem).unwrap().flavor, Flavor::Alpine);
}

#[test]
fn missing_tools_and_failing_tools_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let pem = root.path().join("ca.pem");
    fs::write(&pem, PEM).unwrap();
    let (empty, _) = store(root.path());
    let err = empty.install(&pem).unwrap_err().to_string();
    assert!(err.contains("no supported trust store"), "{err}");

    let (root, pem) = system("usr/sbin/update-ca-certificates", &[]);
    let failing = TrustStore::new(
        root.path(),
        Box::new(Recorder {
            fail: true,
            ..Recorder::default()
        }),
    );
    let err = failing.install(&pem).unwrap_err().to_string();
    assert!(err.contains("tool failed"), "{err}");
}

#[test]
fn a_non_certificate_is_never_installed() {
    let (root, _) = system("usr/sbin/update-ca-certificates", &[]);
    let key = root.path().join("ca.key");
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (store, calls) = store(root.path());
    assert!(matches!(store.install(&key), Err(CaError::Parse { .. })));
    assert!(!store.is_installed());
    assert!(calls.lock().unwrap().is_empty());
}
