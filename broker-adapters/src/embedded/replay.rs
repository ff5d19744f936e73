//! Replay: a topic read in publish order, outside any group, up to its end at the start.

use std::collections::VecDeque;

use async_trait::async_trait;

use super::store::Store;
use crate::bus::{BusError, Record, Replay, ReplayFrom};

const PAGE: u32 = 512;

pub(crate) struct EmbeddedReplay {
    store: Store,
    topic: String,
    from: ReplayFrom,
    after: i64,
    end: i64,
    expected: u64,
    page: VecDeque<Record>,
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
        }
    }
}

#[async_trait]
impl Replay for EmbeddedReplay {
    async fn next(&mut self) -> Result<Option<Record>, BusError> {
        while self.page.is_empty() && self.after < self.end {
            let (records, last) = self
                .store
                .scan(&self.topic, self.after, self.end, &self.from, PAGE)
                .await?;
            self.after = last.unwrap_or(self.end);
            self.page = records.into();
        }
        Ok(self.page.pop_front())
    }

    fn expected(&self) -> Option<u64> {
        Some(self.expected)
    }
}
