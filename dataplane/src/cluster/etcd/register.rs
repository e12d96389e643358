//! The registration loop: claim the node's pod prefix, keep a lease, put the node and
//! its pods bound to it, renew; and the subnet claim transaction.

use super::*;

pub(super) async fn register_loop(
    ctx: &Ctx,
    local: Option<&LocalNode>,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
    registration: &Registration,
) {
    let Some(local) = local else {
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let Err(e) =
            register_session(ctx, local, shared, pods_changed, registration, &mut backoff).await;
        tracing::warn!("etcd registration of node {}: {e}; retrying", local.name);
        ctx.out.emit(ClusterEvent::Disconnected {
            error: format!("registration of node {}: {e}", local.name),
        });
        tokio::time::sleep(backoff.next()).await;
    }
}

pub(super) async fn register_session(
    ctx: &Ctx,
    local: &LocalNode,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
    registration: &Registration,
    backoff: &mut Backoff,
) -> Result<Infallible, EtcdError> {
    let t = ctx.timeout();
    let ttl = ctx.config.lease_ttl();
    let mut client = connect(ctx).await?;
    let cidr = claim_subnet(&mut client, &ctx.keys, &local.name, local.subnet, t).await?;

    let lease = call(
        "grant lease",
        t,
        client.lease_grant(i64::from(ctx.config.lease_ttl_seconds), None),
    )
    .await?
    .id();
    let old = shared.borrow_mut().lease.replace(lease);
    let record = local.record(cidr);
    let node_key = ctx.keys.node(&local.name);
    call(
        &format!("put {node_key}"),
        t,
        client.put(
            node_key.as_str(),
            Record::Node(record.clone()).encode(),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await?;
    let (mut keeper, mut renewals) =
        call("keep lease alive", t, client.lease_keep_alive(lease)).await?;
    let mut written = BTreeMap::new();
    sync_pods(ctx, &mut client, local, lease, shared, &mut written, true).await?;
    if let Some(old) = old.filter(|o| *o != lease) {
        // Nothing is bound to the old lease any more; revoking it only tidies up.
        let _ = call("revoke old lease", t, client.lease_revoke(old)).await;
    }
    if let Ok(mut g) = registration.record.lock() {
        *g = Some(record.clone());
        registration.changed.notify_all();
    }
    tracing::info!(
        "node {} registered: pod prefix {cidr}, lease {lease:x}",
        local.name
    );
    ctx.out.emit(ClusterEvent::Registered(record));
    backoff.reset();

    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(300)));
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if renewed.elapsed() >= ttl {
                    return Err(EtcdError::LeaseExpired { node: local.name.clone(), id: lease });
                }
                call("renew lease", t, keeper.keep_alive()).await?;
            }
            answer = renewals.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => renewed = Instant::now(),
                Ok(Some(_)) => {
                    return Err(EtcdError::LeaseExpired { node: local.name.clone(), id: lease })
                }
                Ok(None) => {
                    return Err(EtcdError::Etcd {
                        op: "keep lease alive".into(),
                        source: etcd_client::Error::LeaseKeepAliveError("stream closed".into()),
                    })
                }
                Err(source) => {
                    return Err(EtcdError::Etcd { op: "keep lease alive".into(), source })
                }
            },
            _ = pods_changed.notified() => {
                sync_pods(ctx, &mut client, local, lease, shared, &mut written, false).await?;
            }
        }
    }
}

