//! The blocking control client used by `xsknetctl` and the CNI plugin.
//!
//! One call is one connection: connect, write the [`Envelope`] and a newline, read one
//! response line, close. The whole exchange is bounded by the caller's timeout, so a
//! wedged daemon turns into an error instead of a hung kubelet. Errors say what was
//! attempted against which socket; a daemon-side refusal comes back as
//! [`ClientError::Daemon`] with the protocol's [`ErrorKind`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::wire::{Envelope, ErrorKind, PolicyRequest, Request, Response, PROTOCOL_VERSION};

/// Largest response accepted (an endpoint list of a full node is far smaller).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A control call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach xsknetd at {path}: {source} (is the daemon running?)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("send request to xsknetd at {path}: {source}")]
    Send { path: PathBuf, source: io::Error },
    #[error("read response from xsknetd at {path}: {source}")]
    Receive { path: PathBuf, source: io::Error },
    #[error("xsknetd at {path} did not answer within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    /// The daemon closed the connection without answering (it exited or was killed
    /// while handling the request).
    #[error("xsknetd at {path} closed the connection without answering (did it exit?)")]
    Closed { path: PathBuf },
    #[error("malformed response from xsknetd at {path}: {message}")]
    BadResponse { path: PathBuf, message: String },
    #[error("xsknetd refused the request ({kind}): {message}")]
    Daemon { kind: ErrorKind, message: String },
}

impl ClientError {
    /// True when the daemon could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }

    /// True when the daemon went away while the request was under way: the
    /// connection was reset, closed before an answer, or the send failed. The request
    /// may or may not have taken effect; a CNI ADD maps this to "try again later".
    pub fn is_daemon_gone(&self) -> bool {
        matches!(
            self,
            ClientError::Closed { .. } | ClientError::Send { .. } | ClientError::Receive { .. }
        )
    }

    /// The daemon's error kind, when it answered with an error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Daemon { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Sends `req` to the daemon at `path` and returns its `result` (JSON `null` when the
/// daemon sent none). The whole exchange must finish within `timeout`.
pub fn call(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let line =
        serde_json::to_vec(&Envelope::new(req.clone())).map_err(|e| ClientError::BadResponse {
            path: path.to_path_buf(),
            message: format!("encode request: {e}"),
        })?;
    call_line(path, line, timeout)
}

/// [`call`] for a NetworkPolicy request.
pub fn call_policy(
    path: &Path,
    req: &PolicyRequest,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let encode = |e: serde_json::Error| ClientError::BadResponse {
        path: path.to_path_buf(),
        message: format!("encode request: {e}"),
    };
    let mut v = serde_json::to_value(req).map_err(encode)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("v".into(), PROTOCOL_VERSION.into());
    }
    call_line(path, serde_json::to_vec(&v).map_err(encode)?, timeout)
}

fn call_line(
    path: &Path,
    mut line: Vec<u8>,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        path: path.to_path_buf(),
        timeout,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;

    line.push(b'\n');
    set_timeout(&stream, deadline, false).ok_or_else(timed_out)?;
    if let Err(source) = stream.write_all(&line) {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return Err(timed_out()),
            // The daemon may have answered (e.g. "too large") and closed: read it.
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {}
            _ => {
                return Err(ClientError::Send {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        set_timeout(&stream, deadline, true).ok_or_else(timed_out)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') {
                    break;
                }
                if buf.len() > MAX_RESPONSE_BYTES {
                    return Err(ClientError::BadResponse {
                        path: path.to_path_buf(),
                        message: format!("response exceeds {MAX_RESPONSE_BYTES} bytes"),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(source) => {
                return Err(ClientError::Receive {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if buf[..end].iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::Closed {
            path: path.to_path_buf(),
        });
    }
    let response: Response =
        serde_json::from_slice(&buf[..end]).map_err(|e| ClientError::BadResponse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    match (response.ok, response.error) {
        (true, _) => Ok(response.result.unwrap_or(serde_json::Value::Null)),
        (false, Some(e)) => Err(ClientError::Daemon {
            kind: e.kind,
            message: e.message,
        }),
        (false, None) => Err(ClientError::BadResponse {
            path: path.to_path_buf(),
            message: "\"ok\": false without an error".to_string(),
        }),
    }
}

/// [`call`], then decodes the result as `T`.
pub fn call_as<T: DeserializeOwned>(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    let value = call(path, req, timeout)?;
    serde_json::from_value(value).map_err(|e| ClientError::BadResponse {
        path: path.to_path_buf(),
        message: format!("unexpected result shape: {e}"),
    })
}

/// Arms the socket timeout with what is left until `deadline`; `None` when nothing is.
fn set_timeout(stream: &UnixStream, deadline: Instant, read: bool) -> Option<()> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let r = if read {
        stream.set_read_timeout(Some(left))
    } else {
        stream.set_write_timeout(Some(left))
    };
    r.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_socket_is_actionable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let e = call(&path, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(e.is_unreachable());
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach xsknetd at {}: ", path.display())),
            "{msg}"
        );
        assert!(msg.ends_with("(is the daemon running?)"), "{msg}");
    }

    #[test]
    fn silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mute.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = call(&path, &Request::Status, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    }
}
