//! The control socket server: a single-threaded `mio` event loop on the control thread.
//!
//! Each connection carries one request ([`proto`]): the request ends at the first
//! newline or at the client's half-close, is decoded, handed to the
//! [`Handler`](super::proto::Handler), and answered with one JSON line before the
//! server closes. Connections are non-blocking with their own buffers and an idle
//! deadline, so a slow or stalled client never delays another; requests larger than
//! [`MAX_REQUEST_BYTES`] are answered with an error and closed. Whatever a client sends,
//! the loop answers or drops that one connection; it never panics or stops on input.
//! The loop wakes at least every [`TICK_INTERVAL`] to call `Handler::tick` and to check
//! the stop flag; on stop it removes its socket file. The socket is created mode 0600
//! (root only): it is bound under a temporary name, restricted, then renamed into
//! place, so it is never reachable with looser permissions.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::proto::{
    decode_any, encode_response, AnyRequest, ErrorKind, Handler, Response, MAX_REQUEST_BYTES,
};
use crate::config::MAX_SOCKET_PATH_LEN;

/// Longest the loop sleeps before calling `Handler::tick` and checking `stop`.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// A connection that makes no progress for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is dropped after this long however it trickles.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 128;

const LISTENER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 * 1024;

/// Setting up or running the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("create control socket directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("another xsknetd is serving {path}")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("check existing control socket {path}: {source}")]
    Probe { path: PathBuf, source: io::Error },
    #[error("remove stale control socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("bind control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("restrict control socket {path} to mode 0600: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("control event loop on {path}: {source}")]
    EventLoop { path: PathBuf, source: io::Error },
}

/// Tunables of the loop; [`Default`] gives the production values.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub tick_interval: Duration,
    pub idle_timeout: Duration,
    pub connection_deadline: Duration,
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tick_interval: TICK_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            connection_deadline: CONNECTION_DEADLINE,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Binds the control socket at `path`, mode 0600, creating the parent directory
/// (0755) if missing. A leftover socket file is removed only when nothing answers on
/// it; a live one yields [`ServerError::InUse`]. Split from [`serve`] so the daemon can
/// report a bind failure before it starts workers.
pub fn bind(path: &Path) -> Result<StdUnixListener, ServerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| ServerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    remove_stale(path)?;

    let tmp = temp_name(path);
    if tmp.as_os_str().len() > MAX_SOCKET_PATH_LEN {
        // No room for a temporary name: bind in place and restrict right after.
        let listener = bind_at(path, path)?;
        restrict(path, path)?;
        return Ok(listener);
    }
    let _ = fs::remove_file(&tmp);
    let listener = bind_at(&tmp, path)?;
    let placed = restrict(&tmp, path).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        })
    });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}", std::process::id()));
    path.with_file_name(name)
}

