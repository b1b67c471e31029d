//! `time-to-whole.svg`, written beside the report: the median cold start to a whole cluster
//! against its size, one line per cadence, with the target as a dashed line. Hand-written SVG
//! (axes ending on round ticks, escaped text), so the benchmark needs no plotting library.

use std::fmt::Write as _;

/// One line of the plot: its legend and its (nodes, seconds) points.
#[derive(Debug, Clone)]
pub(super) struct Series {
    pub(super) label: String,
    pub(super) points: Vec<(f64, f64)>,
}

/// A round axis end and tick step for values up to `max`: steps of 1, 2 or 5 × 10ᵏ, about five
/// of them.
fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot of cold start to whole against cluster size: a hand-written SVG with axes, ticks,
/// one polyline with a circle per point for each series, a legend and, when given, the target
/// as a dashed line.
pub(super) fn time_to_whole_svg(series: &[Series], target_secs: Option<f64>) -> String {
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (width, height) = (640.0, 400.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let max_x = points().map(|(x, _)| x).fold(0.0, f64::max);
    let max_y = points()
        .map(|(_, y)| y)
        .chain(target_secs)
        .fold(0.0, f64::max);
    // Nodes come whole: no tick between two sizes.
    let (x_top, x_step) = match axis(max_x) {
        (_, step) if step < 1.0 => (max_x.ceil().max(1.0), 1.0),
        round => round,
    };
    let (y_top, y_step) = axis(max_y * 1.05);
    let px = |x: f64| left + x / x_top * plot_w;
    let py = |y: f64| top + plot_h - y / y_top * plot_h;
    let label = |value: f64, step: f64| {
        if step >= 1.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        }
    };

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">Cold start to a whole cluster</text>\n",
        width / 2.0
    );
    // Grid and ticks.
    let ticks = |top: f64, step: f64| {
        (0..)
            .map(move |i| f64::from(i) * step)
            .take_while(move |v| *v <= top + step / 1e6)
    };
    for x in ticks(x_top, x_step) {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#e0e0e0\"/>\n\
             <line x1=\"{0:.1}\" y1=\"{2:.1}\" x2=\"{0:.1}\" y2=\"{3:.1}\" stroke=\"black\"/>\n\
             <text x=\"{0:.1}\" y=\"{4:.1}\" text-anchor=\"middle\">{5}</text>",
            px(x),
            top,
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 18.0,
            label(x, x_step)
        );
    }
    for y in ticks(y_top, y_step) {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"#e0e0e0\"/>\n\
             <line x1=\"{3:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"black\"/>\n\
             <text x=\"{4:.1}\" y=\"{5:.1}\" text-anchor=\"end\">{6}</text>",
            left,
            py(y),
            left + plot_w,
            left - 5.0,
            left - 8.0,
            py(y) + 4.0,
            label(y, y_step)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\" stroke=\"black\"/>\n\
         <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">nodes</text>\n\
         <text x=\"16\" y=\"{4:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {4:.1})\">seconds</text>",
        top + plot_h,
        left + plot_w,
        left + plot_w / 2.0,
        height - 10.0,
        top + plot_h / 2.0
    );
    if let Some(target) = target_secs {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#555\" \
             stroke-dasharray=\"6 4\"/>\n\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\" fill=\"#555\">target {4}</text>",
            py(target),
            left + plot_w,
            left + plot_w - 4.0,
            py(target) - 4.0,
            xml_escape(&format!("≤ {} s", label(target, 1.0)))
        );
    }
    // The series, then the legend (lines only: every circle is a measured point).
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut sorted = series.points.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = sorted
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in &sorted {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {x:.0} nodes, {y:.2} s</title></circle>",
                px(*x),
                py(*y),
                xml_escape(&series.label)
            );
        }
        let legend_y = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{3:.1}\" y=\"{4:.1}\">{5}</text>",
            left + 12.0,
            legend_y,
            left + 36.0,
            left + 42.0,
            legend_y + 4.0,
            xml_escape(&series.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_well_formed_svg_with_a_circle_per_point() {
        let series = vec![
            Series {
                label: "2 s blocks".into(),
                points: vec![(3.0, 6.2), (8.0, 7.9), (16.0, 9.4), (32.0, 14.1)],
            },
            Series {
                label: "instant <& mining>".into(),
                points: vec![(16.0, 5.1), (3.0, 3.0), (8.0, 4.2)],
            },
        ];
        let svg = time_to_whole_svg(&series, Some(10.0));
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 7);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(
            svg.matches("<circle").count(),
            svg.matches("</circle>").count()
        );
        assert!(svg.contains("Cold start to a whole cluster"));
        assert!(svg.contains("instant &lt;&amp; mining&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Nothing measured still draws the axes, and no point.
        let empty = time_to_whole_svg(&[], None);
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"));
        assert_eq!(empty.matches("<circle").count(), 0);
        // Two nodes at most: ticks at whole nodes only.
        let small = time_to_whole_svg(
            &[Series {
                label: "instant mining".into(),
                points: vec![(2.0, 6.5)],
            }],
            None,
        );
        assert_eq!(small.matches("<circle").count(), 1);
        assert!(!small.contains(">0.5</text>"), "{small}");
    }

    #[test]
    fn axes_end_on_round_ticks() {
        assert_eq!(axis(32.0), (40.0, 10.0));
        assert_eq!(axis(64.0), (80.0, 20.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
        let (top, step) = axis(14.1);
        assert!(top >= 14.1 && step > 0.0);
    }
}
