//! The control socket server: a single-threaded `mio` event loop on the control thread.
//!
//! Each connection carries one request ([`proto`]): the request ends at the first
//! newline or at the client's half-close, is decoded, handed to the
//! [`Handler`](super::proto::Handler), and answered with one JSON line before the
//! server closes. Whatever a client sends, the loop answers or drops that one
//! connection; it never panics or stops on input. Bounds, so that slow, idle or many
//! clients cannot delay a CNI request:
//!
//! - **Deadlines**: a connection must deliver a complete request within
//!   [`REQUEST_DEADLINE`] of being accepted (trickling bytes does not extend it) and
//!   may not stall longer than [`IDLE_TIMEOUT`] while its answer is written; requests
//!   larger than [`MAX_REQUEST_BYTES`] are answered with an error and closed.
//! - **Accepting never stops**: the table holds up to [`MAX_CONNECTIONS`]; when it is
//!   full (or the process is out of file descriptors) the connection idle the longest
//!   that has not delivered a request is closed to make room, so idle clients cannot
//!   fill it and keep others in the backlog.
//! - **CNI first**: requests that became complete in the same loop iteration are served
//!   CNI ops first (`endpoint_*`, `ipam_allocate`/`ipam_release`, `status`), then at
//!   most one bulk request (policy, lists, stats, trace) before the loop polls again.
//! - **Nothing left behind**: when an answer cannot be delivered (the client went away)
//!   the handler's [`abandoned`](super::proto::Handler::abandoned) undoes the request
//!   (a CNI ADD's address and endpoint).
//!
//! Latency per op and the connection table are counted in
//! [`ControlMetrics`](crate::metrics::control::ControlMetrics) when one is given. The
//! loop wakes at least every [`TICK_INTERVAL`] to call `Handler::tick` and to check
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::proto::{
    decode_any, encode_response, AnyRequest, ControlError, ErrorKind, Handler, PolicyRequest,
    Request, Response, MAX_REQUEST_BYTES,
};
use crate::config::MAX_SOCKET_PATH_LEN;
use crate::metrics::control::ControlMetrics;

/// Longest the loop sleeps before calling `Handler::tick` and checking `stop`.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// A connection that makes no progress for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that has not delivered a complete request this long after it was
/// accepted is dropped, however it trickles.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// A connection is dropped after this long whatever it does (answer included).
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Connections held at once; a new one beyond evicts the longest-idle reader.
pub const MAX_CONNECTIONS: usize = 1024;

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
    pub request_deadline: Duration,
    pub connection_deadline: Duration,
    pub max_connections: usize,
    /// Where latency and connection counts go (the metrics endpoint reads them).
    pub metrics: Option<Arc<ControlMetrics>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tick_interval: TICK_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            request_deadline: REQUEST_DEADLINE,
            connection_deadline: CONNECTION_DEADLINE,
            max_connections: MAX_CONNECTIONS,
            metrics: None,
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
    /// Complete and decoded, waiting in the ready queue.
    Queued,
    Writing {
        out: Vec<u8>,
        written: usize,
        /// A request to undo if the answer cannot be delivered, with its result.
        undo: Option<Box<(Request, serde_json::Value)>>,
    },
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    phase: Phase,
    /// Last progress (read or written bytes); eviction picks the oldest.
    active: Instant,
    request_deadline: Instant,
    hard_deadline: Instant,
}

impl Conn {
    fn deadline(&self, idle_timeout: Duration) -> Instant {
        let d = match self.phase {
            Phase::Reading => self.request_deadline.min(self.active + idle_timeout),
            Phase::Queued => return self.hard_deadline,
            Phase::Writing { .. } => self.active + idle_timeout,
        };
        d.min(self.hard_deadline)
    }
}

/// What to do with a connection after serving an event.
enum Next {
    Keep,
    Close,
}

/// How soon a request is served when several are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// CNI ops and status: cheap, and a pod's start waits on them.
    Cni,
    /// Everything else.
    Bulk,
}

/// A complete request waiting to be served.
struct Ready {
    token: Token,
    class: Class,
    op: &'static str,
    since: Instant,
    request: Result<AnyRequest, ControlError>,
}

