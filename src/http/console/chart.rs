//! Charts as inline SVG, drawn on the server (no script): vertical bars for a series over
//! time and horizontal bars for a ranking. Colours and sizes are SVG attributes (the CSP
//! allows no inline styles); every bar has a `<title>` with its exact value, and the chart
//! an `aria-label`, for screen readers and hover.

use maud::{Markup, html};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;
const BAR_COLOUR: &str = "#3b6fd8";

/// A vertical bar chart of `points` (label, value), oldest first.
pub fn bars(title: &str, points: &[(String, f64)], format: fn(f64) -> String) -> Markup {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let scale_max = if max > 0.0 { max } else { 1.0 };
    let plot_w = WIDTH - LEFT - 4.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = float(points.len().max(1));
    let slot = plot_w / n;
    let bar_w = (slot * 0.8).max(1.0);
    let ticks: Vec<usize> = match points.len() {
        0 => vec![],
        1 => vec![0],
        len => vec![0, len / 2, len - 1],
    };
    html! {
        figure.chart {
            svg viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-label=(title) width="100%" {
                line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 4.0) y2=(TOP + plot_h)
                    stroke="#999" stroke-width="1" {}
                text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" font-size="11" fill="#555" {
                    (format(max))
                }
                text x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" font-size="11" fill="#555" {
                    (format(0.0))
                }
                @for (i, (label, value)) in points.iter().enumerate() {
                    @let h = (value / scale_max * plot_h).max(0.0);
                    @let x = LEFT + float(i) * slot + (slot - bar_w) / 2.0;
                    rect x=(fmt(x)) y=(fmt(TOP + plot_h - h)) width=(fmt(bar_w)) height=(fmt(h))
                        fill=(BAR_COLOUR) {
                        title { (label) ": " (format(*value)) }
                    }
                }
                @for (n, i) in ticks.iter().copied().enumerate() {
                    // The outer labels align with the plot's edges so none is cut off.
                    @let (x, anchor) = match n {
                        0 => (LEFT, "start"),
                        2 => (WIDTH - 4.0, "end"),
                        _ => (LEFT + (float(i) + 0.5) * slot, "middle"),
                    };
                    text x=(fmt(x)) y=(HEIGHT - 6.0) text-anchor=(anchor) font-size="11" fill="#555" {
                        (points[i].0)
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// A horizontal bar chart ranking `items` (label, value), biggest first as given.
pub fn ranking(title: &str, items: &[(String, f64)], format: fn(f64) -> String) -> Markup {
    let max = items.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let scale_max = if max > 0.0 { max } else { 1.0 };
    let row = 24.0;
    let height = float(items.len().max(1)) * row + 4.0;
    let label_w = 220.0;
    let bar_room = WIDTH - label_w - 90.0;
    html! {
        figure.chart {
            @if items.is_empty() {
                p.muted { "No requests in this period." }
            } @else {
                svg viewBox={"0 0 " (WIDTH) " " (fmt(height))} role="img" aria-label=(title)
                    width="100%" {
                    @for (i, (label, value)) in items.iter().enumerate() {
                        @let y = float(i) * row + 2.0;
                        @let w = (value / scale_max * bar_room).max(1.0);
                        text x=(label_w - 6.0) y=(fmt(y + 15.0)) text-anchor="end" font-size="12"
                            fill="#222" { (shorten(label, 32)) }
                        rect x=(label_w) y=(fmt(y + 3.0)) width=(fmt(w)) height=(row - 8.0)
                            fill=(BAR_COLOUR) {
                            title { (label) ": " (format(*value)) }
                        }
                        text x=(fmt(label_w + w + 6.0)) y=(fmt(y + 15.0)) font-size="12" fill="#222" {
                            (format(*value))
                        }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// A position or count as a coordinate (charts have far fewer than 2^32 bars).
fn float(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// One decimal is plenty for coordinates.
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: f64) -> String {
        format!("{v}")
    }

    #[test]
    fn the_biggest_bar_fills_the_plot_and_labels_are_escaped() {
        let svg = bars(
            "cost <per> day",
            &[("a".into(), 1.0), ("<b>".into(), 2.0), ("c".into(), 0.0)],
            plain,
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        let plot_h = HEIGHT - BOTTOM - TOP;
        assert!(
            svg.contains(&format!("height=\"{}\"", fmt(plot_h))),
            "{svg}"
        );
        assert!(svg.contains("&lt;b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("aria-label=\"cost &lt;per&gt; day\""));
    }

    #[test]
    fn an_empty_ranking_says_so() {
        let svg = ranking("top", &[], plain).into_string();
        assert!(svg.contains("No requests"));
        assert!(!svg.contains("<rect"));
    }
}
