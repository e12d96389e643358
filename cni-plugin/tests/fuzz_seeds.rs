//! The fuzz seeds under `fuzz/seeds/` are what they claim to be: every `cni_config`
//! seed is a valid call (environment accepted, configuration parsed) and every
//! `control_proto` seed a request the daemon decodes. A seed that rots into an error
//! would leave the fuzzer in the error paths (see `fuzz/fuzz_targets/*.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use xsknet_cni::config::{CniEnv, NetConf};
use xsknet_proto::wire::decode_any;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "{}: too few seeds", dir.display());
    out
}

#[test]
fn cni_config_seeds_are_valid_calls() {
    for (path, bytes) in seeds("cni_config") {
        // The target's input layout: `KEY=VALUE` lines, an empty line, stdin.
        let at = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{}: no empty line", path.display()));
        let env: HashMap<String, String> = std::str::from_utf8(&bytes[..at])
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let e = CniEnv::from_env(&env).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if e.command != "VERSION" {
            NetConf::parse(&bytes[at + 2..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn control_proto_seeds_decode() {
    for (path, bytes) in seeds("control_proto") {
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        decode_any(line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
