//! Node configuration: defaults, then a TOML file, then `SWITCHYARD_*` variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Which broker carries the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// The embedded log in the data directory: one node, nothing to install.
    #[default]
    Embedded,
    /// Kafka (or a Kafka-compatible broker) at `kafka_brokers`.
    Kafka,
    /// RabbitMQ at `amqp_url`.
    Rabbitmq,
}

impl std::fmt::Display for BusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BusKind::Embedded => "embedded",
            BusKind::Kafka => "kafka",
            BusKind::Rabbitmq => "rabbitmq",
        })
    }
}

/// Everything a node is configured by; every default runs on one machine with nothing installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded bus, the SQLite database and `admin.token` live.
    pub data_dir: PathBuf,
    /// HTTP listen address (webhooks, `/v1/events`, probes).
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// State database URL; empty means SQLite at `<data_dir>/state.sqlite`.
    pub database_url: String,
    /// This node's id, used in message sources and the cluster's member list.
    pub node_id: String,
    /// Partitions of the events topic when the node creates it.
    pub partitions: u32,
    /// Seconds an idle task or agent actor lives before it is passivated.
    pub passivate_after_secs: u64,
    /// Which broker carries the bus.
    pub bus: BusKind,
    /// Kafka bootstrap servers, `host:port,…` (with `bus = "kafka"`).
    pub kafka_brokers: String,
    /// RabbitMQ URL (with `bus = "rabbitmq"`).
    pub amqp_url: String,
    /// How long a Kafka consumer may go unheard before its partitions move to another node:
    /// the failover time. Brokers refuse less than their `group.min.session.timeout.ms`.
    pub kafka_session_timeout_ms: u64,
    /// How long an agent may go without a heartbeat before it counts as offline and its
    /// work is requeued; its worker is asked for a heartbeat every third of it.
    pub agent_timeout_ms: u64,
    /// Inbound channels (`[channels.slack]`, …); one whose secret is not set is off.
    pub channels: gateways::channels::ChannelsConfig,
    /// HTTP limits (`[limits]`): rate, body size, timeout, concurrency.
    pub limits: gateways::limits::Limits,
    /// Notification delivery (`[notifier]`): policy, providers and their limits, users.
    pub notifier: actors::providers::NotifierConfig,
    /// Where calendars are kept (`[calendar]`): the database, and a CalDAV server if set.
    pub calendar: actors::providers::caldav::CalendarConfig,
    /// Model providers' limits (`[models.<provider>]`), which workers ask before each call.
    pub models: std::collections::BTreeMap<String, actors::providers::Limit>,
    /// Model budgets (`[costs]`), for everyone and per user.
    pub costs: actors::budgets::CostsConfig,
    /// How late a scheduled automation run may fire and still count as on time; one later
    /// (the node was down) was missed, and the automation's policy decides.
    pub automation_grace_ms: u64,
    /// Serve `/metrics`, `/cluster/status` and `/cluster/peers` without the admin key.
    pub open_operator_endpoints: bool,
    /// Where spans are exported over OTLP/gRPC (`http://host:4317`); empty exports nothing.
    pub otlp_endpoint: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./switchyard-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: String::new(),
            node_id: "n1".into(),
            partitions: 8,
            passivate_after_secs: 300,
            bus: BusKind::Embedded,
            kafka_brokers: "127.0.0.1:9092".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            kafka_session_timeout_ms: 6000,
            agent_timeout_ms: 30_000,
            channels: Default::default(),
            limits: Default::default(),
            notifier: Default::default(),
            calendar: Default::default(),
            models: Default::default(),
            costs: Default::default(),
            automation_grace_ms: 60_000,
            open_operator_endpoints: false,
            otlp_endpoint: String::new(),
        }
    }
}

/// Settings given on the command line; `None` leaves the other sources' value.
#[derive(Debug, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Directory for the embedded bus, the SQLite database and admin.token [default: ./switchyard-data]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    /// Which broker carries the bus [default: embedded]
    #[arg(long, value_name = "BUS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<BusKind>,
    /// Kafka bootstrap servers, host:port,… [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOSTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amqp_url: Option<String>,
    /// State database: sqlite://… or postgres://… [default: SQLite in the data directory]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// This node's id, unique in its cluster [default: n1]
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Export spans over OTLP/gRPC to this URL, e.g. http://127.0.0.1:4317 [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

