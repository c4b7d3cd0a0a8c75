use std::fs;

use super::*;
use crate::{CaOptions, CertificateAuthority};

fn opts() -> CaOptions {
    CaOptions {
        intercept_hosts: vec!["api.openai.com".into()],
        name_constraints: true,
    }
}

/// A stand-in for the system bundle: the roots of two other CAs.
fn system_pem() -> String {
    let dir = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::init(&dir.path().join("a"), &opts(), false).unwrap();
    let b = CertificateAuthority::init(&dir.path().join("b"), &opts(), false).unwrap();
    format!("# comment\n{}\n{}", a.root_pem(), b.root_pem())
}

fn count_certs(pem: &str) -> usize {
    CertificateDer::pem_slice_iter(pem.as_bytes()).count()
}

#[test]
fn bundle_is_system_roots_then_active_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), &opts(), false).unwrap();
    let roots = published_roots(dir.path(), true).unwrap();
    assert_eq!(roots.len(), 1);
    let bundle = build(&system_pem(), &roots).unwrap();
    assert_eq!(count_certs(&bundle), 3);
    let last = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(&last, ca.root_der());
    assert!(bundle.contains(&ca.fingerprint_sha256()));
}

#[test]
fn a_root_already_in_the_system_bundle_is_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), &opts(), false).unwrap();
    let system = format!("{}{}", system_pem(), ca.root_pem());
    let bundle = build(&system, &published_roots(dir.path(), true).unwrap()).unwrap();
    assert_eq!(count_certs(&bundle), 3);
}

#[test]
fn staged_and_previous_roots_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let first = CertificateAuthority::init(dir.path(), &opts(), false).unwrap();
    let next_fp = CertificateAuthority::stage_next(dir.path(), &opts()).unwrap();
    let roots = published_roots(dir.path(), true).unwrap();
    let roles: Vec<_> = roots.iter().map(|r| r.role).collect();
    assert_eq!(roles, [RootRole::Active, RootRole::Next]);
    assert_eq!(fingerprint(&roots[1].der), next_fp);

    CertificateAuthority::activate_next(dir.path()).unwrap();
    let roots = published_roots(dir.path(), true).unwrap();
    let roles: Vec<_> = roots.iter().map(|r| r.role).collect();
    assert_eq!(roles, [RootRole::Active, RootRole::Previous]);
    assert_eq!(fingerprint(&roots[0].der), next_fp);
    assert_eq!(&roots[1].der, first.root_der());
    assert_eq!(published_roots(dir.path(), false).unwrap().len(), 1);
}

#[test]
fn bad_system_bundles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::init(dir.path(), &opts(), false).unwrap();
    let roots = published_roots(dir.path(), true).unwrap();
    assert!(matches!(build("", &roots), Err(CaError::Bundle(_))));
    let truncated = system_pem();
    let truncated = &truncated[..truncated.len() - 40];
    assert!(matches!(build(truncated, &roots), Err(CaError::Bundle(_))));
}

#[test]
fn no_ca_means_no_bundle() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        published_roots(dir.path(), true),
        Err(CaError::NotFound(_))
    ));
}

#[test]
fn system_bundle_override_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roots.pem");
    assert!(system_bundle_path(Some(&file)).is_err());
    fs::write(&file, "x").unwrap();
    assert_eq!(system_bundle_path(Some(&file)).unwrap(), file);
}
