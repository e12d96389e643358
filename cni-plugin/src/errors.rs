//! CNI errors: the spec's well-known codes and the error JSON a plugin prints on stdout
//! (`{"cniVersion","code","msg","details"}`, exit status 1).
//!
//! Every failure of the plugin becomes a [`CniError`] with a code a runtime can act on
//! and a message an operator can act on: what was being done, to what, and what to
//! check. Codes 1-99 are the spec's; 100 and above are xsknet's own.

use serde::Serialize;
use xsknet_proto::client::ClientError;
use xsknet_proto::wire::ErrorKind;

/// The spec's and xsknet's error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (a transient condition, e.g. the daemon is restarting).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS: the dataplane is not ready).
    pub const NOT_AVAILABLE: u32 = 50;
    /// xsknet: the dataplane daemon refused the request.
    pub const DATAPLANE: u32 = 100;
    /// xsknet: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// xsknet: the kernel refused a netlink/ioctl operation while wiring the pod.
    pub const WIRING: u32 = 102;
    /// xsknet: address management (daemon or delegated plugin) failed.
    pub const IPAM: u32 = 103;
}

/// The code of a daemon call that failed with `e`, where `refused_code` is the verb's
/// code for a refusal. "Try again later" (11) for everything transient: the daemon not
/// reachable or not answering in time, the daemon going away while it handled the
/// request (connection reset, closed without an answer: it was killed or restarted
/// mid-ADD, and it reclaims what that ADD allocated at its next start), and a change
/// it could not make durable (its state directory is not writable; nothing was kept).
pub fn daemon_code(e: &ClientError, refused_code: u32) -> u32 {
    match e {
        ClientError::Connect { .. } | ClientError::Timeout { .. } => code::TRY_AGAIN_LATER,
        e if e.is_daemon_gone() => code::TRY_AGAIN_LATER,
        ClientError::Daemon { kind, .. } => match kind {
            ErrorKind::UnsupportedVersion => code::INCOMPATIBLE_VERSION,
            ErrorKind::Unavailable => code::TRY_AGAIN_LATER,
            _ => refused_code,
        },
        _ => refused_code,
    }
}

/// A failed CNI call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if .details.is_empty() { String::new() } else { format!(": {}", .details) })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn invalid_env(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_ENV, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_CONFIG, msg)
    }

    /// The error JSON for stdout.
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        let w = Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        let mut v = serde_json::to_vec(&w).unwrap_or_else(|_| b"{\"code\":999}".to_vec());
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn daemon_going_away_or_not_durable_is_try_again_later() {
        let path = PathBuf::from("/run/xsknet.sock");
        let io = |k: std::io::ErrorKind| std::io::Error::from(k);
        let transient = [
            ClientError::Closed { path: path.clone() },
            ClientError::Receive {
                path: path.clone(),
                source: io(std::io::ErrorKind::ConnectionReset),
            },
            ClientError::Send {
                path: path.clone(),
                source: io(std::io::ErrorKind::BrokenPipe),
            },
            ClientError::Connect {
                path: path.clone(),
                source: io(std::io::ErrorKind::ConnectionRefused),
            },
            ClientError::Daemon {
                kind: ErrorKind::Unavailable,
                message: "write endpoints.json: No space left on device".into(),
            },
        ];
        for e in &transient {
            assert_eq!(
                daemon_code(e, code::DATAPLANE),
                code::TRY_AGAIN_LATER,
                "{e}"
            );
        }
        let refused = ClientError::Daemon {
            kind: ErrorKind::Conflict,
            message: "ip taken".into(),
        };
        assert_eq!(daemon_code(&refused, code::IPAM), code::IPAM);
        let bad = ClientError::BadResponse {
            path,
            message: "not json".into(),
        };
        assert_eq!(daemon_code(&bad, code::DATAPLANE), code::DATAPLANE);
    }

    #[test]
    fn error_json_shape() {
        let e = CniError::new(code::INVALID_ENV, "CNI_NETNS is missing");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS is missing"})
        );
        let e = e.with_details("set by the runtime");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["details"], "set by the runtime");
        assert_eq!(e.to_string(), "CNI_NETNS is missing: set by the runtime");
    }
}
