//! Local root CA for llmtrace.
//!
//! The agent terminates TLS for configured LLM provider names with leaf certificates issued by a
//! root it creates itself. This crate owns that root: creating it (ECDSA P-256, X.509 Name
//! Constraints limiting it to the intercepted domains), storing it (`ca.pem`, and `ca.key` created
//! 0600), rotating it, installing it into the system trust store, and minting and caching leaves
//! per server name behind a rustls certificate resolver.
//!
//! Only the `ring` crypto provider is used, so configs built from this crate never depend on a
//! process-wide default provider.
#![forbid(unsafe_code)]

mod authority;
mod bundle;
mod cache;
mod constraints;
mod error;
mod files;
mod hints;
mod key;
mod leaf;
mod options;
mod resolver;
mod root;
mod truststore;

pub use authority::{CertificateAuthority, fingerprint};
pub use bundle::{
    PublishedRoot, RootRole, SYSTEM_BUNDLES, build as build_bundle, published_roots,
    system_bundle_path,
};
pub use cache::{Clock, LeafCache, LeafCacheConfig};
pub use constraints::HostConstraints;
pub use error::CaError;
pub use hints::runtime_hints;
pub use key::CaKey;
pub use leaf::{LeafPolicy, MintedLeaf};
pub use options::{CaOptions, CaPaths};
pub use resolver::SniResolver;
pub use truststore::{CommandRunner, Flavor, Installed, SystemRunner, TrustStore};
