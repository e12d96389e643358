//! Persistence under the state directory (default `/var/lib/xsknet`).
//!
//! What must survive a daemon restart (endpoints, IP allocations, policies) is written
//! with [`write_atomic`] (the project's one, `xsknet_proto::fsutil::write_atomic`): a
//! temp file in the same directory, fsync, rename over the target, fsync of the
//! directory. A reader therefore sees the old file or the new one,
//! never a torn one, even across a power loss. A file that still fails to parse is an
//! error naming it; the daemon decides whether to [`quarantine`] it (rename it aside,
//! keeping the evidence).
//!
//! Durability (README "Durability"): [`save_json_kept`] writes the file, and once that
//! write is durable writes the same bytes to `<file>.prev` ([`prev_path`]), the last good
//! copy, also with [`write_atomic`]. A failed write of the file itself is the caller's
//! error (the request fails and is rolled back); a failed copy is only reported (the
//! change is durable in the file). A file damaged later (disk, operator, tooling) is
//! read back by [`load_json_recovering`]: an unreadable file is set aside as
//! `<file>.corrupt-<unix seconds>` and the copy is used; with the copy unreadable too it
//! is set aside as well and the caller recovers otherwise. [`Health`] records write
//! failures and recoveries for `status`. One daemon owns a state directory at a time:
//! [`StateDir::lock`] takes an exclusive `flock` ([`xsknet_proto::fsutil::Flock`]) on
//! `<root>/lock` for the process's life. This module is control-thread only; workers never touch files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use xsknet_proto::fsutil::{self, Flock, LockMode};

use xsknet_proto::wire::PersistenceStatus;

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

/// Suffix of the last good copy of a state file.
pub const PREV_SUFFIX: &str = ".prev";

/// `<path>.prev`: the last good copy of `path`.
pub fn prev_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(PREV_SUFFIX);
    path.with_file_name(name)
}

/// Writes `value` to `path` ([`save_json`]), then the same bytes to [`prev_path`].
/// `Err`: the file was not written (nothing changed on disk). `Ok(Some(e))`: the file is
/// durable but its copy failed (report it; the copy is one change behind).
pub fn save_json_kept<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<Option<StateError>, StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)?;
    Ok(write_atomic(&prev_path(path), &bytes).err())
}

/// What [`load_json_recovering`] found.
#[derive(Debug, PartialEq)]
pub enum Loaded<T> {
    /// Neither the file nor its copy exists (a first start).
    Missing,
    /// The file, as written last.
    Current(T),
    /// The file was unreadable (moved to `set_aside`) or missing; its last good copy.
    FromCopy {
        value: T,
        set_aside: Option<PathBuf>,
    },
    /// The file and its copy were both unreadable (or the file unreadable and the copy
    /// missing); both were set aside (`set_aside`). The caller must recover otherwise.
    Unreadable { set_aside: Vec<PathBuf> },
}

/// Reads `path`, falling back to its last good copy ([`prev_path`]); unreadable files
/// are [`quarantine`]d (never deleted) and logged with where they went. `Err` only when
/// a file cannot be read at all (I/O error, permissions) or cannot be set aside.
pub fn load_json_recovering<T: DeserializeOwned>(path: &Path) -> Result<Loaded<T>, StateError> {
    let mut set_aside = Vec::new();
    let mut main_missing = false;
    match load_json::<T>(path) {
        Ok(Some(v)) => return Ok(Loaded::Current(v)),
        Ok(None) => main_missing = true,
        Err(e @ StateError::Corrupt { .. }) => {
            let to = quarantine(path)?;
            tracing::error!(error = %e, moved_to = %to.display(), "unreadable state file set aside");
            set_aside.push(to);
        }
        Err(e) => return Err(e),
    }
    let prev = prev_path(path);
    match load_json::<T>(&prev) {
        Ok(Some(value)) => {
            tracing::warn!(file = %path.display(), copy = %prev.display(), "state recovered from its last good copy");
            Ok(Loaded::FromCopy {
                value,
                set_aside: set_aside.pop(),
            })
        }
        Ok(None) if main_missing => Ok(Loaded::Missing),
        Ok(None) => Ok(Loaded::Unreadable { set_aside }),
        Err(e @ StateError::Corrupt { .. }) => {
            let to = quarantine(&prev)?;
            tracing::error!(error = %e, moved_to = %to.display(), "unreadable state file copy set aside");
            set_aside.push(to);
            Ok(Loaded::Unreadable { set_aside })
        }
        Err(e) => Err(e),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Default)]
struct HealthInner {
    errors: u64,
    last_error: Option<(String, u64)>,
    failing_since: Option<u64>,
    recovered: Vec<String>,
}

