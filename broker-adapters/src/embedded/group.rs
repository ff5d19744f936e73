//! In-memory consumer-group coordination: who owns which partition, and committed offsets.
//!
//! Partitions are spread round-robin over the members sorted by join order; every join or
//! leave bumps the group's generation, which members watch to pick up their new assignment.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub(crate) struct Groups {
    state: Arc<Mutex<HashMap<(String, String), GroupState>>>,
    next_member: Arc<AtomicU64>,
}

struct GroupState {
    partitions: u32,
    members: BTreeSet<u64>,
    committed: HashMap<u32, u64>,
    generation: watch::Sender<u64>,
}

/// One member's place in a group; leaving happens on drop.
pub(crate) struct Member {
    groups: Groups,
    key: (String, String),
    id: u64,
    generation: watch::Receiver<u64>,
}

impl Groups {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), GroupState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The offsets `group` committed on `topic` while it was known in this process.
    pub(crate) fn committed(&self, group: &str, topic: &str) -> Option<HashMap<u32, u64>> {
        self.lock()
            .get(&(group.to_owned(), topic.to_owned()))
            .map(|state| state.committed.clone())
    }

    /// Adds a member to `group` on `topic`; `stored` are the offsets committed on disk.
    pub(crate) fn join(
        &self,
        group: &str,
        topic: &str,
        partitions: u32,
        stored: HashMap<u32, u64>,
    ) -> Member {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let key = (group.to_owned(), topic.to_owned());
        let mut groups = self.lock();
        let state = groups.entry(key.clone()).or_insert_with(|| GroupState {
            partitions,
            members: BTreeSet::new(),
            committed: stored,
            generation: watch::channel(0).0,
        });
        state.members.insert(id);
        state.generation.send_modify(|g| *g += 1);
        Member {
            groups: self.clone(),
            key,
            id,
            generation: state.generation.subscribe(),
        }
    }
}

impl Member {
    fn with<T>(&self, f: impl FnOnce(&mut GroupState) -> T) -> Option<T> {
        self.groups.lock().get_mut(&self.key).map(f)
    }

    /// The partitions this member owns now; marks the current generation as seen.
    pub(crate) fn assignment(&mut self) -> Vec<u32> {
        self.generation.borrow_and_update();
        self.with(|state| {
            let count = state.members.len() as u32;
            let index = state
                .members
                .iter()
                .position(|m| *m == self.id)
                .unwrap_or(0) as u32;
            (0..state.partitions)
                .filter(|p| p % count.max(1) == index)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Whether the membership changed since the last `assignment`.
    pub(crate) fn has_changed(&self) -> bool {
        self.generation.has_changed().unwrap_or(false)
    }

    /// Waits until the group's membership changes.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn changed(&mut self) {
        if self.generation.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The group's next offset for `partition`.
    pub(crate) fn committed(&self, partition: u32) -> u64 {
        self.with(|state| state.committed.get(&partition).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Moves the group's next offset for `partition` forward to `next`.
    pub(crate) fn commit(&self, partition: u32, next: u64) {
        self.with(|state| {
            let committed = state.committed.entry(partition).or_insert(0);
            *committed = (*committed).max(next);
        });
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.with(|state| {
            state.members.remove(&self.id);
            state.generation.send_modify(|g| *g += 1);
        });
    }
}

impl Member {
    /// The group's name.
    pub(crate) fn group(&self) -> &str {
        &self.key.0
    }
}
