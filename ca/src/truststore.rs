//! Adding the root to, and removing it from, the operating system's trust store.
//!
//! The filesystem root and the command runner are injectable so tests run against a temporary
//! directory and record commands instead of changing the real system.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::CaError;
use crate::files::{self, CERT_MODE};

/// File name of the installed anchor.
const ANCHOR_NAME: &str = "llmtrace.crt";

/// The trust store layouts supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Debian and Ubuntu: `/usr/local/share/ca-certificates` + `update-ca-certificates`.
    Debian,
    /// Alpine: the Debian layout and tool.
    Alpine,
    /// RHEL, Fedora, CentOS: `/etc/pki/ca-trust/source/anchors` + `update-ca-trust`.
    RedHat,
}

impl Flavor {
    /// Directory for extra anchors, relative to the filesystem root.
    fn anchor_dir(self) -> &'static str {
        match self {
            Self::Debian | Self::Alpine => "usr/local/share/ca-certificates",
            Self::RedHat => "etc/pki/ca-trust/source/anchors",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::Debian | Self::Alpine => "update-ca-certificates",
            Self::RedHat => "update-ca-trust",
        }
    }

    fn tool_args(self) -> &'static [&'static str] {
        match self {
            Self::Debian | Self::Alpine => &[],
            Self::RedHat => &["extract"],
        }
    }

    /// The combined bundle the tool regenerates, relative to the filesystem root.
    fn bundle(self) -> &'static str {
        match self {
            Self::Debian | Self::Alpine => "etc/ssl/certs/ca-certificates.crt",
            Self::RedHat => "etc/pki/tls/certs/ca-bundle.crt",
        }
    }
}

/// Runs a trust store tool.
pub trait CommandRunner: fmt::Debug + Send + Sync {
    /// Runs `program` with `args`; an error carries the tool's output.
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String>;
}

/// Runs commands on the real system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Where the root was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Detected layout.
    pub flavor: Flavor,
    /// The anchor file written or removed.
    pub anchor: PathBuf,
    /// The system bundle that now includes (or no longer includes) the root.
    pub bundle: PathBuf,
}

/// The system trust store under a filesystem root.
#[derive(Debug)]
pub struct TrustStore {
    /// Filesystem root; `/` on a real system.
    pub root: PathBuf,
    runner: Box<dyn CommandRunner>,
}

impl TrustStore {
    /// The real system's trust store.
    pub fn system() -> Self {
        Self::new("/", Box::new(SystemRunner))
    }

    /// A trust store under `root`, running tools through `runner`.
    pub fn new(root: impl Into<PathBuf>, runner: Box<dyn CommandRunner>) -> Self {
        Self {
            root: root.into(),
            runner,
        }
    }

    /// The layout of this system, with the path of its update tool.
    pub fn detect(&self) -> Result<(Flavor, PathBuf), CaError> {
        for flavor in [Flavor::RedHat, Flavor::Debian] {
            let Some(tool) = self.find_tool(flavor.tool()) else {
                continue;
            };
            let flavor =
                if flavor == Flavor::Debian && self.root.join("etc/alpine-release").exists() {
                    Flavor::Alpine
                } else {
                    flavor
                };
            return Ok((flavor, tool));
        }
        Err(CaError::TrustStore(
            "no supported trust store found (neither update-ca-certificates nor update-ca-trust \
             is installed); install the ca-certificates package or add ca.pem to your trust \
             store by hand"
                .into(),
        ))
    }

    /// Copies the root at `ca_pem` into the anchors directory and regenerates the bundle.
    pub fn install(&self, ca_pem: &Path) -> Result<Installed, CaError> {
        let pem = fs::read(ca_pem).map_err(|e| CaError::io("read", ca_pem, e))?;
        // Refuse to install anything that is not a certificate (a key copied by mistake).
        CertificateDer::from_pem_slice(&pem).map_err(|e| CaError::Parse {
            what: "certificate",
            path: ca_pem.to_path_buf(),
            detail: e.to_string(),
        })?;
        let (flavor, tool) = self.detect()?;
        let dir = self.root.join(flavor.anchor_dir());
        fs::create_dir_all(&dir).map_err(|e| CaError::io("create directory", &dir, e))?;
        let anchor = dir.join(ANCHOR_NAME);
        files::stage(&anchor, &pem, CERT_MODE)?.commit()?;
        self.update(flavor, &tool)?;
        Ok(self.report(flavor, anchor))
    }

    /// Removes the root from the trust store; `None` when it was not installed.
    pub fn uninstall(&self) -> Result<Option<Installed>, CaError> {
        let (flavor, tool) = self.detect()?;
        let anchor = self.root.join(flavor.anchor_dir()).join(ANCHOR_NAME);
        match fs::remove_file(&anchor) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CaError::io("remove", &anchor, e)),
        }
        self.update(flavor, &tool)?;
        Ok(Some(self.report(flavor, anchor)))
    }

    /// Whether the anchor file is present.
    pub fn is_installed(&self) -> bool {
        self.detect()
            .is_ok_and(|(f, _)| self.root.join(f.anchor_dir()).join(ANCHOR_NAME).exists())
    }

    /// The system bundle path for this layout, if one is detected.
    pub fn bundle(&self) -> Option<PathBuf> {
        self.detect().ok().map(|(f, _)| self.root.join(f.bundle()))
    }

    fn update(&self, flavor: Flavor, tool: &Path) -> Result<(), CaError> {
        self.runner
            .run(tool, flavor.tool_args())
            .map_err(CaError::TrustStore)
    }

    fn report(&self, flavor: Flavor, anchor: PathBuf) -> Installed {
        Installed {
            flavor,
            anchor,
            bundle: self.root.join(flavor.bundle()),
        }
    }

    fn find_tool(&self, name: &str) -> Option<PathBuf> {
        ["usr/sbin", "usr/bin", "sbin", "bin"]
            .iter()
            .map(|dir| self.root.join(dir).join(name))
            .find(|p| p.is_file())
    }
}

#[cfg(test)]
#[path = "truststore_tests.rs"]
mod tests;
