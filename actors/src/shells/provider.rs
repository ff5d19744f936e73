//! A provider's mailbox: every call to one outbound provider goes through it, one at a time,
//! each waiting for the provider's rate limit (governor).
//!
//! Supervision: a permanent child of `integrations/limiters`. The queue and the limiter live
//! in the `ProviderArgs` it is restarted with, so a provider that panics mid-call loses only
//! that call (its caller hears `Interrupted` and retries); the calls queued behind it wait
//! for the restarted mailbox.
//! Ordering: calls in the order they were queued; a bounded queue, one more call is refused.
//! Shutdown: waits at most a poll interval; queued callers hear `Interrupted` when the last
//! handle is gone.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::providers::{Limit, Outgoing, Provider, SendError};

/// How long an idle mailbox waits for a call before it looks at its own mailbox again.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Why a call did not reach its provider, or what the provider said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The provider's queue is full.
    #[error("provider `{provider}` refused the call: its queue of {capacity} is full")]
    QueueFull {
        /// The provider.
        provider: String,
        /// Calls it lets wait.
        capacity: usize,
    },
    /// The provider's mailbox stopped or restarted before answering.
    #[error("provider `{provider}` stopped before answering")]
    Interrupted {
        /// The provider.
        provider: String,
    },
    /// The provider answered with an error.
    #[error(transparent)]
    Send(#[from] SendError),
}

impl CallError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        !matches!(self, CallError::Send(SendError::Permanent(_)))
    }
}

/// One queued call: runs the provider's work and tells its caller; answers whether it
/// succeeded.
type Job = Box<dyn FnOnce() -> BoxFuture<'static, bool> + Send>;

/// What callers hold: queues calls for one provider's mailbox.
#[derive(Clone)]
pub struct ProviderHandle {
    name: Arc<str>,
    queue: mpsc::Sender<Job>,
    capacity: usize,
}

impl ProviderHandle {
    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// Runs `work` (one call to the provider) in the mailbox once its limit allows, or
    /// refuses at once when its queue is full.
    pub async fn run<T, E>(
        &self,
        work: impl FnOnce() -> BoxFuture<'static, Result<T, E>> + Send + 'static,
    ) -> Result<Result<T, E>, CallError>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let outcome = work().await;
                let ok = outcome.is_ok();
                let _ = reply.send(outcome);
                ok
            })
        });
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("switchyard_provider_calls_total", "provider" => self.name.to_string(), "outcome" => "refused").increment(1);
                CallError::QueueFull {
                    provider: self.name.to_string(),
                    capacity: self.capacity,
                }
            }
            mpsc::error::TrySendError::Closed(_) => self.interrupted(),
        })?;
        metrics::gauge!("switchyard_provider_queued", "provider" => self.name.to_string())
            .set(self.queued() as f64);
        answer.await.map_err(|_| self.interrupted())
    }

    /// Sends `message` through notification provider `provider` in this mailbox.
    pub async fn send(
        &self,
        provider: &Arc<dyn Provider>,
        message: Outgoing,
    ) -> Result<String, CallError> {
        let provider = provider.clone();
        let sent = self
            .run(move || Box::pin(async move { provider.send(&message).await }))
            .await?;
        Ok(sent?)
    }

    fn interrupted(&self) -> CallError {
        CallError::Interrupted {
            provider: self.name.to_string(),
        }
    }
}

/// What a provider's mailbox is (re)started with; cloned for each restart.
#[derive(Clone)]
pub struct ProviderArgs {
    name: Arc<str>,
    limiter: Arc<DefaultDirectRateLimiter>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
}

/// The arguments of a provider's mailbox held to `limit`, and the handle its callers use.
pub fn mailbox(name: &str, limit: Limit) -> (ProviderArgs, ProviderHandle) {
    let capacity = limit.queue.max(1);
    let (sender, receiver) = mpsc::channel(capacity);
    let rate = NonZeroU32::new(limit.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let name: Arc<str> = name.into();
    metrics::gauge!("switchyard_provider_quota_per_second", "provider" => name.to_string())
        .set(f64::from(rate.get()));
    let args = ProviderArgs {
        name: name.clone(),
        limiter: Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        )),
        queue: Arc::new(Mutex::new(receiver)),
    };
    let handle = ProviderHandle {
        name,
        queue: sender,
        capacity,
    };
    (args, handle)
}

/// Asks the mailbox to take its next call.
pub struct Next;

/// A provider's mailbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderActor;

