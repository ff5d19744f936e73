//! The conformance suite on the rabbitmq adapter: on the shared RabbitMQ that `scripts/test`
//! starts (each case deleting what it declared), and the broker-restart case on a RabbitMQ
//! node of its own, which it kills.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use broker_adapters::testkit::{RabbitNode, required, skipped};
use broker_adapters::{
    Bus, BusError, OutMessage, PublishError, RabbitBus, Receipt, Replay, ReplayFrom,
    SubscribeOptions, Subscription, dlq_topic,
};

use crate::conformance::Fixture;

/// Topics, and groups on them, that a case declared.
type Declared = BTreeSet<(String, Option<String>)>;

/// A bus that remembers what it declared, so a case can delete it afterwards.
#[derive(Clone)]
struct Recording {
    bus: RabbitBus,
    declared: Arc<Mutex<Declared>>,
}

impl Recording {
    fn note(&self, topic: &str, group: Option<&str>) {
        let mut declared = self.declared.lock().unwrap();
        declared.insert((topic.to_owned(), None));
        if let Some(group) = group {
            declared.insert((topic.to_owned(), Some(group.to_owned())));
            declared.insert((dlq_topic(topic), None));
        }
    }

    async fn delete_all(&self) {
        let declared = std::mem::take(&mut *self.declared.lock().unwrap());
        let topics: BTreeSet<&String> = declared.iter().map(|(t, _)| t).collect();
        for topic in topics {
            let groups: Vec<&str> = declared
                .iter()
                .filter(|(t, g)| t == topic && g.is_some())
                .filter_map(|(_, g)| g.as_deref())
                .collect();
            let _ = self.bus.delete_topic(topic, &groups).await;
        }
    }
}

#[async_trait]
impl Bus for Recording {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        self.note(topic, None);
        self.bus.create_topic(topic, partitions).await
    }
    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.bus.partitions(topic).await
    }
    async fn publish(&self, topic: &str, message: OutMessage) -> Result<Receipt, PublishError> {
        self.bus.publish(topic, message).await
    }
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.note(topic, Some(group));
        self.bus.subscribe(topic, group, options).await
    }
    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError> {
        self.bus.replay(topic, from).await
    }
    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<std::collections::BTreeMap<u32, u64>, BusError> {
        self.bus.lag(topic, group).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.bus.ping().await
    }
    async fn close(&self) -> Result<(), BusError> {
        self.bus.close().await
    }
}

struct Rabbit {
    url: String,
    node: Option<tokio::sync::Mutex<RabbitNode>>,
    bus: Mutex<Arc<Recording>>,
}

impl Rabbit {
    fn new(url: String, node: Option<RabbitNode>) -> Rabbit {
        let bus = Recording {
            bus: RabbitBus::connect(&url),
            declared: Arc::default(),
        };
        Rabbit {
            url,
            node: node.map(tokio::sync::Mutex::new),
            bus: Mutex::new(Arc::new(bus)),
        }
    }
}

/// The shared broker.
async fn shared() -> Option<Rabbit> {
    if skipped("rabbitmq") {
        return None;
    }
    let url = required("SWITCHYARD_TEST_AMQP", "the AMQP URL of a RabbitMQ");
    Some(Rabbit::new(url, None))
}

/// A node of the case's own.
async fn own_node() -> Option<Rabbit> {
    if skipped("rabbitmq") {
        return None;
    }
    let node = RabbitNode::start().await;
    Some(Rabbit::new(node.url(), Some(node)))
}

impl Fixture for Rabbit {
    async fn bus(&self) -> Arc<dyn Bus> {
        self.bus.lock().unwrap().clone()
    }

    async fn reopen(&self) {
        let old = self.bus.lock().unwrap().clone();
        old.close().await.unwrap();
        let reopened = Recording {
            bus: RabbitBus::connect(&self.url),
            declared: old.declared.clone(),
        };
        *self.bus.lock().unwrap() = Arc::new(reopened);
    }

    async fn restart(&self) {
        let node = self
            .node
            .as_ref()
            .expect("restart runs on a node of its own");
        node.lock().await.restart().await;
    }

    async fn cleanup(&self) {
        let bus = self.bus.lock().unwrap().clone();
        bus.delete_all().await;
    }
}

mod shared_broker {
    use super::*;

    crate::conformance_suite!(shared();
        publish_subscribe, per_key_order, concurrent_publishers, group_sharing_and_rebalance,
        two_groups_each_get_everything, nack_redelivers,
        redelivery_count_visible_to_the_handler, no_ack_holds_the_next_message_of_that_key,
        dead_letters, poison_message_never_blocks_its_partition, forced_failures,
        replay_from_start_offset_and_time, replay_keeps_order_per_partition,
        new_group_starts_at_earliest_or_latest, close_and_reopen_without_loss,
        close_and_reopen_in_a_loop, publisher_close_loses_nothing, topic_isolation,
        group_names_per_topic, cancel_subscription_mid_stream, concurrent_close_of_many_subscriptions,
        many_members_subscribe_at_once, trace_context_carried,
        unknown_envelope_fields_tolerated, large_messages, many_topics, consumer_lag);
}

