//! Links Vectorscan statically (so a host running the agent needs no Vectorscan package) and
//! the C++ runtime it is written against dynamically (every Debian system has it).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LLMTRACE_VECTORSCAN_LIB_DIR");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The configured directory, then pkg-config's answer, then where Debian puts it.
    let candidates = [
        std::env::var("LLMTRACE_VECTORSCAN_LIB_DIR").ok(),
        pkg_config_libdir(),
        Some(format!("/usr/lib/{arch}-linux-gnu")),
        Some("/usr/local/lib".to_owned()),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|d| Path::new(d).join("libhs.a").exists());
    let Some(dir) = found else {
        panic!(
            "Vectorscan's static library (libhs.a) was not found: install Debian's \
             libvectorscan-dev (`cargo xtask setup` does), or set LLMTRACE_VECTORSCAN_LIB_DIR \
             to the directory holding libhs.a"
        );
    };
    println!("cargo:rerun-if-changed={dir}/libhs.a");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=hs");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

/// Where `pkg-config` says libhs lives.
fn pkg_config_libdir() -> Option<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--variable=libdir", "libhs"])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !dir.is_empty()).then_some(dir)
}
