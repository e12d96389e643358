//! Persistence under the state directory (default `/var/lib/xsknet`).
//!
//! What must survive a daemon restart (endpoints, IP allocations, policies) is written
//! with [`write_atomic`] (the project's one, `xsknet_proto::fsutil::write_atomic`): a
//! temp file in the same directory, fsync, rename over the target, fsync of the
//! directory. A reader therefore sees the old file or the new one,
//! never a torn one, even across a power loss. A file that still fails to parse is an
//! error naming it; the daemon decides whether to [`quarantine`] it (rename it aside,
//! keeping the evidence) and start empty. One daemon owns a state directory at a time:
//! [`StateDir::lock`] takes an exclusive `flock` ([`xsknet_proto::fsutil::Flock`]) on
//! `<root>/lock` for the process's life. This module is control-thread only; workers never touch files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use xsknet_proto::fsutil::{self, Flock, LockMode};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// File name of the endpoint table under the state dir.
pub const ENDPOINTS_FILE: &str = "endpoints.json";
/// File name of the lock under the state dir.
pub const LOCK_FILE: &str = "lock";

/// A state file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("encode state for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("move corrupt {path} aside to {to}: {source}")]
    Quarantine {
        path: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("lock state directory {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("state directory {root} is in use by another xsknetd{} (lock {path})", holder_suffix(.holder))]
    Locked {
        root: PathBuf,
        path: PathBuf,
        holder: Option<u32>,
    },
}

fn holder_suffix(holder: &Option<u32>) -> String {
    holder.map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

/// Replaces `path` with `bytes` atomically and durably (mode 0600); see
/// [`xsknet_proto::fsutil::write_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    fsutil::write_atomic(path, bytes).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Serialises `value` as pretty JSON and writes it with [`write_atomic`].
pub fn save_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads `path` as JSON: `Ok(None)` when the file does not exist, `Err(Corrupt)` naming
/// the file when it does not parse (the caller may then [`quarantine`] it).
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// Renames a corrupt `path` to `<name>.corrupt-<unix seconds>` in the same directory and
/// returns the new path, so the daemon can start empty without destroying evidence.
pub fn quarantine(path: &Path) -> Result<PathBuf, StateError> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{ts}"));
    let mut to = path.with_file_name(&name);
    // Two quarantines in the same second must not overwrite each other.
    let mut n = 1;
    while to.exists() {
        let mut alt = name.clone();
        alt.push(format!(".{n}"));
        to = path.with_file_name(alt);
        n += 1;
    }
    fs::rename(path, &to).map_err(|source| StateError::Quarantine {
        path: path.to_path_buf(),
        to: to.clone(),
        source,
    })?;
    Ok(to)
}

/// The daemon's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    pub root: PathBuf,
}

/// Exclusive ownership of a state directory; released when dropped (or when the
/// process dies, which is why this is a `flock`, not a pid file).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Creates the directory (0700) if missing.
    pub fn create(&self) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| StateError::CreateDir {
                path: self.root.clone(),
                source,
            })
    }

    /// `<root>/endpoints.json`.
    pub fn endpoints_path(&self) -> PathBuf {
        self.root.join(ENDPOINTS_FILE)
    }

    /// `<root>/lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Creates the directory if needed and takes the exclusive lock without waiting;
    /// a second daemon on the same directory gets [`StateError::Locked`]. The holder's
    /// pid is written into the lock file for that message.
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.create()?;
        let path = self.lock_path();
        let lock_err = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        let lock = match Flock::try_open(&path, LockMode::Exclusive) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                return Err(StateError::Locked {
                    root: self.root.clone(),
                    path,
                    holder: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(lock_err(e)),
        };
        lock.file().set_len(0).map_err(lock_err)?;
        writeln!(lock.file(), "{}", std::process::id()).map_err(lock_err)?;
        Ok(StateLock { _lock: lock, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsString;
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
    fn atomic_write_into_missing_dir_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/x.json");
        let msg = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(msg.contains("nope/x.json"), "{msg}");
    }

    #[test]
    fn json_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        assert_eq!(load_json::<BTreeMap<String, u32>>(&path).unwrap(), None);
        let m: BTreeMap<String, u32> = [("a".to_string(), 1)].into();
        save_json(&path, &m).unwrap();
        assert_eq!(load_json(&path).unwrap(), Some(m));
    }

    #[test]
    fn corrupt_file_is_named_and_can_be_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        fs::write(&path, "{\"a\": 1,").unwrap();
        let e = load_json::<BTreeMap<String, u32>>(&path).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }));
        assert!(e.to_string().contains("endpoints.json"), "{e}");
        let to = quarantine(&path).unwrap();
        assert!(!path.exists());
        let name = to.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("endpoints.json.corrupt-"), "{name}");
        assert_eq!(fs::read_to_string(&to).unwrap(), "{\"a\": 1,");
        // A second corrupt file in the same second does not overwrite the first.
        fs::write(&path, "x").unwrap();
        let to2 = quarantine(&path).unwrap();
        assert_ne!(to, to2);
        assert!(to.exists() && to2.exists());
    }

    #[test]
    fn state_dir_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("state"));
        assert_eq!(sd.endpoints_path(), dir.path().join("state/endpoints.json"));
        let guard = sd.lock().unwrap();
        assert_eq!(guard.path(), sd.lock_path());
        let e = sd.lock().unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, StateError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
            "{msg}"
        );
        assert!(msg.contains("in use by another xsknetd"), "{msg}");
        drop(guard);
        sd.lock().unwrap();
    }
}
