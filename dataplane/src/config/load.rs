//! Loading `node.yaml`: decoding with field paths, then validation naming the field.

use super::*;

impl Config {
    /// Decodes and validates a YAML document; `file` only labels error messages.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_str_named(yaml, "<string>")
    }

    /// Reads, decodes and validates `path`. A missing file is an error here: the
    /// daemon decides whether an absent default path means "all defaults".
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str_named(&text, &path.display().to_string())
    }

    fn from_yaml_str_named(yaml: &str, file: &str) -> Result<Config, ConfigError> {
        let config = if is_blank_yaml(yaml) {
            Config::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(yaml);
            // `Option` so that a document of just `~` / `null` also means "all defaults".
            let config: Option<Config> = serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                // serde_yaml_ng prefixes its own (shorter) path; keep ours only.
                let message = match message.split_once(": ") {
                    Some((prefix, rest)) if field.starts_with(prefix) => rest.to_string(),
                    _ => message,
                };
                ConfigError::Decode {
                    file: file.to_string(),
                    field,
                    message,
                }
            })?;
            let mut config = config.unwrap_or_default();
            config.pod_cidr_explicit = sets_pod_cidr(yaml);
            config
        };
        config.validate_named(file, &online_cpus())?;
        Ok(config)
    }

    /// Semantic checks against this machine's online CPUs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_named("<config>", &online_cpus())
    }

    /// Semantic checks; `online` is the set of CPUs workers may be pinned to.
    pub fn validate_with_cpus(&self, online: &[usize]) -> Result<(), ConfigError> {
        self.validate_named("<config>", online)
    }

    fn validate_named(&self, file: &str, online: &[usize]) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str, value: &dyn fmt::Display| ConfigError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            value: value.to_string(),
        };

        check_path(&self.socket, "socket", &bad)?;
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH_LEN {
            return Err(bad(
                "socket",
                &format!(
                    "a Unix socket path can be at most {MAX_SOCKET_PATH_LEN} bytes, this one is {}",
                    self.socket.as_os_str().len()
                ),
                &self.socket.display(),
            ));
        }
        check_path(&self.state_dir, "stateDir", &bad)?;

        let cidr = &self.pod_cidr;
        if !(8..=30).contains(&cidr.prefix) {
            return Err(bad("podCidr", "prefix length must be in 8..=30", cidr));
        }
        if cidr.has_host_bits() {
            return Err(bad(
                "podCidr",
                &format!(
                    "host bits are set; the network address is {}/{}",
                    cidr.network(),
                    cidr.prefix
                ),
                cidr,
            ));
        }

        for (field, c) in [
            ("serviceCidr", Some(&self.service_cidr)),
            ("clusterCidr", self.cluster_cidr.as_ref()),
        ] {
            let Some(c) = c else { continue };
            if !(1..=32).contains(&c.prefix) {
                return Err(bad(field, "prefix length must be in 1..=32", c));
            }
            if c.has_host_bits() {
                return Err(bad(field, "host bits are set", c));
            }
        }
        // With a datastore and no explicit podCidr the node's prefix is claimed at start.
        let pod_cidr_known = self.datastore.is_none() || self.pod_cidr_explicit;
        if let (Some(c), true) = (&self.cluster_cidr, pod_cidr_known) {
            if !c.contains(self.pod_cidr.addr) || c.prefix > self.pod_cidr.prefix {
                return Err(bad("clusterCidr", "must contain podCidr", c));
            }
        }
        let t = &self.masquerade.table;
        if t.is_empty()
            || t.len() > 64
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "masquerade.table",
                "1-64 characters of [A-Za-z0-9_-]",
                t,
            ));
        }

        if self.workers.is_empty() {
            return Err(bad("workers", "at least one worker is required", &"[]"));
        }
        for (i, w) in self.workers.iter().enumerate() {
            let field = format!("workers[{i}].core");
            if !online.contains(&w.core) {
                return Err(bad(
                    &field,
                    &format!("not an online CPU (online: {})", format_cpu_list(online)),
                    &w.core,
                ));
            }
            if let Some(j) = self.workers[..i].iter().position(|o| o.core == w.core) {
                return Err(bad(
                    &field,
                    &format!("core already used by workers[{j}]"),
                    &w.core,
                ));
            }
        }

        let u = &self.umem;
        if u.frame_size != 2048 && u.frame_size != 4096 {
            return Err(bad("umem.frameSize", "must be 2048 or 4096", &u.frame_size));
        }
        if !u.ring_size.is_power_of_two() || !(64..=16384).contains(&u.ring_size) {
            return Err(bad(
                "umem.ringSize",
                "must be a power of two in 64..=16384",
                &u.ring_size,
            ));
        }
        if u.frames_per_port < 128 {
            return Err(bad(
                "umem.framesPerPort",
                "must be at least 128",
                &u.frames_per_port,
            ));
        }
        if u.frames_per_port < 2 * u.ring_size - u.ring_size / 16 {
            return Err(bad(
                "umem.framesPerPort",
                &format!(
                    "must be at least about twice umem.ringSize ({}): a full fill ring plus frames for TX",
                    u.ring_size
                ),
                &u.frames_per_port,
            ));
        }
        if u.tx_budget != 0 && !(32..=u.ring_size).contains(&u.tx_budget) {
            return Err(bad(
                "umem.txBudget",
                &format!(
                    "must be 0 (kernel default) or in 32..={} (umem.ringSize)",
                    u.ring_size
                ),
                &u.tx_budget,
            ));
        }
        if let Some(m) = self.local_mtu.filter(|&m| m != 0) {
            let max = max_local_mtu(u.frame_size);
            if !(1280..=max).contains(&m) {
                return Err(bad(
                    "localMtu",
                    &format!(
                        "must be 0 (off) or in 1280..={max}: a packet must fit {} buffers \
                         of a {}-byte UMEM frame behind its headroom (65535 at most)",
                        crate::xsk::MAX_CHAIN,
                        u.frame_size
                    ),
                    &m,
                ));
            }
        }
        if !(1..=1024).contains(&u.max_ports_per_worker) {
            return Err(bad(
                "umem.maxPortsPerWorker",
                "must be in 1..=1024",
                &u.max_ports_per_worker,
            ));
        }

        let h = &self.host_port;
        check_ifname(&h.name, "hostPort.name", &bad)?;
        check_ifname(&h.peer_name, "hostPort.peerName", &bad)?;
        if h.name == h.peer_name {
            return Err(bad(
                "hostPort.peerName",
                "must differ from hostPort.name",
                &h.peer_name,
            ));
        }

        let idle = &self.idle;
        if idle.busy_poll_us > 1_000_000 {
            return Err(bad(
                "idle.busyPollUs",
                "must be at most 1000000 (one second)",
                &idle.busy_poll_us,
            ));
        }
        if !(1..=10_000).contains(&idle.poll_timeout_ms) {
            return Err(bad(
                "idle.pollTimeoutMs",
                "must be in 1..=10000",
                &idle.poll_timeout_ms,
            ));
        }

        check_log_level(&self.log_level).map_err(|m| bad("logLevel", &m, &self.log_level))?;
        self.validate_overlay(&bad)?;
        Ok(())
    }

    /// `uplink` and `overlay` (issue 9).
    fn validate_overlay(&self, bad: &BadFn<'_>) -> Result<(), ConfigError> {
        if let Some(ifname) = &self.uplink.interface {
            check_ifname(ifname, "uplink.interface", bad)?;
        }
        self.validate_datastore(bad)?;
        let Some(o) = &self.overlay else {
            return Ok(());
        };
        o.validate_static()
            .map_err(|e| bad(&e.field, &e.message, &e.value))?;
        let pod_cidr_known = self.datastore.is_none() || self.pod_cidr_explicit;
        if let (Some(p), true) = (o.pod_cidr, pod_cidr_known) {
            if p != self.pod_cidr {
                return Err(bad(
                    "overlay.podCidr",
                    &format!("must equal podCidr {} when both are set", self.pod_cidr),
                    &p,
                ));
            }
        }
        for (i, peer) in o.peers.iter().enumerate() {
            if peer.pod_cidr.overlaps(&self.pod_cidr) {
                return Err(bad(
                    &format!("overlay.peers[{i}].podCidr"),
                    &format!("overlaps this node's podCidr {}", self.pod_cidr),
                    &peer.pod_cidr,
                ));
            }
        }
        Ok(())
    }

    /// `nodeName` and `datastore`: with a datastore, `overlay` is required (`overlay: {}`
    /// takes the defaults), its `peers` must be empty (the nodes come from the
    /// datastore), an explicit `podCidr` must lie in `overlay.clusterCidr`, and
    /// `policyDir` is not used (policies live in the datastore).
    fn validate_datastore(&self, bad: &BadFn<'_>) -> Result<(), ConfigError> {
        let name = self.node_name();
        let name_field = if self.node_name.is_some() {
            "nodeName"
        } else {
            "nodeName (default: the host name)"
        };
        if self.node_name.is_some() || self.datastore.is_some() {
            crate::policy::k8s::check_dns_subdomain(&name).map_err(|m| {
                bad(
                    name_field,
                    &format!("must be a DNS subdomain (lower-case a-z, 0-9, '-', '.'): {m}"),
                    &format!("{name:?}"),
                )
            })?;
        }
        let Some(ds) = &self.datastore else {
            return Ok(());
        };
        ds.validate()
            .map_err(|e| bad(&e.field, &e.message, &e.value))?;
        let Some(o) = &self.overlay else {
            return Err(bad(
                "overlay",
                "required with a datastore (`overlay: {}` takes the defaults)",
                &"absent",
            ));
        };
        if !o.peers.is_empty() {
            return Err(bad(
                "overlay.peers",
                "must be empty with a datastore: the other nodes come from it",
                &format!("{} peers", o.peers.len()),
            ));
        }
        if self.pod_cidr_explicit && o.pod_cidr.is_none() {
            let c = o.cluster_cidr;
            if self.pod_cidr.prefix < c.prefix || !c.contains(self.pod_cidr.addr) {
                return Err(bad(
                    "podCidr",
                    &format!("must lie inside overlay.clusterCidr {c}"),
                    &self.pod_cidr,
                ));
            }
        }
        if let Some(d) = &self.policy_dir {
            return Err(bad(
                "policyDir",
                "not used with a datastore: policies live there (xsknetctl policy apply writes them)",
                &d.display(),
            ));
        }
        Ok(())
    }

    /// Frames one worker holds with every port slot in use: `framesPerPort × maxPortsPerWorker`.
    pub fn total_frames_per_worker(&self) -> u64 {
        u64::from(self.umem.frames_per_port) * u64::from(self.umem.max_ports_per_worker)
    }
}

