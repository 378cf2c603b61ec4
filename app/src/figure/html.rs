//! A figure as one self-contained HTML page: the figure's own SVG inline, with the run's data
//! beside it so that hovering a cell shows its top-k and clicking one draws the trajectories of
//! its position's final top-1 over depth (probability, rank, KL to the final layer); the
//! provenance at the bottom. No network request: no external script, style, font or image. The
//! page shows token texts through `textContent` only, so a token cannot inject markup.

use lens_model::LensReport;
use serde::Serialize;

use super::scene::Scene;
use crate::view::model::{ViewModel, shown};

/// One top-k entry: token id, its text, probability, logit.
pub type TopEntry = (u32, String, f64, f32);

/// One run's data for the page (the run, or A and B of a comparison).
#[derive(Debug, Clone, Serialize)]
pub struct PageRun {
    /// What the inspector calls the run ("" for a single run, else "A · …" / "B · …").
    pub label: String,
    /// Site names of the visible rows, top row first.
    pub rows: Vec<String>,
    /// Positions of the visible columns.
    pub cols: Vec<usize>,
    /// Input token per visible column (as the figure shows it: `·` for a space).
    pub input: Vec<String>,
    /// True next token per visible column, id and text (`None` at the last position).
    pub next: Vec<Option<(u32, String)>>,
    /// Top-k per visible cell, `[row][col]`: (token id, text, probability, logit).
    pub topk: Vec<Vec<Vec<TopEntry>>>,
    /// The visible rows in depth order (embedding first): the trajectories' x axis.
    pub depth: Vec<usize>,
    /// Per visible column: its final top-1 and that token's trajectory.
    pub traj: Vec<Trajectory>,
}

/// A position's final top-1 over the visible rows (indexed like [`PageRun::rows`]).
#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    /// The final top-1's text.
    pub token: String,
    /// Its probability at each row.
    pub prob: Vec<Option<f64>>,
    /// Its rank (1 = top-1) at each row.
    pub rank: Vec<Option<u32>>,
    /// KL(final ‖ row), nats.
    pub kl: Vec<Option<f64>>,
}

fn finite(v: Option<&f64>) -> Option<f64> {
    v.copied().filter(|x| x.is_finite())
}

/// The page data of one run: `vm`'s visible cells of `report`, token texts by `token_text`.
pub fn page_run(label: &str, vm: &ViewModel, report: &LensReport, token_text: &dyn Fn(u32) -> String) -> PageRun {
    let m = &report.metrics;
    let final_site = report.sites.len().saturating_sub(1);
    let text = |pos: usize| report.tokens.get(pos).map(|t| shown(&t.text)).unwrap_or_default();
    let topk = vm
        .rows
        .iter()
        .map(|&s| {
            vm.cols
                .iter()
                .map(|&p| {
                    let (Some(ids), Some(probs), Some(logits)) = (report.top_k.ids.get(s, p), report.top_k.probs.get(s, p), report.top_k.logits.get(s, p))
                    else {
                        return Vec::new();
                    };
                    ids.iter().zip(probs).zip(logits).map(|((&id, &pr), &lg)| (id, token_text(id), pr, lg)).collect()
                })
                .collect()
        })
        .collect();
    let mut depth: Vec<usize> = (0..vm.rows.len()).collect();
    depth.sort_by_key(|&r| vm.rows.get(r).copied().unwrap_or(0));
    let traj = vm
        .cols
        .iter()
        .map(|&p| Trajectory {
            token: m.top1_id.get(final_site, p).map(|&id| token_text(id)).unwrap_or_default(),
            prob: vm.rows.iter().map(|&s| finite(m.final_top1_prob.get(s, p))).collect(),
            rank: vm.rows.iter().map(|&s| m.rank_of_final_top1.get(s, p).copied()).collect(),
            kl: vm.rows.iter().map(|&s| finite(m.kl_to_final.get(s, p))).collect(),
        })
        .collect();
    PageRun {
        label: label.to_string(),
        rows: vm.rows.iter().map(|&s| report.sites.get(s).cloned().unwrap_or_default()).collect(),
        cols: vm.cols.clone(),
        input: vm.cols.iter().map(|&p| text(p)).collect(),
        next: vm.cols.iter().map(|&p| report.tokens.get(p + 1).map(|t| (t.id, shown(&t.text)))).collect(),
        topk,
        depth,
        traj,
    }
}

