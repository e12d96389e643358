//! The request loop: the blocking writes of namespaces and policies, and the desired
//! set of this node's pods.

use super::*;

pub(super) async fn request_loop(
    ctx: &Ctx,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
) {
    let mut client: Option<Client> = None;
    while let Some(command) = commands.recv().await {
        match command {
            Command::SetPod(p) => {
                shared.borrow_mut().desired_pods.insert(p.key(), p);
                pods_changed.notify_one();
            }
            Command::RemovePod(k) => {
                shared.borrow_mut().desired_pods.remove(&k);
                pods_changed.notify_one();
            }
            Command::Put { record, reply } => {
                let key = ctx.keys.record(&record.key());
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let put = call(
                        &format!("put {key}"),
                        ctx.timeout(),
                        c.put(key.as_str(), record.encode(), None),
                    )
                    .await?;
                    Ok(put.header().map(|h| h.revision()).unwrap_or_default())
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
            Command::Batch {
                puts,
                deletes,
                reply,
            } => {
                let ops: Vec<TxnOp> = puts
                    .iter()
                    .map(|r| TxnOp::put(ctx.keys.record(&r.key()).as_str(), r.encode(), None))
                    .chain(
                        deletes
                            .iter()
                            .map(|k| TxnOp::delete(ctx.keys.record(k).as_str(), None)),
                    )
                    .collect();
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let t = call(
                        &format!("write {} records", ops.len()),
                        ctx.timeout(),
                        c.txn(Txn::new().and_then(ops)),
                    )
                    .await?;
                    Ok(t.header().map(|h| h.revision()).unwrap_or_default())
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
            Command::Delete { key, reply } => {
                let key = ctx.keys.record(&key);
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let d = call(
                        &format!("delete {key}"),
                        ctx.timeout(),
                        c.delete(key.as_str(), None),
                    )
                    .await?;
                    Ok(d.deleted() > 0)
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
        }
    }
}

pub(super) async fn ensure_client<'a>(
    ctx: &Ctx,
    client: &'a mut Option<Client>,
) -> Result<&'a mut Client, EtcdError> {
    if client.is_none() {
        *client = Some(connect(ctx).await?);
    }
    client.as_mut().ok_or(EtcdError::Stopped)
}
