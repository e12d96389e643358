//! Everything the plugin does to the outside world, behind one trait: the kernel
//! ([`crate::wire`]), the daemon's control socket and executing a delegated IPAM
//! plugin. [`System`] is the real thing; unit tests implement [`Platform`] with an
//! in-memory fake, so every verb runs without root, namespaces or a daemon.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use xsknet_proto::client::{self, ClientError};
use xsknet_proto::wire::Request;

use crate::wire::{self, LinkPlan, PodLink, PodView, WireError};

/// What a delegated plugin printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The plugin's side effects.
pub trait Platform {
    /// One control-socket request to `xsknetd`.
    fn daemon_call(
        &self,
        socket: &Path,
        req: &Request,
        timeout: Duration,
    ) -> Result<Value, ClientError>;
    /// See [`wire::create_pod_link`].
    fn create_pod_link(&self, plan: &LinkPlan) -> Result<PodLink, WireError>;
    /// See [`wire::delete_host_link`].
    fn delete_host_link(&self, host_ifname: &str) -> Result<bool, WireError>;
    /// Whether the node namespace has a link called `name`.
    fn host_link_exists(&self, name: &str) -> Result<bool, WireError>;
    /// See [`wire::inspect_pod`].
    fn inspect_pod(&self, netns: &Path, ifname: &str) -> Result<Option<PodView>, WireError>;
    /// Runs plugin `path` with exactly `env` and `stdin`.
    fn exec_plugin(
        &self,
        path: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<ExecOutput>;
}

/// The real system.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl Platform for System {
    fn daemon_call(
        &self,
        socket: &Path,
        req: &Request,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        client::call(socket, req, timeout)
    }

    fn create_pod_link(&self, plan: &LinkPlan) -> Result<PodLink, WireError> {
        wire::create_pod_link(plan)
    }

    fn delete_host_link(&self, host_ifname: &str) -> Result<bool, WireError> {
        wire::delete_host_link(host_ifname)
    }

    fn host_link_exists(&self, name: &str) -> Result<bool, WireError> {
        wire::host_link_exists(name)
    }

    fn inspect_pod(&self, netns: &Path, ifname: &str) -> Result<Option<PodView>, WireError> {
        wire::inspect_pod(netns, ifname)
    }

    fn exec_plugin(
        &self,
        path: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<ExecOutput> {
        let mut child = Command::new(path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits without reading its config is not our problem here;
            // its exit status and output say what happened.
            let _ = input.write_all(stdin);
        }
        let out = child.wait_with_output()?;
        Ok(ExecOutput {
            success: out.status.success(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
