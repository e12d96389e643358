//! Installing xsknet as the node's CNI: the plugin binary into the CNI binary directory
//! and the network configuration (conflist) into the CNI configuration directory.
//!
//! The order is what makes a node turn Ready exactly when pods can be networked: the
//! kubelet (through its container runtime) reports "cni plugin not initialized" until a
//! configuration file exists in `/etc/cni/net.d`, so the binary is copied first, then
//! [`wait_ready`] polls the daemon's `status` over the control socket, and only a ready
//! dataplane gets its conflist written. Uninstalling runs the other way round: the
//! conflist goes first (the node goes NotReady and no new pod is sent to xsknet), then
//! the binary. Both files are written with temp file + fsync + rename in their
//! destination directory, so a runtime never executes a half-copied plugin and never
//! parses a half-written conflist; a failed write removes its temp file. Everything here
//! is idempotent: installing twice replaces the files with identical ones, removing
//! missing files succeeds. Replacing by rename also works while a runtime is executing
//! the old plugin (writing into it would fail with ETXTBSY). `xsknetd run --install-cni`
//! removes on exit only what it put in place ([`uninstall_owned`], by inode), so a
//! daemon shutting down never takes away files a newer installer wrote meanwhile. This module runs off the dataplane's threads (the `xsknetd`
//! CLI, or a helper thread of `xsknetd run --install-cni`) and touches no packet path.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::control::client::{call_as, ClientError};
use crate::control::proto::{Request, Status};

/// Default CNI binary directory of kubelet/containerd/CRI-O.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Default CNI configuration directory.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default conflist file name; `10-` sorts it before most others, runtimes pick the
/// lexicographically first configuration.
pub const DEFAULT_CONFLIST_NAME: &str = "10-xsknet.conflist";
/// The plugin's executable name (`"type": "xsknet"`).
pub const PLUGIN_NAME: &str = "xsknet";
/// The network name in the conflist.
pub const NETWORK_NAME: &str = "xsknet";
/// CNI version the conflist declares.
pub const CNI_VERSION: &str = "1.0.0";
/// Default pod MTU written into the conflist.
pub const DEFAULT_MTU: u32 = 1500;
/// Default chain after xsknet.
pub const DEFAULT_CHAIN: &str = "portmap";
/// Default wait for the dataplane before giving up.
pub const DEFAULT_WAIT_READY: Duration = Duration::from_secs(120);
/// How often [`wait_ready`] asks the daemon.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound on one `status` call while waiting.
const STATUS_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// An install or uninstall step that failed, naming the file or socket involved.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("read plugin binary {path}: {source}")]
    ReadBinary { path: PathBuf, source: io::Error },
    #[error("plugin binary {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error(
        "xsknetd at {socket} was not ready within {timeout:?}; the CNI configuration was not \
         written ({last})"
    )]
    NotReady {
        socket: PathBuf,
        timeout: Duration,
        last: String,
    },
    #[error("stopped while waiting for xsknetd at {socket} to become ready")]
    Interrupted { socket: PathBuf },
    #[error("invalid plugin chain {spec:?}: {message}")]
    BadChain { spec: String, message: String },
}

/// Everything an install or uninstall needs.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Where the `xsknet` executable goes (`/opt/cni/bin`).
    pub cni_bin_dir: PathBuf,
    /// Where the conflist goes (`/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// The plugin executable to copy.
    pub plugin_binary: PathBuf,
    /// File name of the conflist in `cni_conf_dir`.
    pub conflist_name: String,
    /// The daemon's control socket: polled for readiness and written into the conflist.
    pub socket: PathBuf,
    /// The daemon's state directory, written into the conflist.
    pub state_dir: PathBuf,
    /// Pod MTU written into the conflist.
    pub mtu: u32,
    /// Plugins chained after xsknet (full plugin objects), see [`parse_chain`].
    pub chain: Vec<Value>,
    /// How long to wait for `status` to say ready.
    pub wait_ready_timeout: Duration,
}

