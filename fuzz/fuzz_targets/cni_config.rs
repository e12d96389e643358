//! Fuzz the CNI plugin's parsers of what a runtime hands it: the `CNI_*` environment
//! and the network configuration on stdin (single config or conflist). Whatever the
//! bytes: no panic; every error carries the spec's code for its input (4 for the
//! environment; 6, 7 or 1 for the config) and encodes as JSON; whatever is accepted
//! keeps the strict rules (for ADD, CHECK and DEL a valid container ID of at most 256
//! bytes whose pending-DEL record name has a fixed length; a valid network name, `type`
//! xsknet, a supported version, an MTU in range, absolute paths), and its `prevResult`
//! can be read.
//!
//! Input: `KEY=VALUE` lines of environment, an empty line, then the stdin bytes; an
//! input without an empty line is all stdin with an empty environment. Seeds: valid
//! calls of each verb, as podman and containerd make them (see RUNTIMES.md).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use xsknet_cni::config::{
    is_cni_identifier, peek_version, CniEnv, NetConf, MAX_CONTAINER_ID_LEN, PLUGIN_TYPE,
    SUPPORTED_VERSIONS,
};
use xsknet_cni::errors::{code, CniError};
use xsknet_cni::result::Parsed;
use xsknet_proto::wire::PendingDel;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (&[], data),
    }
}

fn assert_encodes(e: &CniError) {
    let json = e.to_json("1.1.0");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("error JSON");
    assert_eq!(v["code"].as_u64(), Some(u64::from(e.code)));
}

fuzz_target!(|data: &[u8]| {
    let (env_bytes, stdin) = split(data);
    let env: HashMap<String, String> = String::from_utf8_lossy(env_bytes)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match CniEnv::from_env(&env) {
        Ok(e) => {
            if matches!(e.command.as_str(), "ADD" | "CHECK" | "DEL") {
                assert!(e.container_id.len() <= MAX_CONTAINER_ID_LEN);
                assert!(is_cni_identifier(&e.container_id), "{:?}", e.container_id);
                assert_eq!(PendingDel::file_name(&e.container_id, &e.ifname).len(), 41);
            }
            for r in [e.requested_ip().err(), e.requested_mac().err()]
                .into_iter()
                .flatten()
            {
                assert_eq!(r.code, code::INVALID_ENV, "{r}");
            }
        }
        Err(e) => {
            assert_eq!(e.code, code::INVALID_ENV, "{e}");
            assert_encodes(&e);
        }
    }
    let _ = peek_version(stdin);
    match NetConf::parse(stdin) {
        Ok(c) => {
            assert_eq!(c.plugin_type, PLUGIN_TYPE);
            assert!(is_cni_identifier(&c.name), "{:?}", c.name);
            assert!(SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()));
            assert!((68..=65535).contains(&c.mtu));
            assert!(c.socket.is_absolute() && c.state_dir.is_absolute());
            if let Some(prev) = &c.prev_result {
                let _ = Parsed::from_value(prev);
            }
        }
        Err(e) => {
            assert!(
                [
                    code::DECODE,
                    code::INVALID_CONFIG,
                    code::INCOMPATIBLE_VERSION
                ]
                .contains(&e.code),
                "{e}"
            );
            assert_encodes(&e);
        }
    }
});
