//! The connection to RabbitMQ: opened on first use, opened again after the broker was gone,
//! and what its errors mean for the bus (transient or not, and what to do).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

use super::CONSISTENT_HASH;
use crate::bus::BusError;

/// A channel that closes itself when dropped.
pub(super) struct Scratch(Channel);

impl std::ops::Deref for Scratch {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if channel.status().connected()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = channel.close(200, "done".into()).await;
            });
        }
    }
}

/// A lazily (re)opened connection with a publishing channel in confirm mode.
pub(super) struct Link {
    url: String,
    connecting: tokio::sync::Mutex<()>,
    state: Mutex<Option<Connected>>,
}

#[derive(Clone)]
struct Connected {
    connection: std::sync::Arc<Connection>,
    publisher: Option<Channel>,
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The AMQP reply code and text of a refusal, if the error is one.
pub(super) fn reply_code(error: &lapin::Error) -> Option<(u16, String)> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            Some((amqp.get_id(), amqp.get_message().as_str().to_owned()))
        }
        _ => None,
    }
}

/// What a lapin error means for the bus; `topic` names what a 404 is about.
pub(super) fn classify(url: &str, topic: &str, error: &lapin::Error) -> BusError {
    let at = redacted(url);
    match reply_code(error) {
        Some((404, _)) => BusError::UnknownTopic(topic.to_owned()),
        Some((403, text)) => BusError::Broker(format!(
            "rabbitmq at {at}: access refused, check the user, password and vhost ({text})"
        )),
        Some((503, text)) if text.contains("exchange type") => BusError::Broker(format!(
            "rabbitmq at {at}: the plugin rabbitmq_consistent_hash_exchange is not enabled; \
             run `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` ({text})"
        )),
        Some((320 | 541, text)) => BusError::Unavailable(format!("rabbitmq at {at}: {text}")),
        Some((code, text)) => BusError::Broker(format!("rabbitmq at {at}: {code} {text}")),
        None => BusError::Unavailable(format!("rabbitmq at {at}: {error}")),
    }
}

/// How long the broker may take to answer a request (a connection's handshake, a consumer's
/// setup, a declaration): a node that is starting can take a connection and never answer on
/// it, and a stalled one can stop answering on a connection that is up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `step`'s outcome if it comes within `ANSWER_TIMEOUT`; otherwise why not, naming `what`.
pub(super) async fn in_time<T>(what: &str, step: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ANSWER_TIMEOUT, step)
        .await
        .map_err(|_| format!("no answer to {what} within {} s", ANSWER_TIMEOUT.as_secs()))
}

/// The broker's reply to `step` (`what` the broker at `url` is asked), or unavailable if none
/// comes within `ANSWER_TIMEOUT`.
pub(super) async fn reply<T>(
    url: &str,
    what: &str,
    step: impl Future<Output = T>,
) -> Result<T, BusError> {
    in_time(what, step).await.map_err(|unanswered| {
        BusError::Unavailable(format!("rabbitmq at {}: {unanswered}", redacted(url)))
    })
}

/// `step` (`what` the broker at `url` is asked), given up as unavailable after `ANSWER_TIMEOUT`.
pub(super) async fn answered<T>(
    url: &str,
    what: &str,
    step: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    reply(url, what, step).await?
}

/// Opens a connection, telling a refused login apart from an unreachable broker.
pub(super) async fn open(url: &str) -> Result<Connection, BusError> {
    let connect = Connection::connect(url, ConnectionProperties::default());
    answered(url, "a connection", async {
        connect.await.map_err(|e| {
            let text = e.to_string();
            if text.contains("ACCESS_REFUSED") || text.contains("authentication") {
                BusError::Broker(format!(
                    "rabbitmq at {}: login refused, check the user and password ({text})",
                    redacted(url)
                ))
            } else {
                classify(url, "", &e)
            }
        })
    })
    .await
}

