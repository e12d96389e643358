//! The worker threads as the control thread holds them: spawning them with their
//! handoff mesh, handing ports to them and taking ports back, waiting until every
//! worker runs on a published table generation, and stopping them.
//!
//! Everything here talks to a worker only through its command channel, its waker and
//! the counters it publishes; a worker that does not answer within [`READY_TIMEOUT`] is
//! reported ([`WorkerError`]), never waited on forever.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use crate::config::WorkerConfig;
use crate::control::proto::{ControlError, ErrorKind};
use crate::pipeline::PortCounters;
use crate::tables::publish::Publisher;
use crate::tables::{PortId, WorkerId};
use crate::worker::{IdlePolicy, Worker, WorkerCmd, WorkerShared};
use crate::xsk::handoff;
use crate::xsk::Port;

/// How long the control thread waits for a worker to pick up tables or let a port go.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker did not do what the control thread asked.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("create worker eventfd: {0}")]
    Eventfd(std::io::Error),
    #[error("spawn worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("worker {0} is gone")]
    Gone(WorkerId),
    #[error("worker {0} did not pick up tables in time")]
    NotReady(WorkerId),
    #[error("worker {worker} did not release port {port} in time")]
    NotReleased { worker: WorkerId, port: PortId },
}

impl From<WorkerError> for ControlError {
    fn from(e: WorkerError) -> Self {
        ControlError::new(ErrorKind::System, e.to_string())
    }
}

/// One worker thread.
#[derive(Debug)]
struct Handle {
    shared: Arc<WorkerShared>,
    cmds: Sender<WorkerCmd>,
    join: Option<JoinHandle<()>>,
}

impl Handle {
    fn running(&self) -> bool {
        self.join.as_ref().is_some_and(|j| !j.is_finished())
    }
}

/// The workers. See the module doc.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
}

impl Workers {
    /// Spawn one worker per entry of `cfg`, all subscribed to `publisher`, with a
    /// handoff ring from every worker to every other one.
    pub fn spawn(
        cfg: &[WorkerConfig],
        publisher: &mut Publisher,
        counters: &Arc<[PortCounters]>,
        idle: IdlePolicy,
    ) -> Result<Workers, WorkerError> {
        let n = cfg.len();
        let shared: Vec<Arc<WorkerShared>> = cfg
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerShared::new(i as WorkerId, w.core).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(WorkerError::Eventfd)?;
        // Handoff mesh: tx[a][b] sends from a to b; rx[b] collects from every a.
        let mut txs: Vec<Vec<Option<handoff::HandoffTx>>> = Vec::with_capacity(n);
        let mut rxs: Vec<Vec<handoff::HandoffRx>> = (0..n).map(|_| Vec::new()).collect();
        for a in 0..n {
            let row = rxs
                .iter_mut()
                .enumerate()
                .map(|(b, rx_of_b)| {
                    (a != b).then(|| {
                        let (tx, rx) = handoff::channel();
                        rx_of_b.push(rx);
                        tx
                    })
                })
                .collect();
            txs.push(row);
        }
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
        };
        for (i, (tx, rx)) in txs.into_iter().zip(rxs).enumerate() {
            let (cmd_tx, cmd_rx) = bounded(1024);
            let w = Worker::new(
                Arc::clone(&shared[i]),
                shared.clone(),
                publisher.subscribe(),
                cmd_rx,
                tx,
                rx,
                Arc::clone(counters),
                idle,
            );
            let join = std::thread::Builder::new()
                .name(format!("xsknet-w{i}"))
                .spawn(move || w.run());
            let join = match join {
                Ok(j) => j,
                Err(e) => {
                    workers.stop();
                    return Err(WorkerError::Spawn(e));
                }
            };
            workers.handles.push(Handle {
                shared: Arc::clone(&shared[i]),
                cmds: cmd_tx,
                join: Some(join),
            });
        }
        Ok(workers)
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// What each worker shares with the control thread (id, core, counters).
    pub fn shared(&self) -> impl Iterator<Item = &WorkerShared> {
        self.handles.iter().map(|h| &*h.shared)
    }

    /// Whether every worker thread is still running.
    pub fn all_running(&self) -> bool {
        self.handles.iter().all(Handle::running)
    }

    /// Whether worker `w` is running.
    pub fn running(&self, w: WorkerId) -> bool {
        self.handles
            .get(usize::from(w))
            .is_some_and(Handle::running)
    }