impl InstallOptions {
    /// Path of the installed plugin executable.
    pub fn binary_path(&self) -> PathBuf {
        self.cni_bin_dir.join(PLUGIN_NAME)
    }

    /// Path of the conflist.
    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join(&self.conflist_name)
    }

    /// The conflist this install writes.
    pub fn conflist(&self) -> Value {
        serde_json::to_value(self.conflist_doc()).unwrap_or_default()
    }

    /// The conflist as written: keys in the order people read them (`type` first).
    fn conflist_doc(&self) -> ConflistDoc<'_> {
        let mut plugins = vec![PluginDoc::Xsknet {
            kind: PLUGIN_NAME,
            socket: &self.socket,
            state_dir: &self.state_dir,
            mtu: self.mtu,
        }];
        plugins.extend(self.chain.iter().map(PluginDoc::Other));
        ConflistDoc {
            cni_version: CNI_VERSION,
            name: NETWORK_NAME,
            plugins,
        }
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConflistDoc<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: Vec<PluginDoc<'a>>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum PluginDoc<'a> {
    #[serde(rename_all = "camelCase")]
    Xsknet {
        #[serde(rename = "type")]
        kind: &'a str,
        socket: &'a Path,
        state_dir: &'a Path,
        mtu: u32,
    },
    Other(&'a Value),
}

/// The plugin object of a reference plugin known by name, with the capabilities a
/// runtime needs to see to pass its runtime config (`-p` ports, bandwidth annotations).
fn known_plugin(name: &str) -> Option<Value> {
    Some(match name {
        "portmap" => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        "bandwidth" => json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        "tuning" => json!({"type": "tuning"}),
        "firewall" => json!({"type": "firewall"}),
        _ => return None,
    })
}

/// Parses the chain after xsknet: either a comma-separated list of reference plugin
/// names (`portmap,bandwidth`; `none` or empty for no chain), or a JSON array of plugin
/// objects (`[{"type":"portmap","capabilities":{"portMappings":true}}]`), each with a
/// string `type`.
pub fn parse_chain(spec: &str) -> Result<Vec<Value>, InstallError> {
    let bad = |message: String| InstallError::BadChain {
        spec: spec.to_string(),
        message,
    };
    let trimmed = spec.trim();
    if trimmed.starts_with('[') {
        let plugins: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| bad(e.to_string()))?;
        for (i, p) in plugins.iter().enumerate() {
            match p.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => {}
                _ => return Err(bad(format!("plugin {i} has no string \"type\""))),
            }
        }
        return Ok(plugins);
    }
    if trimmed.is_empty() || trimmed == "none" {
        return Ok(Vec::new());
    }
    trimmed
        .split(',')
        .map(str::trim)
        .map(|name| {
            known_plugin(name).ok_or_else(|| {
                bad(format!(
                    "unknown plugin {name:?} (known: portmap, bandwidth, tuning, firewall; \
                     give a JSON array for others)"
                ))
            })
        })
        .collect()
}

/// A unique hidden temp name in `dir` for `name`, so concurrent installers never share
/// one and a runtime scanning `*.conflist` never picks it up.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.xsknet-tmp-{}-{n}", std::process::id()))
}

