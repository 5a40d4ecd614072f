//! The SVG plot: latency percentiles, messages per second and open connections
//! over the run, one panel each, sharing the time axis.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    t_max: f64,
    series: &[Series<'_>],
) -> Result<(), String> {
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_label)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if y_max < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Write the plot of `r`'s timeline to `path`.
pub fn write(r: &Report, path: &Path) -> Result<(), String> {
    let tl = &r.timeline;
    let t_max = tl.last().map_or(1.0, |s| s.t_s).max(1.0);
    let pts =
        |f: &dyn Fn(&crate::report::Sample) -> f64, only_with_latency: bool| -> Vec<(f64, f64)> {
            tl.iter()
                .filter(|s| !only_with_latency || s.count > 0)
                .map(|s| (s.t_s, f(s)))
                .collect()
        };
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "shardcast-loadgen {:?}: {} connections, {:?}",
        r.scenario, r.connections_planned, r.options.protocol
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let lat_title = match r.scenario {
        crate::cli::Scenario::Echo => "echo round trip (per second)",
        _ => "delivery latency (per second)",
    };
    panel(
        &panels[0],
        lat_title,
        "ms",
        t_max,
        &[
            ("p50", BLUE, pts(&|s| s.p50_us / 1e3, true)),
            ("p99", RGBColor(230, 120, 0), pts(&|s| s.p99_us / 1e3, true)),
            ("p99.9", RED, pts(&|s| s.p999_us / 1e3, true)),
        ],
    )?;
    panel(
        &panels[1],
        "messages received per second",
        "msgs/s",
        t_max,
        &[("msgs/s", GREEN, pts(&|s| s.msgs_per_s as f64, false))],
    )?;
    panel(
        &panels[2],
        "connections",
        "count",
        t_max,
        &[
            ("open", BLUE, pts(&|s| s.open as f64, false)),
            ("failed", RED, pts(&|s| s.failed as f64, false)),
        ],
    )?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
