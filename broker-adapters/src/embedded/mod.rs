//! The embedded adapter: an in-process, durable, replayable log in one SQLite file (WAL).
//!
//! One writer task owns all writes and commits them in batches (group commit), so a publish
//! returns once its batch is fsynced. Consumer groups are coordinated in memory, which is why
//! this adapter serves one node; their committed offsets are stored beside the records.

mod group;
mod headers;
mod replay;
mod store;
mod subscription;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::bus::{
    Bus, BusError, OutMessage, PublishError, Receipt, Replay, ReplayFrom, StartAt,
    SubscribeOptions, Subscription,
};
use crate::partition::partition_for;
use group::Groups;
use store::Store;

/// The embedded bus; cheap to clone, all clones share one log.
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    topics: Mutex<HashMap<String, Topic>>,
    groups: Groups,
}

/// What the bus knows of a topic in memory.
#[derive(Clone)]
struct Topic {
    partitions: u32,
    /// Bumped after every committed append, so idle consumers wake up.
    appended: watch::Receiver<u64>,
}

impl EmbeddedBus {
    /// Opens (creating if needed) the log at `path`, a SQLite file.
    pub async fn open(path: &Path) -> Result<EmbeddedBus, BusError> {
        let (store, topics) = Store::open(path).await?;
        let topics = topics
            .into_iter()
            .map(|(name, partitions, appended)| {
                (
                    name,
                    Topic {
                        partitions,
                        appended,
                    },
                )
            })
            .collect();
        Ok(EmbeddedBus {
            inner: Arc::new(Inner {
                store,
                topics: Mutex::new(topics),
                groups: Groups::default(),
            }),
        })
    }

    fn topic(&self, name: &str) -> Result<Topic, BusError> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_owned()))
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let partitions = partitions.max(1);
        if let Ok(existing) = self.topic(topic) {
            return BusError::check_partitions(topic, existing.partitions, partitions);
        }
        let (existing, appended) = self.inner.store.create_topic(topic, partitions).await?;
        BusError::check_partitions(topic, existing, partitions)?;
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic.to_owned())
            .or_insert(Topic {
                partitions,
                appended,
            });
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.topic(topic).map(|t| t.partitions)
    }

    async fn publish(&self, topic: &str, message: OutMessage) -> Result<Receipt, PublishError> {
        let partitions = match self.topic(topic) {
            Ok(t) => t.partitions,
            Err(error) => return Err(PublishError { message, error }),
        };
        let partition = partition_for(&message.key, partitions);
        let offset = self.inner.store.append(topic, partition, message).await?;
        Ok(Receipt {
            partition: Some(partition),
            offset: Some(offset),
        })
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let meta = self.topic(topic)?;
        let dlq = crate::bus::dlq_topic(topic);
        self.create_topic(&dlq, 1).await?;
        let mut committed = self.inner.store.committed(group, topic).await?;
        if options.start == StartAt::Latest {
            // A new group starts at the end; remembering it keeps a restart from skipping ahead.
            for partition in 0..meta.partitions {
                if let std::collections::hash_map::Entry::Vacant(slot) = committed.entry(partition)
                {
                    let end = self.inner.store.end(topic, partition);
                    slot.insert(end);
                    self.inner
                        .store
                        .commit(group, topic, partition, end)
                        .await?;
                }
            }
        }
        let member = self
            .inner
            .groups
            .join(group, topic, meta.partitions, committed);
        Ok(Box::new(subscription::EmbeddedSubscription::new(
            self.clone(),
            topic.to_owned(),
            dlq,
            meta,
            member,
            options,
        )))
    }

    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError> {
        self.topic(topic)?;
        let end = self.inner.store.last_seq(topic).await?;
        let expected = self.inner.store.count(topic, end, &from).await?;
        Ok(Box::new(replay::EmbeddedReplay::new(
            self.inner.store.clone(),
            topic.to_owned(),
            from,
            end,
            expected,
        )))
    }

    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<std::collections::BTreeMap<u32, u64>, BusError> {
        let meta = self.topic(topic)?;
        // The group's live offsets run ahead of those on disk, which are written in batches.
        let committed = match self.inner.groups.committed(group, topic) {
            Some(live) => live,
            None => self.inner.store.committed(group, topic).await?,
        };
        Ok((0..meta.partitions)
            .map(|p| {
                let done = committed.get(&p).copied().unwrap_or(0);
                (p, self.inner.store.end(topic, p).saturating_sub(done))
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.store.ping().await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.inner.store.flush().await
    }
}
