//! Writing figures (SVG, PNG, PDF) and reading their provenance back.
//! SVG is the one description: PNG rasterises it with resvg, PDF converts it with svg2pdf (fonts
//! subset-embedded); both load the bundled DejaVu Sans, so a figure looks the same everywhere.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::html::PageRun;
use super::provenance::{Provenance, from_hex, to_hex};
use super::scene::Scene;
use super::svg;

/// The font every figure uses, bundled (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera licence).
pub const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const PNG_KEY: &str = "logit-lens:provenance";
const PDF_KEY: &[u8] = b"LogitLensProvenance";

/// Output format, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics.
    Svg,
    /// Portable network graphics.
    Png,
    /// Portable document format.
    Pdf,
    /// One self-contained HTML page (the SVG inline, hover and trajectories).
    Html,
}

impl Format {
    /// The format of `path`, by extension.
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            Some("pdf") => Ok(Self::Pdf),
            Some("html" | "htm") => Ok(Self::Html),
            _ => bail!("{}: the figure file must end in .svg, .pdf, .png or .html", path.display()),
        }
    }
}

fn usvg_tree(svg_text: &str) -> Result<usvg::Tree> {
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_font_data(FONT.to_vec());
    options.font_family = svg::FONT_FAMILY.to_string();
    usvg::Tree::from_str(svg_text, &options).context("the figure's SVG did not parse")
}

/// Renders SVG text to RGBA pixels at `px_per_pt` pixels per point (1 = 72 dpi).
pub fn rasterize(svg_text: &str, px_per_pt: f64) -> Result<(u32, u32, Vec<u8>)> {
    let tree = usvg_tree(svg_text)?;
    let size = tree.size();
    // usvg sizes a `pt` document in CSS pixels (96 per inch): 1 pt = 4/3 px.
    let scale = px_per_pt * 0.75;
    let w = (f64::from(size.width()) * scale).round().max(1.0) as u32;
    let h = (f64::from(size.height()) * scale).round().max(1.0) as u32;
    if u64::from(w) * u64::from(h) > 400_000_000 {
        bail!("the PNG would be {w} x {h} pixels; lower --dpi or --width-in");
    }
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h).context("cannot allocate the image")?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::from_scale(scale as f32, scale as f32), &mut pixmap.as_mut());
    Ok((w, h, pixmap.take()))
}

fn png_bytes(svg_text: &str, dpi: f64, provenance: &str) -> Result<Vec<u8>> {
    let (w, h, rgba) = rasterize(svg_text, dpi / 72.0)?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let ppm = (dpi / 0.0254).round() as u32;
        enc.set_pixel_dims(Some(png::PixelDimensions { xppu: ppm, yppu: ppm, unit: png::Unit::Meter }));
        enc.add_text_chunk("Software".into(), format!("logit-lens {}", env!("CARGO_PKG_VERSION")))?;
        enc.add_itxt_chunk(PNG_KEY.into(), provenance.into())?;
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgba)?;
    }
    Ok(out)
}

