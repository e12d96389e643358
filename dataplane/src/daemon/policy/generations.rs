//! Policy generations and what is published while one compiles: every change of the
//! policy input gets the next generation ([`PolicyService::request_compile`], the one
//! entry point for "the policy input changed"), the compiler thread ([`super::worker`])
//! compiles the newest, [`PolicyService::take_compiled`] installs a result for the
//! daemon to publish. Ports attached since the snapshot in force was compiled are
//! published *held* or *open* until a generation that includes them is in force (the
//! rule is in the parent module's doc); `status` reads [`PolicyService::compile_status`].
//! Nothing here waits for a compile but [`PolicyService::compile_now`] (start, tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::control::proto::{Endpoint, PolicyApplied, PolicyStatus};
use crate::pipeline::policy::PolicyHits;
use crate::policy::store::ApplySummary;
use crate::policy::{Classifier, PolicySnapshot, PortPolicy};
use crate::tables::PortId;

use super::worker::{CompileInput, Compiled};
use super::{PolicyService, Retired};

/// Where a policy change stands when it is answered: the table generation the
/// workers run, the policy generation carrying the change, whether that is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeGeneration {
    pub tables: u64,
    pub policy: u64,
    pub in_force: bool,
}

/// The applied summary as the protocol reports it.
pub fn applied(s: ApplySummary, g: ChangeGeneration) -> PolicyApplied {
    PolicyApplied {
        created: s.created,
        configured: s.configured,
        unchanged: s.unchanged,
        deleted: Vec::new(),
        generation: g.tables,
        policy_generation: g.policy,
        in_force: g.in_force,
    }
}

/// How a port attached after the snapshot in force was compiled is published until a
/// generation that includes it is in force (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Override {
    /// Isolated both ways, nothing allowed.
    Held,
    /// Not isolated.
    Open,
}

/// Compile bookkeeping for `status`.
#[derive(Debug, Default)]
pub(super) struct CompileStats {
    compiles: u64,
    last: Duration,
    max: Duration,
    errors: u64,
    last_error: Option<String>,
}

impl PolicyService {
    /// **The entry point for "the policy input changed"**: number the current store
    /// with each live pod's port (`ports`) as the next policy generation and hand it to
    /// the compiler thread (a burst is compiled once, at its newest). Returns the
    /// generation; it is in force once [`in_force`](Self::in_force) reaches it. Never
    /// waits for a compile.
    pub fn request_compile(&mut self, ports: &BTreeMap<(String, String), PortId>) -> u64 {
        self.requested += 1;
        self.compiler.submit(CompileInput {
            generation: self.requested,
            store: Arc::clone(&self.store),
            ports: ports.clone(),
            remote: Arc::clone(&self.remote),
        });
        self.requested
    }

    /// The newest policy generation asked for.
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// The newest policy generation whose snapshot is published (once the daemon has
    /// published what [`take_compiled`](Self::take_compiled) installed).
    pub fn in_force(&self) -> u64 {
        self.in_force
    }

    /// A pod is attached on `port` (its identity, if any, already in the store) and
    /// will be in the compile of `generation`: publish it held or open until then (see
    /// the module doc). Returns whether it is held.
    pub fn attach_port(&mut self, port: PortId, ep: &Endpoint, generation: u64) -> bool {
        let selected = match (&ep.namespace, &ep.name) {
            (Some(ns), Some(_)) => self
                .store
                .policies()
                .any(|p| p.metadata.namespace == *ns && p.spec.pod_selector.matches(&ep.labels)),
            _ => false,
        };
        let held = selected || self.compiled_ips.contains(&ep.ip);
        let how = if held { Override::Held } else { Override::Open };
        self.overrides.insert(port, (how, generation));
        self.rebuild_snapshot();
        held
    }

    /// The pod on `port` is gone (detached or its attach undone).
    pub fn detach_port(&mut self, port: PortId) {
        if self.overrides.remove(&port).is_some() {
            self.rebuild_snapshot();
        }
    }

    /// Ports held isolated until their generation is in force.
    pub fn held_ports(&self) -> usize {
        self.overrides
            .values()
            .filter(|(how, _)| *how == Override::Held)
            .count()
    }

