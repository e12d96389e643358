//! The dispatcher: reads the configuration from `stdin`, the `CNI_*` variables from
//! `env`, runs the verb against a [`Platform`] and writes the result or the error JSON
//! to `stdout`; returns the exit status (0 or 1). Taking all of these as parameters is
//! what lets every verb, version and error path be unit-tested without namespaces or
//! a daemon (the cni `pkg/skel` shape).

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::cmd::{self, Call};
use crate::config::{check_version, peek_version, CniEnv, NetConf, SUPPORTED_VERSIONS};
use crate::errors::{code, CniError};
use crate::platform::Platform;

/// Largest configuration read from stdin.
pub const MAX_STDIN: u64 = 16 << 20;

/// Runs one plugin invocation; returns the process exit status.
pub fn run(
    env: &HashMap<String, String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    platform: &dyn Platform,
) -> i32 {
    let mut input = Vec::new();
    let read = stdin.take(MAX_STDIN).read_to_end(&mut input);
    let version = peek_version(&input)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    let outcome = match read {
        Ok(_) => dispatch(env, &input, platform),
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            format!("read the network configuration from stdin: {e}"),
        )),
    };
    match outcome {
        Ok(Some(value)) => {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            bytes.push(b'\n');
            if stdout
                .write_all(&bytes)
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return 1;
            }
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = stdout.write_all(&e.to_json(&version));
            let _ = stdout.flush();
            1
        }
    }
}

fn dispatch(
    env: &HashMap<String, String>,
    input: &[u8],
    platform: &dyn Platform,
) -> Result<Option<serde_json::Value>, CniError> {
    let cni_env = CniEnv::from_env(env)?;
    if cni_env.command == "VERSION" {
        let requested = peek_version(input);
        return Ok(Some(cmd::version::run(requested.as_deref())));
    }
    if !matches!(
        cni_env.command.as_str(),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC"
    ) {
        return Err(CniError::invalid_env(format!(
            "unknown CNI_COMMAND {:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION",
            cni_env.command
        )));
    }
    let conf = NetConf::parse(input)?;
    // CHECK, STATUS and GC arrived with CNI 0.4.0 / 1.1.0.
    if matches!(cni_env.command.as_str(), "STATUS" | "GC") && conf.cni_version != "1.1.0" {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{} needs cniVersion 1.1.0, the configuration says {}",
                cni_env.command, conf.cni_version
            ),
        ));
    }
    check_version(&conf.cni_version)?;
    let call = Call {
        env: cni_env,
        raw_env: env,
        conf,
        platform,
    };
    match call.env.command.as_str() {
        "ADD" => cmd::add::run(&call).map(Some),
        "DEL" => cmd::del::run(&call).map(|_| None),
        "CHECK" => cmd::check::run(&call).map(|_| None),
        "STATUS" => cmd::status::run(&call).map(|_| None),
        _ => cmd::gc::run(&call).map(|_| None),
    }
}

#[cfg(test)]
mod tests;
