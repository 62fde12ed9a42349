//! Grouped bar charts as SVG, drawn with plotters' SVG backend (pure Rust: no system
//! libraries, no font files; the SVG names a font family and the viewer renders the text).

use std::path::Path;

use plotters::prelude::*;

pub struct Chart {
    pub title: String,
    pub unit: String,
    /// Names of the bars within a group (one colour each).
    pub series: Vec<String>,
    /// (group label, one value per series).
    pub groups: Vec<(String, Vec<f64>)>,
    /// A logarithmic value axis (for values spanning orders of magnitude).
    pub log: bool,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xb0, 0x7a, 0xa1),
];

pub fn render(chart: &Chart) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 460)).into_drawing_area();
        draw(&root, chart).map_err(|e| format!("cannot draw the chart: {e}"))?;
        root.present()
            .map_err(|e| format!("cannot draw the chart: {e}"))?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let values = || {
        chart
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = values().fold(0.0f64, f64::max).max(1e-9);
    let min = values().fold(f64::INFINITY, f64::min).min(max);
    let groups = chart.groups.len().max(1);
    let labels: Vec<String> = chart.groups.iter().map(|(l, _)| l.clone()).collect();
    let label = |x: &f64| {
        let i = x.floor() as usize;
        let centred = (x - i as f64 - 0.5).abs() < 1e-6;
        if centred {
            labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64);
    if chart.log {
        let floor = min / 2.0;
        let mut plot =
            builder.build_cartesian_2d(0f64..groups as f64, (floor..max * 2.0).log_scale())?;
        fill(&mut plot, chart, floor, &label)?;
    } else {
        let mut plot = builder.build_cartesian_2d(0f64..groups as f64, 0f64..max * 1.1)?;
        fill(&mut plot, chart, 0.0, &label)?;
    }
    Ok(())
}

/// Draws the mesh, one bar per (group, series) from `floor` up, and the legend.
fn fill<'a, Y>(
    plot: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    chart: &Chart,
    floor: f64,
    label: &dyn Fn(&f64) -> String,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    plot.configure_mesh()
        .disable_x_mesh()
        .x_labels(chart.groups.len().max(1) * 2 + 1)
        .x_label_formatter(label)
        .y_desc(chart.unit.as_str())
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 0.8 / chart.series.len().max(1) as f64;
    for (s, name) in chart.series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let rectangles = chart.groups.iter().enumerate().map(|(g, (_, values))| {
            let x0 = g as f64 + 0.1 + width * s as f64;
            let v = values
                .get(s)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(floor)
                .max(floor);
            Rectangle::new([(x0, floor), (x0 + width * 0.9, v)], colour.filled())
        });
        plot.draw_series(rectangles)
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub fn write(path: &Path, chart: &Chart) -> Result<(), String> {
    std::fs::write(path, render(chart)?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nchart written to {}", path.display());
    Ok(())
}
