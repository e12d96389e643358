//! Lock-free publication of table snapshots to workers (RCU style).
//!
//! The control thread builds a new [`Tables`] and calls [`Publisher::publish`], which
//! hands an `Arc` to every worker's bounded channel. A worker calls
//! [`Subscriber::refresh`] between bursts: it swaps in the newest snapshot and sends the
//! one it held back on a bounded "retired" channel, so the last reference (and the free)
//! is dropped on the control thread, never on a worker. Both channels are crossbeam's
//! array flavour: no locks and no allocation on send or receive.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::Tables;

/// How many snapshots may wait for a worker before publish blocks on it.
const PENDING: usize = 64;

/// The control thread's end.
#[derive(Debug)]
pub struct Publisher {
    subscribers: Vec<Sender<Arc<Tables>>>,
    retired_tx: Sender<Arc<Tables>>,
    retired_rx: Receiver<Arc<Tables>>,
    current: Arc<Tables>,
}

/// A worker's end.
#[derive(Debug)]
pub struct Subscriber {
    rx: Receiver<Arc<Tables>>,
    retired: Sender<Arc<Tables>>,
    current: Arc<Tables>,
}

impl Publisher {
    /// A publisher whose first snapshot is `initial`.
    pub fn new(initial: Tables) -> Self {
        let (retired_tx, retired_rx) = bounded(PENDING * 4);
        Publisher {
            subscribers: Vec::new(),
            retired_tx,
            retired_rx,
            current: Arc::new(initial),
        }
    }

    /// A new subscriber that starts on the current snapshot.
    pub fn subscribe(&mut self) -> Subscriber {
        let (tx, rx) = bounded(PENDING);
        self.subscribers.push(tx);
        Subscriber {
            rx,
            retired: self.retired_tx.clone(),
            current: Arc::clone(&self.current),
        }
    }

    /// The snapshot most recently published.
    pub fn current(&self) -> &Arc<Tables> {
        &self.current
    }

    /// Publish `tables` to every live subscriber; frees snapshots workers have retired.
    /// Subscribers that have gone away are forgotten.
    pub fn publish(&mut self, mut tables: Tables) {
        tables.generation = self.current.generation + 1;
        let snap = Arc::new(tables);
        self.current = Arc::clone(&snap);
        self.subscribers.retain(|tx| {
            match tx.try_send(Arc::clone(&snap)) {
                Ok(()) => true,
                // A worker that is this far behind is stalled; wait for it rather than
                // let it run on a stale table forever.
                Err(TrySendError::Full(s)) => tx.send(s).is_ok(),
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        self.collect();
    }

    /// Drop every retired snapshot (the free happens here, on the control thread).
    pub fn collect(&mut self) {
        while self.retired_rx.try_recv().is_ok() {}
    }
}

impl Subscriber {
    /// Pick up the newest published snapshot, if any. Returns true if it changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        while let Ok(next) = self.rx.try_recv() {
            let old = std::mem::replace(&mut self.current, next);
            // If the retired channel is full the control thread is behind; dropping
            // here is then the lesser evil (a free on this thread, between bursts).
            let _ = self.retired.try_send(old);
            changed = true;
        }
        changed
    }

    /// The snapshot in use.
    #[inline]
    pub fn tables(&self) -> &Tables {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_the_newest_and_old_ones_are_freed_by_the_publisher() {
        let mut p = Publisher::new(Tables::default());
        let mut s = p.subscribe();
        assert_eq!(s.tables().generation, 0);
        p.publish(Tables::default());
        p.publish(Tables::default());
        assert!(s.refresh());
        assert_eq!(s.tables().generation, 2);
        assert!(!s.refresh());
        let first = Arc::downgrade(&Arc::clone(p.current()));
        p.publish(Tables::default());
        assert!(s.refresh());
        // The worker handed generation 2 back; the publisher frees it on collect.
        p.collect();
        assert!(first.upgrade().is_none());
    }

    #[test]
    fn publish_survives_a_dropped_subscriber() {
        let mut p = Publisher::new(Tables::default());
        let s = p.subscribe();
        drop(s);
        p.publish(Tables::default());
        assert_eq!(p.current().generation, 1);
    }
}
