//! The command line as an operator meets it: a data directory held by one node at a time,
//! `doctor`'s verdicts, and environment variables that are not settings.

use std::process::{Command, Output};

use crate::harness::*;

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_second_node_on_a_held_data_directory_refuses_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::start(dir.path()).await;
    let data_dir = dir.path().to_str().unwrap();
    let second = switchyard(&[
        "node",
        "--data-dir",
        data_dir,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
    ]);
    assert!(!second.status.success());
    let said = text(&second);
    assert!(said.contains("in use by another switchyard node"), "{said}");
    assert!(said.contains(&format!("process {}", first.pid())), "{said}");
    assert!(first.alive(), "the first node runs on");
}

#[tokio::test]
async fn doctor_says_ok_for_a_node_s_own_parts_and_names_the_problem_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let node = Proc::start(dir.path()).await;
    let healthy = switchyard(&["doctor", "--data-dir", &data_dir]);
    let said = text(&healthy);
    assert!(healthy.status.success(), "{said}");
    assert!(
        said.contains("topic switchyard.events has 8 partitions"),
        "{said}"
    );
    assert!(said.contains("schema up to date"), "{said}");
    drop(node);

    let nobody = format!("127.0.0.1:{}", free_port());
    let refused = switchyard(&[
        "doctor",
        "--data-dir",
        &data_dir,
        "--bus",
        "kafka",
        "--kafka-brokers",
        &nobody,
    ]);
    let said = text(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains("PROBLEM") && said.contains("Connection refused"),
        "{said}"
    );
    let amqp = format!("amqp://guest:guest@{nobody}/%2f");
    let refused = switchyard(&[
        "doctor",
        "--data-dir",
        &data_dir,
        "--bus",
        "rabbitmq",
        "--amqp-url",
        &amqp,
    ]);
    let said = text(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains("PROBLEM") && said.contains("guest:***@"),
        "the password stays out: {said}"
    );
}

#[tokio::test]
async fn a_client_tool_s_variable_with_the_prefix_does_not_stop_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start_with_env(dir.path(), &[("SWITCHYARD_TOKEN", "a script's key")]).await;
    assert!(
        node.log().contains("SWITCHYARD_TOKEN"),
        "it is named in a warning"
    );
}

#[tokio::test]
async fn a_port_in_use_is_one_plain_line_and_json_logs_are_json() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--log-format", "json", "node", "--data-dir"])
        .arg(dir.path())
        .args([
            "--http",
            &format!("127.0.0.1:{port}"),
            "--grpc",
            "127.0.0.1:0",
        ])
        .env("SWITCHYARD_LOG", "info")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("switchyard: ")
            && last.contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}"))
            && !last.contains("panicked"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.is_empty(), "no log lines");
    for line in stdout.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    assert!(
        !stdout.contains('\u{1b}'),
        "no escape codes when not on a terminal"
    );
}