/// JSON that can sit inside a `<script>` element: `</` cannot close it.
fn script_json(json: &str) -> String {
    json.replace("</", "<\\/")
}

/// The element that holds the provenance (read back by `render --from`).
pub const PROVENANCE_ID: &str = "logit-lens-provenance";

/// The page: `svg_text` (the figure, as [`super::svg::to_svg`] writes it) inline, `runs` for the
/// panels of `scene.cells`, `provenance_json` shown and stored.
pub fn to_html(scene: &Scene, svg_text: &str, title: &str, provenance_json: &str, runs: &[PageRun]) -> String {
    let svg_body = svg_text.find("<svg").and_then(|i| svg_text.get(i..)).unwrap_or(svg_text);
    let data = serde_json::json!({ "areas": scene.cells, "runs": runs, "width": scene.width });
    let title = super::svg::escape(title);
    let mut o = String::with_capacity(svg_text.len() + 16_384);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n",
    );
    o.push_str(&format!("<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"));
    o.push_str(&format!(
        "<h1>{title}</h1>\n<p class=\"hint\" id=\"hint\">Hover a cell for its top-k; click one for its trajectories (arrow keys move the selection).</p>\n"
    ));
    o.push_str("<div id=\"fig\">\n");
    o.push_str(svg_body);
    o.push_str("</div>\n<div id=\"tip\" hidden></div>\n<section id=\"inspector\" hidden><h2 id=\"cell-title\"></h2><div id=\"cell-next\"></div><table id=\"topk\"><thead><tr><th>#</th><th>token</th><th>prob</th><th>logit</th></tr></thead><tbody></tbody></table><h3 id=\"traj-title\"></h3><div id=\"charts\"></div></section>\n");
    o.push_str("<details id=\"provenance\"><summary>Provenance (how this figure was made)</summary><pre id=\"provenance-text\"></pre></details>\n");
    o.push_str(&format!("<script type=\"application/json\" id=\"{PROVENANCE_ID}\">{}</script>\n", script_json(provenance_json)));
    o.push_str(&format!("<script type=\"application/json\" id=\"logit-lens-data\">{}</script>\n", script_json(&data.to_string())));
    o.push_str(&format!("<script>{SCRIPT}</script>\n</body>\n</html>\n"));
    o
}

/// Reads the provenance JSON back from a page written by [`to_html`].
pub fn read_provenance(html: &str) -> Option<String> {
    let open = format!("<script type=\"application/json\" id=\"{PROVENANCE_ID}\">");
    let start = html.find(&open)? + open.len();
    let end = html.get(start..)?.find("</script>")? + start;
    Some(html.get(start..end)?.replace("<\\/", "</"))
}

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 16px; margin: 0 0 4px 0; }
h2 { font-size: 14px; margin: 4px 0; }
h3 { font-size: 13px; margin: 10px 0 4px 0; }
.hint { color: #666; font-size: 12px; margin: 0 0 8px 0; }
#fig { width: 100%; max-width: 1100px; }
#fig svg { display: block; width: 100%; height: auto; cursor: crosshair; }
#tip { position: fixed; pointer-events: none; background: rgba(255,255,255,0.97); border: 1px solid #888;
  border-radius: 4px; padding: 6px 8px; font-size: 12px; box-shadow: 0 2px 6px rgba(0,0,0,0.2); z-index: 10; }
