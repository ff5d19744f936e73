//! Replay: a topic read in publish order, outside any group, up to its end at the start.

use std::collections::VecDeque;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::store::Store;
use crate::bus::{BusError, Record, Replay, ReplayFrom};

const PAGE: u32 = 4096;

/// A page of records and the sequence number of its last.
type Page = Result<(Vec<Record>, Option<i64>), BusError>;

pub(crate) struct EmbeddedReplay {
    store: Store,
    topic: String,
    from: ReplayFrom,
    after: i64,
    end: i64,
    expected: u64,
    page: VecDeque<Record>,
    /// The next page, read while this one is handed out: a reader that does work per record
    /// would otherwise wait for each page's read.
    reading: Option<JoinHandle<Page>>,
}

impl EmbeddedReplay {
    pub(crate) fn new(
        store: Store,
        topic: String,
        from: ReplayFrom,
        end: i64,
        expected: u64,
    ) -> Self {
        EmbeddedReplay {
            store,
            topic,
            from,
            after: 0,
            end,
            expected,
            page: VecDeque::new(),
            reading: None,
        }
    }

    /// Starts reading the page after `self.after`.
    fn read(&self) -> JoinHandle<Page> {
        let (store, topic, from) = (self.store.clone(), self.topic.clone(), self.from.clone());
        let (after, end) = (self.after, self.end);
        tokio::spawn(async move { store.scan(&topic, after, end, &from, PAGE).await })
    }
}

#[async_trait]
impl Replay for EmbeddedReplay {
    async fn next(&mut self) -> Result<Option<Record>, BusError> {
        while self.page.is_empty() && self.after < self.end {
            let reading = self.reading.take().unwrap_or_else(|| self.read());
            let (records, last) = reading.await.map_err(|e| {
                BusError::Broker(format!("reading a page of `{}`: {e}", self.topic))
            })??;
            self.after = last.unwrap_or(self.end);
            self.page = records.into();
            if self.after < self.end {
                self.reading = Some(self.read());
            }
        }
        Ok(self.page.pop_front())
    }

    fn expected(&self) -> Option<u64> {
        Some(self.expected)
    }
}

impl Drop for EmbeddedReplay {
    fn drop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}
