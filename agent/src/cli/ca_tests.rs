use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use llmtrace_ca::CommandRunner;
use rustls::pki_types::pem::PemObject as _;

use super::*;

#[derive(Debug, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl CommandRunner for Recorder {
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String> {
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        self.0
            .lock()
            .unwrap()
            .push(format!("{name} {}", args.join(" ")));
        Ok(())
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    ca_dir: PathBuf,
    root: PathBuf,
    store: TrustStore,
    calls: Arc<Mutex<Vec<String>>>,
    opts: CaOptions,
}

impl Fixture {
    /// A fake Debian filesystem root and a CA directory inside a temp dir.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("sysroot");
        let tool = root.join("usr/sbin/update-ca-certificates");
        fs::create_dir_all(tool.parent().unwrap()).unwrap();
        fs::write(&tool, "").unwrap();
        let recorder = Recorder::default();
        let calls = recorder.0.clone();
        Self {
            ca_dir: tmp.path().join("ca"),
            store: TrustStore::new(&root, Box::new(recorder)),
            root,
            calls,
            opts: CaOptions {
                intercept_hosts: vec!["api.openai.com".into()],
                name_constraints: true,
            },
            _tmp: tmp,
        }
    }

    fn run(&self, cmd: &CaCommand) -> anyhow::Result<String> {
        let mut out = Vec::new();
        run_with(cmd, &self.ca_dir, &self.opts, &self.store, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn anchor(&self) -> String {
        fs::read_to_string(
            self.root
                .join("usr/local/share/ca-certificates/llmtrace.crt"),
        )
        .unwrap()
    }
}

#[test]
fn init_path_install_rotate_uninstall() {
    let f = Fixture::new();
    assert!(
        f.run(&CaCommand::Path)
            .unwrap_err()
            .to_string()
            .contains("llmtrace ca init")
    );

    let out = f.run(&CaCommand::Init { force: false }).unwrap();
    assert!(out.contains("limited to:  api.openai.com"), "{out}");
    let err = f
        .run(&CaCommand::Init { force: false })
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");

    let path = f.run(&CaCommand::Path).unwrap();
    assert_eq!(path.trim(), f.ca_dir.join("ca.pem").display().to_string());

    let out = f.run(&CaCommand::Install).unwrap();
    assert!(out.contains("NODE_EXTRA_CA_CERTS="), "{out}");
    let first = fs::read_to_string(f.ca_dir.join("ca.pem")).unwrap();
    assert_eq!(f.anchor(), first);

    // Rotation replaces the installed anchor and keeps the old certificate.
    let out = f
        .run(&CaCommand::Rotate {
            stage: false,
            activate: false,
        })
        .unwrap();
    assert!(
        out.contains("ca.prev.pem") && out.contains("Replaced"),
        "{out}"
    );
    let second = fs::read_to_string(f.ca_dir.join("ca.pem")).unwrap();
    assert_ne!(first, second);
    assert_eq!(f.anchor(), second);
    assert_eq!(
        fs::read_to_string(f.ca_dir.join("ca.prev.pem")).unwrap(),
        first
    );

    let out = f.run(&CaCommand::Uninstall).unwrap();
    assert!(out.contains("Removed"), "{out}");
    assert_eq!(f.calls.lock().unwrap().len(), 3);
}

#[test]
fn staged_rotation_publishes_the_next_root_in_bundles_before_it_signs() {
    let f = Fixture::new();
    f.run(&CaCommand::Init { force: false }).unwrap();
    // The system bundle: another CA's root.
    let other = tempfile::tempdir().unwrap();
    let other_ca = llmtrace_ca::CertificateAuthority::init(other.path(), &f.opts, false).unwrap();
    let system = other.path().join("system.pem");
    fs::write(&system, other_ca.root_pem()).unwrap();
    let bundle_file = f.ca_dir.join("bundle.pem");
    let bundle = |no_previous| {
        f.run(&CaCommand::Bundle {
            out: Some(bundle_file.clone()),
            system: Some(system.clone()),
            no_previous,
        })
        .unwrap();
        let text = fs::read_to_string(&bundle_file).unwrap();
        rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let first = fs::read_to_string(f.ca_dir.join("ca.pem")).unwrap();
    let der =
        |pem: &str| rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(bundle(false), [other_ca.root_der().clone(), der(&first)]);

    let out = f
        .run(&CaCommand::Rotate {
            stage: true,
            activate: false,
        })
        .unwrap();
    assert!(out.contains("--activate"), "{out}");
    // Still signing with the first root, but the bundle already trusts the next one.
    assert_eq!(fs::read_to_string(f.ca_dir.join("ca.pem")).unwrap(), first);
    let next = fs::read_to_string(f.ca_dir.join("ca.next.pem")).unwrap();
    assert_eq!(
        bundle(false),
        [other_ca.root_der().clone(), der(&first), der(&next)]
    );

    f.run(&CaCommand::Rotate {
        stage: false,
        activate: true,
    })
    .unwrap();
    assert_eq!(fs::read_to_string(f.ca_dir.join("ca.pem")).unwrap(), next);
    assert_eq!(
        bundle(false),
        [other_ca.root_der().clone(), der(&next), der(&first)]
    );
    assert_eq!(bundle(true), [other_ca.root_der().clone(), der(&next)]);
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(&bundle_file).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o644);
}
