//! The metrics endpoint: a minimal HTTP/1.x server on a thread of its own. `GET
//! /metrics` (or `/`) answers the exposition text ([`super::Exporter::render`]) with
//! `Content-Type: text/plain; version=0.0.4`; anything else is 404 (unknown path) or
//! 405 (not GET). One connection at a time, each bounded: the request head must arrive
//! within [`CLIENT_TIMEOUT`] and fit [`MAX_HEAD`] bytes, the answer is written with the
//! same timeout, then the connection closes. The thread polls the stop flag every
//! [`STOP_POLL`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Exporter;

/// Longest a scrape may take to send its request or read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How often the idle thread checks the stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// Binding or starting the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("bind metrics endpoint {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("start metrics thread: {0}")]
    Spawn(io::Error),
}

/// A running endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Bind `addr` and serve `exporter` on a new thread until [`stop`](Self::stop).
    pub fn start(addr: SocketAddr, exporter: Arc<Exporter>) -> Result<Self, MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xsknet-metrics".into())
            .spawn(move || run(listener, &exporter, &flag))
            .map_err(MetricsError::Spawn)?;
        tracing::info!(addr = %bound, "metrics endpoint listening");
        Ok(MetricsServer {
            addr: bound,
            thread: Some(thread),
            stop,
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(listener: TcpListener, exporter: &Exporter, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve_one(stream, exporter) {
                    tracing::debug!("metrics endpoint: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("metrics endpoint: accept: {e}");
                std::thread::sleep(STOP_POLL);
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    NotAllowed,
    Bad,
}

/// Route a request head (its first line).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Route::NotAllowed;
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" | "/" => Route::Metrics,
        _ => Route::NotFound,
    }
}

fn serve_one(mut stream: TcpStream, exporter: &Exporter) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD || Instant::now() >= deadline {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            );
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let is_head = head.starts_with(b"HEAD ");
    match route(&head) {
        Route::Metrics => respond(&mut stream, "200 OK", &exporter.render(), is_head),
        Route::NotFound => respond(&mut stream, "404 Not Found", "try /metrics\n", is_head),
        Route::NotAllowed => respond(&mut stream, "405 Method Not Allowed", "", false),
        Route::Bad => respond(&mut stream, "400 Bad Request", "", false),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::NotAllowed);
        assert_eq!(route(b"garbage"), Route::Bad);
        assert_eq!(route(b""), Route::Bad);
    }

    #[test]
    fn serves_the_exposition_over_http() {
        let exporter = Arc::new(Exporter::default());
        let mut srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), exporter).unwrap();
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("version=0.0.4"));
        assert!(text.contains("\r\n\r\n# HELP xsknet_up"), "{text}");
        // A silent client is dropped after the timeout and does not stop the thread.
        let _silent = TcpStream::connect(srv.addr).unwrap();
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"GET /nope HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        srv.stop();
    }
}
