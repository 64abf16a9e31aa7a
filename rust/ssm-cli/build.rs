//! On Linux, links the helper with `startup-path.ld` (written by bench/startup-path.sh), which
//! puts the functions a port forward runs first in its code, side by side. The kernel maps code
//! 64 KiB at a time around each page first touched, so spread over the whole binary those
//! functions made nearly all of it resident; grouped, about the group is. GNU ld and lld both
//! read it; `INSERT BEFORE .text` only adds an output section to their default layout.
//!
//! With glibc, it also packs the helper's relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) when the linker takes the option. The loader reads every relocation at start: as
//! 46,000 24-byte RELA entries they were 1.1 MiB of the helper's resident memory (issue 13);
//! packed, a few KiB. The option is passed only when a small program linked with it here also
//! runs here (a loader without DT_RELR would leave its pointer unrelocated): building for
//! another machine, or with a linker or glibc (before 2.36) without it, links as before.

use std::path::Path;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rerun-if-changed=startup-path.ld");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rustc-link-arg-bin=ssmconnect=-Wl,-T,{dir}/startup-path.ld");

    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") && links_packed(Path::new(&out)) {
        println!("cargo::rustc-link-arg-bin=ssmconnect=-Wl,-z,pack-relative-relocs");
        // Tells the tests (tests/startup_path.rs) to expect packed relocations.
        println!("cargo::rustc-env=SSMCONNECT_PACKED_RELOCS=1");
    }
}

/// Whether the linker driver rustc uses (`cc` unless configured) links a small position-independent
/// program with `-z pack-relative-relocs`, without a warning about it, and the program runs.
fn links_packed(out: &Path) -> bool {
    if std::env::var("HOST") != std::env::var("TARGET") {
        return false;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let src = out.join("relr_probe.c");
    // A pointer in initialised data: one relative relocation in a PIE.
    let program = "static int x = 7; int *p = &x; int main(void) { return *p == 7 ? 0 : 1; }\n";
    if std::fs::write(&src, program).is_err() {
        return false;
    }
    let exe = out.join("relr_probe");
    Command::new(linker)
        .args(["-fPIE", "-pie", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&exe)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("pack-relative-relocs"))
        && Command::new(&exe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}
