//! Network-namespace handles and "run this code in that namespace".
//!
//! A network namespace is a property of a *thread*, not of a process, and Rust's
//! standard library (and any thread pool or async executor) assumes threads are
//! interchangeable. So xsknet never switches the netns of a thread it does not own:
//! [`run_in_netns`] spawns a fresh OS thread, moves that thread into the target
//! namespace with `setns(CLONE_NEWNET)`, runs the closure there and lets the thread
//! die. The caller's thread never changes namespace (the same rule as
//! containernetworking/plugins `pkg/ns`). Sockets keep the namespace they were
//! created in, so a netlink or ioctl socket created inside the closure can be
//! returned and used from any thread afterwards (see `Netlink::new_in_netns`).
//!
//! Only `CLONE_NEWNET` is entered: the mount namespace stays the caller's, so
//! `/sys/class/net` inside the closure still shows the host's view, while
//! `/proc/sys/net` and every netlink/ioctl socket opened there are the pod's.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`. Returns the
/// `CLONE_NEW*` type of a namespace fd (Linux 4.11+).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Errors of namespace handling; each says which namespace file was involved.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (missing, permissions).
    #[error("open netns {path}: {source}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The `open(2)` failure.
        source: io::Error,
    },
    /// The file exists but is not a network namespace.
    #[error("open netns {path}: not a network namespace")]
    NotNetns {
        /// The file that was opened.
        path: PathBuf,
    },
    /// The helper thread could not be created.
    #[error("spawn thread for netns {path}: {source}")]
    Spawn {
        /// The target namespace file.
        path: PathBuf,
        /// The spawn failure.
        source: io::Error,
    },
    /// `setns(2)` refused to switch the helper thread.
    #[error("enter netns {path}: {source}")]
    Setns {
        /// The target namespace file.
        path: PathBuf,
        /// The `setns(2)` failure (EPERM without CAP_SYS_ADMIN, ...).
        source: io::Error,
    },
    /// The closure panicked on the helper thread.
    #[error("closure run in netns {path} panicked")]
    Panicked {
        /// The target namespace file.
        path: PathBuf,
    },
}

/// Opens a network namespace file (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`)
/// and checks that it really is a network namespace.
pub fn open_netns(path: &Path) -> Result<OwnedFd, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let fd = OwnedFd::from(file);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace
    // type; `fd` is a valid open descriptor for the duration of the call.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        // Either not an nsfs file (ENOTTY) or a namespace of another type.
        return Err(NetnsError::NotNetns {
            path: path.to_path_buf(),
        });
    }
    Ok(fd)
}

/// Opens the network namespace of the *calling thread* (not of the process: a
/// thread inside [`run_in_netns`] gets the namespace it was moved into).
pub fn current_netns_fd() -> Result<OwnedFd, NetnsError> {
    open_netns(Path::new("/proc/thread-self/ns/net"))
}

/// Runs `f` on a new OS thread that has entered the network namespace at
/// `netns_path`, and returns its result. The calling thread's namespace is never
/// touched. The thread ends when `f` returns, so no thread is ever left behind
/// in the wrong namespace.
///
/// `f` may borrow from the caller (the helper thread is scoped and joined before
/// this returns). A panic inside `f` is reported as [`NetnsError::Panicked`].
pub fn run_in_netns<T: Send>(
    netns_path: &Path,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let ns = open_netns(netns_path)?;
    run_in_netns_fd_at(ns.as_fd(), netns_path, f)
}

/// Like [`run_in_netns`] for an already opened namespace fd (e.g. one kept from
/// [`open_netns`] so the namespace cannot vanish between calls).
pub fn run_in_netns_fd<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let label = PathBuf::from(format!("fd:{}", netns.as_raw_fd()));
    run_in_netns_fd_at(netns, &label, f)
}

fn run_in_netns_fd_at<T: Send>(
    netns: BorrowedFd<'_>,
    path: &Path,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("xsknet-netns".to_owned())
            .spawn_scoped(scope, move || -> Result<T, io::Error> {
                // SAFETY: setns only reads the fd, which the borrow keeps open for the
                // whole scope; it changes the namespace of this helper thread only,
                // which exits right after `f`.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .map_err(|source| NetnsError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        match handle.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(NetnsError::Setns {
                path: path.to_path_buf(),
                source,
            }),
            Err(_) => Err(NetnsError::Panicked {
                path: path.to_path_buf(),
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_missing_file_is_typed_error() {
        let err = open_netns(Path::new("/nonexistent/xsknet-netns")).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/xsknet-netns"));
    }

    #[test]
    fn open_regular_file_is_not_netns() {
        let err = open_netns(Path::new("/proc/self/status")).unwrap_err();
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
    }

    #[test]
    fn other_namespace_type_is_not_netns() {
        // The UTS namespace file is an nsfs file, but not a network namespace.
        let err = open_netns(Path::new("/proc/thread-self/ns/uts")).unwrap_err();
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
    }

    #[test]
    fn current_netns_opens() {
        current_netns_fd().expect("own netns must be openable");
    }
}