/// Whether the document sets the top-level `podCidr` key (a valid document: it
/// decoded into a [`Config`] already).
fn sets_pod_cidr(yaml: &str) -> bool {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml)
        .ok()
        .and_then(|v| v.as_mapping().map(|m| m.contains_key("podCidr")))
        .unwrap_or(false)
}

/// Only whitespace, comments and document markers: serde_yaml_ng reports such input
/// as "EOF while parsing", but an empty node.yaml means "all defaults".
fn is_blank_yaml(yaml: &str) -> bool {
    yaml.lines().all(|line| {
        let t = line.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

type BadFn<'a> = dyn Fn(&str, &str, &dyn fmt::Display) -> ConfigError + 'a;

fn check_path(path: &Path, field: &str, bad: &BadFn<'_>) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(bad(field, "must be an absolute path", &path.display()));
    }
    Ok(())
}

/// The kernel's `dev_valid_name` rules.
fn check_ifname(name: &str, field: &str, bad: &BadFn<'_>) -> Result<(), ConfigError> {
    let shown = format!("{name:?}");
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(bad(
            field,
            &format!("an interface name is 1 to {MAX_IFNAME_LEN} bytes"),
            &shown,
        ));
    }
    if name == "." || name == ".." {
        return Err(bad(field, "not a valid interface name", &shown));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(bad(
            field,
            "an interface name cannot contain '/', ':' or whitespace",
            &shown,
        ));
    }
    Ok(())
}

fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if filter.trim().is_empty() {
        return Err("must name a level (trace, debug, info, warn, error, off)".to_string());
    }
    for directive in filter.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        // A bare target (`xsknet_dataplane`) is a valid directive: it enables trace.
        if directive.contains('=') && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "unknown level {level:?} in directive {directive:?} (trace, debug, info, warn, error, off)"
            ));
        }
        if directive.is_empty() {
            return Err("empty directive".to_string());
        }
    }
    Ok(())
}
