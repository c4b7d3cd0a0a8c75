//! `llmtrace ca …`: create, show, install, uninstall and rotate the local root CA.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use llmtrace_ca::{
    CaOptions, CaPaths, CertificateAuthority, TrustStore, build_bundle, published_roots,
    runtime_hints, system_bundle_path,
};

/// Subcommands of `llmtrace ca`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CaCommand {
    /// Create the root CA (refuses to replace an existing one without --force).
    Init {
        /// Replace an existing CA; its certificate is kept as ca.prev.pem.
        #[arg(long)]
        force: bool,
    },
    /// Print the path of the root certificate (PEM).
    Path,
    /// Add the root certificate to the system trust store.
    Install,
    /// Remove the root certificate from the system trust store.
    Uninstall,
    /// Replace the root with a new key and certificate limited to the configured hosts. Without
    /// flags the switch is immediate; `--stage` then `--activate` publish the new root first.
    Rotate {
        /// Write the next root as ca.next.pem/ca.next.key without using it: bundles built from
        /// now on carry it, so clients trust it before it signs anything.
        #[arg(long, conflicts_with = "activate")]
        stage: bool,
        /// Make the staged root the active one (the replaced root is kept as ca.prev.pem).
        #[arg(long)]
        activate: bool,
    },
    /// Write a trust bundle: the system roots plus every llmtrace root clients must trust now
    /// (active, staged next, previous), for SSL_CERT_FILE / REQUESTS_CA_BUNDLE.
    Bundle {
        /// Write here (atomically, mode 0644) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The system bundle to start from (default: the distribution's, e.g.
        /// /etc/ssl/certs/ca-certificates.crt).
        #[arg(long, value_name = "FILE")]
        system: Option<PathBuf>,
        /// Leave out the root replaced by the last rotation (once every node signs with the new one).
        #[arg(long)]
        no_previous: bool,
    },
}

/// Runs a `llmtrace ca` subcommand against the real system trust store, printing to stdout.
pub fn run(
    cmd: &CaCommand,
    ca_dir: &Path,
    intercept_hosts: &[String],
    name_constraints: bool,
) -> anyhow::Result<()> {
    let opts = CaOptions {
        intercept_hosts: intercept_hosts.to_vec(),
        name_constraints,
    };
    run_with(
        cmd,
        ca_dir,
        &opts,
        &TrustStore::system(),
        &mut std::io::stdout().lock(),
    )
}

/// `run` with the trust store and output injected.
pub fn run_with(
    cmd: &CaCommand,
    ca_dir: &Path,
    opts: &CaOptions,
    store: &TrustStore,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { force } => {
            let ca = CertificateAuthority::init(ca_dir, opts, *force)?;
            describe(out, "Created", &ca)?;
            if *force && store.is_installed() {
                reinstall(out, &ca, store)?;
            } else {
                writeln!(
                    out,
                    "Next: run `llmtrace ca install` to trust it system-wide."
                )?;
            }
        }
        CaCommand::Path => {
            let cert = existing_cert(ca_dir)?;
            writeln!(out, "{}", cert.display())?;
        }
        CaCommand::Install => {
            let cert = existing_cert(ca_dir)?;
            let installed = store.install(&cert)?;
            writeln!(
                out,
                "Installed {} into the {:?} trust store as {}.\n",
                cert.display(),
                installed.flavor,
                installed.anchor.display()
            )?;
            write!(out, "{}", runtime_hints(&cert, Some(&installed.bundle)))?;
        }
        CaCommand::Uninstall => uninstall(out, store)?,
        CaCommand::Rotate { stage: true, .. } => {
            let fp = CertificateAuthority::stage_next(ca_dir, opts)?;
            writeln!(
                out,
                "Staged the next llmtrace root in {} (SHA-256 {fp}); the active root keeps signing.",
                CaPaths::new(ca_dir).next_cert.display()
            )?;
            writeln!(
                out,
                "Next: publish it (`llmtrace ca bundle`, and the CA Secret), wait until every client \
                 trusts it, then run `llmtrace ca rotate --activate`."
            )?;
        }
        CaCommand::Rotate { activate: true, .. } => {
            let ca = CertificateAuthority::activate_next(ca_dir)?;
            describe(out, "Activated the staged", &ca)?;
            if store.is_installed() {
                reinstall(out, &ca, store)?;
            }
            writeln!(
                out,
                "Restart the agent so it issues certificates from the new root. Bundles keep the \
                 previous root until you drop it (`llmtrace ca bundle --no-previous`)."
            )?;
        }
        CaCommand::Bundle {
            out: file,
            system,
            no_previous,
        } => bundle(
            out,
            ca_dir,
            file.as_deref(),
            system.as_deref(),
            !no_previous,
        )?,
        CaCommand::Rotate { .. } => {
            let ca = CertificateAuthority::rotate(ca_dir, opts)?;
            describe(out, "Rotated to a new", &ca)?;
            if ca.paths().prev_cert.exists() {
                writeln!(
                    out,
                    "The previous root is kept in {} so you can remove it from other trust stores.",
                    ca.paths().prev_cert.display()
                )?;
            }
            if store.is_installed() {
                reinstall(out, &ca, store)?;
            } else {
                writeln!(
                    out,
                    "Next: run `llmtrace ca install` to trust it system-wide."
                )?;
            }
            writeln!(
                out,
                "Restart the agent so it issues certificates from the new root."
            )?;
        }
    }
    Ok(())
}