/// The op's name as the protocol spells it, and its class.
fn classify(request: &Result<AnyRequest, ControlError>) -> (&'static str, Class) {
    use Class::*;
    match request {
        Err(_) => ("invalid", Cni),
        Ok(AnyRequest::Core(r)) => match r {
            Request::EndpointAdd(_) => ("endpoint_add", Cni),
            Request::EndpointDel { .. } => ("endpoint_del", Cni),
            Request::EndpointCheck { .. } => ("endpoint_check", Cni),
            Request::IpamAllocate { .. } => ("ipam_allocate", Cni),
            Request::IpamRelease { .. } => ("ipam_release", Cni),
            Request::Status => ("status", Cni),
            Request::EndpointList => ("endpoint_list", Bulk),
            Request::Stats => ("stats", Bulk),
            Request::IpamList => ("ipam_list", Bulk),
        },
        Ok(AnyRequest::Policy(r)) => match r {
            PolicyRequest::PolicyApply { .. } => ("policy_apply", Bulk),
            PolicyRequest::PolicyDelete { .. } => ("policy_delete", Bulk),
            PolicyRequest::PolicyList => ("policy_list", Bulk),
            PolicyRequest::PodLabel { .. } => ("pod_label", Bulk),
            PolicyRequest::Trace { .. } => ("trace", Bulk),
            PolicyRequest::NodeList => ("node_list", Bulk),
        },
    }
}

/// Whether an answered request allocated something its client must see (else undo).
fn undoable(request: &AnyRequest) -> Option<&Request> {
    match request {
        AnyRequest::Core(r @ (Request::EndpointAdd(_) | Request::IpamAllocate { .. })) => Some(r),
        _ => None,
    }
}

struct Server<'a, H: Handler> {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<Token, Conn>,
    ready: Vec<Ready>,
    next_token: usize,
    scratch: Vec<u8>,
    handler: &'a mut H,
    options: &'a ServeOptions,
    /// Set when the listener may hold connections we did not accept (EMFILE):
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
        ready: Vec::new(),
        next_token: 0,
        scratch: vec![0; READ_CHUNK],
        handler,
        options,
        accept_pending: true,
    };
    let mut events = Events::with_capacity(256);
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let until_tick = if server.ready.is_empty() {
            options.tick_interval.saturating_sub(last_tick.elapsed())
        } else {
            // Bulk requests are waiting: only look for newer CNI ones.
            Duration::ZERO
        };
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
        server.serve_ready();
        server.expire(Instant::now());
        if let Some(m) = &options.metrics {
            m.set_open(server.conns.len());
        }
        if last_tick.elapsed() >= options.tick_interval {
            server.handler.tick();
            last_tick = Instant::now();
        }
    }
    Ok(())
}

