//! The helper is linked with `startup-path.ld` on Linux (build.rs; bench/startup-path.sh writes
//! it): the functions a port forward runs come first in its code, side by side, so that the
//! kernel's 64 KiB fault-around maps them and not the rest of the binary.
//! Its relative relocations are packed (DT_RELR) where the toolchain can.
#![cfg(target_os = "linux")]

use object::{Object, ObjectSection, ObjectSymbol};

/// Functions every port forward runs (legacy-mangled path, up to the hash): decoding and
/// framing a payload to send (`Channel::send`, generic: every instance), the channel's receive
/// path, the port session's loop.
const FORWARD_PATH: &[&str] = &[
    "_ZN9ssm_proto5frame5Frame11decode_with17h",
    "_ZN9ssm_proto7channel7Channel4send17h",
    "_ZN9ssm_proto7channel7Channel14handle_decoded17h",
    "_ZN9ssm_proto7payload11Acknowledge8json_for17h",
];

#[test]
fn the_functions_a_forward_runs_are_linked_first_and_together() {
    let data = std::fs::read(env!("CARGO_BIN_EXE_ssmconnect")).expect("the helper binary");
    let file = object::File::parse(&*data).expect("an ELF file");
    let section = |name: &str| {
        let s = file
            .section_by_name(name)
            .unwrap_or_else(|| panic!("the helper has no {name} section: was it linked with startup-path.ld?"));
        (s.address(), s.address() + s.size())
    };
    let exact = section(".text.startup_path");
    let more = section(".text.startup_path_more");
    let text = section(".text");
    assert!(exact.0 < exact.1, "nothing was placed by exact name");
    assert!(
        exact.1 <= more.0 && more.1 <= text.0,
        "{exact:x?} {more:x?} {text:x?}: not before .text"
    );
    let grouped = more.1 - exact.0;
    let code = text.1 - exact.0;
    assert!(
        grouped * 2 < code,
        "{grouped} of {code} bytes of code grouped: that is no selection"
    );

    for path in FORWARD_PATH {
        let found: Vec<u64> = file
            .symbols()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(path)))
            .map(|s| s.address())
            .collect();
        assert!(!found.is_empty(), "no symbol {path}… in the helper");
        for a in found {
            assert!(
                (exact.0..more.1).contains(&a),
                "{path}… at {a:#x}, outside {:#x}..{:#x}",
                exact.0,
                more.1
            );
        }
    }
}

/// build.rs links the helper with `-z pack-relative-relocs` when the linker and the C library
/// here take it: the relative relocations the loader reads at start are then a few KiB of
/// DT_RELR bitmaps instead of 1.1 MiB of RELA entries.
#[test]
fn the_relative_relocations_are_packed_where_the_toolchain_packs_them() {
    if option_env!("SSMCONNECT_PACKED_RELOCS").is_none() {
        eprintln!("skipped: build.rs found no DT_RELR support in this toolchain");
        return;
    }
    let data = std::fs::read(env!("CARGO_BIN_EXE_ssmconnect")).expect("the helper binary");
    let file = object::File::parse(&*data).expect("an ELF file");
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    let (relr, rela) = (size(".relr.dyn"), size(".rela.dyn"));
    assert!(relr > 0, "the helper has no .relr.dyn section");
    assert!(
        rela < 64 << 10 && relr < 64 << 10,
        ".rela.dyn {rela} bytes, .relr.dyn {relr} bytes: the relative relocations are not packed"
    );
}
