//! A small Kubernetes API server for tests (no kube-apiserver can be installed here):
//! plain HTTP/1.1 on 127.0.0.1 speaking the real wire format for what xsknet uses —
//! cluster-wide list and watch of Nodes, Pods, Namespaces and NetworkPolicies, and a
//! JSON merge patch of a Node.
//!
//! * List: `GET /api/v1/pods` → `{"kind":"PodList","apiVersion":"v1","metadata":
//!   {"resourceVersion":"N"},"items":[...]}` (items without kind/apiVersion, as the API
//!   server returns them). A list *from* a resourceVersion older than the compaction
//!   point (`resourceVersion=N&resourceVersionMatch=Exact`) is HTTP 410 with a Status.
//! * Watch: `GET ...?watch=true&resourceVersion=N&allowWatchBookmarks=true` → HTTP 200,
//!   `Transfer-Encoding: chunked`, one JSON event per line: `{"type":"ADDED"|"MODIFIED"|
//!   "DELETED"|"BOOKMARK"|"ERROR","object":...}`. A watch from a compacted version gets
//!   an ERROR event with a `Status` of code 410 (Gone) and the stream ends, as the API
//!   server does; bookmarks carry only `metadata.resourceVersion`.
//! * `PATCH /api/v1/nodes/NAME` with `application/merge-patch+json` (RFC 7386); 403
//!   Forbidden with the API server's Status text when [`KubeApi::forbid_node_patch`].
//! * Faults: [`KubeApi::drop_watches`] cuts every open watch mid-stream (no final
//!   chunk); [`KubeApi::expire`] compacts the history and ends open watches with
//!   `410 Gone`, forcing a re-list.
//!
//! Each object gets `metadata.resourceVersion` (one counter for all kinds, like etcd's
//! revision), `uid` and `creationTimestamp`; a Namespace gets the
//! `kubernetes.io/metadata.name` label the API server adds. Every request line is
//! recorded ([`KubeApi::requests`]) so tests can assert what the client asked for.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The four kinds served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Node,
    Pod,
    Namespace,
    NetworkPolicy,
}

