//! The watch loop: one consistent list of the prefix, then a watch from the next
//! revision, resumed after a broken connection while the store still has the history.

use super::*;

/// What the watch loop remembers across connections.
pub(super) struct WatchState {
    view: Option<ClusterView>,
    cluster_id: u64,
}

pub(super) async fn watch_loop(ctx: &Ctx) {
    let mut state = WatchState {
        view: None,
        cluster_id: 0,
    };
    let mut backoff = Backoff::new();
    loop {
        let Err(e) = watch_session(ctx, &mut state, &mut backoff).await;
        if let EtcdError::Compacted { .. } = e {
            // Not a failure of the connection: list again now.
            tracing::info!("{e}; listing again");
            state.view = None;
            continue;
        }
        tracing::warn!("{e}; retrying");
        ctx.out.emit(ClusterEvent::Disconnected {
            error: e.to_string(),
        });
        tokio::time::sleep(backoff.next()).await;
    }
}

pub(super) async fn watch_session(
    ctx: &Ctx,
    state: &mut WatchState,
    backoff: &mut Backoff,
) -> Result<Infallible, EtcdError> {
    let t = ctx.timeout();
    let prefix = ctx.keys.prefix();
    let mut client = connect(ctx).await?;

    let resume = match &state.view {
        Some(view) => {
            let now = call("get", t, client.get(prefix, None)).await?;
            now.header().is_some_and(|h| {
                h.cluster_id() == state.cluster_id && h.revision() >= view.revision
            })
        }
        None => false,
    };
    if !resume {
        let all = call(
            &format!("list {prefix}"),
            t,
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let (cluster_id, revision) = all
            .header()
            .map(|h| (h.cluster_id(), h.revision()))
            .unwrap_or_default();
        let mut view = ClusterView {
            revision,
            ..ClusterView::default()
        };
        for kv in all.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            match records::decode(&ctx.keys, &key, kv.value()) {
                Ok(Some(r)) => {
                    view.put(r);
                }
                Ok(None) => {}
                Err(e) => ctx.out.refused(e),
            }
        }
        ctx.out.emit(ClusterEvent::Snapshot(view.clone()));
        state.view = Some(view);
        state.cluster_id = cluster_id;
    }
    let view = state.view.get_or_insert_with(ClusterView::default);
    let from = view.revision + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = call(
        &format!("watch {prefix}"),
        t,
        client.watch(prefix, Some(options)),
    )
    .await?;
    let ended = |reason: String| EtcdError::WatchEnded {
        prefix: prefix.to_string(),
        reason,
    };
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|e| ended(e.to_string()))?
            .ok_or_else(|| ended("stream closed".into()))?;
        if msg.canceled() {
            if msg.compact_revision() > 0 {
                return Err(EtcdError::Compacted {
                    prefix: prefix.to_string(),
                    revision: from,
                    compact_revision: msg.compact_revision(),
                });
            }
            return Err(ended(format!("canceled: {}", msg.cancel_reason())));
        }
        if msg.created() {
            backoff.reset();
            // Resumed without a re-list: say the connection is back even when nothing
            // changed meanwhile (an empty delta), or the consumer would stay
            // "disconnected" until the next change.
            ctx.out.emit(ClusterEvent::Changes {
                revision: view.revision,
                changes: Vec::new(),
            });
        }
        let mut changes = Vec::new();
        for event in msg.events() {
            let Some(kv) = event.kv() else { continue };
            // The revision this view has applied: only events count (a response header
            // may be ahead of events still to come).
            view.revision = view.revision.max(kv.mod_revision());
            let key = String::from_utf8_lossy(kv.key());
            let put = match event.event_type() {
                EventType::Put => match records::decode(&ctx.keys, &key, kv.value()) {
                    Ok(Some(r)) => Some(r),
                    Ok(None) => continue,
                    Err(e) => {
                        ctx.out.refused(e);
                        None
                    }
                },
                EventType::Delete => None,
            };
            match put {
                Some(r) => {
                    if view.put(r.clone()) {
                        changes.push(Change::Put(r));
                    }
                }
                None => {
                    if let Ok(KeyKind::Record(k)) = ctx.keys.parse(&key) {
                        if view.delete(&k) {
                            changes.push(Change::Delete(k));
                        }
                    }
                }
            }
        }
        if !changes.is_empty() {
            ctx.out.emit(ClusterEvent::Changes {
                revision: view.revision,
                changes,
            });
        }
    }
}
