//! DEL: idempotent and best effort. Detach the endpoint, delete the veth (its host
//! end; the pod end goes with it), release the address. Already gone is success at
//! every step, and so is a vanished netns: nothing here needs to enter it. When
//! `xsknetd` cannot be reached the veth is still deleted and the rest is recorded in
//! `<stateDir>/pending-del/` (a [`PendingDel`] named by a hash of the attachment, so a
//! container ID of any accepted length fits), which the daemon finishes (endpoint
//! detach, address release) when it runs again; the runtime gets success, so a node
//! whose daemon is down can still tear pods down.

use xsknet_proto::client::ClientError;
use xsknet_proto::fsutil;
use xsknet_proto::wire::{ErrorKind, PendingDel, Request, PENDING_DEL_DIR};

use super::{unreachable, wire_error, Call};
use crate::errors::{code, CniError};
use crate::ipam;

fn record_pending(c: &Call<'_>, host: &str) -> Result<(), CniError> {
    let dir = c.conf.state_dir.join(PENDING_DEL_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!(
                "xsknetd is down and the DEL cannot be recorded in {}: {e}",
                dir.display()
            ),
        )
    })?;
    let rec = PendingDel {
        container_id: c.env.container_id.clone(),
        ifname: c.env.ifname.clone(),
        host_ifname: host.to_string(),
    };
    let path = dir.join(PendingDel::file_name(&rec.container_id, &rec.ifname));
    let mut bytes = serde_json::to_vec_pretty(&rec).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("encode the pending DEL record: {e}"),
        )
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(&path, &bytes).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!(
                "xsknetd is down and the DEL cannot be recorded in {}: {e}",
                path.display()
            ),
        )
    })?;
    remove_legacy_record(&dir, &rec);
    Ok(())
}

/// Removes the record of the same attachment under the name earlier releases used
/// (`<containerID>-<ifname>.json`), now that the new one is durable: the daemon would
/// finish both (harmlessly), but one DEL should leave one record. Best effort: the
/// name may not even be representable (too long), and a record of a different
/// attachment that happens to have that name is left alone.
fn remove_legacy_record(dir: &std::path::Path, rec: &PendingDel) {
    let legacy = dir.join(format!("{}-{}.json", rec.container_id, rec.ifname));
    let same = std::fs::read(&legacy)
        .ok()
        .and_then(|b| serde_json::from_slice::<PendingDel>(&b).ok())
        .is_some_and(|old| old.container_id == rec.container_id && old.ifname == rec.ifname);
    if same {
        let _ = std::fs::remove_file(&legacy);
    }
}

pub fn run(c: &Call<'_>) -> Result<(), CniError> {
    let _lock = c.lock(false)?;
    let host = c.host_ifname();
    let mut first_err: Option<CniError> = None;
    let mut daemon_down = false;

    let del = Request::EndpointDel {
        ifname: Some(host.clone()),
        ip: None,
    };
    match c
        .platform
        .daemon_call(&c.conf.socket, &del, super::DAEMON_TIMEOUT)
    {
        Ok(_) => {}
        Err(ClientError::Daemon {
            kind: ErrorKind::NotFound,
            ..
        }) => {}
        Err(e) if unreachable(&e) => daemon_down = true,
        Err(e) => {
            first_err.get_or_insert(c.daemon_error(&e, "detach the endpoint", code::DATAPLANE));
        }
    }

    if let Err(e) = c.platform.delete_host_link(&host) {
        first_err.get_or_insert(wire_error(e, &format!("delete veth {host}")));
    }

    if daemon_down {
        record_pending(c, &host)?;
        if c.conf.ipam_type.is_some() {
            if let Err(e) = ipam::release(c) {
                first_err.get_or_insert(e);
            }
        }
    } else if let Err(e) = ipam::release(c) {
        first_err.get_or_insert(e);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
