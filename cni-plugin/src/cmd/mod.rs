//! One module per CNI verb, and [`Call`]: what a verb gets (parsed environment and
//! configuration, the raw environment for delegation, the [`Platform`]) plus the
//! helpers they share: daemon calls mapped to actionable CNI errors and the
//! plugin-side lock.
//!
//! Locking: the daemon serialises its own state on its control thread, so ADD, DEL and
//! CHECK of different pods run in parallel under a *shared* `flock` on
//! `<stateDir>/cni.lock`; GC, which lists and removes attachments, takes it
//! *exclusively* so it never races an ADD halfway through.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;
pub mod version;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

use serde_json::Value;
use xsknet_proto::client::ClientError;
use xsknet_proto::fsutil::{Flock, LockMode};
use xsknet_proto::wire::Request;

use crate::config::{CniEnv, NetConf};
use crate::errors::{code, CniError};
use crate::platform::Platform;
use crate::wire::host_ifname;

/// Budget of one daemon request during ADD/DEL/CHECK/GC (the daemon answers an
/// endpoint add once the worker forwards, normally in milliseconds; 32 pods at once
/// queue behind each other on its control thread).
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);
/// Budget of STATUS: runtimes poll it, it must answer in milliseconds.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Lock file under the state dir.
pub const LOCK_FILE: &str = "cni.lock";

/// One plugin invocation.
pub struct Call<'a> {
    pub env: CniEnv,
    pub raw_env: &'a HashMap<String, String>,
    pub conf: NetConf,
    pub platform: &'a dyn Platform,
}

/// A held `flock`, released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock,
}

/// Whether a daemon failure means "not reachable right now".
pub fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Connect { .. } | ClientError::Timeout { .. })
}

/// MTUs of a pod's interface ([`Call::mtus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtus {
    /// Everything but this node's pods (and the interface, without `local`).
    pub pod: u32,
    /// `(local MTU, node pod CIDR address, prefix)`: the interface MTU and the route
    /// to this node's pods, when the daemon has a `localMtu` above `pod`.
    pub local: Option<(u32, std::net::Ipv4Addr, u8)>,
}

impl Call<'_> {
    /// The deterministic host-side veth name of this attachment.
    pub fn host_ifname(&self) -> String {
        host_ifname(&self.env.container_id, &self.env.ifname)
    }

    /// Sends `req`; errors become CNI errors saying what `doing` needed. Unreachable
    /// daemon: code 11 (try again later). Refusals: `refused_code`.
    pub fn daemon(&self, req: &Request, doing: &str, refused_code: u32) -> Result<Value, CniError> {
        self.platform
            .daemon_call(&self.conf.socket, req, DAEMON_TIMEOUT)
            .map_err(|e| self.daemon_error(&e, doing, refused_code))
    }

    /// The pod's MTU: the network config's `mtu` when it sets one, else the daemon's
    /// pod MTU (`status.overlay.podMtu`: uplink MTU − 50 with an overlay), else the
    /// default. Asking costs one `status` round trip; an unreachable daemon falls back
    /// to the default here and fails the ADD at `endpoint_add` with its usual error.
    pub fn pod_mtu(&self) -> u32 {
        self.mtus().pod
    }

    /// The pod MTU ([`pod_mtu`](Self::pod_mtu)) and, when the daemon has a `localMtu`
    /// above it, that MTU with this node's pod CIDR (issue 11): the interface gets
    /// the local MTU, the node's pod CIDR is routed at it and the default route keeps
    /// the pod MTU. One `status` round trip.
    pub fn mtus(&self) -> Mtus {
        let status = self
            .platform
            .daemon_call(&self.conf.socket, &Request::Status, DAEMON_TIMEOUT)
            .ok();
        let mtu_of = |v: Option<&Value>| {
            v.and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (68..=65535).contains(m))
        };
        let pod = if self.conf.mtu_configured {
            self.conf.mtu
        } else {
            mtu_of(
                status
                    .as_ref()
                    .and_then(|v| v.get("overlay")?.get("pod_mtu")),
            )
            .unwrap_or(self.conf.mtu)
        };
        let local = mtu_of(status.as_ref().and_then(|v| v.get("local_mtu")))
            .filter(|&m| m > pod)
            .and_then(|m| {
                let cidr = status.as_ref()?.get("pod_cidr")?.as_str()?;
                let (addr, prefix) = cidr.split_once('/')?;
                let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
                Some((m, addr.parse().ok()?, prefix))
            });
        Mtus { pod, local }
    }

    /// Maps a client error to a CNI error.
    pub fn daemon_error(&self, e: &ClientError, doing: &str, refused_code: u32) -> CniError {
        let socket = self.conf.socket.display();
        let c = crate::errors::daemon_code(e, refused_code);
        match e {
            ClientError::Connect { source, .. } => CniError::new(
                c,
                format!(
                    "xsknetd not reachable at {socket}: {source} (is the xsknet DaemonSet running?)"
                ),
            )
            .with_details(format!("needed to {doing}")),
            ClientError::Timeout { timeout, .. } => CniError::new(
                c,
                format!("xsknetd at {socket} did not answer within {timeout:?} (is it overloaded or wedged?)"),
            )
            .with_details(format!("needed to {doing}")),
            ClientError::Daemon { message, .. } => {
                CniError::new(c, format!("xsknetd could not {doing}: {message}"))
            }
            other if other.is_daemon_gone() => CniError::new(
                c,
                format!("xsknetd went away while it was asked to {doing}: {other}"),
            )
            .with_details("try again once it is back; it reclaims an unfinished ADD at start"),
            other => CniError::new(c, format!("xsknetd could not {doing}: {other}")),
        }
    }

    /// Takes the plugin lock (see the module doc), creating the state dir if needed.
    pub fn lock(&self, exclusive: bool) -> Result<LockGuard, CniError> {
        let dir = &self.conf.state_dir;
        let io = |what: &str, e: std::io::Error| {
            CniError::new(
                code::IO_FAILURE,
                format!(
                    "{what} {}: {e} (check stateDir in the network config)",
                    dir.display()
                ),
            )
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create state directory", e))?;
        let mode = if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let lock = Flock::open(&dir.join(LOCK_FILE), mode).map_err(|e| io("lock", e))?;
        Ok(LockGuard { _lock: lock })
    }

    /// A `CNI_ARGS` value (`K8S_POD_NAME`, ...), if set and not empty.
    pub fn arg(&self, key: &str) -> Option<String> {
        self.env.args.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

/// Maps a wiring error to a CNI error with what was being done.
pub fn wire_error(e: crate::wire::WireError, doing: &str) -> CniError {
    match e {
        crate::wire::WireError::NetnsGone { .. } => {
            CniError::new(code::UNKNOWN_CONTAINER, format!("{doing}: {e}"))
        }
        other => CniError::new(code::WIRING, format!("{doing}: {other}")),
    }
}