impl Actor for ProviderActor {
    type Msg = Next;
    type State = ProviderArgs;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Next>,
        args: ProviderArgs,
    ) -> Result<ProviderArgs, ActorProcessingErr> {
        myself.send_message(Next)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Next>,
        Next: Next,
        args: &mut ProviderArgs,
    ) -> Result<(), ActorProcessingErr> {
        // Waiting a while at most, so a stop request is seen.
        let call = {
            let mut queue = args.queue.lock().await;
            match tokio::time::timeout(IDLE_POLL, queue.recv()).await {
                Ok(Some(call)) => Some(call),
                Ok(None) => {
                    myself.stop(None);
                    return Ok(());
                }
                Err(_) => None,
            }
        };
        if let Some(job) = call {
            args.limiter.until_ready().await;
            let label = if job().await { "sent" } else { "failed" };
            metrics::counter!("switchyard_provider_calls_total", "provider" => args.name.to_string(), "outcome" => label).increment(1);
        }
        let queued = args.queue.lock().await.len();
        metrics::gauge!("switchyard_provider_queued", "provider" => args.name.to_string())
            .set(queued as f64);
        myself.send_message(Next)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use supervisor::{ChildSpec, Restart, SupervisorActor, SupervisorArgs, SupervisorConfig};

    fn message(n: usize) -> Outgoing {
        Outgoing {
            user: "u1".into(),
            to: "someone".into(),
            subject: "s".into(),
            text: format!("{n}"),
            dedupe_key: format!("k{n}"),
        }
    }

    /// Answers each message's text; panics on the texts listed, the first time each is seen.
    struct Fake {
        started: AtomicUsize,
        calls: AtomicUsize,
        panic_on: std::sync::Mutex<Vec<String>>,
        pause: Duration,
    }

    impl Provider for Fake {
        fn send<'a>(&'a self, m: &'a Outgoing) -> BoxFuture<'a, Result<String, SendError>> {
            Box::pin(async move {
                self.started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.pause).await;
                let panics = {
                    let mut list = self.panic_on.lock().expect("not poisoned");
                    let found = list.iter().position(|t| *t == m.text);
                    found.map(|i| list.remove(i)).is_some()
                };
                if panics {
                    panic!("the provider fell over on {}", m.text);
                }
                self.calls.fetch_add(1, Ordering::SeqCst);
                Ok(m.text.clone())
            })
        }
    }

    fn fake(pause_ms: u64, panic_on: &[&str]) -> Arc<Fake> {
        Arc::new(Fake {
            started: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            panic_on: std::sync::Mutex::new(panic_on.iter().map(|s| s.to_string()).collect()),
            pause: Duration::from_millis(pause_ms),
        })
    }

    async fn supervised(name: &str, args: ProviderArgs) -> ActorRef<supervisor::SupervisorMsg> {
        let tree = supervisor::Tree::default();
        let spec = ChildSpec::actor(name, Restart::Permanent, ProviderActor, move || {
            args.clone()
        });
        let sup = SupervisorArgs {
            path: format!("test-{name}"),
            tree,
            config: SupervisorConfig::default(),
            children: vec![spec],
        };
        let (sup, _) = Actor::spawn(None, SupervisorActor, sup)
            .await
            .expect("a supervisor");
        sup
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_the_reason() {
        let limit = Limit {
            per_second: 1000,
            burst: 1,
            queue: 2,
        };
        let provider = fake(300, &[]);
        let (args, handle) = super::mailbox("slow", limit);
        let as_provider: Arc<dyn Provider> = provider.clone();
        let sup = supervised("slow", args).await;
        let first = {
            let (handle, p) = (handle.clone(), as_provider.clone());
            tokio::spawn(async move { handle.send(&p, message(0)).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while provider.started.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first call never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let calls: Vec<_> = (1..6)
            .map(|n| {
                let (handle, p) = (handle.clone(), as_provider.clone());
                tokio::spawn(async move { handle.send(&p, message(n)).await })
            })
            .collect();
        let mut refused = 0;
        let mut sent = 0;
        for call in std::iter::once(first).chain(calls) {
            match call.await.expect("joined") {
                Ok(_) => sent += 1,
                Err(CallError::QueueFull { provider, capacity }) => {
                    assert_eq!((provider.as_str(), capacity), ("slow", 2));
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        // One in the provider's hands, two waiting; the other three refused.
        assert_eq!((sent, refused), (3, 3));
        sup.stop(None);
    }

    #[tokio::test]
    async fn a_panicking_provider_is_restarted_and_keeps_its_queue() {
        let limit = Limit {
            per_second: 1000,
            burst: 1,
            queue: 100,
        };
        let provider = fake(20, &["3"]);
        let (args, handle) = super::mailbox("flaky", limit);
        let as_provider: Arc<dyn Provider> = provider.clone();
        let sup = supervised("flaky", args).await;
        let calls: Vec<_> = (0..10)
            .map(|n| {
                let (handle, p) = (handle.clone(), as_provider.clone());
                tokio::spawn(async move { (n, handle.send(&p, message(n)).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.expect("joined");
            match answer {
                Ok(text) => assert_eq!(text, n.to_string()),
                Err(CallError::Interrupted { .. }) => {
                    assert_eq!(n, 3, "only the call it fell over on is lost")
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(provider.calls.load(Ordering::SeqCst), 9);
        sup.stop(None);
    }
}
