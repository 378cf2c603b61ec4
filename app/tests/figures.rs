//! `logit-lens render`: every view in every format from the demo model. The SVG parses and
//! rasterises (usvg/resvg), the PNG decodes with its pixel density, the PDF rasterises with
//! pdftoppm; the rasters match committed reference images within a tolerance (regenerate them
//! with `UPDATE_FIGURES=1`); the provenance round-trips through `--from` in every format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lens_app::figure::output::{rasterize, read_provenance};
use lens_tests::fixture::unique_temp_dir;

const VIEWS: [&str; 7] = ["logits", "probs", "ranks", "kl", "entropy", "contributions", "grad-x-act"];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logit-lens"))
}

fn prompt_file() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/prompts/plasma.txt"))
}

fn render(out: &Path, extra: &[&str]) {
    let o = bin().arg("render").arg("--prompt-file").arg(prompt_file()).args(["--device", "cpu"]).args(extra).arg("--out").arg(out).output().unwrap();
    assert!(o.status.success(), "render {extra:?} failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>, Option<png::PixelDimensions>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba, "{}", path.display());
    buf.truncate(info.buffer_size());
    let dims = reader.info().pixel_dims;
    (info.width, info.height, buf, dims)
}

fn distinct_colours(rgba: &[u8]) -> usize {
    let mut set = std::collections::HashSet::new();
    for px in rgba.chunks_exact(4).step_by(7) {
        set.insert([px[0] / 8, px[1] / 8, px[2] / 8]);
    }
    set.len()
}

/// Mean absolute channel difference, and the fraction of pixels that differ by more than 64.
fn compare(a: &[u8], b: &[u8]) -> (f64, f64) {
    let mut sum = 0u64;
    let mut big = 0usize;
    for (pa, pb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        let d: Vec<u32> = pa.iter().zip(pb).map(|(x, y)| u32::from(x.abs_diff(*y))).collect();
        sum += u64::from(d.iter().sum::<u32>());
        big += usize::from(d.iter().any(|&v| v > 64));
    }
    (sum as f64 / a.len() as f64, big as f64 / (a.len() / 4) as f64)
}

fn check_reference(name: &str, w: u32, h: u32, rgba: &[u8]) {
    let reference = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/figures")).join(format!("{name}.png"));
    if std::env::var_os("UPDATE_FIGURES").is_some() {
        let f = std::fs::File::create(&reference).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(rgba).unwrap();
        return;
    }
    let (rw, rh, ref_rgba, _) = decode_png(&reference);
    assert_eq!((rw, rh), (w, h), "{name}: size differs from the reference image");
    let (mean, frac) = compare(rgba, &ref_rgba);
    assert!(mean < 3.0 && frac < 0.02, "{name}: differs from tests/figures/{name}.png (mean {mean:.2}, {:.1}% pixels)", frac * 100.0);
}

fn pdftoppm_available() -> bool {
    let ok = Command::new("pdftoppm").arg("-v").output().is_ok();
    assert!(ok || std::env::var_os("CI").is_none(), "pdftoppm is missing (poppler-utils); .ci/run installs it");
    ok
}

#[test]
fn every_view_in_every_format() {
    let dir = unique_temp_dir("figures");
    std::fs::create_dir_all(&dir).unwrap();
    let have_pdftoppm = pdftoppm_available();
    for view in VIEWS {
        let extra = ["--view", view, "--subblocks", "--dpi", "72"];
        // SVG: parses, rasterises, keeps text as text with the font named.
        let svg_path = dir.join(format!("{view}.svg"));
        render(&svg_path, &extra);
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.contains("font-family=\"DejaVu Sans\"") && svg.contains("<text"), "{view}: text must stay text");
        assert!(svg.contains("plasma"), "{view}: the prompt's tokens are labelled");
        assert!(svg.contains("embed") && svg.contains("0.attn"), "{view}: row labels");
        let (w, h, rgba) = rasterize(&svg, 1.0).unwrap();
        assert!(w == 504 && h > 100, "{view}: {w} x {h}");
        assert!(distinct_colours(&rgba) > 12, "{view}: the figure is nearly blank");
        check_reference(view, w, h, &rgba);

        // PNG: decodes, 7 in at 72 dpi, density recorded, same picture as the SVG.
        let png_path = dir.join(format!("{view}.png"));
        render(&png_path, &extra);
        let (pw, ph, prgba, dims) = decode_png(&png_path);
        assert_eq!((pw, ph), (w, h));
        let dims = dims.expect("pHYs");
        assert_eq!((dims.xppu, dims.unit), ((72.0f64 / 0.0254).round() as u32, png::Unit::Meter));
        assert_eq!(compare(&prgba, &rgba).0, 0.0, "{view}: PNG and rasterised SVG are the same drawing");

        // PDF: rasterises with pdftoppm to the same size.
        let pdf_path = dir.join(format!("{view}.pdf"));
        render(&pdf_path, &extra);
        let pdf = std::fs::read(&pdf_path).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.windows(9).any(|w| w == b"FontFile2"), "{view}: the PDF embeds its font");
        if have_pdftoppm {
            let prefix = dir.join(format!("{view}-pdf"));
            let o = Command::new("pdftoppm").args(["-png", "-r", "72", "-singlefile"]).arg(&pdf_path).arg(&prefix).output().unwrap();
            assert!(o.status.success(), "pdftoppm: {}", String::from_utf8_lossy(&o.stderr));
            let (xw, xh, xrgba) = {
                let p = prefix.with_extension("png");
                let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
                let mut reader = decoder.read_info().unwrap();
                let mut buf = vec![0; reader.output_buffer_size()];
                let info = reader.next_frame(&mut buf).unwrap();
                buf.truncate(info.buffer_size());
                (info.width, info.height, buf)
            };
            assert!((i64::from(xw) - i64::from(w)).abs() <= 1 && (i64::from(xh) - i64::from(h)).abs() <= 1, "{view}: PDF page {xw} x {xh}");
            let channels = xrgba.len() / (xw as usize * xh as usize);
            let rgba_pdf: Vec<u8> = xrgba.chunks_exact(channels).flat_map(|p| [p[0], p[1 % channels], p[2 % channels], 255]).collect();
            assert!(distinct_colours(&rgba_pdf) > 12, "{view}: the PDF rasterises to a nearly blank page");
        }
    }
}

