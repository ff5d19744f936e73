//! One scenario's figures, printed for people and written as JSON (DESIGN §8's load report).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies of one run, in microseconds.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> anyhow::Result<Latencies> {
        Ok(Latencies(Histogram::new_with_bounds(1, 3_600_000_000, 3)?))
    }

    pub fn record(&mut self, latency: Duration) -> anyhow::Result<()> {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Ok(self.0.record(micros.clamp(1, 3_600_000_000))?)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// What one side of a scenario (switchyard, or the raw client) did.
pub struct Run {
    pub count: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<12} {:>10.0} msgs/s   p50 {:>8.2} ms   p99 {:>8.2} ms   p999 {:>8.2} ms",
            self.per_s(),
            self.latencies.ms(0.50),
            self.latencies.ms(0.99),
            self.latencies.ms(0.999),
        )
    }
}

/// A scenario's result: switchyard's run, and the raw client's where there is one.
pub struct Report {
    pub scenario: String,
    pub run: Run,
    pub baseline: Option<Run>,
    /// Scenario-specific settings worth keeping beside the figures.
    pub settings: Value,
}

impl Report {
    /// The JSON object of DESIGN §8: `scenario`, `count`, `throughput_per_s`, `p50_ms`,
    /// `p99_ms`, `p999_ms`, and with a baseline `baseline_per_s` and `ratio`.
    pub fn json(&self) -> Value {
        let mut object = json!({
            "scenario": self.scenario,
            "count": self.run.count,
            "throughput_per_s": self.run.per_s(),
            "p50_ms": self.run.latencies.ms(0.50),
            "p99_ms": self.run.latencies.ms(0.99),
            "p999_ms": self.run.latencies.ms(0.999),
            "settings": self.settings,
        });
        if let Some(baseline) = &self.baseline {
            object["baseline_per_s"] = json!(baseline.per_s());
            object["ratio"] = json!(self.run.per_s() / baseline.per_s());
            object["baseline_p50_ms"] = json!(baseline.latencies.ms(0.50));
            object["baseline_p99_ms"] = json!(baseline.latencies.ms(0.99));
            object["baseline_p999_ms"] = json!(baseline.latencies.ms(0.999));
        }
        object
    }

    /// The lines people read.
    pub fn print(&self) {
        println!("{}", self.scenario);
        println!("  {}", self.run.line("switchyard"));
        if let Some(baseline) = &self.baseline {
            println!("  {}", baseline.line("raw client"));
            println!(
                "  ratio        {:>10.2}x",
                self.run.per_s() / baseline.per_s()
            );
        }
    }
}

/// Prints the reports and, if asked, writes them as a JSON array to `path`.
pub fn finish(reports: &[Report], path: Option<&std::path::Path>) -> anyhow::Result<()> {
    for report in reports {
        report.print();
    }
    if let Some(path) = path {
        let all: Vec<Value> = reports.iter().map(Report::json).collect();
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