/// The certificate path, failing clearly when no CA exists. Needs no access to the key, so it
/// works for users who may read the certificate only.
fn existing_cert(ca_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let paths = CaPaths::new(ca_dir);
    if !paths.cert.is_file() {
        bail!(
            "no CA certificate at {} (create one with `llmtrace ca init`)",
            paths.cert.display()
        );
    }
    Ok(paths.cert)
}

/// Writes the bundle to `file` (atomically) or to `out`.
fn bundle(
    out: &mut dyn Write,
    ca_dir: &Path,
    file: Option<&Path>,
    system: Option<&Path>,
    with_previous: bool,
) -> anyhow::Result<()> {
    let roots = published_roots(ca_dir, with_previous)?;
    let system_path = system_bundle_path(system)?;
    let system_pem = std::fs::read_to_string(&system_path)
        .with_context(|| format!("reading the system bundle {}", system_path.display()))?;
    let text = build_bundle(&system_pem, &roots)?;
    match file {
        None => out.write_all(text.as_bytes())?,
        Some(path) => {
            write_atomically(path, text.as_bytes())?;
            writeln!(
                out,
                "Wrote {} ({} llmtrace root(s) after the roots of {}).",
                path.display(),
                roots.len(),
                system_path.display()
            )?;
        }
    }
    Ok(())
}

/// A reader of the bundle never sees half a file: written next to it, then renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

fn describe(out: &mut dyn Write, verb: &str, ca: &CertificateAuthority) -> anyhow::Result<()> {
    let paths = ca.paths();
    writeln!(out, "{verb} llmtrace root CA in {}", paths.dir.display())?;
    writeln!(out, "  certificate: {}", paths.cert.display())?;
    writeln!(out, "  key:         {} (mode 0600)", paths.key.display())?;
    writeln!(out, "  SHA-256:     {}", ca.fingerprint_sha256())?;
    match ca.constraints().subtrees() {
        Some(subtrees) => writeln!(
            out,
            "  limited to:  {} (and names below them)",
            subtrees.join(", ")
        )?,
        None => writeln!(
            out,
            "  limited to:  nothing — name constraints are disabled, the root can vouch for any name"
        )?,
    }
    Ok(())
}

/// Replaces the installed anchor with the new root, so the trust store never holds a root the
/// agent no longer uses while missing the one it does.
fn reinstall(
    out: &mut dyn Write,
    ca: &CertificateAuthority,
    store: &TrustStore,
) -> anyhow::Result<()> {
    let installed = store
        .install(&ca.paths().cert)
        .context("the new root was created but could not replace the installed one")?;
    writeln!(
        out,
        "Replaced the previously installed root in the {:?} trust store ({}).",
        installed.flavor,
        installed.anchor.display()
    )?;
    writeln!(
        out,
        "Runtimes with their own store (Java keytool, a copied bundle) still hold the old root; re-import it there."
    )?;
    Ok(())
}

fn uninstall(out: &mut dyn Write, store: &TrustStore) -> anyhow::Result<()> {
    match store.uninstall()? {
        Some(removed) => writeln!(
            out,
            "Removed {} from the {:?} trust store.",
            removed.anchor.display(),
            removed.flavor
        )?,
        None => writeln!(
            out,
            "The llmtrace root was not installed in the system trust store."
        )?,
    }
    writeln!(
        out,
        "Also remove it where you added it by hand: unset NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE and \
         SSL_CERT_FILE if they point at it, and for Java run \
         `keytool -delete -cacerts -storepass changeit -alias llmtrace`."
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