impl Kind {
    fn from_path(path: &str) -> Option<(Kind, Option<String>)> {
        let (kind, rest) = if let Some(r) = path.strip_prefix("/api/v1/nodes") {
            (Kind::Node, r)
        } else if let Some(r) = path.strip_prefix("/api/v1/pods") {
            (Kind::Pod, r)
        } else if let Some(r) = path.strip_prefix("/api/v1/namespaces") {
            (Kind::Namespace, r)
        } else if let Some(r) = path.strip_prefix("/apis/networking.k8s.io/v1/networkpolicies") {
            (Kind::NetworkPolicy, r)
        } else {
            return None;
        };
        match rest {
            "" => Some((kind, None)),
            r => r.strip_prefix('/').map(|n| (kind, Some(n.to_string()))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    fn of(obj: &Value) -> Option<Kind> {
        match obj.get("kind")?.as_str()? {
            "Node" => Some(Kind::Node),
            "Pod" => Some(Kind::Pod),
            "Namespace" => Some(Kind::Namespace),
            "NetworkPolicy" => Some(Kind::NetworkPolicy),
            _ => None,
        }
    }
}

type Key = (Kind, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, kind, event type, object).
    history: Vec<(u64, Kind, &'static str, Value)>,
    /// Watches from at or below this version are 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch (cut, or with 410).
    cut: u64,
    cut_with_gone: bool,
    forbid_patch: bool,
    /// Open watches send nothing (changes made meanwhile are only in the history).
    paused: bool,
    requests: Vec<String>,
    uid: u64,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The server (module doc). Dropping it stops it.
pub struct KubeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

fn key_of(kind: Kind, obj: &Value) -> Key {
    let m = &obj["metadata"];
    let ns = match kind {
        Kind::Pod | Kind::NetworkPolicy => m["namespace"].as_str().unwrap_or("default"),
        _ => "",
    };
    (
        kind,
        ns.to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

impl KubeApi {
    /// Listen on 127.0.0.1 (a free port) and serve until dropped.
    pub fn start() -> KubeApi {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Listen on `ip` (an address of a namespace the test made, e.g. an underlay
    /// bridge the node namespaces reach), a free port.
    pub fn start_on(ip: std::net::Ipv4Addr) -> KubeApi {
        let listener = TcpListener::bind((ip, 0)).expect("bind the test API server");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv: 100,
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let i = inner.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if i.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let i = i.clone();
                std::thread::spawn(move || serve(&i, conn));
            }
        });
        KubeApi {
            addr,
            inner,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (no TLS, no credentials) pointing at this server, written in `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn commit(&self, st: &mut State, kind: Kind, ty: &'static str, obj: Value) {
        st.history.push((st.rv, kind, ty, obj));
        self.inner.changed.notify_all();
    }

    /// Create or replace an object (ADDED / MODIFIED); returns it as stored.
    pub fn apply(&self, mut obj: Value) -> Value {
        let kind = Kind::of(&obj).expect("object with a served kind");
        let mut st = self.inner.lock();
        let key = key_of(kind, &obj);
        st.rv += 1;
        let rv = st.rv;
        let existing = st.objects.get(&key).cloned();
        {
            let m = obj["metadata"].as_object_mut().expect("metadata");
            m.insert("resourceVersion".into(), rv.to_string().into());
            if matches!(kind, Kind::Pod | Kind::NetworkPolicy) && !m.contains_key("namespace") {
                m.insert("namespace".into(), "default".into());
            }
            let uid = match existing
                .as_ref()
                .and_then(|e| e["metadata"]["uid"].as_str())
            {
                Some(u) => u.to_string(),
                None => {
                    st.uid += 1;
                    format!("00000000-0000-4000-8000-{:012}", st.uid)
                }
            };
            m.insert("uid".into(), uid.into());
            m.entry("creationTimestamp")
                .or_insert("2026-01-01T00:00:00Z".into());
            if kind == Kind::Namespace {
                let name = key.2.clone();
                let labels = m.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = name.into();
            }
        }
        st.objects.insert(key, obj.clone());
        let ty = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.commit(&mut st, kind, ty, obj.clone());
        obj
    }

    /// Delete an object (DELETED); false if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut st = self.inner.lock();
        let Some(mut obj) = st.objects.remove(&(kind, namespace.into(), name.into())) else {
            return false;
        };
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
        self.commit(&mut st, kind, "DELETED", obj);
        true
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .objects
            .get(&(kind, namespace.into(), name.into()))
            .cloned()
    }

    /// Change an object in place (MODIFIED).
    pub fn modify(&self, kind: Kind, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.get(kind, namespace, name).expect("object to modify");
        f(&mut obj);
        self.apply(obj);
    }

    /// Cut every open watch mid-stream (the TCP connection closes without the final
    /// chunk), as a broken connection or an API server restart does.
    pub fn drop_watches(&self) {
        let mut st = self.inner.lock();
        st.cut += 1;
        st.cut_with_gone = false;
        self.inner.changed.notify_all();
    }

    /// Compact the history: open watches end with an ERROR 410 Gone event, and a watch
    /// from any version so far is 410 Gone, so the client must list again.
    pub fn expire(&self) {
        let mut st = self.inner.lock();
        st.compacted = st.rv;
        st.history.clear();
        st.cut += 1;
        st.cut_with_gone = true;
        self.inner.changed.notify_all();
    }

    /// Hold every open watch: changes made while paused reach a watch only after
    /// [`resume_watches`](Self::resume_watches) — or never, if [`expire`](Self::expire)
    /// compacts them away first (the client must re-list to learn of them).
    pub fn pause_watches(&self) {
        self.inner.lock().paused = true;
    }

    pub fn resume_watches(&self) {
        self.inner.lock().paused = false;
        self.inner.changed.notify_all();
    }

    /// Make `PATCH` of Nodes answer 403 Forbidden (RBAC without `patch` on nodes).
    pub fn forbid_node_patch(&self, forbid: bool) {
        self.inner.lock().forbid_patch = forbid;
    }

    /// The request lines received so far (`GET /api/v1/pods?watch=true&...`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().requests.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(conn: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    let reason = match code {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Bad Request",
    };
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

fn chunk(conn: &mut TcpStream, v: &Value) -> std::io::Result<()> {
    let line = format!("{v}\n");
    write!(conn, "{:x}\r\n{line}\r\n", line.len())?;
    conn.flush()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One connection: requests until it closes (keep-alive), a watch until it ends.
fn serve(inner: &Arc<Inner>, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut conn = conn;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < body.len() && Instant::now() < deadline {
            match reader.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        inner.lock().requests.push(line.clone());
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        let q = query(q);
        let Some((kind, name)) = Kind::from_path(path) else {
            let _ = respond(
                &mut conn,
                404,
                &status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            );
            continue;
        };
        let r = match (method, name) {
            ("GET", None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                watch(inner, &mut conn, kind, &q);
                return;
            }
            ("GET", None) => list(inner, &mut conn, kind, &q),
            ("PATCH", Some(name)) if kind == Kind::Node => patch(inner, &mut conn, &name, &body),
            _ => respond(
                &mut conn,
                405,
                &status(405, "MethodNotAllowed", "not served by the test API"),
            ),
        };
        if r.is_err() {
            return;
        }
    }
}

fn list(
    inner: &Inner,
    conn: &mut TcpStream,
    kind: Kind,
    q: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let st = inner.lock();
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if from != 0
        && q.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
        && from <= st.compacted
    {
        let s = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({})", st.compacted + 1),
        );
        drop(st);
        return respond(conn, 410, &s);
    }
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((k, _, _), _)| *k == kind)
        .map(|(_, o)| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let body = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    drop(st);
    respond(conn, 200, &body)
}

fn watch(inner: &Inner, conn: &mut TcpStream, kind: Kind, q: &BTreeMap<String, String>) {
    let mut from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let end = Instant::now() + timeout;
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut st = inner.lock();
    if from == 0 {
        from = st.rv;
    }
    if from < st.compacted {
        let s = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({})", st.compacted + 1),
        );
        drop(st);
        let _ = chunk(conn, &json!({"type": "ERROR", "object": s}));
        let _ = conn.write_all(b"0\r\n\r\n");
        return;
    }
    let cut = st.cut;
    let mut last_bookmark = Instant::now();
    loop {
        if inner.stop.load(Ordering::SeqCst) || Instant::now() >= end {
            drop(st);
            let _ = conn.write_all(b"0\r\n\r\n");
            return;
        }
        if st.cut != cut {
            let gone = st.cut_with_gone;
            let compacted = st.compacted;
            drop(st);
            if gone {
                let s = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {from} ({})", compacted + 1),
                );
                let _ = chunk(conn, &json!({"type": "ERROR", "object": s}));
                let _ = conn.write_all(b"0\r\n\r\n");
            }
            // Cut: close without the final chunk.
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        let paused = st.paused;
        let events: Vec<(u64, &'static str, Value)> = st
            .history
            .iter()
            .filter(|(rv, k, _, _)| !paused && *rv > from && *k == kind)
            .map(|(rv, _, ty, o)| (*rv, *ty, o.clone()))
            .collect();
        let now_rv = st.rv;
        drop(st);
        for (rv, ty, o) in events {
            if chunk(conn, &json!({"type": ty, "object": o})).is_err() {
                return;
            }
            from = rv;
        }
        if !paused
            && bookmarks
            && last_bookmark.elapsed() >= Duration::from_millis(500)
            && now_rv > from
        {
            let bm = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(),
                            "metadata": {"resourceVersion": now_rv.to_string()}}});
            if chunk(conn, &bm).is_err() {
                return;
            }
            from = now_rv;
            last_bookmark = Instant::now();
        }
        st = inner.lock();
        if (st.paused
            || st
                .history
                .iter()
                .all(|(rv, k, _, _)| *rv <= from || *k != kind))
            && st.cut == cut
        {
            st = inner
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

fn patch(inner: &Inner, conn: &mut TcpStream, name: &str, body: &[u8]) -> std::io::Result<()> {
    let mut st = inner.lock();
    if st.forbid_patch {
        let s = status(403, "Forbidden", &format!(
            "nodes \"{name}\" is forbidden: User \"system:serviceaccount:kube-system:xsknet\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        ));
        drop(st);
        return respond(conn, 403, &s);
    }
    let key = (Kind::Node, String::new(), name.to_string());
    let Some(mut obj) = st.objects.get(&key).cloned() else {
        drop(st);
        return respond(
            conn,
            404,
            &status(404, "NotFound", &format!("nodes \"{name}\" not found")),
        );
    };
    let Ok(p) = serde_json::from_slice::<Value>(body) else {
        drop(st);
        return respond(conn, 400, &status(400, "BadRequest", "invalid JSON patch"));
    };
    merge_patch(&mut obj, &p);
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
    st.objects.insert(key, obj.clone());
    let rv = st.rv;
    st.history.push((rv, Kind::Node, "MODIFIED", obj.clone()));
    inner.changed.notify_all();
    drop(st);
    respond(conn, 200, &obj)
}

/// Objects as the Kubernetes API reference shows them.
pub mod objects {
    use serde_json::{json, Value};

    /// A Node with `spec.podCIDR` and an InternalIP.
    pub fn node(name: &str, pod_cidr: &str, internal_ip: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
               "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
               "status": {"addresses": [{"type": "InternalIP", "address": internal_ip},
                                        {"type": "Hostname", "address": name}],
                          "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    /// A running Pod on `node` with `labels`, `ip` (None: not yet assigned) and named
    /// container ports `(name, port)`.
    pub fn pod(
        ns: &str,
        name: &str,
        node: &str,
        labels: Value,
        ip: Option<&str>,
        ports: &[(&str, u16)],
    ) -> Value {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
            .collect();
        let mut status = json!({"phase": "Pending", "hostIP": "192.168.1.1"});
        if let Some(ip) = ip {
            status = json!({"phase": "Running", "hostIP": "192.168.1.1", "podIP": ip, "podIPs": [{"ip": ip}]});
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels},
               "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27", "ports": ports}]},
               "status": status})
    }

    pub fn namespace(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    }

    /// A NetworkPolicy with `spec` as given.
    pub fn policy(ns: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }
}
