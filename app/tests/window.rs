//! A real window under Xvfb: `logit-lens --model <tiny bundle> --prompt-file F --screenshot out.png`
//! must save a PNG of the window with the grids on it. Starts `Xvfb` itself when `DISPLAY` is unset
//! (skipped, with the reason printed, when there is no display and no Xvfb).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lens_model::error::Progress;
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};

/// Stops the Xvfb this test started (by its pid) when dropped.
struct Xvfb(Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn display() -> Result<(String, Option<Xvfb>), String> {
    if let Ok(d) = std::env::var("DISPLAY")
        && !d.is_empty()
    {
        return Ok((d, None));
    }
    // A display number unlikely to clash with parallel runs.
    let n = 90 + (std::process::id() % 400);
    let d = format!(":{n}");
    let child = Command::new("Xvfb")
        .args([d.as_str(), "-screen", "0", "1600x1000x24", "+extension", "GLX", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("no DISPLAY and Xvfb cannot be started ({e}); install the xvfb package"))?;
    let x = Xvfb(child);
    let sock = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    for _ in 0..100 {
        if sock.exists() {
            return Ok((d, Some(x)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("Xvfb did not come up within 5 s".into())
}

#[test]
fn screenshot_of_a_real_window_shows_the_lens() {
    let (disp, _xvfb) = match display() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let hf = unique_temp_dir("win-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(9)).unwrap();
    let bundle = unique_temp_dir("win-bundle");
    lens_model::build::convert::convert_hf_checkpoint(&hf, &bundle, &Progress::default()).unwrap();
    let dir = unique_temp_dir("win-out");
    std::fs::create_dir_all(&dir).unwrap();
    let prompt = dir.join("prompt.txt");
    std::fs::write(&prompt, "The Eiffel Tower is located in the city of Paris. The capital of France is").unwrap();
    let png = dir.join("out.png");
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logit-lens"))
        .arg("--model")
        .arg(&bundle)
        .arg("--prompt-file")
        .arg(&prompt)
        .args(["--device", "cpu", "--screenshot"])
        .arg(&png)
        .env("DISPLAY", &disp)
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("XDG_DATA_HOME", dir.join("data")) // no persisted state from the user's app
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "logit-lens failed: {err}");
    let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}; stderr: {err}", png.display())).to_rgba8();
    assert!(img.width() >= 800 && img.height() >= 500, "window size {}x{}", img.width(), img.height());
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels().step_by(7) {
        colours.insert([p[0] >> 3, p[1] >> 3, p[2] >> 3]);
    }
    assert!(colours.len() > 50, "the screenshot looks blank: {} distinct colours", colours.len());
    // The viridis cells are on screen (dark purple of low probability, or any viridis hue).
    let viridis_like = img.pixels().filter(|p| p[0] < 0x80 && p[2] > 0x40 && p[2] > p[1]).count();
    assert!(viridis_like > 1000, "no coloured grid cells in the screenshot ({viridis_like} pixels)");
}
