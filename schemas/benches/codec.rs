//! Envelope encode + decode throughput.

use std::collections::BTreeMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use schemas::*;

fn task_created() -> Envelope {
    let mut envelope = Envelope::new(
        "0192f0c8-0000-7000-8000-000000000002",
        "bench",
        1_795_500_000_000,
        "u1",
        Message::TaskCreated(TaskCreated {
            task_id: "t1".into(),
            title: "compile the workspace".into(),
            spec: "cargo build --release".into(),
            priority: Priority::High,
            requirements: Capabilities {
                languages: vec!["rust".into()],
                ..Default::default()
            },
            depends_on: vec![Dependency {
                task_id: "t0".into(),
                kind: DependencyKind::Input,
                contract_key: Some("api".into()),
            }],
            ..Default::default()
        }),
    );
    envelope.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    envelope
}

fn task_completed() -> Envelope {
    Envelope::new(
        "0192f0c8-0000-7000-8000-000000000005",
        "bench",
        1_795_500_000_000,
        "u1",
        Message::TaskCompleted(TaskCompleted {
            task_id: "t1".into(),
            result: BTreeMap::from([
                ("ok".into(), CborValue::Bool(true)),
                ("lines".into(), CborValue::Integer(1234)),
            ]),
            agent_id: None,
        }),
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    for (name, envelope) in [
        ("task.created", task_created()),
        ("task.completed", task_completed()),
    ] {
        let bytes = encode(&envelope);
        group.bench_function(
            format!("encode+decode {name} ({} bytes)", bytes.len()),
            |b| b.iter(|| decode(&encode(std::hint::black_box(&envelope))).expect("valid")),
        );
        group.bench_function(format!("decode {name}"), |b| {
            b.iter(|| decode(std::hint::black_box(&bytes)).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
