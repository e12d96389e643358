//! STATUS: is the plugin ready for ADDs? Asks `xsknetd` with a short budget
//! ([`super::STATUS_TIMEOUT`]) so runtimes polling it get an answer in milliseconds:
//! success when the dataplane reports ready, code 50 (plugin not available) when it is
//! not ready or not reachable. A delegated IPAM plugin is asked too, unless it predates
//! STATUS (CNI < 1.1), in which case its readiness cannot be known and is assumed.

use xsknet_proto::wire::{Request, Status};

use super::{Call, STATUS_TIMEOUT};
use crate::errors::{code, CniError};

pub fn run(c: &Call<'_>) -> Result<(), CniError> {
    let socket = c.conf.socket.display();
    let v = c
        .platform
        .daemon_call(&c.conf.socket, &Request::Status, STATUS_TIMEOUT)
        .map_err(|e| {
            CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "xsknetd is not reachable at {socket}: {e} (is the xsknet DaemonSet running?)"
                ),
            )
        })?;
    let status: Status = serde_json::from_value(v).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("xsknetd at {socket} sent an unexpected status: {e}"),
        )
    })?;
    if !status.ready {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("xsknetd at {socket} is running but its dataplane is not ready (workers or host port down; see its log)"),
        ));
    }
    if let Some(plugin) = &c.conf.ipam_type {
        match crate::ipam::delegate(c, plugin, "STATUS") {
            Ok(_) => {}
            Err(e) if e.code == code::INCOMPATIBLE_VERSION || e.code == code::INVALID_ENV => {}
            Err(e) => return Err(CniError::new(code::NOT_AVAILABLE, e.msg).with_details(e.details)),
        }
    }
    Ok(())
}
