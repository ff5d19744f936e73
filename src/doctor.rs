//! `switchyard doctor`: checks that the configured bus and database can be reached and used,
//! and says exactly what is wrong with each that cannot.

use std::time::Duration;

use actors::Store;
use migrations::{Migrator, MigratorTrait};

use crate::config::{BusKind, Config};

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The outcome of checking one part.
#[derive(Debug)]
pub struct Check {
    /// What was checked, and where.
    pub part: String,
    /// What was found: fine (with a detail) or the problem.
    pub result: Result<String, String>,
}

/// `url` with any password replaced, for printing.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Checks the bus and the database of `config`.
pub async fn run(config: &Config) -> Vec<Check> {
    let where_bus = match config.bus {
        BusKind::Embedded => format!("embedded log in {}", config.data_dir.display()),
        BusKind::Kafka => format!("kafka at {}", config.kafka_brokers),
        BusKind::Rabbitmq => format!("rabbitmq at {}", redacted(&config.amqp_url)),
    };
    let bus = Check {
        part: format!("bus ({where_bus})"),
        result: within(check_bus(config)).await,
    };
    let database = Check {
        part: format!("database ({})", redacted(&config.database_url())),
        result: within(check_database(config)).await,
    };
    vec![bus, database]
}

async fn within(check: impl Future<Output = Result<String, String>>) -> Result<String, String> {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())))
}

async fn check_bus(config: &Config) -> Result<String, String> {
    let log = config.data_dir.join("bus.sqlite");
    if config.bus == BusKind::Embedded && !log.exists() {
        return Err(format!(
            "no embedded log at {} yet (a node creates it when it first starts)",
            log.display()
        ));
    }
    let bus = crate::open_bus(config)
        .await
        .map_err(|e| format!("{e:#}"))?;
    bus.ping().await.map_err(|e| e.to_string())?;
    let topic = schemas::EVENTS_TOPIC;
    let answer = match bus.partitions(topic).await {
        Ok(partitions) => Ok(format!("topic {topic} has {partitions} partitions")),
        Err(broker_adapters::BusError::UnknownTopic(_)) => Err(format!(
            "topic {topic} is missing (a node creates it when it starts)"
        )),
        Err(e) => Err(e.to_string()),
    };
    let _ = bus.close().await;
    answer
}

async fn check_database(config: &Config) -> Result<String, String> {
    if config.database_url.is_empty() && !config.data_dir.exists() {
        return Err(format!(
            "no data directory at {} yet (a node creates it when it first starts)",
            config.data_dir.display()
        ));
    }
    let store = Store::connect(&config.database_url())
        .await
        .map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())?;
    let pending = Migrator::get_pending_migrations(store.connection())
        .await
        .map_err(|e| e.to_string())?;
    Ok(if pending.is_empty() {
        "reachable, schema up to date".into()
    } else {
        format!(
            "reachable, {} migrations pending (a node applies them when it starts)",
            pending.len()
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_the_report() {
        assert_eq!(
            super::redacted("postgres://postgres:secret@127.0.0.1:5432/test"),
            "postgres://postgres:***@127.0.0.1:5432/test"
        );
        assert_eq!(
            super::redacted("sqlite://./x.sqlite?mode=rwc"),
            "sqlite://./x.sqlite?mode=rwc"
        );
    }
}
