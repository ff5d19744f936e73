//! The live view of a supervision tree: every actor's status and restart count, by path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Where an actor is in its life, as its supervisor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorStatus {
    /// Being spawned.
    Starting,
    /// Processing messages.
    Running,
    /// Stopped; waiting out its backoff before the next start.
    Restarting,
    /// Stopped and not coming back.
    Stopped,
    /// Failed and not coming back.
    Failed,
}

impl ActorStatus {
    /// Lower-case name, as shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorStatus::Starting => "starting",
            ActorStatus::Running => "running",
            ActorStatus::Restarting => "restarting",
            ActorStatus::Stopped => "stopped",
            ActorStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    status: ActorStatus,
    restarts: u32,
}

/// A shared, cheap-to-clone registry of actors by slash-separated path (`node/orchestrator`).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
}

/// One actor in a snapshot, with its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Last path segment.
    pub name: String,
    /// Current status.
    pub status: ActorStatus,
    /// How often its supervisor restarted it.
    pub restarts: u32,
    /// Children, in name order.
    pub children: Vec<TreeNode>,
}

impl Tree {
    /// Sets the status of the actor at `path`, adding it if new.
    pub fn set_status(&self, path: &str, status: ActorStatus) {
        self.with(|entries| {
            entries
                .entry(path.to_owned())
                .and_modify(|e| e.status = status)
                .or_insert(Entry {
                    status,
                    restarts: 0,
                });
        });
    }

    /// Counts one more restart of the actor at `path`.
    pub fn count_restart(&self, path: &str) {
        self.with(|entries| {
            if let Some(entry) = entries.get_mut(path) {
                entry.restarts += 1;
            }
        });
    }

    /// Forgets the actor at `path` and everything below it.
    pub fn remove(&self, path: &str) {
        self.with(|entries| {
            entries.remove(path);
            remove_below(entries, path);
        });
    }

    /// Forgets everything below `path`, keeping `path` itself.
    pub fn remove_descendants(&self, path: &str) {
        self.with(|entries| remove_below(entries, path));
    }

    /// The subtree rooted at `path`, or `None` if no such actor is known.
    pub fn snapshot(&self, path: &str) -> Option<TreeNode> {
        let entries = self.with(|entries| entries.clone());
        let entry = entries.get(path)?;
        Some(build(path, *entry, &entries))
    }

    /// The actors `depth` levels below `path` (1: its children), and the restarts of all
    /// actors below it.
    pub fn census(&self, path: &str, depth: usize) -> (usize, u64) {
        let prefix = format!("{path}/");
        self.with(|entries| {
            entries
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .fold((0, 0), |(count, restarts), (p, e)| {
                    let level = p[prefix.len()..].matches('/').count() + 1;
                    (
                        count + usize::from(level == depth),
                        restarts + u64::from(e.restarts),
                    )
                })
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> T) -> T {
        // A panic while holding the lock cannot leave a half-written entry: recover the map.
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Removes the entries below `path`: a range of the ordered map, so a tree of many live
/// mailboxes forgets one without a walk over all of them.
fn remove_below(entries: &mut BTreeMap<String, Entry>, path: &str) {
    let prefix = format!("{path}/");
    let below: Vec<String> = entries
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, _)| p.clone())
        .collect();
    for p in below {
        entries.remove(&p);
    }
}

fn build(path: &str, entry: Entry, entries: &BTreeMap<String, Entry>) -> TreeNode {
    let prefix = format!("{path}/");
    let children = entries
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .filter(|(p, _)| !p[prefix.len()..].contains('/'))
        .map(|(p, e)| build(p, *e, entries))
        .collect();
    TreeNode {
        name: path.rsplit('/').next().unwrap_or(path).to_owned(),
        status: entry.status,
        restarts: entry.restarts,
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_nests_children_by_path() {
        let tree = Tree::default();
        tree.set_status("node", ActorStatus::Running);
        tree.set_status("node/a", ActorStatus::Running);
        tree.set_status("node/a/x", ActorStatus::Restarting);
        tree.set_status("node/b", ActorStatus::Stopped);
        tree.set_status("nodes", ActorStatus::Running);
        tree.count_restart("node/a/x");
        let root = tree.snapshot("node").unwrap();
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].children[0].name, "x");
        assert_eq!(root.children[0].children[0].restarts, 1);
        tree.remove("node/a");
        assert_eq!(tree.snapshot("node").unwrap().children.len(), 1);
    }

    #[test]
    fn a_census_counts_one_level_and_every_restart_below() {
        let tree = Tree::default();
        for path in ["k", "k/p0", "k/p0/a", "k/p0/b", "k/p1", "k/p1/c", "kk/p0/d"] {
            tree.set_status(path, ActorStatus::Running);
        }
        tree.count_restart("k/p0/b");
        tree.count_restart("k/p1");
        assert_eq!(tree.census("k", 2), (3, 2));
        assert_eq!(tree.census("k", 1), (2, 2));
        assert_eq!(tree.census("nothing", 1), (0, 0));
    }

    #[test]
    fn removing_keeps_siblings_that_share_a_prefix() {
        let tree = Tree::default();
        for path in [
            "node",
            "node/a",
            "node/a/x",
            "node/a/x/y",
            "node/ab",
            "node/a-b",
        ] {
            tree.set_status(path, ActorStatus::Running);
        }
        tree.remove_descendants("node/a");
        let names = |tree: &Tree| -> Vec<String> {
            let root = tree.snapshot("node").unwrap();
            root.children
                .iter()
                .map(|c| format!("{}:{}", c.name, c.children.len()))
                .collect()
        };
        assert_eq!(names(&tree), ["a:0", "a-b:0", "ab:0"]);
        tree.set_status("node/a/z", ActorStatus::Running);
        tree.remove("node/a");
        assert_eq!(names(&tree), ["a-b:0", "ab:0"]);
    }
}