#tip table, #topk { border-collapse: collapse; font-size: 12px; }
#tip td, #topk td, #topk th { padding: 1px 6px; text-align: left; }
#topk th { color: #666; font-weight: normal; border-bottom: 1px solid #ccc; }
.tok { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre; }
.right { color: #1a7f37; font-weight: bold; }
#inspector { margin-top: 12px; }
#charts { display: flex; flex-wrap: wrap; gap: 12px; }
#charts svg { border: 1px solid #ddd; background: #fff; }
details { margin-top: 14px; font-size: 12px; }
pre { white-space: pre-wrap; word-break: break-all; background: #f6f6f6; padding: 8px; }
"#;

const SCRIPT: &str = r##"
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("logit-lens-data").textContent);
  const provText = document.getElementById("logit-lens-provenance").textContent;
  try { document.getElementById("provenance-text").textContent = JSON.stringify(JSON.parse(provText), null, 2); }
  catch (e) { document.getElementById("provenance-text").textContent = provText; }
  const svg = document.querySelector("#fig svg");
  const tip = document.getElementById("tip");
  const NS = "http://www.w3.org/2000/svg";
  let selected = null;
  function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
  function cellAt(evt) {
    const r = svg.getBoundingClientRect();
    const s = D.width / r.width;
    const x = (evt.clientX - r.left) * s, y = (evt.clientY - r.top) * s;
    for (let i = 0; i < D.areas.length; i++) {
      const a = D.areas[i];
      const col = Math.floor((x - a.x) / a.w), row = Math.floor((y - a.y) / a.h);
      if (col >= 0 && col < a.n_cols && row >= 0 && row < a.n_rows) return { area: i, row: row, col: col };
    }
    return null;
  }
  function runOf(c) { return D.runs[D.areas[c.area].run]; }
  function topkTable(run, c, body) {
    const next = run.next[c.col];
    (run.topk[c.row] && run.topk[c.row][c.col] || []).forEach(function (k, i) {
      const tr = document.createElement("tr");
      tr.appendChild(el("td", String(i + 1)));
      tr.appendChild(el("td", k[1], "tok" + (next !== null && k[0] === next[0] ? " right" : "")));
      tr.appendChild(el("td", (100 * k[2]).toFixed(1) + "%"));
      tr.appendChild(el("td", Number(k[3]).toFixed(2)));
      body.appendChild(tr);
    });
  }
  function describe(run, c) {
    const next = run.next[c.col];
    return (run.label ? run.label + " \u00b7 " : "") + "site " + run.rows[c.row] + " \u00b7 position " + run.cols[c.col] +
      " \u00b7 input " + run.input[c.col] + (next !== null ? " \u2192 next " + next[1] : "");
  }
  svg.addEventListener("mousemove", function (evt) {
    const c = cellAt(evt);
    if (!c) { tip.hidden = true; return; }
    const run = runOf(c);
    tip.textContent = "";
    tip.appendChild(el("div", describe(run, c)));
    const t = document.createElement("table"); const b = document.createElement("tbody"); t.appendChild(b);
    topkTable(run, c, b); tip.appendChild(t);
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.min(evt.clientX + 14, window.innerWidth - w - 4) + "px";
    tip.style.top = Math.min(evt.clientY + 14, window.innerHeight - h - 4) + "px";
  });
  svg.addEventListener("mouseleave", function () { tip.hidden = true; });
  svg.addEventListener("click", function (evt) { const c = cellAt(evt); if (c) select(c); });
  document.addEventListener("keydown", function (evt) {
    if (!selected) return;
    const a = D.areas[selected.area];
    const d = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[evt.key];
    if (!d) return;
    evt.preventDefault();
    select({ area: selected.area, row: Math.max(0, Math.min(a.n_rows - 1, selected.row + d[0])), col: Math.max(0, Math.min(a.n_cols - 1, selected.col + d[1])) });
  });
  function chart(title, run, values, yMax, fmt) {
    const W = 260, H = 150, L = 38, R = 8, T = 18, B = 26;
    const s = document.createElementNS(NS, "svg");
    s.setAttribute("width", W); s.setAttribute("height", H); s.setAttribute("viewBox", "0 0 " + W + " " + H);
    function add(tag, attrs, text) { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; s.appendChild(e); return e; }
    add("text", { x: L, y: 12, "font-size": 11, fill: "#222" }, title);
    add("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#999" });
    const n = run.depth.length;
    const X = (i) => L + (n > 1 ? i / (n - 1) : 0.5) * (W - L - R);
    const Y = (v) => T + (1 - Math.max(0, Math.min(1, v / yMax))) * (H - T - B);
    add("text", { x: L - 3, y: T + 8, "font-size": 9, "text-anchor": "end", fill: "#555" }, fmt(yMax));
    add("text", { x: L - 3, y: H - B, "font-size": 9, "text-anchor": "end", fill: "#555" }, fmt(0));
    add("text", { x: L, y: H - 8, "font-size": 9, fill: "#555" }, run.rows[run.depth[0]]);
    add("text", { x: W - R, y: H - 8, "font-size": 9, "text-anchor": "end", fill: "#555" }, run.rows[run.depth[n - 1]]);
    let pts = [];
    run.depth.forEach(function (row, i) { const v = values[row]; if (v !== null && v !== undefined) pts.push(X(i).toFixed(1) + "," + Y(v).toFixed(1)); });
    add("polyline", { points: pts.join(" "), fill: "none", stroke: "#1f5fbf", "stroke-width": 1.6 });
    const at = run.depth.indexOf(selected.row);
    if (at >= 0) add("line", { x1: X(at), x2: X(at), y1: T, y2: H - B, stroke: "#d33", "stroke-dasharray": "3,3" });
    return s;
  }
  function select(c) {
    selected = c;
    const a = D.areas[c.area], run = runOf(c);
    let mark = document.getElementById("selection-mark");
    if (!mark) { mark = document.createElementNS(NS, "rect"); mark.id = "selection-mark"; mark.setAttribute("fill", "none"); mark.setAttribute("stroke", "#d00"); mark.setAttribute("stroke-width", "1.5"); svg.appendChild(mark); }
    mark.setAttribute("x", a.x + c.col * a.w); mark.setAttribute("y", a.y + c.row * a.h); mark.setAttribute("width", a.w); mark.setAttribute("height", a.h);
    document.getElementById("inspector").hidden = false;
    document.getElementById("cell-title").textContent = describe(run, c);
    const body = document.querySelector("#topk tbody"); body.textContent = "";
    topkTable(run, c, body);
    const tr = run.traj[c.col];
    document.getElementById("traj-title").textContent = "The final top-1 " + tr.token + " at position " + run.cols[c.col] + " over depth";
    const charts = document.getElementById("charts"); charts.textContent = "";
    const lr = tr.rank.map(function (r) { return r === null ? null : Math.log10(r); });
    const maxRank = Math.max(1, Math.max.apply(null, lr.filter(function (v) { return v !== null; }).concat([1])));
    const maxKl = Math.max(0.1, Math.max.apply(null, tr.kl.filter(function (v) { return v !== null; }).concat([0])));
    charts.appendChild(chart("probability", run, tr.prob, 1, function (v) { return v.toFixed(1); }));
    charts.appendChild(chart("rank (log10)", run, lr, Math.ceil(maxRank), function (v) { return "1e" + v.toFixed(0); }));
    charts.appendChild(chart("KL(final \u2016 site), nats", run, tr.kl, maxKl, function (v) { return v.toFixed(1); }));
    if (history.replaceState && !/hover=/.test(location.hash)) history.replaceState(null, "", "#cell=" + c.area + "," + c.row + "," + c.col);
  }
  const m = /#cell=(\d+),(\d+),(\d+)/.exec(location.hash);
  if (m) {
    const c = { area: +m[1], row: +m[2], col: +m[3] };
    const a = D.areas[c.area];
    if (a && c.row < a.n_rows && c.col < a.n_cols) select(c);
  }
  // `#hover=panel,row,col` moves a pointer over that cell (the same event a mouse sends): for
  // checking the hover in a headless browser.
  const h = /hover=(\d+),(\d+),(\d+)/.exec(location.hash);
  if (h && D.areas[+h[1]]) {
    const a = D.areas[+h[1]], r = svg.getBoundingClientRect(), k = r.width / D.width;
    svg.dispatchEvent(new MouseEvent("mousemove", { clientX: r.left + (a.x + (+h[3] + 0.5) * a.w) * k, clientY: r.top + (a.y + (+h[2] + 0.5) * a.h) * k }));
  }
  document.body.setAttribute("data-ready", "1");
})();
"##;
