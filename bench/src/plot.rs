//! Line charts as standalone SVG files: logarithmic axes with labelled ticks, a grid, a
//! legend and a title. Written by hand: a few charts do not justify a plotting
//! library in the build, and the output is plain text that diffs and renders anywhere.

use std::fmt::Write as _;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 64.0;

/// Colours of the lines, in order: distinguishable, and readable in print.
const PALETTE: [&str; 10] = [
    "#1f4e9c", "#5b8fd6", "#9dbbe8", "#17a2b8", "#7b3fa0", "#e07b00", "#b34700", "#c0392b",
    "#2e9e3e", "#555555",
];

/// A logarithmic axis: its range and the ticks to label.
pub struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// An axis over `min..max` with ticks at 1, 2 and 5 of every decade inside it.
    pub fn decades(label: &str, min: f64, max: f64, unit: &str) -> Axis {
        assert!(min > 0.0 && max > min);
        let lo = 10f64.powf(min.log10().floor());
        let hi = 10f64.powf(max.log10().ceil());
        let mut ticks = Vec::new();
        let mut d = lo;
        while d <= hi {
            for m in [1.0, 2.0, 5.0] {
                let v = d * m;
                if v >= lo && v <= hi {
                    ticks.push((v, number_label(v, unit)));
                }
            }
            d *= 10.0;
        }
        Axis {
            label: label.to_string(),
            min: lo,
            max: hi,
            ticks,
        }
    }

    fn at(&self, v: f64, from: f64, to: f64) -> f64 {
        let f = (v.max(self.min).ln() - self.min.ln()) / (self.max.ln() - self.min.ln());
        from + f * (to - from)
    }
}

/// `500 µs`, `2 ms`, `20k`, `1M`.
fn number_label(v: f64, unit: &str) -> String {
    match unit {
        "µs" if v >= 1_000_000.0 => format!("{} s", v / 1_000_000.0),
        "µs" if v >= 1000.0 => format!("{} ms", v / 1000.0),
        "µs" => format!("{v} µs"),
        _ if v >= 1_000_000.0 => format!("{}M{unit}", v / 1_000_000.0),
        _ if v >= 1000.0 => format!("{}k{unit}", v / 1000.0),
        _ => format!("{v}{unit}"),
    }
}

/// One line of a chart.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette, so a system keeps its colour across charts.
    pub colour: usize,
    pub bold: bool,
    pub dashed: bool,
}

pub struct Chart {
    pub title: String,
    pub subtitle: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
}

impl Chart {
    pub fn svg(&self) -> String {
        let (x0, x1) = (LEFT, WIDTH - RIGHT);
        let (y0, y1) = (HEIGHT - BOTTOM, TOP);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"Helvetica, Arial, sans-serif\" \
             font-size=\"12\">"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>",
            esc(&self.title)
        );
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"42\" fill=\"#555\">{}</text>",
            esc(&self.subtitle)
        );
        // Grid and tick labels.
        for (v, label) in &self.x.ticks {
            let x = self.x.at(*v, x0, x1);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{y0}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y0 + 18.0,
                esc(label)
            );
        }
        for (v, label) in &self.y.ticks {
            let y = self.y.at(*v, y0, y1);
            let _ = writeln!(
                s,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{x0}\" y=\"{y1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
             stroke=\"#444\"/>",
            x1 - x0,
            y0 - y1
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            (x0 + x1) / 2.0,
            HEIGHT - 18.0,
            esc(&self.x.label)
        );
        let _ = writeln!(
            s,
            "<text transform=\"translate(20 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            (y0 + y1) / 2.0,
            esc(&self.y.label)
        );
        // Lines, then the legend.
        for l in &self.lines {
            let pts: Vec<String> = l
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.x.at(x, x0, x1), self.y.at(y, y0, y1)))
                .collect();
            let colour = PALETTE[l.colour % PALETTE.len()];
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\"{} \
                 stroke-linejoin=\"round\" points=\"{}\"/>",
                if l.bold { 3.0 } else { 1.8 },
                if l.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                },
                pts.join(" ")
            );
            if l.points.len() <= 12 {
                for p in &pts {
                    let (x, y) = p.split_once(',').expect("x,y");
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
                    );
                }
            }
        }
        for (i, l) in self.lines.iter().enumerate() {
            let y = y1 + 8.0 + 20.0 * i as f64;
            let colour = PALETTE[l.colour % PALETTE.len()];
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" \
                 stroke-width=\"{}\"{}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
                x1 + 14.0,
                x1 + 40.0,
                if l.bold { 3.0 } else { 1.8 },
                if l.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                },
                x1 + 46.0,
                y + 4.0,
                esc(&l.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_cover_the_range_and_points_land_inside() {
        let a = Axis::decades("latency", 130.0, 42_000.0, "µs");
        assert_eq!(a.min, 100.0);
        assert_eq!(a.max, 100_000.0);
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels[..4], ["100 µs", "200 µs", "500 µs", "1 ms"]);
        assert_eq!(labels.last(), Some(&"100 ms"));
        let c = Chart {
            title: "t <1>".into(),
            subtitle: String::new(),
            x: Axis::decades("x", 1.0, 100.0, ""),
            y: a,
            lines: vec![Line {
                label: "a & b".into(),
                points: vec![(1.0, 130.0), (100.0, 42_000.0)],
                colour: 0,
                bold: true,
                dashed: false,
            }],
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("a &amp; b"));
        // The line runs from the left edge to the right edge of the plot area.
        assert!(svg.contains(&format!("points=\"{LEFT:.1},")), "{svg}");
        assert!(svg.contains(&format!("{:.1},", WIDTH - RIGHT)), "{svg}");
    }
}