#[test]
fn provenance_round_trips_through_from() {
    let dir = unique_temp_dir("figures-from");
    std::fs::create_dir_all(&dir).unwrap();
    let original = dir.join("orig.svg");
    render(&original, &["--preset", "rank-input-1000", "--last", "12", "--colormap", "cividis", "--title", "Ranks of the input token"]);
    let want = std::fs::read(&original).unwrap();
    for ext in ["svg", "png", "pdf"] {
        let fig = dir.join(format!("fig.{ext}"));
        render(&fig, &["--preset", "rank-input-1000", "--last", "12", "--colormap", "cividis", "--title", "Ranks of the input token"]);
        let prov = read_provenance(&fig).unwrap();
        assert_eq!(prov.prompt, std::fs::read_to_string(prompt_file()).unwrap());
        assert_eq!(prov.spec.rank_cap, 1000);
        assert_eq!(prov.spec.last, Some(12));
        assert!(prov.model_sha256.is_some());
        let again = dir.join(format!("again-from-{ext}.svg"));
        let o = bin().arg("render").arg("--from").arg(&fig).args(["--device", "cpu"]).arg("--out").arg(&again).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&again).unwrap(), want, "--from {ext} regenerates the identical figure");
    }
    // Gradient × activation (computed through the backward graph again) round-trips too.
    let gxa = dir.join("gxa.svg");
    render(&gxa, &["--view", "grad-x-act", "--contrib-target", "next", "--last", "8"]);
    let svg = std::fs::read_to_string(&gxa).unwrap();
    assert!(svg.contains("Gradient × activation of the next token"), "the title");
    let again = dir.join("gxa-again.svg");
    let o = bin().arg("render").arg("--from").arg(&gxa).args(["--device", "cpu"]).arg("--out").arg(&again).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), svg, "--from regenerates the gradient × activation figure");
    let o = bin()
        .arg("render")
        .arg("--prompt-file")
        .arg(prompt_file())
        .args(["--device", "cpu", "--view", "grad-x-act", "--compare-decoder", "raw", "--out"])
        .arg(dir.join("no.svg"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("gradient × activation"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn presets_and_bad_options() {
    let dir = unique_temp_dir("figures-presets");
    std::fs::create_dir_all(&dir).unwrap();
    for (preset, needle) in [
        ("top1-logit", "colour: logit"),
        ("rank-final-100", "≥100"),
        ("kl-final", "KL(final || site)"),
        ("kl-input", "KL(input || site)"),
        ("rank-input-1000", "≥1000"),
    ] {
        let out = dir.join(format!("{preset}.svg"));
        render(&out, &["--preset", preset]);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains(&lens_app::figure::svg::escape(needle)), "{preset}: lacks {needle:?}");
        assert!(svg.contains(">embed<"), "{preset}: the input row is included");
    }
    let fail = |args: &[&str], needle: &str| {
        let o = bin().arg("render").arg("--prompt-file").arg(prompt_file()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    fail(&["--out", dir.join("x.jpg").to_str().unwrap()], "must end in .svg, .pdf, .png or .html");
    fail(&["--view", "bogus", "--out", dir.join("x.svg").to_str().unwrap()], "unknown view");
    fail(&["--preset", "bogus", "--out", dir.join("x.svg").to_str().unwrap()], "unknown preset");
    fail(&["--colormap", "jet", "--out", dir.join("x.svg").to_str().unwrap()], "unknown colour map");
    fail(&["--positions", "9..3", "--out", dir.join("x.svg").to_str().unwrap()], "must not exceed");
    // A prompt longer than the context: refused, or cut with --truncate left (render had no
    // --truncate).
    let long = dir.join("long.txt");
    std::fs::write(&long, "word ".repeat(400)).unwrap();
    let o = bin().arg("render").arg("--prompt-file").arg(&long).args(["--out", dir.join("long.svg").to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--truncate left"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin().arg("render").arg("--prompt-file").arg(&long).args(["--truncate", "left", "--out", dir.join("long.svg").to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("long.svg").is_file());
    // It quietly drew one column.
    fail(&["--last", "0", "--out", dir.join("x.svg").to_str().unwrap()], "--last 0: show at least one position");
    fail(&["--rank-of", "two words", "--out", dir.join("x.svg").to_str().unwrap()], "not a single token");
    let not_a_figure = dir.join("plain.svg");
    std::fs::write(&not_a_figure, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
    let o = bin().arg("render").arg("--from").arg(&not_a_figure).arg("--out").arg(dir.join("y.svg")).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("carries no logit-lens provenance"));
}

/// Nothing of a figure is written past its right edge: the colour bar's column is as wide as its
/// widest tick label (issue 11, item 18: the entropy figure's "10.8 (uniform)" was clipped).
#[test]
fn figure_text_stays_inside_the_page() {
    use lens_app::figure::scene::{self, Anchor, Item};
    use lens_app::figure::spec::{FigureSpec, FigureView};
    let result = lens_app::session::synthetic::synthetic_result(8, 21, 5);
    for view in [FigureView::Entropy, FigureView::Ranks, FigureView::Kl, FigureView::Logits] {
        let spec = FigureSpec { view, ..FigureSpec::default() };
        let settings = spec.view_settings().unwrap();
        let vm = lens_app::view::model::ViewModel::build(&result, &settings, &[]);
        let s = scene::build(&vm, &result.report, &spec, "subtitle", &|id| format!("t{id}")).unwrap();
        for item in &s.items {
            if let Item::Text { x, size, text, anchor: Anchor::Start, rotate, .. } = item
                && *rotate == 0.0
            {
                // DejaVu Sans averages 0.6 em a glyph (the figure code's own estimate).
                let right = x + text.chars().count() as f64 * 0.6 * size;
                assert!(right <= s.width + 0.5, "{view:?}: {text:?} ends at {right:.1} pt, the page is {:.1} pt wide", s.width);
            }
        }
    }
}

/// Corpus figures (issue 15, item 2): `corpus` on the demo model with two decoders, then `render
/// --corpus A --corpus B` in every format: two bands and two mean lines, the legend, the text
/// inside the page; the provenance names the corpus files and `--from` redraws the same figure.
#[test]
fn corpus_figures_overlay_runs_with_bands() {
    let dir = unique_temp_dir("figures-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let text = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/heldout.txt"));
    let mut jsons = Vec::new();
    for decoder in ["logit_lens", "last_mlp"] {
        let json = dir.join(format!("{decoder}.json"));
        let o = bin()
            .args(["corpus", "--device", "cpu", "--max-tokens", "1024", "--window", "128", "--resamples", "300", "--decoder", decoder, "--text"])
            .arg(&text)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        jsons.push(json);
    }
    let svg = dir.join("kl.svg");
    let draw = |out: &Path, extra: &[&str]| {
        let o = bin()
            .arg("render")
            .arg("--corpus")
            .arg(&jsons[0])
            .arg("--corpus")
            .arg(&jsons[1])
            .args(["--label", "logit lens", "--label", "last MLP"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    draw(&svg, &[]);
    let s = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(s.matches("<polygon").count(), 2, "one band per run");
    assert_eq!(s.matches("<polyline").count(), 2, "one mean line per run");
    assert!(s.contains(">logit lens<") && s.contains(">last MLP<"), "legend");
    assert!(s.contains("KL(final ‖ site), nats"));
    let (w, h, _) = rasterize(&s, 2.0).unwrap();
    assert!(w > 500 && h > 300, "{w}x{h}");
    let prov = read_provenance(&svg).unwrap();
    let src = prov.corpus.unwrap();
    assert_eq!((src.files.len(), src.metric.as_str()), (2, "kl_to_final"));
    // Every format; --from redraws it; another statistic.
    for ext in ["png", "pdf"] {
        draw(&dir.join(format!("kl.{ext}")), &[]);
    }
    let again = dir.join("again.svg");
    let o = bin().arg("render").arg("--from").arg(&svg).arg("--out").arg(&again).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), s);
    draw(&dir.join("nll.png"), &["--corpus-metric", "nll_bits_per_byte"]);
    let o = bin().arg("render").arg("--corpus").arg(&jsons[0]).args(["--corpus-metric", "perplexity"]).arg("--out").arg(dir.join("x.svg")).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--corpus-metric \"perplexity\""));
    if std::env::var_os("KEEP_FIGURES").is_some() {
        eprintln!("figures in {}", dir.display());
    }
}

/// Comparison figures (issue 15, item 1): `render --compare-decoder raw` and `--compare-prompt`
/// stack A, B and A − B (three titles, a diverging bar centred on 0), in every format; the
/// provenance records what B varies and `--from` redraws the same figure; contributions refuse.
#[test]
fn comparison_figures_stack_a_b_and_the_difference() {
    let dir = unique_temp_dir("figures-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("kl.svg");
    render(&svg, &["--view", "kl", "--compare-decoder", "raw"]);
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.contains(">A · logit_lens: ") && s.contains(">B · raw: ") && s.contains(">A − B: "), "three titled panels");
    assert!(s.contains(">aligned by position<"));
    let prov = read_provenance(&svg).unwrap();
    let c = prov.compare.unwrap();
    assert_eq!((c.varied.as_str(), c.with.as_str()), ("decoder", "raw"));
    let again = dir.join("again.svg");
    let o = bin().arg("render").arg("--from").arg(&svg).args(["--device", "cpu"]).arg("--out").arg(&again).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), s, "--from redraws the comparison");
    for ext in ["png", "pdf"] {
        render(
            &dir.join(format!("probs.{ext}")),
            &["--view", "probs", "--compare-prompt", "Sometimes, when people say plasma, they mean a state of matter. Other times, when people say"],
        );
    }
    render(&dir.join("ranks.png"), &["--view", "ranks", "--compare-prompt", "Sometimes people say plasma."]);
    let o = bin()
        .arg("render")
        .arg("--prompt-file")
        .arg(prompt_file())
        .args(["--device", "cpu", "--view", "contributions", "--compare-decoder", "raw", "--out"])
        .arg(dir.join("x.svg"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not contributions"));
    if std::env::var_os("KEEP_FIGURES").is_some() {
        eprintln!("figures in {}", dir.display());
    }
}

/// Whether Debian's `chromium` runs here (`.ci/run` installs it and sets
/// `LOGIT_LENS_REQUIRE_CHROMIUM=1`, so CI never skips the browser checks).
fn chromium() -> Option<&'static str> {
    let found = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("LOGIT_LENS_REQUIRE_CHROMIUM").map_or(true, |v| v != "1"), "chromium is missing (.ci/run installs it)");
        eprintln!("skipping the browser checks: no chromium");
    }
    found.then_some("chromium")
}

/// `render --out FIG.html` (issue 23): one self-contained page (no request: no `src`, `href` or
/// `url(`; a Content-Security-Policy that allows none), the figure's SVG inline, per-cell data that
/// agrees with the `lens` report of the same prompt, a provenance that `render --from` reads. In a
/// real browser (headless Chromium), the page's script runs: a cell named in the address
/// (`#cell=panel,row,col`) is selected and the inspector shows that cell's top-k, its top-1 first
/// (DOM checked), and a screenshot is written (looked at by hand: `target/figures-html/*.png`).
#[test]
fn html_page_is_self_contained_and_works_in_a_browser() {
    let dir = unique_temp_dir("fig-html");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("fig.html");
    render(&page, &["--view", "probs"]);
    let html = std::fs::read_to_string(&page).unwrap();
    for needle in ["src=", "href=", "url(", "@import", "<link"] {
        assert!(!html.contains(needle), "the page would fetch something ({needle})");
    }
    assert!(html.contains("default-src 'none'"));
    assert!(html.contains("<svg") && html.contains("</svg>") && !html.contains("<?xml"));
    // The page's data against the report of the same prompt.
    let json = dir.join("r.json");
    let o = bin().arg("lens").arg("--prompt-file").arg(prompt_file()).args(["--device", "cpu", "--json"]).arg(&json).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let open = "<script type=\"application/json\" id=\"logit-lens-data\">";
    let start = html.find(open).unwrap() + open.len();
    let data: serde_json::Value = serde_json::from_str(&html[start..start + html[start..].find("</script>").unwrap()].replace("<\\/", "</")).unwrap();
    let run = &data["runs"][0];
    let sites: Vec<&str> = report["sites"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let rows = run["rows"].as_array().unwrap();
    let cols = run["cols"].as_array().unwrap();
    assert_eq!(rows.len(), sites.len());
    assert_eq!(cols.len(), report["tokens"].as_array().unwrap().len());
    assert_eq!(data["areas"][0]["n_rows"], rows.len());
    let (row, col) = (2, 5);
    let site = sites.iter().position(|s| *s == rows[row].as_str().unwrap()).unwrap();
    let pos = cols[col].as_u64().unwrap() as usize;
    let top = &run["topk"][row][col];
    assert_eq!(top[0][0], report["metrics"]["top1_id"][site][pos], "the page's top-1 at {site}/{pos}");
    let p0 = top[0][2].as_f64().unwrap();
    assert!((p0 - report["metrics"]["top1_prob"][site][pos].as_f64().unwrap()).abs() < 1e-9);
    let final_site = sites.len() - 1;
    assert_eq!(run["traj"][col]["rank"][rows.iter().position(|r| r == sites[final_site]).unwrap()], 1, "the final top-1 is rank 1 at the final site");
    // The provenance round-trips through --from.
    assert_eq!(read_provenance(&page).unwrap().prompt, std::fs::read_to_string(prompt_file()).unwrap());
    let again = dir.join("again.svg");
    let o = bin().args(["render", "--from"]).arg(&page).arg("--out").arg(&again).args(["--device", "cpu"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A real browser runs the page's script.
    let Some(chrome) = chromium() else { return };
    let url = format!("file://{}#cell=0,{row},{col}&hover=0,{},{}", page.display(), row + 3, col + 2);
    let profile = dir.join("chromium-profile");
    let headless = |extra: &[&str]| {
        Command::new(chrome)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--window-size=1200,1000"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let o = headless(&["--virtual-time-budget=3000", "--dump-dom"]);
    let dom = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(dom.contains("data-ready=\"1\""), "the script did not run: {}", String::from_utf8_lossy(&o.stderr));
    assert!(dom.contains("id=\"selection-mark\""), "no selection drawn");
    let body = &dom[dom.find("id=\"topk\"").unwrap()..];
    let first_token = body.split("<td class=\"tok").nth(1).unwrap().split('>').nth(1).unwrap().split('<').next().unwrap();
    assert_eq!(first_token, top[0][1].as_str().unwrap().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"), "the inspector's top-1");
    assert!(dom.contains(&format!("position {pos}")), "the inspector names the cell");
    // The hover: a pointer over another cell shows its top-k in the tooltip.
    let tip = &dom[dom.find("<div id=\"tip\"").unwrap()..];
    let tip = &tip[..tip.find("</table>").unwrap()];
    assert!(!tip[..tip.find('>').unwrap()].contains("hidden"), "the tooltip is shown");
    let hovered = &run["topk"][row + 3][col + 2][0][1];
    assert!(tip.contains(&format!("position {}", cols[col + 2])) && tip.contains(hovered.as_str().unwrap()), "{tip}");
    assert_eq!(dom.matches("<polyline").count() - html.matches("<polyline").count(), 3, "three trajectories drawn");
    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/figures-html"));
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("probs-cell.png");
    let o = headless(&["--virtual-time-budget=3000", &format!("--screenshot={}", shot.display())]);
    assert!(o.status.success() && shot.is_file(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap())).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 1000));
    let channels = info.color_type.samples();
    let rgba: Vec<u8> = buf[..info.buffer_size()].chunks_exact(channels).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    assert!(distinct_colours(&rgba) > 30, "the screenshot shows the figure's colours");
}
