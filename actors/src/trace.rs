//! Trace context across the bus: a W3C `traceparent` in the envelope's `trace` makes the span
//! that handles the message a child of the span that published it, on whichever node.
//!
//! Without an OpenTelemetry layer installed (no `--otlp-endpoint`) spans have no trace ids:
//! callers then pass the `traceparent` they were given on unchanged.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A carrier holding one `traceparent`.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes `span` a child of the span `traceparent` names, if it names one.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Traceparent(traceparent)));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records spans: then there is nothing to join.
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of `span`, if it is being traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            ids.trace_id(),
            ids.span_id(),
            ids.trace_flags().to_u8()
        )
    })
}
