//! The conformance suite on the kafka adapter, each test on a tansu broker process of its own.
//!
//! Two tansu builds with different faults (STACK.md): the broker-restart case runs on the
//! registry build with SQLite storage, which keeps data across a restart, and so does the
//! start-at-latest case (memory storage answers the wrong latest offset); every other case
//! runs on the calfkit build, whose consumer groups rebalance promptly.

use std::sync::Arc;

use broker_adapters::kafka::DEFAULT_SESSION_TIMEOUT;
use broker_adapters::testkit::{Tansu, TansuBuild, skipped};
use broker_adapters::{Bus, KafkaBus};

use crate::conformance::Fixture;

struct Kafka {
    tansu: tokio::sync::Mutex<Tansu>,
    bus: std::sync::Mutex<Arc<KafkaBus>>,
}

async fn fixture(build: TansuBuild) -> Option<Kafka> {
    if skipped("kafka") {
        return None;
    }
    let tansu = Tansu::start(build).await;
    let bus = KafkaBus::connect(&tansu.brokers(), DEFAULT_SESSION_TIMEOUT).unwrap();
    Some(Kafka {
        tansu: tokio::sync::Mutex::new(tansu),
        bus: std::sync::Mutex::new(Arc::new(bus)),
    })
}

impl Fixture for Kafka {
    async fn bus(&self) -> Arc<dyn Bus> {
        self.bus.lock().unwrap().clone()
    }

    async fn reopen(&self) {
        let old = self.bus.lock().unwrap().clone();
        old.close().await.unwrap();
        let brokers = self.tansu.lock().await.brokers();
        *self.bus.lock().unwrap() =
            Arc::new(KafkaBus::connect(&brokers, DEFAULT_SESSION_TIMEOUT).unwrap());
    }

    async fn restart(&self) {
        self.tansu.lock().await.restart().await;
    }
}

mod calfkit_memory {
    use super::*;

    crate::conformance_suite!(fixture(TansuBuild::CalfkitMemory);
        publish_subscribe, per_key_order, concurrent_publishers, group_sharing_and_rebalance,
        two_groups_each_get_everything, nack_redelivers,
        redelivery_count_visible_to_the_handler, no_ack_holds_the_next_message_of_that_key,
        dead_letters, poison_message_never_blocks_its_partition, forced_failures,
        replay_from_start_offset_and_time, replay_keeps_order_per_partition,
        close_and_reopen_without_loss,
        close_and_reopen_in_a_loop, publisher_close_loses_nothing, topic_isolation,
        group_names_per_topic, cancel_subscription_mid_stream, concurrent_close_of_many_subscriptions,
        many_members_subscribe_at_once, trace_context_carried,
        unknown_envelope_fields_tolerated, large_messages, many_topics);
}

mod registry_sqlite {
    use super::*;

    // The lag needs partitions' end offsets, which the calfkit build's memory storage answers
    // wrongly (ListOffsets LATEST, ../shared/STACK.md): it runs here, on SQLite storage.
    crate::conformance_suite!(fixture(TansuBuild::RegistrySqlite);
        restart_mid_stream, new_group_starts_at_earliest_or_latest, consumer_lag);
}
