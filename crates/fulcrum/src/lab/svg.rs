//! A small grouped bar chart written as SVG by hand: no plotting library, no fonts to load,
//! nothing outside the standard library.

use std::fmt::Write as _;
use std::path::Path;

pub struct Chart {
    pub title: String,
    pub unit: String,
    /// Names of the bars within a group (one colour each).
    pub series: Vec<String>,
    /// (group label, one value per series).
    pub groups: Vec<(String, Vec<f64>)>,
}

const COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

pub fn render(chart: &Chart) -> String {
    let (width, height, left, top, bottom) = (900.0, 420.0, 70.0, 50.0, 70.0);
    let plot_h = height - top - bottom;
    let max = chart
        .groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let group_w = (width - left - 20.0) / chart.groups.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / chart.series.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(&chart.title)
    );
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let y = top + plot_h * (1.0 - f64::from(tick) / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            width - 20.0,
            left - 6.0,
            y + 4.0,
            format_value(value)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(&chart.unit)
    );
    for (g, (label, values)) in chart.groups.iter().enumerate() {
        let x0 = left + group_w * g as f64 + group_w * 0.1;
        for (s, value) in values.iter().enumerate() {
            let h = if value.is_finite() {
                plot_h * value / max
            } else {
                0.0
            };
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                x0 + bar_w * s as f64,
                top + plot_h - h,
                bar_w * 0.9,
                h,
                COLOURS[s % COLOURS.len()],
                escape(&chart.series[s]),
                format_value(*value)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + group_w * 0.4,
            top + plot_h + 18.0,
            escape(label)
        );
    }
    for (s, name) in chart.series.iter().enumerate() {
        let x = left + 150.0 * s as f64;
        let y = height - 20.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 10.0,
            COLOURS[s % COLOURS.len()],
            x + 16.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

pub fn write(path: &Path, chart: &Chart) -> Result<(), String> {
    std::fs::write(path, render(chart))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nchart written to {}", path.display());
    Ok(())
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
