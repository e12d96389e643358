//! Test fixtures for the cluster view: a real etcd (Debian `etcd-server`, binary `etcd`)
//! on 127.0.0.1 with free ports in a temp data dir, a cluster of one or three members
//! on addresses a testbed gives ([`EtcdCluster`]: members stopped, started and
//! restarted one by one or all together), and a TCP proxy a test can cut to partition
//! one client from it.
//!
//! [`Etcd`] and [`EtcdCluster`] kill exactly the processes they started (by their
//! `Child`, never by name) and remove their data dirs on drop, also when the test
//! panics. Without the binary the
//! tests skip with a visible message, unless `XSKNET_REQUIRE_PRIVILEGED` is set (the
//! README's full test command), when they fail.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Whether the etcd binary is there; skips (or fails under XSKNET_REQUIRE_PRIVILEGED).
pub fn etcd_available() -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var_os("XSKNET_REQUIRE_PRIVILEGED").is_some() {
            panic!("the etcd tests need the etcd binary (Debian etcd-server; scripts/setup.sh)");
        }
        eprintln!("SKIP: etcd test needs the etcd binary (Debian etcd-server)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// One etcd member of its own cluster.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Also listen for clients on this address (a testbed's underlay bridge, so nodes in
    /// network namespaces reach it).
    also_on: Option<std::net::Ipv4Addr>,
}

impl Etcd {
    /// Start etcd and wait until it is healthy; `None` when the binary is missing.
    pub fn start() -> Option<Etcd> {
        Self::start_with(None)
    }

    /// [`start`](Self::start), listening for clients on `addr` too (same port): for
    /// daemons in network namespaces that reach the root namespace through `addr`.
    pub fn start_on(addr: std::net::Ipv4Addr) -> Option<Etcd> {
        Self::start_with(Some(addr))
    }

    fn start_with(also_on: Option<std::net::Ipv4Addr>) -> Option<Etcd> {
        if !etcd_available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("xsknet-etcd")
            .tempdir()
            .expect("temp dir");
        let mut e = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            also_on,
        };
        e.spawn();
        Some(e)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://ADDR:PORT` for the address given to [`start_on`](Self::start_on), else
    /// [`url`](Self::url).
    pub fn url_on(&self) -> String {
        match self.also_on {
            Some(a) => format!("http://{a}:{}", self.client_port),
            None => self.url(),
        }
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    fn spawn(&mut self) {
        let client = self.url();
        let listen = match self.also_on {
            Some(_) => format!("{client},{}", self.url_on()),
            None => client.clone(),
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={listen}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited with {status}: {}", self.log());
            }
            if health(self.client_port) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd not healthy after 30 s: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kill it (SIGKILL: no goodbye to the clients); the data dir stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        // `dir` (a TempDir) removes the data dir after this.
    }
}

fn health(port: u16) -> bool {
    health_at(std::net::Ipv4Addr::LOCALHOST, port)
}

/// etcd's `/health` on `addr:port` says `"health":"true"` (the member is up and its
/// cluster has a leader).
fn health_at(addr: std::net::Ipv4Addr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    addr: std::net::Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://{}:{}", self.addr, self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.addr, self.peer_port)
    }
}

/// An etcd cluster of one or more members, each on its own address (e.g. addresses of
/// a testbed's underlay bridge, so nodes in network namespaces reach every member) with
/// its own client and peer ports and data dir. Members can be killed and started again
/// on the same data, one at a time (quorum kept with three) or all at once (etcd down).
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Start one member per address, wait until every one is healthy; `None` when the
    /// binary is missing. The addresses must already be assigned to an interface of the
    /// test's namespace.
    pub fn start(addrs: &[std::net::Ipv4Addr]) -> Option<EtcdCluster> {
        assert!(!addrs.is_empty(), "an etcd cluster needs a member");
        if !etcd_available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("xsknet-etcdc")
            .tempdir()
            .expect("temp dir");
        // Every listener held until all ports are picked, so no two are the same.
        let mut held = Vec::new();
        let mut port_on = |addr| {
            let l = TcpListener::bind((addr, 0)).expect("bind an ephemeral port");
            let port = l.local_addr().expect("local addr").port();
            held.push(l);
            port
        };
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| Member {
                name: format!("m{i}"),
                addr,
                client_port: port_on(addr),
                peer_port: port_on(addr),
                child: None,
            })
            .collect();
        drop(held);
        let mut c = EtcdCluster { dir, members };
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        for i in 0..c.members.len() {
            c.wait_healthy(i);
        }
        Some(c)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client URLs of every member, `http://ADDR:PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// Member `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn spawn(&mut self, i: usize) {
        let cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("etcd log file");
        let m = &mut self.members[i];
        // The initial-* flags only matter the first time: on a restart the member
        // rejoins from its data dir.
        let child = Command::new("etcd")
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={}", m.client_url()))
            .arg(format!("--advertise-client-urls={}", m.client_url()))
            .arg(format!("--listen-peer-urls={}", m.peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", m.peer_url()))
            .arg(format!("--initial-cluster={cluster}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=xsknet-test")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd member");
        m.child = Some(child);
    }

    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let m = &mut self.members[i];
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                m.child = None;
                panic!("etcd member {i} exited with {status}: {}", self.log(i));
            }
            if health_at(m.addr, m.client_port) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd member {i} not healthy after 30 s: {}", self.log(i));
    }

    /// Whether member `i` runs and says its cluster is healthy.
    pub fn healthy(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.child.is_some() && health_at(m.addr, m.client_port)
    }

    /// SIGKILL member `i` (no goodbye); its data dir stays.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data and wait until it is healthy.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} runs");
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Kill member `i` and start it again.
    pub fn restart_member(&mut self, i: usize) {
        self.kill_member(i);
        self.start_member(i);
    }

    /// Kill every member: the datastore is down.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Start every stopped member and wait until all are healthy.
    pub fn start_all(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_healthy(i);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A TCP proxy in front of etcd: `cut` closes every connection through it and refuses
/// new ones (a partition between one client and etcd) until `restore`.
pub struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, cs) = (cut.clone(), stop.clone(), conns.clone());
        let accept = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let pipes = (
                    down.try_clone(),
                    up.try_clone(),
                    down.try_clone(),
                    up.try_clone(),
                );
                let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) = pipes else {
                    continue;
                };
                if let Ok(mut all) = cs.lock() {
                    all.push(d3);
                    all.push(u3);
                }
                thread::spawn(move || pipe(down, up));
                thread::spawn(move || pipe(u2, d2));
            }
        });
        Proxy {
            port,
            cut,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        if let Ok(mut all) = self.conns.lock() {
            for s in all.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn three_members_keep_quorum_through_one_restart_and_come_back_from_all_down() {
        let a = Ipv4Addr::LOCALHOST;
        let Some(mut c) = EtcdCluster::start(&[a, a, a]) else {
            return;
        };
        assert_eq!(c.endpoints().len(), 3);
        assert!((0..3).all(|i| c.healthy(i)));
        c.kill_member(0);
        assert!(!c.healthy(0));
        // Two of three: still a cluster, with a leader again once an election ran (if
        // member 0 led).
        crate::wait_until("quorum of two healthy", Duration::from_secs(15), || {
            c.healthy(1) && c.healthy(2)
        });
        c.start_member(0);
        assert!((0..3).all(|i| c.healthy(i)));
        c.kill_all();
        assert!((0..3).all(|i| !c.healthy(i)));
        c.start_all();
        assert!((0..3).all(|i| c.healthy(i)), "{}", c.log(0));
    }
}
