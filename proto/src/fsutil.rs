//! The one atomic file write and the one file lock of the project.
//!
//! [`write_atomic`] replaces a file so that a reader sees the old content or the new,
//! never a torn mix, even across a power loss: a temp file in the same directory,
//! fsync, rename over the target, fsync of the directory. [`Flock`] holds an
//! advisory `flock(2)` on an open file (through `std::fs::File::lock`, which is
//! `flock` on Linux) until it is dropped or the process dies — which is why the
//! daemon's state lock and the CNI plugin's lock are locks and not pid files.
//! Control side only: nothing here belongs on a packet path.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A unique temp name next to `path` (hidden, with pid and a counter), so concurrent
/// writers, threads or processes, never share one.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically and durably, mode 0600. The temp file is
/// removed when any step fails; the error is the failing step's, without the path
/// (callers wrap it with what they were writing).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is only durable once the directory entry is.
        File::open(parent_dir(path))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Shared (readers, or independent writers serialised elsewhere) or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held `flock` on an open file, released when dropped (the file closes).
#[derive(Debug)]
pub struct Flock {
    file: File,
}

impl Flock {
    /// Waits until `file` is locked in `mode` (an interrupted wait is resumed).
    pub fn lock(file: File, mode: LockMode) -> io::Result<Flock> {
        loop {
            let r = match mode {
                LockMode::Shared => file.lock_shared(),
                LockMode::Exclusive => file.lock(),
            };
            match r {
                Ok(()) => return Ok(Flock { file }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Locks `file` in `mode` without waiting: an error of kind
    /// [`io::ErrorKind::WouldBlock`] when another open file description holds a
    /// conflicting lock.
    pub fn try_lock(file: File, mode: LockMode) -> io::Result<Flock> {
        let r = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match r {
            Ok(()) => Ok(Flock { file }),
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Opens (creating it, mode 0600, never truncating) the lock file at `path` and
    /// waits for the lock.
    pub fn open(path: &Path, mode: LockMode) -> io::Result<Flock> {
        Flock::lock(open_lock_file(path)?, mode)
    }

    /// [`Flock::open`] without waiting (see [`Flock::try_lock`]).
    pub fn try_open(path: &Path, mode: LockMode) -> io::Result<Flock> {
        Flock::try_lock(open_lock_file(path)?, mode)
    }

    /// The locked file (`&File` reads, writes and truncates).
    pub fn file(&self) -> &File {
        &self.file
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("x.json")]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failed_atomic_write_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp was written.
        let path = dir.path().join("d");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        write_atomic(&path, b"x").unwrap_err();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![OsString::from("d")]);
        let e = write_atomic(&dir.path().join("nope/x"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let ex = Flock::try_open(&path, LockMode::Exclusive).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for m in [LockMode::Exclusive, LockMode::Shared] {
            let e = Flock::try_open(&path, m).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{m:?}");
        }
        drop(ex);
        let a = Flock::try_open(&path, LockMode::Shared).unwrap();
        let b = Flock::open(&path, LockMode::Shared).unwrap();
        let e = Flock::try_open(&path, LockMode::Exclusive).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop((a, b));
        Flock::open(&path, LockMode::Exclusive).unwrap();
    }

    #[test]
    fn waiting_lock_is_granted_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = Flock::open(&path, LockMode::Exclusive).unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _g = Flock::open(&p, LockMode::Exclusive).unwrap();
            std::time::Instant::now()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let released = std::time::Instant::now();
        drop(held);
        assert!(waiter.join().unwrap() >= released);
    }

    #[test]
    fn lock_file_content_survives_locking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        fs::write(&path, b"123\n").unwrap();
        let g = Flock::open(&path, LockMode::Exclusive).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"123\n");
        g.file().set_len(0).unwrap();
        writeln!(g.file(), "7").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "7\n");
    }
}
