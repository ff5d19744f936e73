//! Changes to agents' tasks, handed to the worker links of those agents on this node as the
//! mailboxes committed them, so a link need not read a task back to tell its worker.
//!
//! Each link has a bounded queue of its own: a change is held only until its link takes it
//! (a broadcast channel would keep its last values, whole tasks, alive until overwritten). A
//! link that falls behind by a full queue is told it missed some, and looks at everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::domain::task::Task;

/// Changes queued for one link at most.
const QUEUE: usize = 1024;

/// The worker links of agents on this node, by agent.
#[derive(Clone, Default)]
pub struct AgentSignals {
    links: Arc<Mutex<HashMap<String, Vec<Listener>>>>,
    /// Changes told so far: each change's number, in the order they were told.
    told: Arc<AtomicU64>,
}

struct Listener {
    changes: mpsc::Sender<(u64, Arc<Task>)>,
    missed: Arc<AtomicBool>,
}

/// One link's changes to its agent's tasks, in the order they were committed.
pub struct AgentChanges {
    changes: mpsc::Receiver<(u64, Arc<Task>)>,
    missed: Arc<AtomicBool>,
    told: Arc<AtomicU64>,
    /// Changes numbered below this were told before the link's last read of everything.
    stale_below: u64,
}

impl AgentSignals {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Listener>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes to `agent_id`'s tasks from now on, until the returned value is dropped.
    pub fn listen(&self, agent_id: &str) -> AgentChanges {
        let (sender, changes) = mpsc::channel(QUEUE);
        let missed = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            changes: sender,
            missed: missed.clone(),
        };
        let mut links = self.links();
        // Links that ended are forgotten here too, for agents that change no more.
        links.retain(|_, listeners| {
            listeners.retain(|l| !l.changes.is_closed());
            !listeners.is_empty()
        });
        links.entry(agent_id.to_owned()).or_default().push(listener);
        AgentChanges {
            changes,
            missed,
            told: self.told.clone(),
            stale_below: 0,
        }
    }

    /// Tells the links of `agent_id` listening on this node that `task` changed.
    pub fn tell(&self, agent_id: &str, task: &Task) {
        let listeners: Vec<(mpsc::Sender<_>, Arc<AtomicBool>)> = {
            let mut links = self.links();
            let Some(listeners) = links.get_mut(agent_id) else {
                return;
            };
            listeners.retain(|l| !l.changes.is_closed());
            if listeners.is_empty() {
                links.remove(agent_id);
                return;
            }
            listeners
                .iter()
                .map(|l| (l.changes.clone(), l.missed.clone()))
                .collect()
        };
        // Numbered after its commit, and before the task's next change is applied.
        let number = self.told.fetch_add(1, Ordering::AcqRel);
        let task = Arc::new(task.clone());
        for (changes, missed) in listeners {
            if changes.try_send((number, task.clone())).is_err() {
                missed.store(true, Ordering::Release);
            }
        }
    }
}

impl AgentChanges {
    /// The next change, waiting for one.
    pub async fn next(&mut self) -> Arc<Task> {
        loop {
            match self.changes.recv().await {
                Some((number, task)) if number >= self.stale_below => return task,
                Some(_) => {}
                // The node dropped every sender: it is stopping, and no change comes any more.
                None => std::future::pending().await,
            }
        }
    }

    /// The next change if one is queued.
    pub fn try_next(&mut self) -> Option<Arc<Task>> {
        while let Ok((number, task)) = self.changes.try_recv() {
            if number >= self.stale_below {
                return Some(task);
            }
        }
        None
    }

    /// Notes that the link is about to read everything from the store: the changes told
    /// before now are in what it reads, or older than it, and are passed over. (A task's
    /// change is told before its next change is applied, so one told later than this is
    /// never older than what the read finds.)
    pub fn reading_everything(&mut self) {
        self.stale_below = self.told.load(Ordering::Acquire);
    }

    /// Whether changes were dropped (the queue was full) since this was last asked.
    pub fn missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::{Command, step};

    fn task(id: &str) -> Task {
        let created = schemas::TaskCreated {
            task_id: id.into(),
            ..Default::default()
        };
        match step(
            None,
            "u1",
            &Command::Create(crate::edge::new_task(&created)),
            0,
        ) {
            Ok(created) => created.task,
            Err(refused) => panic!("a new task is refused: {}", refused.0),
        }
    }

    #[tokio::test]
    async fn a_change_reaches_the_links_of_its_agent_only_and_is_held_by_nobody_after() {
        let signals = AgentSignals::default();
        let mut a = signals.listen("a");
        let mut b = signals.listen("b");
        signals.tell("a", &task("t1"));
        let told = a.next().await;
        assert_eq!(told.task_id, "t1");
        assert_eq!(Arc::strong_count(&told), 1, "the signal keeps a copy");
        assert!(b.try_next().is_none());
        assert!(!a.missed());
    }

    #[tokio::test]
    async fn a_full_queue_tells_the_link_it_missed_changes() {
        let signals = AgentSignals::default();
        let mut a = signals.listen("a");
        for i in 0..=QUEUE {
            signals.tell("a", &task(&format!("t{i}")));
        }
        assert!(a.missed());
        assert!(!a.missed(), "asked once, it is forgotten");
        assert_eq!(a.next().await.task_id, "t0");
    }

    #[tokio::test]
    async fn changes_told_before_a_read_of_everything_are_passed_over() {
        let signals = AgentSignals::default();
        let mut a = signals.listen("a");
        signals.tell("a", &task("old"));
        a.reading_everything();
        signals.tell("a", &task("new"));
        assert_eq!(a.next().await.task_id, "new");
        assert!(a.try_next().is_none());
    }

    #[test]
    fn a_closed_link_is_forgotten_at_the_next_change() {
        let signals = AgentSignals::default();
        drop(signals.listen("a"));
        signals.tell("a", &task("t1"));
        assert!(signals.links().is_empty());
    }
}
