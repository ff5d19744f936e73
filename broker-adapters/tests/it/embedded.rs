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
