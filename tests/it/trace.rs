//! One trace across nodes: a request's span on one node and the span of the mailbox that
//! handles its event on another arrive at a real OTLP receiver with one trace id, the second a
//! child of the first.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;

use crate::brokers::{Broker, wait_ownership};
use crate::harness::*;

/// One exported span, as the test OTLP receiver keeps it.
#[derive(Debug, Clone)]
struct Exported {
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A real OTLP trace receiver (the collector's gRPC TraceService) on a loopback port.
#[derive(Clone, Default)]
struct Receiver(std::sync::Arc<std::sync::Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let instance = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.instance.id")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(Exported {
                    instance: instance.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on a free loopback port; returns its URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    fn spans(&self) -> Vec<Exported> {
        self.0.lock().unwrap().clone()
    }
}

/// A `POST /v1/events` on node `a` and the mailbox that handles its event on node `b` report
/// spans of one trace to an OTLP receiver: the mailbox's span is a child of the gateway's,
/// across the broker. (Webhooks open the same span through the same `trace_under`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_event_from_one_node_to_the_other() {
    let Some(broker) = Broker::rabbit().await else {
        return;
    };
    let Some(database) = postgres_schema("trace").await else {
        return;
    };
    let receiver = Receiver::default();
    let endpoint = receiver.serve().await;
    let flags = |node: &str| {
        let mut flags = broker.node_flags(&database, node);
        flags.extend(["--otlp-endpoint".into(), endpoint.clone()]);
        flags
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let a = Proc::launch_on(dir_a.path(), (free_port(), free_port()), &flags("a"), &env).await;
    let b = Proc::launch_on(dir_b.path(), (free_port(), free_port()), &flags("b"), &env).await;
    let client = a.client().await;
    wait_ownership(&client, |owned| {
        owned.len() == 2 && owned.iter().all(|(_, p)| !p.is_empty())
    })
    .await;

    // Events with a trace each, until one of them is handled on the other node.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT * 2;
    for i in 0u32.. {
        let trace_id = format!("{:032x}", 0x5eed_0000_u128 + u128::from(i));
        let traceparent = format!("00-{trace_id}-{:016x}-01", 0xabc0_u64 + u64::from(i));
        let task = format!("traced-{i}");
        let response = http
            .post(format!("http://127.0.0.1:{}/v1/events", a.http))
            .bearer_auth(&client.token)
            .header("traceparent", &traceparent)
            .json(&task_created(&format!("e-{task}"), &task))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let poll_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < poll_until {
            let spans = receiver.spans();
            let of_trace: Vec<&Exported> =
                spans.iter().filter(|s| s.trace_id == trace_id).collect();
            let ingest = of_trace
                .iter()
                .find(|s| s.instance == "a" && s.name == "http.ingest");
            let applied = of_trace.iter().find(|s| s.name == "apply");
            if let (Some(ingest), Some(applied)) = (ingest, applied) {
                assert_eq!(
                    ingest.parent_span_id,
                    format!("{:016x}", 0xabc0_u64 + u64::from(i)),
                    "the request continues its caller's trace"
                );
                if applied.instance == "b" {
                    assert_eq!(applied.parent_span_id, ingest.span_id, "{of_trace:?}");
                    drop((a, b));
                    return;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            Instant::now() < deadline,
            "no event handled on b with its trace; spans: {:?}",
            receiver.spans()
        );
    }
}
