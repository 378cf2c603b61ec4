//! [`Scene`] -> SVG text. Text stays text (font named), provenance goes into `<metadata>`.

use ecolor::Color32;

use super::scene::{Anchor, Item, Scene};

/// The font family named in every figure (embedded by the PDF and PNG writers).
pub const FONT_FAMILY: &str = "DejaVu Sans";
/// Element that carries the provenance JSON inside `<metadata>`.
pub const PROVENANCE_TAG: &str = "ll:provenance";

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push_str(&format!("&#x{:X};", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// Reverses [`escape`].
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let tail = rest.get(i..).unwrap_or_default();
        let end = tail.find(';').unwrap_or(0);
        let ent = tail.get(1..end).unwrap_or_default();
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(e.get(2..).unwrap_or_default(), 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e.get(1..).and_then(|n| n.parse().ok()).and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) if end > 0 => {
                out.push(c);
                rest = tail.get(end + 1..).unwrap_or_default();
            }
            _ => {
                out.push('&');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

fn hex(c: Color32) -> String {
    format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b())
}

/// `x,y x,y …` for an SVG `points` attribute.
fn points_attr(points: &[(f64, f64)]) -> String {
    points.iter().map(|(x, y)| format!("{},{}", num(*x), num(*y))).collect::<Vec<_>>().join(" ")
}

fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Writes the scene as a standalone SVG document with `provenance` (JSON) in its metadata.
pub fn to_svg(scene: &Scene, title: &str, provenance_json: &str) -> String {
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    o.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:ll=\"https://logit-lens.invalid/provenance\" width=\"{w}pt\" height=\"{h}pt\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT_FAMILY}\">\n",
        w = num(scene.width),
        h = num(scene.height)
    ));
    o.push_str(&format!("<title>{}</title>\n", escape(title)));
    o.push_str(&format!("<metadata><{PROVENANCE_TAG}>{}</{PROVENANCE_TAG}></metadata>\n", escape(provenance_json)));
    for item in &scene.items {
        match item {
            Item::Rect { x, y, w, h, fill, stroke } => {
                let fill = fill.map_or_else(|| "none".to_string(), hex);
                let stroke = stroke.map_or_else(String::new, |(c, sw)| format!(" stroke=\"{}\" stroke-width=\"{}\"", hex(c), num(sw)));
                o.push_str(&format!("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"{stroke}/>\n", num(*x), num(*y), num(*w), num(*h)));
            }
            Item::Polyline { points, stroke, width } => {
                o.push_str(&format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-linejoin=\"round\"/>\n",
                    points_attr(points),
                    hex(*stroke),
                    num(*width)
                ));
            }
            Item::Polygon { points, fill, opacity } => {
                o.push_str(&format!(
                    "<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"{}\" stroke=\"none\"/>\n",
                    points_attr(points),
                    hex(*fill),
                    num(*opacity)
                ));
            }
            Item::Text { x, y, size, text, anchor, rotate, color, bold } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let rot = if *rotate == 0.0 { String::new() } else { format!(" transform=\"rotate({} {} {})\"", num(*rotate), num(*x), num(*y)) };
                let weight = if *bold { " font-weight=\"bold\"" } else { "" };
                o.push_str(&format!(
                    "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{anchor}\" fill=\"{}\"{weight}{rot} xml:space=\"preserve\">{}</text>\n",
                    num(*x),
                    num(*y),
                    num(*size),
                    hex(*color),
                    escape(text)
                ));
            }
        }
    }
    o.push_str("</svg>\n");
    o
}

/// The provenance JSON stored in an SVG written by [`to_svg`].
pub fn read_provenance(svg: &str) -> Option<String> {
    let open = format!("<{PROVENANCE_TAG}>");
    let close = format!("</{PROVENANCE_TAG}>");
    let start = svg.find(&open)? + open.len();
    let end = svg.get(start..)?.find(&close)? + start;
    Some(unescape(svg.get(start..end)?))
}
