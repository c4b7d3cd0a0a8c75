use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

use super::*;

fn opts(hosts: &[&str]) -> CaOptions {
    CaOptions {
        intercept_hosts: hosts.iter().map(ToString::to_string).collect(),
        name_constraints: true,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_key_0600_and_cert_0644_and_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("state/ca");
    let ca = CertificateAuthority::init(&ca_dir, &opts(&["api.openai.com"]), false).unwrap();
    assert_eq!(mode(&ca.paths().key), 0o600);
    assert_eq!(mode(&ca.paths().cert), 0o644);
    assert_eq!(mode(&ca_dir), 0o700);
    assert!(!ca.paths().prev_cert.exists());
    // Only the two files: no temporary files left behind.
    assert_eq!(fs::read_dir(&ca_dir).unwrap().count(), 2);
    assert!(ca.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    let loaded = CertificateAuthority::load(&ca_dir).unwrap();
    assert_eq!(loaded.root_der(), ca.root_der());
    assert_eq!(loaded.constraints().subtrees().unwrap(), ["api.openai.com"]);
    assert!(loaded.covers("api.openai.com"));
    assert!(!loaded.covers("api.anthropic.com"));
    assert!(loaded.not_after() > SystemTime::now());
    // A loaded CA can still issue.
    loaded.mint_leaf("api.openai.com").unwrap();
}

#[test]
fn init_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap();
    let err = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap_err();
    assert!(matches!(err, CaError::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        CertificateAuthority::load(dir.path()).unwrap().root_der(),
        first.root_der()
    );
    // A lone key also counts as an existing CA.
    fs::remove_file(&first.paths().cert).unwrap();
    assert!(matches!(
        CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false),
        Err(CaError::AlreadyExists(_))
    ));
    let forced = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), true).unwrap();
    assert_ne!(forced.root_der(), first.root_der());
}

#[test]
fn rotate_replaces_key_and_keeps_previous_cert() {
    let dir = tempfile::tempdir().unwrap();
    let old = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap();
    let old_key = fs::read_to_string(&old.paths().key).unwrap();
    let new = CertificateAuthority::rotate(dir.path(), &opts(&["a.example.com", "b.example.org"]))
        .unwrap();
    assert_ne!(fs::read_to_string(&new.paths().key).unwrap(), old_key);
    assert_eq!(
        fs::read_to_string(&new.paths().prev_cert).unwrap(),
        old.root_pem()
    );
    assert_eq!(mode(&new.paths().key), 0o600);
    assert!(new.covers("b.example.org"));
    assert!(
        CertificateAuthority::load(dir.path())
            .unwrap()
            .covers("b.example.org")
    );
}

#[test]
fn load_or_init_creates_once_then_loads() {
    let dir = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::load_or_init(dir.path(), &opts(&["a.example.com"])).unwrap();
    let b = CertificateAuthority::load_or_init(dir.path(), &opts(&["a.example.com"])).unwrap();
    assert_eq!(a.root_der(), b.root_der());
}

#[test]
fn load_reports_missing_loose_and_mismatched_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        CertificateAuthority::load(dir.path()),
        Err(CaError::NotFound(_))
    ));
    let ca = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap();
    let paths = ca.paths().clone();

    fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o640)).unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::KeyPermissions { .. }), "{err}");
    fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o600)).unwrap();

    let other = tempfile::tempdir().unwrap();
    let other_ca =
        CertificateAuthority::init(other.path(), &opts(&["a.example.com"]), false).unwrap();
    fs::write(&paths.cert, other_ca.root_pem()).unwrap();
    assert!(matches!(
        CertificateAuthority::load(dir.path()),
        Err(CaError::KeyMismatch(_))
    ));

    fs::remove_file(&paths.cert).unwrap();
    assert!(matches!(
        CertificateAuthority::load(dir.path()),
        Err(CaError::Incomplete(_, "ca.pem"))
    ));
}

#[test]
fn debug_output_never_contains_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap();
    let key_pem = fs::read_to_string(&ca.paths().key).unwrap();
    let secret_tail: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .chars()
        .rev()
        .take(24)
        .collect();
    let shown = format!(
        "{ca:?} {ca:#?} {:?}",
        ca.mint_leaf("a.example.com").unwrap()
    );
    let shown_rev: String = shown.chars().rev().collect();
    assert!(
        !shown_rev.contains(&secret_tail),
        "key material in Debug output"
    );
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn uncovered_lists_configured_patterns_the_root_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), &opts(&["api.openai.com"]), false).unwrap();
    let configured = vec![
        "api.openai.com".to_string(),
        "*.openai.azure.com".to_string(),
    ];
    assert_eq!(ca.uncovered(&configured), ["*.openai.azure.com"]);
    let problem = ca.coverage_problem(&configured).unwrap();
    assert!(problem.contains("*.openai.azure.com") && problem.contains("llmtrace ca rotate"));
    assert!(ca.coverage_problem(&configured[..1]).is_none());
    assert!(matches!(
        ca.mint_leaf("x.openai.azure.com"),
        Err(CaError::NotCovered(_))
    ));
}

