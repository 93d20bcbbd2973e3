//! A self-contained HTML page with two SVG charts: latency over time (p50, p99, max per second) and the latency
//! distribution (latency by percentile, on a log-scaled "nines" axis, as HdrHistogram plots do).

use std::fmt::Write as _;

use super::Report;

const W: f64 = 760.0;
const H: f64 = 300.0;
const PAD: f64 = 56.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One line of a chart: name, color, and points with x and y in data units.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart.
fn chart(title: &str, x_label: &str, y_label: &str, x_ticks: &[(f64, String)], series: &[Series<'_>]) -> String {
    let xs = series.iter().flat_map(|s| s.2.iter().map(|p| p.0));
    let (x0, x1) = xs.clone().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0f64, f64::max).max(1e-3) * 1.1;
    let (x0, x1) = if x0 >= x1 { (0.0, 1.0) } else { (x0, x1) };
    let sx = |x: f64| PAD + (x - x0) / (x1 - x0) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD + -(y / y1) * (H - 2.0 * PAD);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#, W / 2.0, escape(title));
    let _ = write!(
        s,
        r##"<rect x="{PAD}" y="{PAD}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        W - 2.0 * PAD,
        H - 2.0 * PAD
    );
    for k in 0..=4 {
        let y = y1 * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{PAD}" x2="{}" y1="{py}" y2="{py}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{:.2}</text>"##,
            W - PAD,
            PAD - 6.0,
            sy(y) + 4.0,
            y,
            py = sy(y)
        );
    }
    for (x, label) in x_ticks {
        let _ =
            write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, sx(*x), H - PAD + 16.0, escape(label));
    }
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, W / 2.0, H - 12.0, escape(x_label));
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let lx = PAD + 10.0 + 110.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="4" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            PAD + 10.0,
            lx + 16.0,
            PAD + 15.0,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page for one report.
pub fn render(r: &Report) -> String {
    let over_time = |f: fn(&super::Point) -> f64| r.timeline.iter().map(|p| (p.t as f64, f(p))).collect::<Vec<_>>();
    let step = (r.timeline.len() / 10).max(1);
    let t_ticks: Vec<(f64, String)> =
        r.timeline.iter().step_by(step).map(|p| (p.t as f64, format!("{}s", p.t))).collect();
    let time_chart = chart(
        "Latency over time (per second of intended send time)",
        "time",
        "milliseconds",
        &t_ticks,
        &[
            ("p50", "#2b7bb9", over_time(|p| p.p50_ms)),
            ("p99", "#e08214", over_time(|p| p.p99_ms)),
            ("max", "#c0392b", over_time(|p| p.max_ms)),
        ],
    );
    // x = log10(1 / (1 - percentile)): 0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99.
    let nines = |p: f64| (1.0 / (1.0 - (p / 100.0).min(0.9999))).log10();
    let dist: Vec<(f64, f64)> = r.distribution.iter().map(|&(p, v)| (nines(p), v)).collect();
    let p_ticks: Vec<(f64, String)> = [(0.0, "p0"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9"), (4.0, "p99.99")]
        .iter()
        .map(|(x, l)| (*x, l.to_string()))
        .collect();
    let dist_chart =
        chart("Latency distribution", "percentile", "milliseconds", &p_ticks, &[("latency", "#2b7bb9", dist)]);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}pre{{background:#f6f6f6;padding:12px}}</style>\
         </head><body><h1>{title}</h1><pre>{summary}</pre>{time_chart}<br>{dist_chart}</body></html>\n",
        title = escape(&format!("loadtest: {}", r.scenario)),
        summary = escape(&r.summary()),
    )
}