    /// Install the newest compiled snapshot, if one arrived: the next publish carries
    /// it (with fresh counters) and the overrides it covers are dropped. Returns the
    /// snapshot the workers run on now, to [`fold`](Self::fold) once they have moved
    /// on. A failed compile installs nothing (what is in force stays) and is counted.
    pub fn take_compiled(&mut self) -> Option<Retired> {
        let done = self.compiler.latest()?;
        self.install(done)
    }

    /// Ask for a compile of the current input and wait up to `timeout` for it, then
    /// install it (start, before the daemon serves; tests).
    pub fn compile_now(
        &mut self,
        ports: &BTreeMap<(String, String), PortId>,
        timeout: Duration,
    ) -> Option<Retired> {
        let g = self.request_compile(ports);
        let done = self.compiler.wait_for(g, timeout)?;
        self.install(done)
    }

    fn install(&mut self, done: Compiled) -> Option<Retired> {
        let took_ms = done.took.as_millis() as u64;
        let compiled = match done.result {
            Ok(c) => c,
            Err(e) => {
                self.stats.errors += 1;
                let msg = format!("policy generation {}: {e}", done.generation);
                tracing::error!(error = %msg, "policy compile failed; the policy in force stays");
                self.stats.last_error = Some(msg);
                return None;
            }
        };
        if done.generation <= self.in_force {
            return None;
        }
        self.stats.compiles += 1;
        self.stats.last = done.took;
        self.stats.max = self.stats.max.max(done.took);
        tracing::info!(
            generation = done.generation,
            requested = self.requested,
            policies = compiled.snap.policies.len(),
            elapsed_ms = took_ms,
            "policy compiled"
        );
        self.in_force = done.generation;
        self.compiled_ips = compiled.pod_ips;
        let n = compiled.snap.policies.len();
        self.compiled = Arc::new(compiled.snap);
        let in_force = self.in_force;
        self.overrides.retain(|_, (_, g)| *g > in_force);
        let hits = (0..self.workers).map(|_| PolicyHits::new(n)).collect();
        let old_hits = std::mem::replace(&mut self.hits, hits);
        let old_snap = std::mem::replace(&mut self.snap, Arc::clone(&self.compiled));
        self.rebuild_snapshot();
        Some(Retired {
            snap: old_snap,
            hits: old_hits,
        })
    }

    /// `snap` = the compiled snapshot with the overrides applied.
    fn rebuild_snapshot(&mut self) {
        if self.overrides.is_empty() {
            self.snap = Arc::clone(&self.compiled);
            return;
        }
        let held = Arc::new(PortPolicy {
            ingress: Some(Classifier::build(&[])),
            egress: Some(Classifier::build(&[])),
        });
        let mut ports = self.compiled.ports.clone();
        for (&port, (how, _)) in &self.overrides {
            let i = usize::from(port);
            if ports.len() <= i {
                ports.resize(i + 1, None);
            }
            ports[i] = match how {
                Override::Held => Some(Arc::clone(&held)),
                Override::Open => None,
            };
        }
        self.snap = Arc::new(PolicySnapshot {
            ports,
            policies: self.compiled.policies.clone(),
        });
    }

