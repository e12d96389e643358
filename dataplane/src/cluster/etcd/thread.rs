//! The etcd thread: its context, the three loops started side by side, connecting,
//! timed calls and reconnection backoff.

use super::*;

pub(super) struct Emitter {
    pub(super) tx: crossbeam_channel::Sender<ClusterEvent>,
    pub(super) waker: Option<Waker>,
}

impl Emitter {
    pub(super) fn emit(&self, e: ClusterEvent) {
        // The receiver gone means the daemon is shutting down; nothing to tell.
        if self.tx.send(e).is_ok() {
            if let Some(w) = &self.waker {
                w();
            }
        }
    }

    pub(super) fn refused(&self, e: RecordError) {
        tracing::warn!("{e}");
        self.emit(ClusterEvent::Refused(e));
    }
}

pub(super) struct Ctx {
    pub(super) config: EtcdConfig,
    pub(super) keys: Keys,
    pub(super) out: Emitter,
}

impl Ctx {
    pub(super) fn timeout(&self) -> Duration {
        self.config.request_timeout()
    }
}

/// State shared by the loops of the thread (one thread, so a `RefCell`; never borrowed
/// across an `.await`).
#[derive(Default)]
pub(super) struct Shared {
    pub(super) desired_pods: BTreeMap<PodKey, PodRecord>,
    pub(super) lease: Option<i64>,
}

pub(super) async fn run(
    ctx: Ctx,
    local: Option<LocalNode>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<Lifecycle>,
    registration: Arc<Registration>,
) {
    let shared = RefCell::new(Shared::default());
    let pods_changed = Notify::new();
    let how = {
        let loops = async {
            tokio::join!(
                watch_loop(&ctx),
                register_loop(&ctx, local.as_ref(), &shared, &pods_changed, &registration),
                request_loop(&ctx, &mut commands, &shared, &pods_changed),
            )
        };
        tokio::select! {
            how = stopped(&mut stop) => how,
            _ = loops => Lifecycle::Stop,
        }
    };
    let lease = shared.borrow().lease;
    if let (Lifecycle::Leave, Some(id)) = (how, lease) {
        let revoke = async {
            let mut c = connect(&ctx).await?;
            call("revoke lease", ctx.timeout(), c.lease_revoke(id)).await
        };
        if let Err(e) = revoke.await {
            tracing::warn!("leaving the cluster: {e} (the node expires with its lease)");
        }
    }
}

pub(super) async fn stopped(stop: &mut watch::Receiver<Lifecycle>) -> Lifecycle {
    loop {
        let now = *stop.borrow_and_update();
        if now != Lifecycle::Run {
            return now;
        }
        if stop.changed().await.is_err() {
            return Lifecycle::Stop;
        }
    }
}

/// One etcd call, bounded by `timeout`, its error naming `op`.
pub(super) async fn call<T>(
    op: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Etcd {
            op: op.to_string(),
            source,
        }),
        Err(_) => Err(EtcdError::Timeout {
            op: op.to_string(),
            timeout,
        }),
    }
}

pub(super) async fn connect(ctx: &Ctx) -> Result<Client, EtcdError> {
    let t = ctx.timeout();
    // HTTP/2 pings find a dead member (a watch on a silent connection would wait forever).
    // Never more often than etcd accepts: a client pinging faster than the server's
    // `--grpc-keepalive-min-time` (5 s by default) gets GOAWAY "too_many_pings" and
    // every stream on the connection breaks.
    let ping = (ctx.config.lease_ttl() / 3).clamp(PING_MIN, Duration::from_secs(10));
    let options = ConnectOptions::new()
        .with_connect_timeout(t)
        .with_keep_alive(ping, t)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    call(
        "connect",
        t,
        Client::connect(ctx.config.endpoints.as_slice(), Some(options)),
    )
    .await
}

pub(super) struct Backoff {
    pub(super) next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next wait: doubling up to the cap, with up to 25% jitter so that the nodes of
    /// a cluster do not reconnect in lockstep after an etcd restart.
    pub(super) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}