fn create_dir(dir: &Path) -> Result<(), InstallError> {
    fs::create_dir_all(dir).map_err(|source| InstallError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `dest` atomically: a temp file in the same directory is filled by `fill`,
/// fsynced, given `mode`, renamed over `dest`, and the directory is fsynced.
fn replace_atomically(
    dest: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_path(dir, &name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        // The umask does not apply to fchmod: the mode is exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        drop(f);
        fs::rename(&tmp, dest)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| InstallError::Write {
        path: dest.to_path_buf(),
        source,
    })
}

/// Copies the plugin executable into `opts.cni_bin_dir` as `xsknet`, mode 0755,
/// atomically. Returns the installed path.
pub fn install_binary(opts: &InstallOptions) -> Result<PathBuf, InstallError> {
    let src = &opts.plugin_binary;
    let read_err = |source| InstallError::ReadBinary {
        path: src.clone(),
        source,
    };
    let mut input = File::open(src).map_err(read_err)?;
    if !input.metadata().map_err(read_err)?.is_file() {
        return Err(InstallError::NotAFile { path: src.clone() });
    }
    create_dir(&opts.cni_bin_dir)?;
    let dest = opts.binary_path();
    // A read error would otherwise surface as a write error on `dest`.
    let mut read_failure = None;
    let written = replace_atomically(&dest, 0o755, |out| {
        let mut reader = ReadTracking {
            inner: &mut input,
            error: &mut read_failure,
        };
        io::copy(&mut reader, out).map(drop)
    });
    if let Some(source) = read_failure {
        return Err(InstallError::ReadBinary {
            path: src.clone(),
            source,
        });
    }
    written?;
    Ok(dest)
}

/// A reader that remembers its own error so the caller can tell read from write.
struct ReadTracking<'a> {
    inner: &'a mut File,
    error: &'a mut Option<io::Error>,
}

impl io::Read for ReadTracking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

/// Writes the conflist atomically (mode 0644). Returns its path.
pub fn write_conflist(opts: &InstallOptions) -> Result<PathBuf, InstallError> {
    create_dir(&opts.cni_conf_dir)?;
    let dest = opts.conflist_path();
    let mut bytes = serde_json::to_vec_pretty(&opts.conflist_doc()).unwrap_or_default();
    bytes.push(b'\n');
    replace_atomically(&dest, 0o644, |f| f.write_all(&bytes))?;
    Ok(dest)
}

/// Asks the daemon at `socket` for `status` until it says ready, `timeout` passes, or
/// `stop` is set. Returns the ready status.
pub fn wait_ready(
    socket: &Path,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Status, InstallError> {
    let deadline = Instant::now() + timeout;
    let mut last = "no answer yet".to_string();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(InstallError::Interrupted {
                socket: socket.to_path_buf(),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let status: Result<Status, ClientError> = call_as(
                socket,
                &Request::Status,
                left.clamp(Duration::from_millis(1), STATUS_CALL_TIMEOUT),
            );
            match status {
                Ok(s) if s.ready => return Ok(s),
                Ok(_) => last = "the daemon answers but reports ready=false".to_string(),
                Err(e) => last = e.to_string(),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(InstallError::NotReady {
                socket: socket.to_path_buf(),
                timeout,
                last,
            });
        }
        std::thread::sleep(left.min(READY_POLL_INTERVAL));
    }
}

/// What an install did.
#[derive(Clone, Debug)]
pub struct Installed {
    pub binary: PathBuf,
    pub conflist: PathBuf,
    pub status: Status,
}

/// A file's identity (device, inode), recorded when this process put it in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        fs::symlink_metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// The files this process installed, filled in as [`install`] goes, so that an
/// interrupted install can still be undone exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub binary: Option<FileId>,
    pub conflist: Option<FileId>,
}

/// The whole install: binary, wait for a ready dataplane, conflist. What was put in
/// place is recorded in `owned` as soon as it is (see [`uninstall_owned`]).
pub fn install(
    opts: &InstallOptions,
    stop: &AtomicBool,
    owned: &Mutex<Owned>,
) -> Result<Installed, InstallError> {
    let binary = install_binary(opts)?;
    lock(owned).binary = FileId::of(&binary);
    let status = wait_ready(&opts.socket, opts.wait_ready_timeout, stop)?;
    let conflist = write_conflist(opts)?;
    lock(owned).conflist = FileId::of(&conflist);
    Ok(Installed {
        binary,
        conflist,
        status,
    })
}

fn lock(owned: &Mutex<Owned>) -> std::sync::MutexGuard<'_, Owned> {
    // Plain data: a panic while holding the lock cannot leave it inconsistent.
    owned
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes, conflist first, only the files `owned` says this process put in place and
/// that are still those files: one replaced since (by another installer, a newer
/// version, an operator) stays, so a shutting-down daemon never takes away the
/// configuration of whoever installed after it.
pub fn uninstall_owned(
    opts: &InstallOptions,
    owned: &Mutex<Owned>,
) -> Result<Uninstalled, InstallError> {
    let owned = *lock(owned);
    let remove_if_ours = |path: &Path, id: Option<FileId>| match id {
        Some(id) if FileId::of(path) == Some(id) => remove_if_present(path),
        _ => Ok(false),
    };
    let conflist = remove_if_ours(&opts.conflist_path(), owned.conflist)?;
    let binary = remove_if_ours(&opts.binary_path(), owned.binary)?;
    Ok(Uninstalled { conflist, binary })
}

/// Removes `path`; a missing file is success. Returns whether it existed.
fn remove_if_present(path: &Path) -> Result<bool, InstallError> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                // Make the removal durable before the next step depends on it.
                let _ = sync_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(InstallError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What an uninstall removed (false: it was already gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uninstalled {
    pub conflist: bool,
    pub binary: bool,
}

/// Removes the conflist, then the binary; missing files are fine.
pub fn uninstall(opts: &InstallOptions) -> Result<Uninstalled, InstallError> {
    let conflist = remove_if_present(&opts.conflist_path())?;
    let binary = remove_if_present(&opts.binary_path())?;
    Ok(Uninstalled { conflist, binary })
}

/// The default plugin binary: `xsknet` next to the running executable.
pub fn default_plugin_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(PLUGIN_NAME)))
        .unwrap_or_else(|| PathBuf::from(PLUGIN_NAME))
}

/// Leftover temp files of an interrupted install in `dir` (for operators and tests).
pub fn leftover_temp_files(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().contains(".xsknet-tmp-") {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> InstallOptions {
        InstallOptions {
            cni_bin_dir: dir.join("bin"),
            cni_conf_dir: dir.join("net.d"),
            plugin_binary: dir.join("src-xsknet"),
            conflist_name: DEFAULT_CONFLIST_NAME.to_string(),
            socket: PathBuf::from("/run/xsknet/xsknetd.sock"),
            state_dir: PathBuf::from("/var/lib/xsknet"),
            mtu: DEFAULT_MTU,
            chain: parse_chain(DEFAULT_CHAIN).unwrap(),
            wait_ready_timeout: Duration::from_millis(100),
        }
    }

    #[test]
    fn default_conflist_shape() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            opts(dir.path()).conflist(),
            json!({
                "cniVersion": "1.0.0",
                "name": "xsknet",
                "plugins": [
                    {"type": "xsknet", "socket": "/run/xsknet/xsknetd.sock",
                     "stateDir": "/var/lib/xsknet", "mtu": 1500},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
        );
    }

    #[test]
    fn written_conflist_reads_top_down() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let path = write_conflist(&o).unwrap();
        let text = fs::read_to_string(path).unwrap();
        let at = |k: &str| text.find(k).unwrap_or_else(|| panic!("{k} in {text}"));
        assert!(at("\"cniVersion\"") < at("\"name\"") && at("\"name\"") < at("\"plugins\""));
        assert!(at("\"type\": \"xsknet\"") < at("\"socket\""), "{text}");
        assert!(at("\"socket\"") < at("\"stateDir\"") && at("\"stateDir\"") < at("\"mtu\""));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, o.conflist());
    }

    #[test]
    fn uninstall_owned_leaves_files_replaced_since() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        fs::write(&o.plugin_binary, b"bin").unwrap();
        let owned = Mutex::new(Owned::default());
        // Nothing installed yet: nothing removed, even if files exist.
        install_binary(&o).unwrap();
        write_conflist(&o).unwrap();
        let none = uninstall_owned(&o, &owned).unwrap();
        assert!(!none.conflist && !none.binary);
        // Ours: removed.
        let stop = AtomicBool::new(false);
        let fake_ready = dir.path().join("ready.sock");
        o.socket = fake_ready.clone();
        o.wait_ready_timeout = Duration::from_millis(50);
        // No daemon: install stops after the binary, which is recorded.
        assert!(install(&o, &stop, &owned).is_err());
        assert!(lock(&owned).binary.is_some() && lock(&owned).conflist.is_none());
        write_conflist(&o).unwrap(); // someone else's conflist
        let done = uninstall_owned(&o, &owned).unwrap();
        assert!(done.binary && !done.conflist);
        assert!(o.conflist_path().exists());
        // Replaced after we installed it: left alone.
        let owned = Mutex::new(Owned::default());
        install_binary(&o).unwrap();
        lock(&owned).binary = FileId::of(&o.binary_path());
        install_binary(&o).unwrap(); // a newer installer's copy
        assert!(!uninstall_owned(&o, &owned).unwrap().binary);
        assert!(o.binary_path().exists());
    }

    #[test]
    fn chains() {
        assert!(parse_chain("none").unwrap().is_empty());
        assert!(parse_chain("").unwrap().is_empty());
        let c = parse_chain("portmap, bandwidth,tuning").unwrap();
        let types: Vec<_> = c.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["portmap", "bandwidth", "tuning"]);
        assert_eq!(c[1]["capabilities"]["bandwidth"], true);
        let c = parse_chain(r#"[{"type":"sbr"},{"type":"portmap","snat":false}]"#).unwrap();
        assert_eq!(c[1]["snat"], false);
        let msg = parse_chain("portmap,nosuch").unwrap_err().to_string();
        assert!(msg.contains("\"nosuch\""), "{msg}");
        let msg = parse_chain(r#"[{"name":"x"}]"#).unwrap_err().to_string();
        assert!(msg.contains("plugin 0"), "{msg}");
        assert!(parse_chain("[").is_err());
    }

    #[test]
    fn binary_copy_is_exact_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        fs::write(&o.plugin_binary, &bytes).unwrap();
        let dest = install_binary(&o).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // Again: same result, no temp files.
        install_binary(&o).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(leftover_temp_files(&o.cni_bin_dir).unwrap().is_empty());
    }

    #[test]
    fn missing_binary_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let msg = install_binary(&o).unwrap_err().to_string();
        assert!(msg.starts_with("read plugin binary "), "{msg}");
        assert!(msg.contains("src-xsknet"), "{msg}");
        let o = InstallOptions {
            plugin_binary: dir.path().to_path_buf(),
            ..o
        };
        let msg = install_binary(&o).unwrap_err().to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
    }

    #[test]
    fn unwritable_destination_names_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        // A file where the directory should be.
        fs::write(dir.path().join("bin"), b"").unwrap();
        fs::write(&o.plugin_binary, b"x").unwrap();
        let msg = install_binary(&o).unwrap_err().to_string();
        assert!(msg.contains("bin"), "{msg}");
        o.cni_conf_dir = dir.path().join("bin").join("net.d");
        let msg = write_conflist(&o).unwrap_err().to_string();
        assert!(msg.contains("net.d"), "{msg}");
    }

    #[test]
    fn wait_ready_times_out_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let stop = AtomicBool::new(false);
        let e = wait_ready(&sock, Duration::from_millis(300), &stop).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&sock.display().to_string()), "{msg}");
        assert!(msg.contains("not ready within"), "{msg}");
        stop.store(true, Ordering::Relaxed);
        let e = wait_ready(&sock, Duration::from_secs(30), &stop).unwrap_err();
        assert!(matches!(e, InstallError::Interrupted { .. }), "{e}");
    }

    #[test]
    fn uninstall_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        fs::write(&o.plugin_binary, b"bin").unwrap();
        install_binary(&o).unwrap();
        write_conflist(&o).unwrap();
        let mode = fs::metadata(o.conflist_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            uninstall(&o).unwrap(),
            Uninstalled {
                conflist: true,
                binary: true
            }
        );
        assert!(!o.conflist_path().exists() && !o.binary_path().exists());
        assert_eq!(
            uninstall(&o).unwrap(),
            Uninstalled {
                conflist: false,
                binary: false
            }
        );
    }
}
