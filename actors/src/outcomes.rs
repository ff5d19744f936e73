//! Callers on this node waiting for a message's outcome, told by the mailbox that applies (or
//! refuses) it, so a verb answers as soon as its message is applied rather than on a poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::store::Outcome;

/// Who waits for which message; cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Outcomes(Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>);

impl Outcomes {
    /// Starts waiting for message `id`'s outcome.
    pub(crate) fn expect(&self, id: &str) -> oneshot::Receiver<Outcome> {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiting) = self.0.lock() {
            waiting.insert(id.to_owned(), sender);
        }
        receiver
    }

    /// Tells whoever waits for message `id` how it fared.
    pub(crate) fn settle(&self, id: &str, outcome: Outcome) {
        let waiter = self.0.lock().ok().and_then(|mut w| w.remove(id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }

    /// Stops waiting for message `id`.
    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut waiting) = self.0.lock() {
            waiting.remove(id);
        }
    }
}