/// Environment variables that configure a node are `SWITCHYARD_<SETTING>`; a setting inside a
/// table is `SWITCHYARD_<TABLE>__<SETTING>` (`SWITCHYARD_CHANNELS__SLACK__SIGNING_SECRET`).
const ENV_PREFIX: &str = "SWITCHYARD_";

/// What separates a table from its setting in a variable's name.
const ENV_NESTING: &str = "__";

/// Variables with the prefix that are read elsewhere (the CLI, the log filter, tests).
const NOT_SETTINGS: &[&str] = &["config", "log", "log_format"];

impl Config {
    /// Loads the configuration from `file` (if any), the environment and `overrides`.
    ///
    /// An unknown key in the file is an error; an unknown `SWITCHYARD_*` variable only a
    /// warning, since scripts and client tools share the prefix (`SWITCHYARD_TOKEN`, say).
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, Box<figment::Error>> {
        let settings = Config::setting_names();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        for (name, _) in std::env::vars() {
            let Some(setting) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let setting = setting.to_ascii_lowercase();
            let top = setting.split(ENV_NESTING).next().unwrap_or("").to_owned();
            if !settings.contains(&top)
                && !NOT_SETTINGS.contains(&setting.as_str())
                && !setting.starts_with("test_")
            {
                tracing::warn!(variable = %name, "not a setting; ignored");
            }
        }
        figment
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(move |key| {
                        let key = key.as_str().to_ascii_lowercase();
                        settings.contains(&key.split(ENV_NESTING).next().unwrap_or("").to_owned())
                    })
                    .split(ENV_NESTING),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// The names of the settings, as the file and the variables spell them.
    fn setting_names() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The state database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("state.sqlite").display()
            )
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures must return figment::Error
mod tests {
    use super::*;

    #[test]
    fn sources_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "http = \"127.0.0.1:9000\"\ngrpc = \"127.0.0.1:9001\"\nnode_id = \"a\"\nbus = \"kafka\"",
            )?;
            jail.set_env("SWITCHYARD_GRPC", "127.0.0.1:9002");
            jail.set_env("SWITCHYARD_KAFKA_BROKERS", "k1:9092,k2:9092");
            jail.set_env("SWITCHYARD_TEST_POSTGRES", "ignored");
            jail.set_env("SWITCHYARD_LOG", "debug");
            jail.set_env("SWITCHYARD_CHANNELS__SLACK__SIGNING_SECRET", "from-env");
            jail.set_env("SWITCHYARD_CHANNELS__TELEGRAM__SECRET_TOKEN", "123456");
            let overrides = Overrides {
                data_dir: Some("/tmp/x".into()),
                bus: Some(BusKind::Rabbitmq),
                ..Default::default()
            };
            let config = Config::load(Some(Path::new("node.toml")), overrides).map_err(|e| *e)?;
            assert_eq!(config.http.port(), 9000);
            assert_eq!(config.grpc.port(), 9002);
            assert_eq!(config.node_id, "a");
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(config.bus, BusKind::Rabbitmq, "the flag beats the file");
            assert_eq!(config.kafka_brokers, "k1:9092,k2:9092");
            assert_eq!(config.partitions, 8);
            assert_eq!(config.channels.slack.signing_secret.expose(), "from-env");
            assert_eq!(
                config.channels.telegram.secret_token.expose(),
                "123456",
                "a secret of digits is text, not a number"
            );
            assert!(
                !format!("{config:?}").contains("from-env"),
                "secrets never show in debug output"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_are_refused_in_the_file_but_not_in_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", "htp = \"127.0.0.1:9000\"")?;
            let error =
                Config::load(Some(Path::new("node.toml")), Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("htp"), "{error}");
            jail.set_env("SWITCHYARD_TOKEN", "a client tool's key");
            jail.set_env("SWITCHYARD_NODE_ID", "n7");
            let config = Config::load(None, Overrides::default()).map_err(|e| *e)?;
            assert_eq!(config.node_id, "n7");
            Ok(())
        });
    }

    #[test]
    fn a_bad_bus_names_the_choices() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_BUS", "nats");
            let error = Config::load(None, Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("embedded"), "{error}");
            Ok(())
        });
    }
}