impl<H: Handler> Server<'_, H> {
    fn count(&self, pick: impl Fn(&ControlMetrics) -> &std::sync::atomic::AtomicU64) {
        if let Some(m) = &self.options.metrics {
            m.count(pick(m));
        }
    }

    fn accept(&mut self) {
        loop {
            if self.conns.len() >= self.options.max_connections && !self.evict_idlest() {
                // Every slot holds a request being served: retry next iteration.
                self.accept_pending = true;
                return;
            }
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = self.free_token();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        tracing::warn!("control socket: register connection: {e}");
                        continue;
                    }
                    self.count(|m| &m.connections_accepted);
                    let now = Instant::now();
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            input: Vec::new(),
                            phase: Phase::Reading,
                            active: now,
                            request_deadline: now + self.options.request_deadline,
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
                    // EMFILE and friends: make room from the idle, retry next iteration.
                    tracing::warn!("control socket: accept: {e}");
                    self.evict_idlest();
                    self.accept_pending = true;
                    return;
                }
            }
        }
    }

    fn free_token(&mut self) -> Token {
        loop {
            let token = Token(self.next_token);
            self.next_token = (self.next_token + 1) % LISTENER.0;
            if !self.conns.contains_key(&token) {
                return token;
            }
        }
    }

    /// Close the connection idle the longest among those still reading a request.
    fn evict_idlest(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Reading))
            .min_by_key(|(_, c)| c.active)
            .map(|(t, _)| *t);
        match victim {
            Some(token) => {
                tracing::debug!("control socket: connection table full; closing the idlest");
                self.count(|m| &m.connections_evicted);
                self.close(token);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Phase::Writing {
                undo: Some(undo), ..
            } = &conn.phase
            {
                let (request, result) = &**undo;
                self.count(|m| &m.answers_abandoned);
                tracing::warn!("control socket: client gone before its answer; undoing");
                self.handler.abandoned(request, result);
            }
        }
    }

    fn on_event(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let next = match conn.phase {
            Phase::Reading => read(conn, &mut self.scratch, token, &mut self.ready),
            Phase::Queued => Next::Keep,
            Phase::Writing { .. } => write_out(conn),
        };
        if let Next::Close = next {
            self.close(token);
        }
    }

    /// Serve the CNI requests that are ready, then at most one bulk one.
    fn serve_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        // Stable: arrival order within a class.
        self.ready.sort_by_key(|r| r.class);
        let cni = self
            .ready
            .iter()
            .take_while(|r| r.class == Class::Cni)
            .count();
        let take = if cni > 0 { cni } else { 1 };
        let batch: Vec<Ready> = self.ready.drain(..take).collect();
        for r in batch {
            self.answer(r);
        }
    }

    fn answer(&mut self, r: Ready) {
        if !self.conns.contains_key(&r.token) {
            return;
        }
        let (response, undo) = match r.request {
            Err(e) => {
                tracing::debug!("control socket: rejected request: {}", e.message);
                (Response::from(e), None)
            }
            Ok(request) => {
                let undo_req = undoable(&request).cloned();
                let served = match request {
                    AnyRequest::Core(request) => self.handler.handle(request),
                    AnyRequest::Policy(request) => self.handler.handle_policy(request),
                };
                match served {
                    Ok(result) => {
                        let undo = undo_req.map(|req| Box::new((req, result.clone())));
                        (Response::ok(result), undo)
                    }
                    Err(e) => (e.into(), None),
                }
            }
        };
        if let Some(m) = &self.options.metrics {
            m.observe(r.op, r.since.elapsed(), response.ok);
        }
        let Some(conn) = self.conns.get_mut(&r.token) else {
            return;
        };
        conn.phase = Phase::Writing {
            out: encode_response(&response),
            written: 0,
            undo,
        };
        conn.active = Instant::now();
        let next =
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, r.token, Interest::WRITABLE)
            {
                Ok(()) => write_out(conn),
                Err(e) => {
                    tracing::debug!("control socket: reregister connection: {e}");
                    Next::Close
                }
            };
        if let Next::Close = next {
            self.close(r.token);
        }
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.options.idle_timeout;
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| now >= c.deadline(idle))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            tracing::debug!("control socket: dropping a client past its deadline");
            self.count(|m| &m.connections_deadline);
            self.ready.retain(|r| r.token != token);
            self.close(token);
        }
    }
}

/// Read what the client sent; a complete request goes to the ready queue.
fn read(conn: &mut Conn, scratch: &mut [u8], token: Token, ready: &mut Vec<Ready>) -> Next {
    let complete = loop {
        match conn.stream.read(scratch) {
            Ok(0) => {
                if conn.input.is_empty() {
                    // Connected and left (e.g. a liveness probe): nothing to answer.
                    return Next::Close;
                }
                break Ok(());
            }
            Ok(n) => {
                conn.active = Instant::now();
                let chunk = &scratch[..n];
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
    let request = match complete {
        Ok(()) => decode_any(&conn.input),
        Err(()) => Err(ControlError::new(
            ErrorKind::InvalidRequest,
            format!("request exceeds {MAX_REQUEST_BYTES} bytes"),
        )),
    };
    conn.input = Vec::new();
    conn.phase = Phase::Queued;
    let (op, class) = classify(&request);
    ready.push(Ready {
        token,
        class,
        op,
        since: Instant::now(),
        request,
    });
    Next::Keep
}

fn write_out(conn: &mut Conn) -> Next {
    let Phase::Writing { out, written, undo } = &mut conn.phase else {
        return Next::Keep;
    };
    while *written < out.len() {
        match conn.stream.write(&out[*written..]) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                *written += n;
                conn.active = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("control socket: write response: {e}");
                return Next::Close;
            }
        }
    }
    // Delivered: nothing to undo.
    *undo = None;
    Next::Close
}
