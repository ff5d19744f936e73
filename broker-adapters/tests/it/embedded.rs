//! The conformance suite on the embedded adapter, on a fresh SQLite file per test.

use std::sync::{Arc, Mutex};

use broker_adapters::{Bus, EmbeddedBus};

use crate::conformance::Fixture;

struct Embedded {
    dir: tempfile::TempDir,
    bus: Mutex<Option<EmbeddedBus>>,
}

impl Embedded {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("bus.sqlite")
    }
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
        let bus = match existing {
            Some(bus) => bus,
            None => EmbeddedBus::open(&self.path()).await.unwrap(),
        };
        *self.bus.lock().unwrap() = Some(bus.clone());
        Arc::new(bus)
    }

    async fn restart(&self) {
        let old = self.bus.lock().unwrap().take();
        if let Some(old) = old {
            old.close().await.unwrap();
        }
    }
}

crate::conformance_suite!(fixture());
