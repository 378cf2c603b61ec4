//! Fonts. egui's built-in fonts cover Latin, Greek and Cyrillic; GPT-2 tokens can be any script.
//! The app adds, as fallbacks behind egui's own fonts (so Latin text looks the same):
//! * the bundled DejaVu Sans (`assets/fonts`, also the figures' font): Hebrew, Arabic, Armenian,
//!   Georgian, IPA, arrows, maths and many other symbols;
//! * the first system font found for each of CJK, Devanagari, Thai, Korean and emoji (common
//!   Linux, macOS and Windows locations), read on a background thread so start-up never waits for
//!   disk. egui's Noto Emoji (feature `monochrome_emoji_fonts`) draws the Unicode 6 emoji; a
//!   system Symbola or Segoe UI Emoji/Symbol adds the later ones (🙂, 🤔, …).

use std::path::Path;
use std::sync::Arc;

use egui::epaint::text::{FontInsert, FontPriority, InsertFontFamily};
use egui::{FontData, FontFamily};

/// Name of the bundled fallback font.
pub const BUNDLED: &str = "DejaVu Sans (bundled)";

/// System fonts tried per script, first found wins.
const SYSTEM_FALLBACKS: &[(&str, &[&str])] = &[
    (
        "CJK",
        &[
            "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
            "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
            "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
            "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
            "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
            "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
            "/System/Library/Fonts/PingFang.ttc",
            "/System/Library/Fonts/Hiragino Sans GB.ttc",
            "C:\\Windows\\Fonts\\msyh.ttc",
            "C:\\Windows\\Fonts\\msgothic.ttc",
        ],
    ),
    ("Korean", &["/usr/share/fonts/truetype/nanum/NanumGothic.ttf", "/System/Library/Fonts/AppleSDGothicNeo.ttc", "C:\\Windows\\Fonts\\malgun.ttf"]),
    (
        "Devanagari",
        &[
            "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf",
            "/usr/share/fonts/truetype/lohit-devanagari/Lohit-Devanagari.ttf",
            "/System/Library/Fonts/Kohinoor.ttc",
            "C:\\Windows\\Fonts\\Nirmala.ttf",
        ],
    ),
    (
        "Emoji",
        &[
            "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
            "/usr/share/fonts/TTF/Symbola.ttf",
            "/usr/share/fonts/gdouros-symbola/Symbola.ttf",
            "C:\\Windows\\Fonts\\seguiemj.ttf",
            "C:\\Windows\\Fonts\\seguisym.ttf",
        ],
    ),
    (
        "Thai",
        &[
            "/usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf",
            "/usr/share/fonts/truetype/tlwg/Garuda.ttf",
            "/System/Library/Fonts/Thonburi.ttc",
            "C:\\Windows\\Fonts\\tahoma.ttf",
        ],
    ),
];

/// Largest system font file read (bytes).
const MAX_FONT_BYTES: u64 = 64 << 20;

fn fallback(name: &str, data: FontData) -> FontInsert {
    FontInsert::new(
        name,
        data,
        vec![
            InsertFontFamily { family: FontFamily::Proportional, priority: FontPriority::Lowest },
            InsertFontFamily { family: FontFamily::Monospace, priority: FontPriority::Lowest },
        ],
    )
}

/// Adds the bundled DejaVu Sans as a fallback font (no disk access).
pub fn install_bundled(ctx: &egui::Context) {
    ctx.add_font(fallback(BUNDLED, FontData::from_static(crate::figure::output::FONT)));
}

/// Reads the system fallback fonts that exist (at most one per script) from `paths`.
pub fn find_system_fonts(candidates: &[(&str, &[&str])]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (script, paths) in candidates {
        for p in *paths {
            let path = Path::new(p);
            let small_enough = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_FONT_BYTES);
            if !small_enough {
                continue;
            }
            if let Ok(bytes) = std::fs::read(path) {
                out.push((format!("{script}: {p}"), bytes));
                break;
            }
        }
    }
    out
}

/// Installs the bundled font now and the system fallbacks from a background thread.
pub fn install(ctx: &egui::Context) {
    install_bundled(ctx);
    let ctx = ctx.clone();
    let _ = std::thread::Builder::new().name("fonts".into()).spawn(move || {
        for (name, bytes) in find_system_fonts(SYSTEM_FALLBACKS) {
            ctx.add_font(fallback(&name, FontData::from_blob(Arc::new(bytes), 0)));
        }
        ctx.request_repaint();
    });
}
