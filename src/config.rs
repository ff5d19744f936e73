//! Node configuration: defaults, then a TOML file, then `SWITCHYARD_*` variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    /// This node's id, used in message sources.
    pub node_id: String,
    /// Partitions of the events topic when the node creates it.
    pub partitions: u32,
    /// Seconds an idle task or agent actor lives before it is passivated.
    pub passivate_after_secs: u64,
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
        }
    }
}

/// Settings given on the command line; `None` leaves the other sources' value.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// `--grpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
}

/// Environment variables that configure a node are `SWITCHYARD_<FIELD>`.
const ENV_PREFIX: &str = "SWITCHYARD_";

/// Variables with the prefix that are not settings (read by the CLI or tests).
const NOT_SETTINGS: &[&str] = &["config", "log"];

impl Config {
    /// Loads the configuration from `file` (if any), the environment and `overrides`.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed(ENV_PREFIX).filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                !NOT_SETTINGS.contains(&key.as_str()) && !key.starts_with("test_")
            }))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
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
                "http = \"127.0.0.1:9000\"\ngrpc = \"127.0.0.1:9001\"\nnode_id = \"a\"",
            )?;
            jail.set_env("SWITCHYARD_GRPC", "127.0.0.1:9002");
            jail.set_env("SWITCHYARD_TEST_POSTGRES", "ignored");
            jail.set_env("SWITCHYARD_LOG", "debug");
            let overrides = Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            };
            let config = Config::load(Some(Path::new("node.toml")), overrides).map_err(|e| *e)?;
            assert_eq!(config.http.port(), 9000);
            assert_eq!(config.grpc.port(), 9002);
            assert_eq!(config.node_id, "a");
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(config.partitions, 8);
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", "htp = \"127.0.0.1:9000\"")?;
            let error =
                Config::load(Some(Path::new("node.toml")), Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("htp"), "{error}");
            Ok(())
        });
    }
}
