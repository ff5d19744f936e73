//! The conformance suite on the embedded adapter, on a fresh SQLite file per test.

use std::sync::{Arc, Mutex};

use broker_adapters::{Bus, EmbeddedBus};

use crate::conformance::Fixture;

struct Embedded {
    dir: tempfile::TempDir,
    bus: Mutex<Option<Arc<EmbeddedBus>>>,
}

async fn fixture() -> Option<Embedded> {
    Some(Embedded {
        dir: tempfile::tempdir().unwrap(),
        bus: Mutex::new(None),
    })
}

impl Fixture for Embedded {
    async fn bus(&self) -> Arc<dyn Bus> {
        let existing = self.bus.lock().unwrap().clone();
        match existing {
            Some(bus) => bus,
            None => {
                let opened = EmbeddedBus::open(&self.dir.path().join("bus.sqlite"))
                    .await
                    .unwrap();
                self.bus
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| Arc::new(opened))
                    .clone()
            }
        }
    }

    async fn reopen(&self) {
        let old = self.bus.lock().unwrap().take();
        if let Some(old) = old {
            old.close().await.unwrap();
        }
    }

    async fn restart(&self) {
        // Dropped without a flush, as a crashed process would leave it.
        self.bus.lock().unwrap().take();
    }
}

crate::conformance_suite!(fixture());

/// A replay longer than a page (4096 records, the next read while one is handed out) reads
/// every record once, each partition in publish order.
#[tokio::test]
async fn a_replay_of_several_pages_reads_every_record_once_in_order() {
    use broker_adapters::{OutMessage, ReplayFrom};
    use futures::future::try_join_all;

    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(&dir.path().join("bus.sqlite"))
        .await
        .unwrap();
    bus.create_topic("pages", 2).await.unwrap();
    let total = 4096 * 2 + 100;
    for chunk in (0..total).collect::<Vec<u32>>().chunks(1000) {
        try_join_all(chunk.iter().map(|i| {
            bus.publish(
                "pages",
                OutMessage {
                    key: format!("k{}", i % 2),
                    payload: i.to_string().into_bytes(),
                    headers: Vec::new(),
                },
            )
        }))
        .await
        .unwrap();
    }
    let mut replay = bus.replay("pages", ReplayFrom::Start).await.unwrap();
    let mut last: [Option<u64>; 2] = [None, None];
    let mut read = std::collections::BTreeSet::new();
    while let Some(record) = replay.next().await.unwrap() {
        let lane = &mut last[record.partition as usize];
        assert!(
            lane.is_none_or(|l| record.offset > Some(l)),
            "partition {} went back",
            record.partition
        );
        *lane = record.offset;
        let i: u32 = String::from_utf8(record.payload).unwrap().parse().unwrap();
        assert!(read.insert(i), "record {i} read twice");
    }
    assert_eq!(read.len(), total as usize, "every record read");
}