/// Make this node's pods in etcd the desired ones. `written` is what this session put;
/// `full` starts over from what etcd holds (a new lease: everything is put again).
pub(super) async fn sync_pods(
    ctx: &Ctx,
    client: &mut Client,
    local: &LocalNode,
    lease: i64,
    shared: &RefCell<Shared>,
    written: &mut BTreeMap<String, Vec<u8>>,
    full: bool,
) -> Result<(), EtcdError> {
    let t = ctx.timeout();
    if full {
        written.clear();
        let ours = ctx.keys.node_pods(&local.name);
        let present = call(
            &format!("list {ours}"),
            t,
            client.get(
                ours.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
        for kv in present.kvs() {
            // An empty value never equals an encoded record: present, to be replaced.
            written.insert(String::from_utf8_lossy(kv.key()).into_owned(), Vec::new());
        }
    }
    let desired: BTreeMap<String, Vec<u8>> = shared
        .borrow()
        .desired_pods
        .values()
        .map(|p| {
            (
                ctx.keys.record(&RecordKey::Pod(p.key())),
                Record::Pod(p.clone()).encode(),
            )
        })
        .collect();
    let stale: Vec<String> = written
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        call(
            &format!("delete {key}"),
            t,
            client.delete(key.as_str(), None),
        )
        .await?;
        written.remove(&key);
    }
    for (key, value) in desired {
        if written.get(&key) != Some(&value) {
            call(
                &format!("put {key}"),
                t,
                client.put(
                    key.as_str(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
            written.insert(key, value);
        }
    }
    Ok(())
}

pub(super) fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    let p = a.prefix.min(b.prefix);
    let shorter = Ipv4Cidr {
        addr: a.addr,
        prefix: p,
    };
    shorter.contains(b.addr)
}

/// The pod prefix of node `name`: the one it owns already if it fits the request, else a
/// new one claimed with a create-only transaction. See the module doc.
pub(crate) async fn claim_subnet(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    request: SubnetRequest,
    t: Duration,
) -> Result<Ipv4Cidr, EtcdError> {
    let prefix = keys.subnets();
    let all = call(
        &format!("list {prefix}"),
        t,
        client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut taken: Vec<(Ipv4Cidr, String)> = Vec::new();
    for kv in all.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let Ok(KeyKind::Subnet(cidr)) = keys.parse(&key) else {
            tracing::warn!("ignoring malformed subnet key {key}");
            continue;
        };
        let owner = String::from_utf8_lossy(kv.value()).into_owned();
        if owner == name && request.accepts(cidr) {
            return Ok(cidr);
        }
        taken.push((cidr, owner));
    }
    let candidates: Box<dyn Iterator<Item = Ipv4Cidr>> = match request {
        SubnetRequest::Fixed(c) => {
            if let Some((other, owner)) = taken.iter().find(|(o, _)| overlaps(*o, c)) {
                return Err(if *other == c {
                    EtcdError::SubnetTaken {
                        cidr: c,
                        owner: owner.clone(),
                    }
                } else {
                    EtcdError::SubnetOverlap {
                        cidr: c,
                        other: *other,
                        owner: owner.clone(),
                    }
                });
            }
            Box::new(std::iter::once(c))
        }
        SubnetRequest::FromCluster { cluster, len } => {
            let base = u32::from(cluster.network());
            let count = 1u64 << (len - cluster.prefix);
            let step = 1u64 << (32 - len);
            Box::new((0..count).filter_map(move |i| {
                let addr = u64::from(base) + i * step;
                Some(Ipv4Cidr {
                    addr: Ipv4Addr::from(u32::try_from(addr).ok()?),
                    prefix: len,
                })
            }))
        }
    };
    for cidr in candidates {
        if taken.iter().any(|(o, _)| overlaps(*o, cidr)) {
            continue;
        }
        let key = keys.subnet(cidr);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), name, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let r = call(&format!("claim {key}"), t, client.txn(txn)).await?;
        if r.succeeded() {
            tracing::info!("node {name} claimed pod prefix {cidr}");
            return Ok(cidr);
        }
        // Someone was faster: who?
        let owner = r
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if owner == name {
            return Ok(cidr);
        }
        if let SubnetRequest::Fixed(c) = request {
            return Err(EtcdError::SubnetTaken { cidr: c, owner });
        }
        taken.push((cidr, owner));
    }
    match request {
        SubnetRequest::FromCluster { cluster, len } => {
            Err(EtcdError::ClusterCidrExhausted { cluster, len })
        }
        // The loop above returns for a fixed prefix.
        SubnetRequest::Fixed(cidr) => Err(EtcdError::SubnetTaken {
            cidr,
            owner: String::new(),
        }),
    }
}
