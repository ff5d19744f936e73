//! The load generator runs end to end on a small load and reports what it promises.

#[test]
fn a_small_run_reports_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--events", "50", "--concurrency", "4", "--json"])
        .arg(&json)
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .status()
        .unwrap();
    assert!(status.success());
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(result["events"], 50);
    assert!(result["end_to_end_events_per_sec"].as_f64().unwrap() > 0.0);
    let latency = &result["latency_ms"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap());
}
