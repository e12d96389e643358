//! The `policyDir` watch: the directory's YAML files are re-read as one
//! all-or-nothing apply when their (file, mtime, length) signature changes, looked at
//! most every [`POLICY_DIR_POLL`]; NetworkPolicies that came from the directory and
//! are gone from it are deleted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::policy::k8s::{self, Object, PolicyError};
use crate::policy::store::ApplySummary;

use super::{PolicyRequestError, PolicyService, POLICY_DIR_POLL};

/// What `policyDir` looked like: (file, mtime, length) of every YAML file.
pub(super) type DirSignature = Vec<(PathBuf, SystemTime, u64)>;

pub(super) fn dir_signature(dir: &Path) -> Option<DirSignature> {
    let mut sig = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let yaml = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yaml" || x == "yml");
        if !yaml {
            continue;
        }
        if let Ok(m) = e.metadata() {
            sig.push((path, m.modified().ok()?, m.len()));
        }
    }
    sig.sort();
    Some(sig)
}

/// A re-read of `policyDir`, to apply as one change ([`PolicyService::apply_dir`]).
#[derive(Debug)]
pub struct DirReload {
    objects: Vec<Object>,
    now: BTreeSet<(String, String)>,
    gone: Vec<(String, String)>,
}

impl PolicyService {
    /// A policy was deleted by request: it no longer counts as one from `policyDir`.
    pub fn forget_dir_policy(&mut self, namespace: &str, name: &str) {
        self.dir_policies
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether `policyDir` changed since last looked at (looked at most every
    /// [`POLICY_DIR_POLL`]).
    pub fn dir_changed(&mut self) -> bool {
        let Some(dir) = &self.dir else { return false };
        if self.last_dir_poll.elapsed() < POLICY_DIR_POLL {
            return false;
        }
        self.last_dir_poll = Instant::now();
        let sig = dir_signature(dir);
        if sig == self.dir_sig {
            return false;
        }
        self.dir_sig = sig;
        true
    }

    /// Read `policyDir` (`None`: there is none).
    pub fn read_dir(&self) -> Result<Option<DirReload>, PolicyError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let objects = k8s::parse_dir(dir)?;
        let now: BTreeSet<(String, String)> = objects
            .iter()
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) => {
                    Some((p.metadata.namespace.clone(), p.metadata.name.clone()))
                }
                _ => None,
            })
            .collect();
        let gone = self.dir_policies.difference(&now).cloned().collect();
        Ok(Some(DirReload { objects, now, gone }))
    }

    /// Apply a re-read `policyDir` as one change: delete what left it, apply the rest.
    /// Returns the summary, the deleted policies and whether anything changed.
    pub fn apply_dir(
        &mut self,
        reload: DirReload,
    ) -> Result<(ApplySummary, Vec<String>, bool), PolicyRequestError> {
        let DirReload { objects, now, gone } = reload;
        let ((summary, deleted), changed) = self.apply(|s| {
            let mut deleted = Vec::new();
            for (ns, name) in &gone {
                if s.delete(ns, name).is_ok() {
                    deleted.push(format!("NetworkPolicy {ns}/{name}"));
                }
            }
            Ok((s.apply_objects(objects)?, deleted))
        })?;
        self.dir_policies = now;
        Ok((summary, deleted, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{service, DENY_ALL};
    use super::*;

    #[test]
    fn policy_dir_changes_are_seen_and_removed_files_delete_their_policies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        std::fs::create_dir(&dir).unwrap();
        let mut s = service(tmp.path(), Some(dir.clone()));
        assert!(!s.dir_changed(), "nothing new, and not yet time to look");
        std::fs::write(dir.join("deny.yaml"), DENY_ALL).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        s.last_dir_poll -= POLICY_DIR_POLL;
        assert!(s.dir_changed());
        assert!(!s.dir_changed(), "looked at most once per interval");
        let reload = s.read_dir().unwrap().unwrap();
        let (summary, deleted, changed) = s.apply_dir(reload).unwrap();
        assert_eq!(summary.created.len(), 1);
        assert!(deleted.is_empty() && changed);

        std::fs::remove_file(dir.join("deny.yaml")).unwrap();
        s.last_dir_poll -= POLICY_DIR_POLL;
        assert!(s.dir_changed());
        let (_, deleted, changed) = s.apply_dir(s.read_dir().unwrap().unwrap()).unwrap();
        assert_eq!(deleted, vec!["NetworkPolicy ns/deny-all".to_string()]);
        assert!(changed);
        assert!(s.store().list().is_empty());

        // An invalid file refuses the whole reload.
        std::fs::write(dir.join("bad.yaml"), "kind: Nonsense").unwrap();
        assert!(s.read_dir().is_err());
        assert!(service(tmp.path(), None).read_dir().unwrap().is_none());
    }
}
