//! The policy compiler thread: compiles the policy input (the store and which pod is
//! which port) into a [`PolicySnapshot`] off the control thread, so a CNI ADD or DEL
//! never waits for a compile (issue 12).
//!
//! Contract: the control thread [`submit`](PolicyCompiler::submit)s a
//! [`CompileInput`] numbered with its policy generation (strictly increasing); the
//! thread compiles the newest input it has and sends a [`Compiled`] back on a channel;
//! the control thread takes it with [`latest`](PolicyCompiler::latest) and publishes it
//! through the ordinary table publication. **Coalescing**: there is one slot for the
//! next input; an input submitted while another waits in the slot replaces it (counted
//! in `coalesced`), so a burst of changes during a compile costs one more compile, of
//! the newest input, never a queue. Results therefore arrive in increasing generation
//! order, and the last submitted generation is always compiled eventually. A compile
//! that panics is caught and reported as [`Compiled::result`] `Err` (the control
//! thread keeps what is in force); the thread goes on with the next input. Dropping
//! the [`PolicyCompiler`] stops and joins the thread. Nothing here touches the packet
//! path; the slot's mutex is shared by the control thread and this thread only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::policy::compile::{compile, PodView};
use crate::policy::store::PolicyStore;
use crate::policy::PolicySnapshot;
use crate::tables::PortId;

/// What one compile works on: the policy generation it stands for, the store (shared,
/// copy-on-write with the control thread) and each live pod's port.
#[derive(Clone, Debug)]
pub struct CompileInput {
    pub generation: u64,
    pub store: Arc<PolicyStore>,
    pub ports: BTreeMap<(String, String), PortId>,
    /// Other nodes' pods (datastore mode): peers only, never selected here.
    pub remote: Arc<Vec<PodView>>,
}

/// A compiled snapshot and the pod addresses it was compiled with (a later pod with one
/// of these addresses may be named in other pods' rules: see `PolicyService`).
#[derive(Debug, Default)]
pub struct CompiledPolicy {
    pub snap: PolicySnapshot,
    pub pod_ips: BTreeSet<Ipv4Addr>,
}

/// The outcome of one compile.
#[derive(Debug)]
pub struct Compiled {
    pub generation: u64,
    /// `Err`: the compiler failed (a bug: it panicked); its message.
    pub result: Result<CompiledPolicy, String>,
    pub took: Duration,
}

/// The compile the daemon runs: the store's live endpoints (named ports refreshed from
/// YAML pods of the same name) as peers, each with its port.
pub fn compile_input(input: &CompileInput) -> CompiledPolicy {
    let store = &input.store;
    let mut views: Vec<PodView> = store.endpoint_views();
    // Named ports of YAML pods may have changed since the endpoint was recorded.
    for v in &mut views {
        if let Some(p) = store
            .pods()
            .find(|p| p.metadata.namespace == v.namespace && p.metadata.name == v.name)
        {
            v.ports = p.named_ports();
        }
    }
    // Other nodes' pods: peers only. None shares a name with a local endpoint (filtered
    // here), so none finds a port below.
    views.extend(
        input
            .remote
            .iter()
            .filter(|r| store.endpoint(&r.namespace, &r.name).is_none())
            .cloned(),
    );
    let snap = compile(store, &views, |v| {
        input
            .ports
            .get(&(v.namespace.clone(), v.name.clone()))
            .copied()
    });
    CompiledPolicy {
        snap,
        pod_ips: views.iter().map(|v| v.ip).collect(),
    }
}