impl Link {
    pub(super) fn new(url: &str) -> Link {
        Link {
            url: url.to_owned(),
            connecting: tokio::sync::Mutex::new(()),
            state: Mutex::new(None),
        }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The broker's reply to `step` (`what` it is asked on the shared connection). If none
    /// comes within `ANSWER_TIMEOUT` the connection is dropped, so the next call opens another
    /// rather than waiting on a stalled one again.
    pub(super) async fn ask<T>(
        &self,
        what: &str,
        step: impl Future<Output = T>,
    ) -> Result<T, BusError> {
        let answer = reply(&self.url, what, step).await;
        if answer.is_err() {
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        answer
    }

    /// `ask`, with the broker's refusal told as a bus error about `topic`.
    pub(super) async fn request<T>(
        &self,
        what: &str,
        topic: &str,
        step: impl Future<Output = Result<T, lapin::Error>>,
    ) -> Result<T, BusError> {
        self.ask(what, step)
            .await?
            .map_err(|e| classify(&self.url, topic, &e))
    }

    fn current(&self) -> Option<Connected> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .as_ref()
            .filter(|c| c.connection.status().connected())
            .cloned()
    }

    /// The open connection, opening one if needed.
    async fn connected(&self) -> Result<Connected, BusError> {
        if let Some(connected) = self.current() {
            return Ok(connected);
        }
        let _one_at_a_time = self.connecting.lock().await;
        self.connected_unlocked().await
    }

    /// `connected`, for a caller that holds `connecting`.
    async fn connected_unlocked(&self) -> Result<Connected, BusError> {
        if let Some(connected) = self.current() {
            return Ok(connected);
        }
        let connection = open(&self.url).await?;
        let connected = Connected {
            connection: std::sync::Arc::new(connection),
            publisher: None,
        };
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(connected.clone());
        Ok(connected)
    }

    /// A fresh channel for declarations, whose refusals close it and nothing else; it is
    /// closed when dropped.
    pub(super) async fn scratch_channel(&self) -> Result<Scratch, BusError> {
        let connected = self.connected().await?;
        self.request(
            "opening a channel",
            "",
            connected.connection.create_channel(),
        )
        .await
        .map(Scratch)
    }

    /// A new connection of its own (for a consumer, whose death must not take others along).
    pub(super) async fn dedicated(&self) -> Result<Connection, BusError> {
        open(&self.url).await
    }

    /// The shared publishing channel, in confirm mode.
    pub(super) async fn publish_channel(&self) -> Result<Channel, BusError> {
        let connected = self.connected().await?;
        if let Some(channel) = connected.publisher.filter(|c| c.status().connected()) {
            return Ok(channel);
        }
        // One at a time: a channel is closed when its last handle goes, so a second one made
        // in a race would close under its publishes.
        let _one_at_a_time = self.connecting.lock().await;
        let connected = self.connected_unlocked().await?;
        if let Some(channel) = connected.publisher.filter(|c| c.status().connected()) {
            return Ok(channel);
        }
        let channel = self
            .request(
                "opening a channel",
                "",
                connected.connection.create_channel(),
            )
            .await?;
        let confirming = channel.confirm_select(ConfirmSelectOptions::default());
        self.request("turning on publisher confirms", "", confirming)
            .await?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = state.as_mut() {
            current.publisher = Some(channel.clone());
        }
        Ok(channel)
    }

    /// Forgets the publishing channel (a refusal closed it).
    pub(super) fn reset_publisher(&self) {
        if let Some(current) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            current.publisher = None;
        }
    }

    /// Checks that the broker answers and has the consistent-hash exchange plugin.
    pub(super) async fn check(&self) -> Result<(), BusError> {
        let channel = self.scratch_channel().await?;
        let probe = "switchyard.probe";
        let options = ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        };
        let declaring = channel.exchange_declare(
            probe.into(),
            ExchangeKind::Custom(CONSISTENT_HASH.into()),
            options,
            FieldTable::default(),
        );
        self.request("declaring a probe", probe, declaring).await?;
        let deleting = channel.exchange_delete(probe.into(), ExchangeDeleteOptions::default());
        self.request("deleting a probe", probe, deleting).await?;
        Ok(())
    }

    /// Closes the connection.
    pub(super) async fn close(&self) {
        let connected = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(connected) = connected {
            let _ = connected.connection.close(200, "closed".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            super::redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redacted("amqp://host"), "amqp://host");
    }
}
