//! The load generator runs end to end on small loads and reports what DESIGN §8 promises.

/// Runs the load tool with `args`; returns its reports, each checked for DESIGN §8's fields.
fn run_all(args: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    let reports: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for report in &reports {
        for field in ["throughput_per_s", "p50_ms", "p99_ms", "p999_ms"] {
            assert!(report[field].as_f64().is_some(), "{field} in {report}");
        }
        assert!(report["p50_ms"].as_f64() <= report["p999_ms"].as_f64());
    }
    reports
}

/// Runs a scenario that makes one report.
fn run(args: &[&str]) -> serde_json::Value {
    let mut reports = run_all(args);
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

/// The ratio is the run's throughput over its baseline's.
fn assert_ratio(report: &serde_json::Value) {
    let (run, baseline) = (
        report["throughput_per_s"].as_f64().unwrap(),
        report["baseline_per_s"].as_f64().expect("a baseline"),
    );
    assert!(baseline > 0.0, "{report}");
    assert!((report["ratio"].as_f64().unwrap() - run / baseline).abs() < 1e-9);
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
    assert_ratio(&report);
}

#[test]
fn the_replay_scenario_rebuilds_a_topic_beside_its_raw_read_and_the_floor_of_its_writes() {
    let reports = run_all(&["replay", "--events", "300", "--concurrency", "4"]);
    let scenarios: Vec<_> = reports.iter().map(|r| r["scenario"].as_str()).collect();
    assert_eq!(scenarios, [Some("replay"), Some("replay-writes")]);
    for report in &reports {
        assert_eq!(report["count"].as_u64(), Some(300), "{report}");
        assert_eq!(report["settings"]["applied"].as_u64(), Some(300));
        assert_ratio(report);
    }
    assert_eq!(
        reports[0]["throughput_per_s"], reports[1]["throughput_per_s"],
        "one replay beside two baselines"
    );
    assert_ne!(reports[0]["baseline_per_s"], reports[1]["baseline_per_s"]);
}

#[test]
fn the_lifecycle_scenario_reports_lifecycles_beside_their_floor() {
    let report = run(&["lifecycle", "--tasks", "20", "--workers", "2"]);
    assert_eq!(
        (report["scenario"].as_str(), report["count"].as_u64()),
        (Some("lifecycle"), Some(20))
    );
    assert_ratio(&report);
}

#[test]
fn the_dag_scenario_times_each_graph_to_its_last_step() {
    let report = run(&["dag", "--dags", "3", "--workers", "2"]);
    assert_eq!(
        (report["scenario"].as_str(), report["count"].as_u64()),
        (Some("dag"), Some(3))
    );
    assert!(report["p50_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_ingest_http_scenario_compares_the_node_with_an_axum_hello_world() {
    let report = run(&["ingest-http", "--events", "200", "--concurrency", "8"]);
    assert_eq!(
        (report["scenario"].as_str(), report["count"].as_u64()),
        (Some("ingest-http"), Some(200))
    );
    assert_ratio(&report);
}

#[test]
fn the_webhook_scenario_stands_signed_slack_events_beside_v1_events() {
    let reports = run_all(&["webhook", "--events", "200", "--concurrency", "8"]);
    let scenarios: Vec<_> = reports.iter().map(|r| r["scenario"].as_str()).collect();
    assert_eq!(scenarios, [Some("webhook"), Some("ingest-http")]);
    for report in &reports {
        assert_eq!(report["count"].as_u64(), Some(200));
        assert_ratio(report);
    }
}

#[test]
fn the_grpc_read_scenario_compares_get_task_with_the_health_check() {
    let reports = run_all(&[
        "grpc-read",
        "--tasks",
        "50",
        "--reads",
        "100",
        "--pages",
        "3",
        "--concurrency",
        "4",
    ]);
    let scenarios: Vec<_> = reports.iter().map(|r| r["scenario"].as_str()).collect();
    assert_eq!(scenarios, [Some("grpc-read"), Some("grpc-list")]);
    assert_eq!(reports[0]["count"].as_u64(), Some(100));
    assert_ratio(&reports[0]);
}

#[test]
fn the_chart_is_an_svg_with_each_run_as_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.svg");
    run(&[
        "tasks",
        "--events",
        "30",
        "--concurrency",
        "4",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for text in [
        "throughput (completed per second)",
        "latency percentiles",
        "<polyline",
    ] {
        assert!(svg.contains(text), "`{text}` in the chart");
    }
    for series in ["tasks", "tasks (baseline)"] {
        assert!(
            svg.lines().any(|line| line.trim() == series),
            "the series `{series}` in the legend"
        );
    }
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
    assert_ratio(&report);
}