#[derive(Debug, Default)]
struct Slot {
    next: Option<CompileInput>,
    /// The generation being compiled now.
    busy: Option<u64>,
    coalesced: u64,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock cannot leave the slot inconsistent (plain
        // assignments), so a poisoned lock is used as is.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type CompileFn = dyn Fn(&CompileInput) -> CompiledPolicy + Send + 'static;

/// The compiler thread, as the control thread drives it. See the module doc.
#[derive(Debug)]
pub struct PolicyCompiler {
    shared: Arc<Shared>,
    results: Receiver<Compiled>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyCompiler {
    /// Start the thread with the daemon's compile ([`compile_input`]).
    pub fn spawn() -> std::io::Result<PolicyCompiler> {
        Self::spawn_with(compile_input)
    }

    /// Start the thread with `f` as the compile (tests give a controllable one).
    pub fn spawn_with(
        f: impl Fn(&CompileInput) -> CompiledPolicy + Send + 'static,
    ) -> std::io::Result<PolicyCompiler> {
        let shared = Arc::new(Shared::default());
        let (tx, results) = mpsc::channel();
        let s = Arc::clone(&shared);
        let f: Box<CompileFn> = Box::new(f);
        let thread = std::thread::Builder::new()
            .name("xsknet-policy".into())
            .spawn(move || run(&s, &*f, &tx))?;
        Ok(PolicyCompiler {
            shared,
            results,
            thread: Some(thread),
        })
    }

    /// Hand the thread `input` to compile next; an input still waiting is replaced
    /// (coalesced). Returns whether one was.
    pub fn submit(&self, input: CompileInput) -> bool {
        let mut slot = self.shared.lock();
        let replaced = slot.next.replace(input).is_some();
        if replaced {
            slot.coalesced += 1;
        }
        drop(slot);
        self.shared.wake.notify_one();
        replaced
    }

    /// The newest result that arrived since the last call (older ones are dropped:
    /// the newest supersedes them), without waiting.
    pub fn latest(&self) -> Option<Compiled> {
        let mut last = None;
        while let Ok(c) = self.results.try_recv() {
            last = Some(c);
        }
        last
    }

    /// Wait up to `timeout` for the result of `generation` (or a newer one); results
    /// of older generations that arrive meanwhile are dropped.
    pub fn wait_for(&self, generation: u64, timeout: Duration) -> Option<Compiled> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok(c) if c.generation >= generation => {
                    // A newer one may already be queued behind it.
                    return Some(self.latest().unwrap_or(c));
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The generation being compiled now, if any.
    pub fn compiling(&self) -> Option<u64> {
        self.shared.lock().busy
    }

    /// Inputs replaced by a newer one before their compile started.
    pub fn coalesced(&self) -> u64 {
        self.shared.lock().coalesced
    }
}

impl Drop for PolicyCompiler {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // A compile in progress finishes first (bounded by the store's size).
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, f: &CompileFn, results: &Sender<Compiled>) {
    loop {
        let input = {
            let mut slot = shared.lock();
            slot.busy = None;
            loop {
                if slot.stop {
                    return;
                }
                if let Some(i) = slot.next.take() {
                    slot.busy = Some(i.generation);
                    break i;
                }
                slot = shared.wake.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        };
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| f(&input))).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the compiler panicked".to_string())
        });
        let took = t.elapsed();
        let done = Compiled {
            generation: input.generation,
            result,
            took,
        };
        // The input (and its store) is released here, before the control thread
        // mutates the store again, so the next copy-on-write finds it unshared.
        drop(input);
        if results.send(done).is_err() {
            return; // the control side is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn input(generation: u64) -> CompileInput {
        CompileInput {
            generation,
            store: Arc::new(PolicyStore::new()),
            ports: BTreeMap::new(),
            remote: Arc::default(),
        }
    }

    /// A compile that blocks until the test lets it go, and records what it compiled.
    struct Gate {
        go: Mutex<mpsc::Receiver<()>>,
        compiled: Mutex<Vec<u64>>,
        started: AtomicU64,
    }

    fn gated() -> (PolicyCompiler, Arc<Gate>, mpsc::Sender<()>) {
        let (go_tx, go_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            go: Mutex::new(go_rx),
            compiled: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
        });
        let g = Arc::clone(&gate);
        let c = PolicyCompiler::spawn_with(move |i| {
            g.started.store(i.generation, Ordering::SeqCst);
            g.go.lock().unwrap().recv().unwrap();
            if i.generation == 13 {
                panic!("generation 13 is unlucky");
            }
            g.compiled.lock().unwrap().push(i.generation);
            CompiledPolicy::default()
        })
        .unwrap();
        (c, gate, go_tx)
    }

    fn wait_started(gate: &Gate, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.started.load(Ordering::SeqCst) != generation {
            assert!(
                Instant::now() < deadline,
                "compile of {generation} never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_burst_during_a_compile_is_compiled_once_at_its_newest() {
        let (c, gate, go) = gated();
        assert!(!c.submit(input(1)));
        wait_started(&gate, 1);
        assert_eq!(c.compiling(), Some(1));
        // Three more while 1 compiles: 2 and 3 are folded into 4.
        assert!(!c.submit(input(2)));
        assert!(c.submit(input(3)));
        assert!(c.submit(input(4)));
        assert_eq!(c.coalesced(), 2);
        assert!(c.latest().is_none(), "nothing finished yet");
        go.send(()).unwrap();
        wait_started(&gate, 4);
        go.send(()).unwrap();
        let done = c.wait_for(4, Duration::from_secs(10)).expect("4 compiled");
        assert_eq!(done.generation, 4);
        assert!(done.result.is_ok());
        assert_eq!(*gate.compiled.lock().unwrap(), vec![1, 4]);
        assert!(c.latest().is_none(), "1 was dropped as superseded");
    }

    #[test]
    fn latest_returns_the_newest_result_and_wait_skips_older_ones() {
        let (c, gate, go) = gated();
        for g in 1..=3 {
            c.submit(input(g));
            wait_started(&gate, g);
            go.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while gate.compiled.lock().unwrap().len() < g as usize {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // 1, 2, 3 are all queued on the channel: only 3 counts.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.latest().map(|d| d.generation), Some(3));
        c.submit(input(4));
        c.submit(input(5));
        go.send(()).unwrap();
        go.send(()).unwrap();
        let d = c.wait_for(5, Duration::from_secs(10)).expect("5 compiled");
        assert_eq!(d.generation, 5);
        assert!(c.wait_for(6, Duration::from_millis(50)).is_none());
    }

    #[test]
    fn a_panicking_compile_is_reported_and_the_thread_goes_on() {
        let (c, gate, go) = gated();
        c.submit(input(13));
        go.send(()).unwrap();
        let d = c.wait_for(13, Duration::from_secs(10)).expect("a result");
        let e = d.result.expect_err("the panic is an error");
        assert!(e.contains("unlucky"), "{e}");
        c.submit(input(14));
        wait_started(&gate, 14);
        go.send(()).unwrap();
        let d = c
            .wait_for(14, Duration::from_secs(10))
            .expect("14 compiled");
        assert!(d.result.is_ok());
    }

    #[test]
    fn the_real_compile_maps_pods_to_ports() {
        let mut store = PolicyStore::new();
        store
            .apply_yaml(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: ns}\nspec: {podSelector: {}}\n",
            )
            .unwrap();
        store
            .upsert_endpoint(PodView {
                namespace: "ns".into(),
                name: "a".into(),
                labels: BTreeMap::new(),
                ip: Ipv4Addr::new(10, 0, 0, 2),
                ports: Vec::new(),
            })
            .unwrap();
        let c = PolicyCompiler::spawn().unwrap();
        c.submit(CompileInput {
            generation: 1,
            store: Arc::new(store),
            ports: BTreeMap::from([(("ns".into(), "a".into()), 5)]),
            remote: Arc::default(),
        });
        let d = c.wait_for(1, Duration::from_secs(10)).unwrap();
        let p = d.result.unwrap();
        assert!(p.snap.port(5).is_some_and(|p| p.ingress.is_some()));
        assert_eq!(
            p.pod_ips.into_iter().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
    }
}