    /// The `status` view of compilation.
    pub fn compile_status(&self) -> PolicyStatus {
        PolicyStatus {
            requested: self.requested,
            in_force: self.in_force,
            compiling: self.compiler.compiling(),
            pending_endpoints: self.held_ports(),
            compiles: self.stats.compiles,
            coalesced: self.compiler.coalesced(),
            last_compile_ms: self.stats.last.as_millis() as u64,
            max_compile_ms: self.stats.max.as_millis() as u64,
            compile_errors: self.stats.errors,
            last_compile_error: self.stats.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{endpoint, service, DENY_ALL};
    use super::*;
    use std::time::Instant;

    const T: Duration = Duration::from_secs(10);

    /// Poll for compiled results until `generation` is in force.
    fn until_in_force(s: &mut PolicyService, generation: u64) {
        let deadline = Instant::now() + T;
        while s.in_force() < generation {
            assert!(
                Instant::now() < deadline,
                "generation {generation} never compiled"
            );
            if let Some(r) = s.take_compiled() {
                s.fold(r);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn attach(
        s: &mut PolicyService,
        ep: &Endpoint,
        ports: &BTreeMap<(String, String), PortId>,
    ) -> (u64, bool) {
        if let Some(next) = s.with_endpoint(ep).unwrap() {
            s.replace(next);
        }
        let g = s.request_compile(ports);
        (g, s.attach_port(ep.port, ep, g))
    }

    fn denies_everything(p: &PortPolicy) -> bool {
        let none = |c: &Option<Classifier>| {
            c.as_ref()
                .is_some_and(|c| c.lookup(0x0a00_0003, 6, 80).is_none() && c.is_empty())
        };
        none(&p.ingress) && none(&p.egress)
    }

    #[test]
    fn a_pod_attached_before_its_compile_is_held_if_selected_and_open_if_not() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        let r = s.compile_now(&BTreeMap::new(), T).unwrap();
        s.fold(r);
        let g0 = s.in_force();

        let mut a = endpoint("a", [10, 0, 0, 2]);
        a.port = 3;
        let mut b = endpoint("b", [10, 0, 0, 4]);
        b.namespace = Some("other".into());
        b.port = 4;
        let mut ports = BTreeMap::from([(("ns".to_string(), "a".to_string()), 3)]);
        let (ga, held) = attach(&mut s, &a, &ports);
        assert!(held, "deny-all of its namespace selects it");
        assert!(ga > g0);
        ports.insert(("other".into(), "b".into()), 4);
        let (gb, held) = attach(&mut s, &b, &ports);
        assert!(!held, "no policy selects it");
        assert_eq!(s.compile_status().requested, gb);
        // Published now, before the result is taken (only take_compiled installs): a
        // is isolated both ways, b is open.
        assert!(s.in_force() < ga);
        assert!(denies_everything(s.snapshot().port(3).unwrap()));
        assert_eq!(s.compile_status().pending_endpoints, 1);
        assert!(s.snapshot().port(4).is_none());

        until_in_force(&mut s, gb);
        // The compiled policy: ingress isolated (deny-all of ns), egress open.
        let pa = s.snapshot().port(3).expect("a is selected");
        assert!(pa.ingress.is_some() && pa.egress.is_none());
        assert!(s.snapshot().port(4).is_none());
        let st = s.compile_status();
        assert_eq!(
            (st.requested, st.in_force, st.pending_endpoints),
            (gb, gb, 0)
        );
        assert!(st.compiles >= 2 && st.compile_errors == 0, "{st:?}");
    }

    #[test]
    fn an_address_or_slot_of_a_removed_pod_gives_nothing_of_its_policy_away() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        let mut a = endpoint("a", [10, 0, 0, 2]);
        a.port = 3;
        let ports = BTreeMap::from([(("ns".to_string(), "a".to_string()), 3)]);
        let (g, _) = attach(&mut s, &a, &ports);
        until_in_force(&mut s, g);
        assert!(s.snapshot().port(3).is_some());

        // a goes; c, in a namespace no policy covers, gets a's slot and address before
        // the compile without a is in force: other pods' rules may still name the
        // address, so c is held (isolated), not open and not a's policy.
        s.remove_endpoint("ns", "a");
        s.detach_port(3);
        s.request_compile(&BTreeMap::new());
        let mut c = endpoint("c", [10, 0, 0, 2]);
        c.namespace = Some("free".into());
        c.port = 3;
        let ports = BTreeMap::from([(("free".to_string(), "c".to_string()), 3)]);
        let (gc, held) = attach(&mut s, &c, &ports);
        assert!(held, "address of a pod in the policy in force");
        assert!(s.in_force() < gc);
        assert!(denies_everything(s.snapshot().port(3).unwrap()));
        until_in_force(&mut s, gc);
        assert!(
            s.snapshot().port(3).is_none(),
            "compiled: c is not isolated"
        );

        // d, new address, takes c's slot after c's policy was compiled: open at once
        // (the compiled entry of the slot is hidden).
        s.remove_endpoint("free", "c");
        s.detach_port(3);
        let mut d = endpoint("d", [10, 0, 0, 9]);
        d.namespace = Some("free".into());
        d.port = 3;
        let ports = BTreeMap::from([(("free".to_string(), "d".to_string()), 3)]);
        let (_, held) = attach(&mut s, &d, &ports);
        assert!(!held);
        assert!(s.snapshot().port(3).is_none());
    }
}