fn pdf_bytes(svg_text: &str, scene: &Scene, title: &str, prov: &Provenance, provenance: &str) -> Result<Vec<u8>> {
    use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
    let tree = usvg_tree(svg_text)?;
    let (chunk, svg_id) = svg2pdf::to_chunk(&tree, svg2pdf::ConversionOptions::default()).map_err(|e| anyhow::anyhow!("PDF conversion failed: {e}"))?;
    let mut alloc = Ref::new(1);
    let catalog_id = alloc.bump();
    let tree_id = alloc.bump();
    let page_id = alloc.bump();
    let content_id = alloc.bump();
    let info_id = alloc.bump();
    let mut map = HashMap::new();
    let chunk = chunk.renumber(|old| *map.entry(old).or_insert_with(|| alloc.bump()));
    let svg_id = *map.get(&svg_id).context("PDF conversion lost its object")?;
    let (w, h) = (scene.width as f32, scene.height as f32);
    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(tree_id);
    pdf.pages(tree_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, w, h));
    page.parent(tree_id);
    page.contents(content_id);
    page.resources().x_objects().pair(Name(b"S1"), svg_id);
    page.finish();
    let mut content = Content::new();
    content.transform([w, 0.0, 0.0, h, 0.0, 0.0]).x_object(Name(b"S1"));
    pdf.stream(content_id, &content.finish());
    pdf.extend(&chunk);
    let program = format!("logit-lens {}", env!("CARGO_PKG_VERSION"));
    let subject: String = prov.prompt.chars().take(500).collect();
    let keywords = format!("model={} sha256={}", prov.model_name, prov.model_sha256.clone().unwrap_or_default());
    let mut info = pdf.document_info(info_id);
    info.title(TextStr(title));
    info.subject(TextStr(&subject));
    info.keywords(TextStr(&keywords));
    info.creator(TextStr(&program));
    info.producer(TextStr(&program));
    info.pair(Name(PDF_KEY), Str(to_hex(provenance).as_bytes()));
    info.finish();
    Ok(pdf.finish())
}

/// Writes `scene` to `path` in the format its extension names, with `prov` inside. `runs` is
/// what an HTML page shows on hover and click for the panels of `scene.cells` (the other formats
/// do not use it; a page without it is the figure and its provenance).
pub fn write(scene: &Scene, path: &Path, title: &str, prov: &Provenance, runs: &[PageRun]) -> Result<()> {
    let format = Format::of(path)?;
    let provenance = serde_json::to_string(prov)?;
    let svg_text = svg::to_svg(scene, title, &provenance);
    let bytes = match format {
        Format::Svg => svg_text.into_bytes(),
        Format::Png => png_bytes(&svg_text, prov.spec.dpi, &provenance)?,
        Format::Pdf => pdf_bytes(&svg_text, scene, title, prov, &provenance)?,
        Format::Html => super::html::to_html(scene, &svg_text, title, &provenance, runs).into_bytes(),
    };
    // Through `NAME.EXT.partial` (one per format: fig.svg and fig.png written at once do not
    // share it), removed if the write or the rename fails.
    lens_model::files::write_replacing(path, |tmp| std::fs::write(tmp, &bytes).map_err(|e| lens_model::LensError::io(tmp, e)))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads the provenance stored in a figure written by [`write`].
pub fn read_provenance(path: &Path) -> Result<Provenance> {
    let format = Format::of(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json = match format {
        Format::Svg => svg::read_provenance(&String::from_utf8_lossy(&bytes)),
        Format::Html => super::html::read_provenance(&String::from_utf8_lossy(&bytes)),
        Format::Png => {
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            let reader = decoder.read_info().with_context(|| format!("{} is not a PNG", path.display()))?;
            reader.info().utf8_text.iter().find(|c| c.keyword == PNG_KEY).and_then(|c| c.get_text().ok())
        }
        Format::Pdf => {
            let key = [b"/".as_slice(), PDF_KEY, b" (".as_slice()].concat();
            bytes.windows(key.len()).position(|w| w == key.as_slice()).and_then(|i| {
                let start = i + key.len();
                let end = bytes.get(start..)?.iter().position(|&b| b == b')')? + start;
                from_hex(std::str::from_utf8(bytes.get(start..end)?).ok()?)
            })
        }
    };
    let json = json.with_context(|| format!("{} carries no logit-lens provenance (was it exported by logit-lens?)", path.display()))?;
    let prov: Provenance = serde_json::from_str(&json).with_context(|| format!("{}: unreadable provenance", path.display()))?;
    if prov.schema != super::provenance::SCHEMA {
        bail!("{}: provenance schema {:?} is not {}", path.display(), prov.schema, super::provenance::SCHEMA);
    }
    Ok(prov)
}
