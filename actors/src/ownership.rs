//! Which partitions of the events topic this node owns now: a key's mailbox lives only on the
//! node that owns the key's partition (DESIGN §4).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

/// The partitions this node's ingress holds; shared by the actors and the gateways.
#[derive(Clone, Debug, Default)]
pub struct Ownership(Arc<RwLock<BTreeSet<u32>>>);

impl Ownership {
    /// Whether this node owns `partition`.
    pub fn owns(&self, partition: u32) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&partition)
    }

    /// The partitions owned, in order.
    pub fn partitions(&self) -> Vec<u32> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Takes `partitions` as this node's (the bus assigned them).
    pub fn add(&self, partitions: &[u32]) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(partitions);
    }

    pub(crate) fn remove(&self, partitions: &[u32]) {
        let mut owned = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for partition in partitions {
            owned.remove(partition);
        }
    }

    pub(crate) fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
