//! Compiles the XDP program in ../ebpf with clang into OUT_DIR; the loader embeds it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("xsknet.bpf.o");
    let src = ebpf.join("xsknet.bpf.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", ebpf.join("xsknet.h").display());
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH")?.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => bail!("unsupported target arch {other} for the BPF include path"),
    };
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{arch}"))
        .arg("-I")
        .arg(&ebpf)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .with_context(|| {
            format!(
                "run {clang} to build {} (install clang, llvm, libbpf-dev: scripts/setup.sh)",
                src.display()
            )
        })?;
    if !status.success() {
        bail!("{clang} failed to compile {}", src.display());
    }
    Ok(())
}
