//! The load report as an SVG chart: throughput over time of every run that sampled it, and the
//! latency percentiles of every run, switchyard's beside its baseline's.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, Run};

/// A run's name in the legend.
fn label(report: &Report, baseline: bool) -> String {
    if baseline {
        format!("{} (baseline)", report.scenario)
    } else {
        report.scenario.clone()
    }
}

/// Every run of the reports with its legend name.
fn runs(reports: &[Report]) -> Vec<(String, &Run)> {
    reports
        .iter()
        .flat_map(|r| {
            std::iter::once((label(r, false), &r.run))
                .chain(r.baseline.iter().map(|b| (label(r, true), b)))
        })
        .collect()
}

/// Draws `reports` into an SVG file at `path`.
pub fn draw(reports: &[Report], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let runs = runs(reports);

    let timelines: Vec<(&String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, run)| (name, run.timeline.rates()))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let max_t = timelines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let max_rate = timelines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, r)| *r))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("throughput (completed per second)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("per second")
        .draw()?;
    for (index, (name, points)) in timelines.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let quantiles = [(0.50, "p50"), (0.99, "p99"), (0.999, "p999")];
    let max_ms = runs
        .iter()
        .map(|(_, run)| run.latencies.ms(0.999))
        .fold(1.0, f64::max);
    let min_ms = runs
        .iter()
        .map(|(_, run)| run.latencies.ms(0.5))
        .fold(max_ms, f64::min)
        .max(0.01);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency percentiles (ms, log scale)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..2.0, (min_ms * 0.8..max_ms * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(3)
        .x_label_formatter(&|x: &f64| {
            quantiles
                .get(x.round() as usize)
                .map_or(String::new(), |(_, name)| (*name).to_owned())
        })
        .y_desc("ms")
        .draw()?;
    for (index, (name, run)) in runs.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = quantiles
            .iter()
            .enumerate()
            .map(|(i, (q, _))| (i as f64, run.latencies.ms(*q)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
