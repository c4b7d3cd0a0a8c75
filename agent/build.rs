//! Builds the eBPF programs (nightly, BPF target, bpf-linker) and leaves the object in OUT_DIR,
//! where `src/ebpf/loader.rs` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` no object is built and an empty placeholder is written instead, so
//! pure-userspace work (unit tests of parsers, the sink…) compiles without the eBPF toolchain;
//! such a binary refuses to start interception with a message saying why.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../agent-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("agent-ebpf directory")?;
    // The ABI crate is a path dependency of the eBPF crate but lives inside its directory, so
    // aya-build's rerun-if-changed on that directory covers it too.
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(env::var("OUT_DIR")?).join("llmtrace-ebpf");
        fs::write(&out, []).context("writing the placeholder eBPF object")?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let root_dir = ebpf_dir.to_str().context("agent-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "llmtrace-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
