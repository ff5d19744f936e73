//! One scenario's figures, printed for people and written as JSON (DESIGN §8's load report).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies of one run, in microseconds.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> anyhow::Result<Latencies> {
        Ok(Latencies(Histogram::new_with_bounds(1, 3_600_000_000, 3)?))
    }

    pub fn record(&mut self, latency: Duration) -> anyhow::Result<()> {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Ok(self.0.record(micros.clamp(1, 3_600_000_000))?)
    }

    /// Adds the latencies of `other`.
    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        Ok(self.0.add(&other.0)?)
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Completions over a run, sampled as it goes: (seconds since the start, completed so far).
#[derive(Clone, Default)]
pub struct Timeline(Vec<(f64, u64)>);

impl Timeline {
    /// Notes that `done` had completed `at` into the run.
    pub fn record(&mut self, at: Duration, done: u64) {
        self.0.push((at.as_secs_f64(), done));
    }

    /// Throughput between consecutive samples about a fifteenth of the run apart (at most
    /// `TIMELINE_STEP`): (seconds, per second).
    pub fn rates(&self) -> Vec<(f64, f64)> {
        let span = self.0.last().map_or(0.0, |(at, _)| *at);
        let step = (span / 15.0).min(TIMELINE_STEP);
        let mut rates = Vec::new();
        let mut last = (0.0, 0);
        for &(at, done) in &self.0 {
            if at - last.0 >= step && at > last.0 {
                rates.push((at, (done - last.1.min(done)) as f64 / (at - last.0)));
                last = (at, done);
            }
        }
        rates
    }
}

/// What one side of a scenario (switchyard, or the raw client) did.
#[derive(Clone)]
pub struct Run {
    pub count: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Completions as the run went, where the scenario samples them.
    pub timeline: Timeline,
}

impl Run {
    pub fn per_s(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn line(&self, label: &str) -> String {
        if self.latencies.0.is_empty() {
            // A run timed as a whole (a replay): its rate only.
            return format!("{label:<12} {:>10.0} msgs/s", self.per_s());
        }
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
            "timeline": self.run.timeline.rates(),
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

/// Seconds between two points of a long run's throughput timeline.
pub const TIMELINE_STEP: f64 = 0.25;

/// Prints the reports and, if asked, writes them as a JSON array to `path` and draws them as an
/// SVG chart to `chart`.
pub fn finish(
    reports: &[Report],
    path: Option<&std::path::Path>,
    chart: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    for report in reports {
        report.print();
    }
    if let Some(chart) = chart {
        crate::chart::draw(reports, chart)?;
        println!("drew {}", chart.display());
    }
    if let Some(path) = path {
        let all: Vec<Value> = reports.iter().map(Report::json).collect();
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
