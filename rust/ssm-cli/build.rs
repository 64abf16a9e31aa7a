//! On Linux, links the helper with `startup-path.ld` (written by bench/startup-path.sh), which
//! puts the functions a port forward runs first in its code, side by side. The kernel maps code
//! 64 KiB at a time around each page first touched, so spread over the whole binary those
//! functions made nearly all of it resident; grouped, about the group is. GNU ld and lld both
//! read it; `INSERT BEFORE .text` only adds an output section to their default layout.

fn main() {
    println!("cargo::rerun-if-changed=startup-path.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo::rustc-link-arg-bin=ssmconnect=-Wl,-T,{dir}/startup-path.ld");
    }
}
