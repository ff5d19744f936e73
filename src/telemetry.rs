//! Logs and traces: `tracing` to stdout as text (coloured only on a terminal) or JSON, and,
//! for a node with an `otlp_endpoint`, spans exported over OTLP/gRPC as well.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log filter unless `SWITCHYARD_LOG` says otherwise. Broker clients' own lines are off:
/// what they report reaches switchyard as errors, which it logs once, with context.
const DEFAULT_LOG: &str = "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,librdkafka=off,rdkafka=off,lapin=off,opentelemetry=warn,ractor=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `init` installed: the tracer provider, if spans are exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Runs `configure` (reading the configuration) with logs going to stdout, before the
/// process's subscriber exists: what it warns about is seen, not lost.
pub fn while_configuring<T>(format: LogFormat, configure: impl FnOnce() -> T) -> T {
    let lines = tracing_subscriber::registry()
        .with(lines(format))
        .with(filter());
    tracing::subscriber::with_default(lines, configure)
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG))
}

fn lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let lines = tracing_subscriber::fmt::layer();
    match format {
        LogFormat::Json => lines.json().boxed(),
        // Escape codes only where a terminal reads them, not in a log file.
        LogFormat::Text => lines.with_ansi(std::io::stdout().is_terminal()).boxed(),
    }
}

/// Installs the process's subscriber: log lines, and with `otlp` (an endpoint and this
/// node's id) spans exported over OTLP/gRPC as service `switchyard`. Must run inside the
/// Tokio runtime, where the exporter's client lives.
pub fn init(format: LogFormat, otlp: Option<(&str, &str)>) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = otlp
        .map(|(endpoint, instance)| provider(endpoint, instance))
        .transpose()?;
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("switchyard")));
    tracing_subscriber::registry()
        .with(traces)
        .with(lines(format))
        .with(filter())
        .init();
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str, instance: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("the OTLP exporter for {endpoint}: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("switchyard")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance.to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Sends the spans not exported yet.
    pub async fn flush(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}