fn verify(ca: &CertificateAuthority, leaf: &MintedLeaf, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.root_der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(
            &leaf.chain[0],
            &leaf.chain[1..],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn name_constrained_root_is_rejected_outside_and_accepted_inside_by_webpki() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        dir.path(),
        &opts(&["api.openai.com", "*.openai.azure.com"]),
        false,
    )
    .unwrap();
    for inside in ["api.openai.com", "eu.openai.azure.com"] {
        verify(&ca, &ca.mint_leaf(inside).unwrap(), inside).unwrap();
    }
    // What a stolen key could mint: a well-formed leaf for another name.
    for outside in ["www.google.com", "openai.com", "evil-api.openai.com"] {
        let err = verify(&ca, &ca.mint_unchecked(outside), outside).unwrap_err();
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = &err else {
            panic!("{outside}: unexpected error {err:?}");
        };
        assert!(
            format!("{other:?}").contains("NameConstraintViolation"),
            "{err:?}"
        );
    }

    // Control: the same kind of leaf from an unconstrained root verifies, so the rejection above
    // comes from the constraints and nothing else.
    let free_dir = tempfile::tempdir().unwrap();
    let free = CertificateAuthority::init(
        free_dir.path(),
        &CaOptions {
            name_constraints: false,
            ..CaOptions::default()
        },
        false,
    )
    .unwrap();
    assert!(free.constraints().subtrees().is_none());
    verify(
        &free,
        &free.mint_leaf("www.google.com").unwrap(),
        "www.google.com",
    )
    .unwrap();
}

#[test]
fn leaf_has_short_backdated_validity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), &opts(&["a.example.com"]), false).unwrap();
    let now = SystemTime::now();
    let policy = LeafPolicy {
        include_root: true,
        ..LeafPolicy::default()
    };
    let leaf = ca.mint_leaf_with("a.example.com", &policy, now).unwrap();
    assert_eq!(leaf.chain.len(), 2);
    assert_eq!(&leaf.chain[1], ca.root_der());
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.chain[0]).unwrap();
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .cast_signed()
    };
    let validity = cert.validity();
    assert_eq!(validity.not_before.timestamp(), unix(now - policy.backdate));
    assert_eq!(validity.not_after.timestamp(), unix(now + policy.validity));
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth);
    assert!(!cert.is_ca());
}

#[test]
fn staged_rotation_keeps_signing_with_the_active_root_until_activated() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&["api.openai.com"]);
    assert!(matches!(
        CertificateAuthority::stage_next(dir.path(), &o),
        Err(CaError::NotFound(_))
    ));
    assert!(matches!(
        CertificateAuthority::activate_next(dir.path()),
        Err(CaError::NotFound(_) | CaError::NothingStaged(_))
    ));
    let first = CertificateAuthority::init(dir.path(), &o, false).unwrap();
    let next_fp = CertificateAuthority::stage_next(dir.path(), &o).unwrap();
    let paths = first.paths().clone();
    assert_eq!(mode(&paths.next_key), 0o600);
    assert_eq!(mode(&paths.next_cert), 0o644);
    assert!(matches!(
        CertificateAuthority::stage_next(dir.path(), &o),
        Err(CaError::AlreadyStaged(_))
    ));
    // Staging does not change what the agent loads.
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.root_der(), first.root_der());

    let active = CertificateAuthority::activate_next(dir.path()).unwrap();
    assert_eq!(active.fingerprint_sha256(), next_fp);
    assert_eq!(mode(&paths.key), 0o600);
    assert!(!paths.next_key.exists() && !paths.next_cert.exists());
    assert_eq!(
        fs::read_to_string(&paths.prev_cert).unwrap(),
        first.root_pem()
    );
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint_sha256(), next_fp);
    assert!(loaded.covers("api.openai.com"));
    assert!(matches!(
        CertificateAuthority::activate_next(dir.path()),
        Err(CaError::NothingStaged(_))
    ));
}

#[test]
fn activation_refuses_a_staged_key_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&["api.openai.com"]);
    let first = CertificateAuthority::init(dir.path(), &o, false).unwrap();
    CertificateAuthority::stage_next(dir.path(), &o).unwrap();
    let next_key = first.paths().next_key.clone();
    fs::set_permissions(&next_key, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        CertificateAuthority::activate_next(dir.path()),
        Err(CaError::KeyPermissions { .. })
    ));
    // Nothing switched.
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.root_der(), first.root_der());
}
