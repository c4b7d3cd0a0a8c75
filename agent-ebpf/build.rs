//! Rebuild the eBPF object when bpf-linker changes (a nightly update can bring a new LLVM).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
