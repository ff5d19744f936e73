//! The load generator runs end to end on small loads and reports what DESIGN §8 promises.

fn run(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    let mut reports: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(reports.len(), 1);
    let report = reports.remove(0);
    for field in ["throughput_per_s", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(report[field].as_f64().is_some(), "{field} in {report}");
    }
    assert!(report["p50_ms"].as_f64() <= report["p999_ms"].as_f64());
    report
}

#[test]
fn the_tasks_scenario_reports_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let report = run(&[
        "tasks",
        "--events",
        "50",
        "--concurrency",
        "4",
        "--data-dir",
        node.to_str().unwrap(),
    ]);
    assert_eq!(
        (report["scenario"].as_str(), report["count"].as_u64()),
        (Some("tasks"), Some(50))
    );
    assert!(report["throughput_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_bus_scenario_compares_the_adapter_with_its_raw_client() {
    let report = run(&[
        "bus",
        "--adapter",
        "embedded",
        "--messages",
        "300",
        "--window",
        "50",
    ]);
    assert_eq!(
        (report["scenario"].as_str(), report["count"].as_u64()),
        (Some("bus-embedded"), Some(300))
    );
    let (run, baseline) = (
        report["throughput_per_s"].as_f64().unwrap(),
        report["baseline_per_s"].as_f64().unwrap(),
    );
    assert!((report["ratio"].as_f64().unwrap() - run / baseline).abs() < 1e-9);
}