fn bind_at(at: &Path, path: &Path) -> Result<StdUnixListener, ServerError> {
    StdUnixListener::bind(at).map_err(|source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

fn restrict(at: &Path, path: &Path) -> Result<(), ServerError> {
    fs::set_permissions(at, fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServerError::Chmod {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn remove_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Probe {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ServerError::RemoveStale {
                path: path.to_path_buf(),
                source,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServerError::Probe {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds `path` and serves it until `stop` is set (see the module doc).
pub fn serve(
    path: &Path,
    handler: &mut impl Handler,
    stop: &AtomicBool,
) -> Result<(), ServerError> {
    let listener = bind(path)?;
    serve_listener(listener, path, handler, stop, &ServeOptions::default())
}

/// Serves an already bound listener (from [`bind`]) until `stop` is set, then removes
/// the socket file at `path` if it is still this listener's.
pub fn serve_listener(
    listener: StdUnixListener,
    path: &Path,
    handler: &mut impl Handler,
    stop: &AtomicBool,
    options: &ServeOptions,
) -> Result<(), ServerError> {
    let ours = fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let result = run(listener, handler, stop, options).map_err(|source| ServerError::EventLoop {
        path: path.to_path_buf(),
        source,
    });
    // Remove the file only if nobody replaced it meanwhile.
    if let Ok(m) = fs::symlink_metadata(path) {
        if Some((m.dev(), m.ino())) == ours {
            let _ = fs::remove_file(path);
        }
    }
    result
}

enum Phase {
    Reading,
    Writing { out: Vec<u8>, written: usize },
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    phase: Phase,
    idle_deadline: Instant,
    hard_deadline: Instant,
}

/// What to do with a connection after serving an event.
enum Next {
    Keep,
    Close,
}

struct Server<'a, H: Handler> {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    scratch: Vec<u8>,
    handler: &'a mut H,
    options: &'a ServeOptions,
    /// Set when the listener may hold connections we did not accept (capacity, EMFILE):
    /// edge-triggered readiness will not repeat, so accept is retried every iteration.
    accept_pending: bool,
}

fn run<H: Handler>(
    listener: StdUnixListener,
    handler: &mut H,
    stop: &AtomicBool,
    options: &ServeOptions,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = UnixListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut server = Server {
        poll,
        listener,
        conns: HashMap::new(),
        next_token: 0,
        scratch: vec![0; READ_CHUNK],
        handler,
        options,
        accept_pending: true,
    };
    let mut events = Events::with_capacity(256);
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let until_tick = options.tick_interval.saturating_sub(last_tick.elapsed());
        match server.poll.poll(&mut events, Some(until_tick)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept_pending = true,
                token => server.on_event(token),
            }
        }
        if server.accept_pending {
            server.accept();
        }
        server.expire(Instant::now());
        if last_tick.elapsed() >= options.tick_interval {
            server.handler.tick();
            last_tick = Instant::now();
        }
    }
    Ok(())
}

impl<H: Handler> Server<'_, H> {
    fn accept(&mut self) {
        while self.conns.len() < self.options.max_connections {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token = (self.next_token + 1) % LISTENER.0;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        tracing::warn!("control socket: register connection: {e}");
                        continue;
                    }
                    let now = Instant::now();
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            input: Vec::new(),
                            phase: Phase::Reading,
                            idle_deadline: now + self.options.idle_timeout,
                            hard_deadline: now + self.options.connection_deadline,
                        },
                    );
                    // The request may already be waiting.
                    self.on_event(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE and friends: leave the client in the backlog, retry soon.
                    tracing::warn!("control socket: accept: {e}");
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    fn on_event(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let next = match conn.phase {
            Phase::Reading => self.read(&mut conn, token),
            Phase::Writing { .. } => write_out(&mut conn, self.options.idle_timeout),
        };
        match next {
            Next::Keep => {
                self.conns.insert(token, conn);
            }
            Next::Close => {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.accept_pending = true;
            }
        }
    }

    fn read(&mut self, conn: &mut Conn, token: Token) -> Next {
        let complete = loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    if conn.input.is_empty() {
                        // Connected and left (e.g. a liveness probe): nothing to answer.
                        return Next::Close;
                    }
                    break Ok(());
                }
                Ok(n) => {
                    conn.idle_deadline = Instant::now() + self.options.idle_timeout;
                    let chunk = &self.scratch[..n];
                    let newline = chunk.iter().position(|&b| b == b'\n');
                    conn.input.extend_from_slice(&chunk[..newline.unwrap_or(n)]);
                    if conn.input.len() > MAX_REQUEST_BYTES {
                        break Err(());
                    }
                    if newline.is_some() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("control socket: read: {e}");
                    return Next::Close;
                }
            }
        };
        let response = match complete {
            Ok(()) => self.dispatch(&conn.input),
            Err(()) => Response::err(
                ErrorKind::InvalidRequest,
                format!("request exceeds {MAX_REQUEST_BYTES} bytes"),
            ),
        };
        conn.input = Vec::new();
        conn.phase = Phase::Writing {
            out: encode_response(&response),
            written: 0,
        };
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut conn.stream, token, Interest::WRITABLE)
        {
            tracing::debug!("control socket: reregister connection: {e}");
            return Next::Close;
        }
        write_out(conn, self.options.idle_timeout)
    }

    fn dispatch(&mut self, line: &[u8]) -> Response {
        let served = match decode_any(line) {
            Ok(AnyRequest::Core(request)) => Ok(self.handler.handle(request)),
            Ok(AnyRequest::Policy(request)) => Ok(self.handler.handle_policy(request)),
            Err(e) => Err(e),
        };
        match served {
            Ok(result) => match result {
                Ok(result) => Response::ok(result),
                Err(e) => e.into(),
            },
            Err(e) => {
                tracing::debug!("control socket: rejected request: {}", e.message);
                e.into()
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| now >= c.idle_deadline || now >= c.hard_deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(mut conn) = self.conns.remove(&token) {
                tracing::debug!("control socket: dropping a stalled client");
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.accept_pending = true;
            }
        }
    }
}

fn write_out(conn: &mut Conn, idle_timeout: Duration) -> Next {
    let Phase::Writing { out, written } = &mut conn.phase else {
        return Next::Keep;
    };
    while *written < out.len() {
        match conn.stream.write(&out[*written..]) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                *written += n;
                conn.idle_deadline = Instant::now() + idle_timeout;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("control socket: write response: {e}");
                return Next::Close;
            }
        }
    }
    Next::Close
}