    /// Workers whose thread has exited.
    pub fn exited(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.handles
            .iter()
            .filter(|h| h.join.as_ref().is_some_and(|j| j.is_finished()))
            .map(|h| h.shared.id)
    }

    /// The table generation worker `w` runs on.
    pub fn generation(&self, w: WorkerId) -> Option<u64> {
        self.handles
            .get(usize::from(w))
            .map(|h| h.shared.counters.generation.load(Relaxed))
    }

    fn send(&self, w: WorkerId, cmd: WorkerCmd) -> Result<(), WorkerError> {
        let h = self
            .handles
            .get(usize::from(w))
            .ok_or(WorkerError::Gone(w))?;
        h.cmds.send(cmd).map_err(|_| WorkerError::Gone(w))?;
        h.shared.waker.wake();
        Ok(())
    }

    /// Hand `port` to worker `w`.
    pub fn add_port(&self, w: WorkerId, port: Port) -> Result<(), WorkerError> {
        self.send(w, WorkerCmd::AddPort(Box::new(port)))
    }

    /// Have worker `w` drop port `id` (closing its socket) and wait until it has.
    pub fn remove_port(&self, w: WorkerId, id: PortId) -> Result<(), WorkerError> {
        let (done_tx, done_rx) = bounded(1);
        self.send(w, WorkerCmd::RemovePort { id, done: done_tx })?;
        done_rx
            .recv_timeout(READY_TIMEOUT)
            .map_err(|_| WorkerError::NotReleased {
                worker: w,
                port: id,
            })
    }

    /// Wake every worker and wait until each runs on generation `gen` or later.
    pub fn wait_generation(&self, gen: u64, timeout: Duration) -> Result<(), WorkerError> {
        for h in &self.handles {
            h.shared.waker.wake();
        }
        let deadline = Instant::now() + timeout;
        for h in &self.handles {
            while h.shared.counters.generation.load(Relaxed) < gen {
                if Instant::now() > deadline {
                    return Err(WorkerError::NotReady(h.shared.id));
                }
                h.shared.waker.wake();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// Ask every worker to stop and join the threads.
    pub fn stop(&mut self) {
        for h in &self.handles {
            let _ = h.cmds.send(WorkerCmd::Stop);
            h.shared.waker.wake();
        }
        for h in &mut self.handles {
            if let Some(j) = h.join.take() {
                let _ = j.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Tables;
    use crate::xsk::fake::fake_port;
    use crate::xsk::PortConfig;

    fn spawn(n: usize) -> (Workers, Publisher, Arc<[PortCounters]>) {
        let mut publisher = Publisher::new(Tables::default());
        let counters: Arc<[PortCounters]> = (0..4).map(|_| PortCounters::default()).collect();
        let cfg: Vec<WorkerConfig> = (0..n).map(|core| WorkerConfig { core }).collect();
        let idle = IdlePolicy {
            busy_poll: Duration::from_micros(50),
            poll_timeout_ms: 10,
        };
        let w = Workers::spawn(&cfg, &mut publisher, &counters, idle).unwrap();
        (w, publisher, counters)
    }

    #[test]
    fn workers_follow_publishes_take_and_release_ports_and_stop() {
        let (mut w, mut publisher, counters) = spawn(2);
        assert_eq!(w.len(), 2);
        assert!(w.all_running());
        publisher.publish(Tables::default());
        let gen = publisher.current().generation;
        w.wait_generation(gen, Duration::from_secs(20)).unwrap();
        assert!((0..2).all(|i| w.generation(i) >= Some(gen)));

        let cfg = PortConfig {
            frames: 128,
            frame_size: 2048,
            ring_size: 64,
            tx_budget: 0,
            multi_buffer: false,
        };
        let (port, _kernel) = fake_port(3, &cfg, Arc::clone(&counters)).unwrap();
        w.add_port(1, port).unwrap();
        w.remove_port(1, 3).unwrap();
        assert!(matches!(
            w.add_port(5, fake_port(0, &cfg, counters).unwrap().0),
            Err(WorkerError::Gone(5))
        ));

        w.stop();
        assert!(!w.all_running());
        assert!(matches!(w.remove_port(0, 3), Err(WorkerError::Gone(0))));
    }

    #[test]
    fn a_generation_nobody_reaches_times_out() {
        let (mut w, _publisher, _) = spawn(1);
        assert!(matches!(
            w.wait_generation(u64::MAX, Duration::from_millis(50)),
            Err(WorkerError::NotReady(0))
        ));
        w.stop();
    }
}