mod own_node {
    use super::*;

    crate::conformance_suite!(own_node(); restart_mid_stream);
}

/// A broker that takes connections and never answers on them, as a node that is starting can.
mod silent_broker {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_broker_that_never_answers_is_unavailable_not_waited_for_for_good() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("amqp://guest:guest@{}/%2f", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let bus = RabbitBus::connect(&url);
        let subscribing = bus.subscribe("silent", "g", SubscribeOptions::default());
        let answer = tokio::time::timeout(Duration::from_secs(60), subscribing)
            .await
            .expect("a subscription waited over a minute on a broker that never answers");
        let error = answer
            .err()
            .expect("a broker that never answers took a member");
        assert!(error.is_transient(), "worth retrying: {error}");
        assert!(error.to_string().contains("no answer"), "{error}");
        silent.abort();
    }
}

/// The shared broker behind a loopback proxy that, once armed, stalls one connection at the
/// client's next `queue.declare`, keeping it open: a broker that answered the handshake and
/// opened the channel, then stopped answering on that connection.
mod stalled_broker {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    use super::*;

    /// AMQP's `queue.declare`: class 50, method 10.
    const QUEUE_DECLARE: [u8; 4] = [0, 50, 0, 10];

    /// Passes the broker's bytes to the client until the proxy stalls, then holds them.
    async fn answers(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        stalled: watch::Receiver<bool>,
    ) {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if *stalled.borrow() {
                std::future::pending::<()>().await;
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Passes the client's frames to the broker; once armed, stalls this connection at its
    /// first `queue.declare` and disarms.
    async fn requests(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        armed: Arc<watch::Sender<bool>>,
        stall: watch::Sender<bool>,
    ) {
        let mut pending = Vec::new();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            pending.extend_from_slice(&buffer[..n]);
            loop {
                // The protocol header comes first, then frames: type, channel, size, payload, end.
                let length = if pending.starts_with(b"AMQP") {
                    8
                } else if pending.len() >= 7 {
                    7 + u32::from_be_bytes([pending[3], pending[4], pending[5], pending[6]])
                        as usize
                        + 1
                } else {
                    break;
                };
                if pending.len() < length {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..length).collect();
                if *armed.borrow() && frame[0] == 1 && frame.get(7..11) == Some(&QUEUE_DECLARE[..])
                {
                    armed.send_replace(false);
                    stall.send_replace(true);
                    std::future::pending::<()>().await;
                }
                if to.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_broker_that_stops_answering_a_declaration_is_unavailable_not_waited_for() {
        let Some(rabbit) = shared().await else {
            return;
        };
        let (credentials, rest) = rabbit.url.split_once('@').expect("user@host in the URL");
        let (upstream, vhost) = rest.split_once('/').expect("a vhost in the URL");
        let upstream = upstream.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{credentials}@{}/{vhost}", listener.local_addr().unwrap());
        let armed = Arc::new(watch::channel(false).0);
        let arm = armed.clone();
        let proxy = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let ((client_in, client_out), (server_in, server_out)) =
                    (client.into_split(), server.into_split());
                let (stall, stalled) = watch::channel(false);
                tokio::spawn(requests(client_in, server_out, armed.clone(), stall));
                tokio::spawn(answers(server_in, client_out, stalled));
            }
        });
        let topics = [0, 1].map(|i| format!("stalled-{i}-{}", std::process::id()));
        let bus = RabbitBus::connect(&url);
        bus.create_topic(&topics[0], 2)
            .await
            .expect("a topic declared through the proxy before it is armed");
        arm.send_replace(true);
        let declaring = bus.create_topic(&topics[1], 2);
        let answer = tokio::time::timeout(Duration::from_secs(45), declaring)
            .await
            .expect("a declaration waited over 45 s on a broker that stopped answering");
        let error = answer.expect_err("a broker that stopped answering declared a topic");
        assert!(error.is_transient(), "worth retrying: {error}");
        assert!(
            error.to_string().contains("no answer to declaring a topic"),
            "{error}"
        );
        // Tried again, the call goes through: it is not sent down the stalled connection.
        tokio::time::timeout(Duration::from_secs(45), bus.create_topic(&topics[1], 2))
            .await
            .expect("a retry waited over 45 s")
            .expect("a retry on a fresh connection declares the topic");
        proxy.abort();
        let direct = RabbitBus::connect(&rabbit.url);
        for topic in &topics {
            direct.delete_topic(topic, &[]).await.unwrap();
        }
    }
}
