//! `llmtrace ca …`: create, show, install, uninstall and rotate the local root CA.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use llmtrace_ca::{CaOptions, CaPaths, CertificateAuthority, TrustStore, runtime_hints};

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
    /// Replace the root with a new key and certificate limited to the configured hosts.
    Rotate,
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
        CaCommand::Rotate => {
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