/// Persistence health, shared by the state's owners on the control thread (daemon,
/// IPAM, policy service): write failures and what start recovered from. Cheap to
/// clone (one handle).
#[derive(Clone, Debug, Default)]
pub struct Health(std::sync::Arc<std::sync::Mutex<HealthInner>>);

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut HealthInner) -> R) -> R {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// A state write failed.
    pub fn failed(&self, e: &StateError) {
        let now = unix_now();
        self.with(|h| {
            h.errors += 1;
            h.last_error = Some((e.to_string(), now));
            h.failing_since.get_or_insert(now);
        });
    }

    /// A state write succeeded: writes are no longer failing.
    pub fn ok(&self) {
        self.with(|h| h.failing_since = None);
    }

    /// Records the outcome of a write (`Ok(Some(e))`: the file was written, its copy
    /// was not: counted, but the state is durable).
    pub fn record(&self, r: Result<Option<StateError>, StateError>) -> Result<(), StateError> {
        match r {
            Ok(None) => {
                self.ok();
                Ok(())
            }
            Ok(Some(copy)) => {
                self.failed(&copy);
                tracing::error!(error = %copy, "state written, its last good copy not");
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                tracing::error!(error = %e, "state not written; the change is refused");
                Err(e)
            }
        }
    }

    /// Start recovered something (one line for `status`).
    pub fn recovered(&self, what: impl Into<String>) {
        let what = what.into();
        self.with(|h| h.recovered.push(what));
    }

    /// The `status` view.
    pub fn status(&self, fail_closed_namespaces: Vec<String>) -> PersistenceStatus {
        self.with(|h| PersistenceStatus {
            failing: h.failing_since.is_some(),
            errors: h.errors,
            last_error: h.last_error.as_ref().map(|(m, _)| m.clone()),
            last_error_unix: h.last_error.as_ref().map(|(_, t)| *t),
            failing_since_unix: h.failing_since,
            recovered: h.recovered.clone(),
            fail_closed_namespaces,
        })
    }
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
    fn kept_copy_recovers_a_torn_file_and_is_set_aside_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let m = |v: u32| BTreeMap::from([("a".to_string(), v)]);
        assert_eq!(
            load_json_recovering::<BTreeMap<String, u32>>(&path).unwrap(),
            Loaded::Missing
        );
        assert!(save_json_kept(&path, &m(1)).unwrap().is_none());
        assert!(save_json_kept(&path, &m(2)).unwrap().is_none());
        assert_eq!(load_json_recovering(&path).unwrap(), Loaded::Current(m(2)));
        // Torn file: the copy holds the same last state; the torn file is kept aside.
        fs::write(&path, "{\"a\": ").unwrap();
        let Loaded::FromCopy { value, set_aside } =
            load_json_recovering::<BTreeMap<String, u32>>(&path).unwrap()
        else {
            panic!("expected recovery from the copy")
        };
        assert_eq!(value, m(2));
        let aside = set_aside.unwrap();
        assert_eq!(fs::read_to_string(&aside).unwrap(), "{\"a\": ");
        assert!(!path.exists());
        // Missing file, good copy: the copy.
        assert!(matches!(
            load_json_recovering::<BTreeMap<String, u32>>(&path).unwrap(),
            Loaded::FromCopy {
                set_aside: None,
                ..
            }
        ));
        // Both torn: both set aside, nothing returned.
        fs::write(&path, "x").unwrap();
        fs::write(prev_path(&path), "y").unwrap();
        let Loaded::Unreadable { set_aside } =
            load_json_recovering::<BTreeMap<String, u32>>(&path).unwrap()
        else {
            panic!("expected unreadable")
        };
        assert_eq!(set_aside.len(), 2);
        assert!(!path.exists() && !prev_path(&path).exists());
        // Torn file, no copy: unreadable, set aside.
        fs::write(&path, "x").unwrap();
        assert!(matches!(
            load_json_recovering::<BTreeMap<String, u32>>(&path).unwrap(),
            Loaded::Unreadable { set_aside } if set_aside.len() == 1
        ));
    }

    #[test]
    fn failed_write_changes_nothing_and_health_says_since_when() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/e.json");
        let health = Health::default();
        let e = health.record(save_json_kept(&path, &[1u32])).unwrap_err();
        assert!(e.to_string().contains("missing-dir/e.json"), "{e}");
        let st = health.status(Vec::new());
        assert!(st.failing && st.errors == 1 && st.failing_since_unix.is_some());
        assert!(st.last_error.unwrap().contains("e.json"));
        let ok = dir.path().join("e.json");
        health.record(save_json_kept(&ok, &[1u32])).unwrap();
        let st = health.status(Vec::new());
        assert!(!st.failing && st.errors == 1 && st.failing_since_unix.is_none());
        assert_eq!(fs::read(&ok).unwrap(), fs::read(prev_path(&ok)).unwrap());
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
