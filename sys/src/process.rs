//! Processes: the calling process's privilege and polite termination of a child by
//! pid. For tests, benches and tools that run the daemon or the plugin as
//! subprocesses; the daemon itself never signals other processes.

use std::io;

/// Whether the calling process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends SIGTERM to `pid` (a child the caller started, e.g. `Child::id()`), so it can
/// shut down cleanly, unlike `Child::kill`'s SIGKILL. A pid that no longer exists gives
/// the OS error `ESRCH`; 0 and pids beyond `pid_t` (which would address process
/// groups) are refused with `InvalidInput`.
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid}")))?;
    // SAFETY: kill only reads its two integer arguments; a positive pid names one
    // process (0 and negative values, which address process groups, are refused above).
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn terminate_sends_sigterm_to_that_child_only() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        terminate(child.id()).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: the pid is gone (unless reused, which a test cannot rule out).
        assert!(terminate(0).is_err());
        assert!(terminate(u32::MAX).is_err());
    }

    #[test]
    fn root_matches_proc_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(is_root(), euid == 0);
    }
}
