//! The tuned lens (issue 14) against the `tuned-lens` Python package itself
//! (`tests/fixtures/tuned_lens`, made by `make_fixture.py` with tuned-lens 0.2.0):
//! * a lens the package saved (`params.pt`, and the same translators as `params.safetensors`),
//!   applied by our engine to a random GPT-2 and a random Llama: every metric against the
//!   package's own float64 logits;
//! * the unembedding hash against NumPy's `array_str` on 16 matrices;
//! * bad lenses: wrong width, wrong layer count, another model's hash, missing or truncated
//!   `params.pt`, a pickle that calls a foreign global;
//! * the fit's gradient against a naive float64 implementation (finite differences), with and
//!   without a soft cap and an unembedding bias, and with a quantized bundle's f16 unembedding;
//! * fitting on the demo model lowers held-out KL below the logit lens's at every site but the last;
//!   a cancelled fit resumes from its checkpoint to the same lens; `params.pt` round-trips.

mod common;

use std::path::{Path, PathBuf};

use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_model::lens::tuned_lens::fit::{FitOptions, batch_gradient, fit, has_checkpoint};
use lens_model::lens::tuned_lens::{TunedLens, hash};
use lens_model::{LensEngine, LensOptions};
use lens_tests::fixture::unique_temp_dir;
use lens_tests::reference::read_safetensors_f64;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tuned_lens"))
}

fn assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

fn engine_of(case: &str) -> LensEngine {
    let bundle = unique_temp_dir(&format!("tl-{case}"));
    lens_model::build::convert::convert_hf_checkpoint(&fixtures().join(case), &bundle, &Progress::default()).unwrap();
    common::open(&bundle)
}

fn log_softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    l.iter().map(|v| v - lse).collect()
}

fn argmax(l: &[f64]) -> u32 {
    l.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// Every metric of the report under the tuned lens against the package's float64 logits.
fn check_case(case: &str, lens_dir: &str) {
    let mut engine = engine_of(case);
    let lens = TunedLens::open(&fixtures().join(case).join(lens_dir)).unwrap();
    assert_eq!(lens.len(), 3);
    // The lens records the package's hash of this unembedding: set_tuned_lens checks ours equals it.
    engine.set_tuned_lens(Some(lens)).unwrap();
    let r = read_safetensors_f64(&fixtures().join(case).join("reference.safetensors"));
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(case).join("expected.json")).unwrap()).unwrap();
    let ids: Vec<u32> = expected["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let (tshape, tuned) = &r["tuned_logits"];
    let (_, finals) = &r["final_logits"];
    let (l, n, v) = (tshape[0], tshape[1], tshape[2]);
    let report = engine.run_ids(&ids, &LensOptions { decoder: DecoderKind::TunedLens, k: 5, ..LensOptions::default() }, &Progress::default()).unwrap();
    assert_eq!(report.decoder, "tuned_lens");
    assert!(report.run.tuned_lens.as_deref().is_some_and(|t| t.ends_with(lens_dir)), "{:?}", report.run.tuned_lens);
    assert_eq!(report.sites, ["embed", "0", "1", "2"]);
    let m = &report.metrics;
    let mut worst = 0f64;
    for s in 0..=l {
        for p in 0..n {
            let logits: Vec<f64> = if s < l { tuned[(s * n + p) * v..(s * n + p + 1) * v].to_vec() } else { finals[p * v..(p + 1) * v].to_vec() };
            let lq = log_softmax(&logits);
            let lp = log_softmax(&finals[p * v..(p + 1) * v]);
            let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
            let ent: f64 = -lq.iter().map(|a| a.exp() * a).sum::<f64>();
            let top = argmax(&logits);
            let fin = argmax(&finals[p * v..(p + 1) * v]);
            assert_eq!(m.top1_id[s][p], top, "{case} site {s} pos {p}: top-1");
            let rank = 1 + logits.iter().filter(|&&x| x > logits[fin as usize]).count() as u32;
            assert_eq!(m.rank_of_final_top1[s][p], rank, "{case} site {s} pos {p}: rank of the final top-1");
            worst = worst.max((m.kl_to_final[s][p] - kl).abs()).max((m.entropy[s][p] - ent).abs()).max((m.top1_prob[s][p] - lq[top as usize].exp()).abs());
            if p + 1 < n {
                worst = worst.max((m.nll_next[s][p].unwrap() + lq[ids[p + 1] as usize]).abs());
            }
        }
    }
    assert!(worst < 1e-4, "{case}/{lens_dir}: worst metric difference {worst:e}");
    // The logit lens of the same engine is a different thing (the translators are not zero).
    let plain = engine.run_ids(&ids, &LensOptions { k: 5, ..LensOptions::default() }, &Progress::default()).unwrap();
    let diff = (0..n).map(|p| (plain.metrics.kl_to_final[0][p] - m.kl_to_final[0][p]).abs()).fold(0.0, f64::max);
    assert!(diff > 1e-3, "{case}: the tuned lens equals the logit lens");
}

#[test]
fn package_lens_on_gpt2_matches_the_package() {
    check_case("gpt2", "lens");
    check_case("gpt2", "lens_safetensors");
}

#[test]
fn package_lens_on_llama_matches_the_package() {
    check_case("llama", "lens");
}

#[test]
fn unembedding_hash_matches_numpy() {
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("hash_cases.json")).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
        let values: Vec<f32> = c["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(hash::array_str(&values, rows, cols), c["array_str"].as_str().unwrap(), "case {}", c["label"]);
        assert_eq!(hash::unembedding_hash(&values, rows, cols), c["sha256"].as_str().unwrap(), "case {}", c["label"]);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn refused(engine: &mut LensEngine, dir: &Path) -> String {
    match TunedLens::open(dir) {
        Err(e) => e.to_string(),
        Ok(l) => engine.set_tuned_lens(Some(l)).unwrap_err().to_string(),
    }
}

#[test]
fn bad_lenses_are_refused_with_a_clear_error() {
    let mut gpt2 = engine_of("gpt2");
    let lens = fixtures().join("gpt2/lens");
    // Another model of the same width and depth: only the unembedding hash tells them apart.
    let mut llama = engine_of("llama");
    let e = refused(&mut llama, &lens);
    assert!(e.contains("trained for another model") && e.contains("fixture-gpt2"), "{e}");
    // Wrong width: the demo model is 256 wide.
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    let mut demo = common::open(&dir);
    let e = refused(&mut demo, &lens);
    assert!(e.contains("width d_model 32") && e.contains("256"), "{e}");
    // Wrong layer count in config.json.
    let tmp = unique_temp_dir("tl-bad");
    let four = tmp.join("four");
    copy_dir(&lens, &four);
    let cfg = std::fs::read_to_string(four.join("config.json")).unwrap().replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
    std::fs::write(four.join("config.json"), cfg).unwrap();
    let e = refused(&mut gpt2, &four);
    assert!(e.contains("4 layers") && e.contains("has 3"), "{e}");
    // An older config (num_layers, the misspelt hash key) reads the same.
    let old = tmp.join("old");
    copy_dir(&lens, &old);
    let cfg = std::fs::read_to_string(old.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\"", "\"num_layers\"")
        .replace("\"unembed_hash\"", "\"unemebd_hash\"");
    std::fs::write(old.join("config.json"), cfg).unwrap();
    let read = TunedLens::open(&old).unwrap();
    assert_eq!(read.config.num_hidden_layers, 3);
    assert!(read.config.unembed_hash.is_some());
    gpt2.set_tuned_lens(Some(read)).unwrap();
    // Missing params.pt.
    let missing = tmp.join("missing");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::copy(lens.join("config.json"), missing.join("config.json")).unwrap();
    let e = refused(&mut gpt2, &missing);
    assert!(e.contains("no params.pt"), "{e}");
    // Truncated params.pt.
    let cut = tmp.join("cut");
    copy_dir(&lens, &cut);
    let bytes = std::fs::read(cut.join("params.pt")).unwrap();
    std::fs::write(cut.join("params.pt"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = refused(&mut gpt2, &cut);
    assert!(e.contains("params.pt"), "{e}");
    // A pickle that calls os.system: refused by name, never executed.
    let evil = tmp.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::copy(lens.join("config.json"), evil.join("config.json")).unwrap();
    let marker = tmp.join("pwned");
    let cmd = format!("touch {}", marker.display());
    let mut pickle = vec![0x80, 2, b'c'];
    pickle.extend_from_slice(b"posix\nsystem\n");
    pickle.push(b'X');
    pickle.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pickle.extend_from_slice(cmd.as_bytes());
    pickle.extend_from_slice(b"\x85R.");
    {
        use std::io::Write as _;
        let f = std::fs::File::create(evil.join("params.pt")).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("params/data.pkl", o).unwrap();
        zip.write_all(&pickle).unwrap();
        zip.start_file("params/version", o).unwrap();
        zip.write_all(b"3\n").unwrap();
        zip.finish().unwrap();
    }
    let e = refused(&mut gpt2, &evil);
    assert!(e.contains("posix.system") && e.contains("refused"), "{e}");
    assert!(!marker.exists());
    // The sub-block rows have no translator: a clear error, not a silently different decoder.
    let ids = gpt2.tokenize("plasma", false).unwrap();
    let e = gpt2.run_ids(&ids, &LensOptions { decoder: DecoderKind::TunedLens, subblocks: true, ..LensOptions::default() }, &Progress::default()).unwrap_err();
    assert!(e.to_string().contains("sub-block"), "{e}");
    // No lens open: the decoder says how to get one.
    gpt2.set_tuned_lens(None).unwrap();
    let e = gpt2.run_ids(&ids, &LensOptions { decoder: DecoderKind::TunedLens, ..LensOptions::default() }, &Progress::default()).unwrap_err();
    assert!(e.to_string().contains("--tuned-lens"), "{e}");
}

#[test]
fn saved_params_pt_round_trips() {
    let lens = TunedLens::open(&fixtures().join("gpt2/lens")).unwrap();
    let out = unique_temp_dir("tl-save");
    lens.save(&out).unwrap();
    let back = TunedLens::open(&out).unwrap();
    assert_eq!(back.weights, lens.weights);
    assert_eq!(back.biases, lens.biases);
    assert_eq!(back.config, lens.config);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Naive float64 loss Σ_i mean_n KL(p_n ‖ q_{i,n}) for translators (w, b) of `lens`.
fn naive_loss(dec: &lens_model::lens::kernel::Decoder, lens: &TunedLens, h: &[Vec<f32>], finals: &[f32]) -> f64 {
    let d = dec.d_model;
    let n = finals.len() / d;
    let decode = |t: &[f64]| -> Vec<f64> {
        let nf = d as f64;
        let mean = if dec.centres() { t.iter().sum::<f64>() / nf } else { 0.0 };
        let var = t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nf;
        let sigma = (var + dec.eps).sqrt();
        let y: Vec<f64> = t.iter().zip(&dec.gamma).zip(&dec.beta).map(|((x, g), b)| (x - mean) / sigma * f64::from(*g) + f64::from(*b)).collect();
        (0..dec.d_vocab)
            .map(|v| {
                let z: f64 = y.iter().zip(&dec.w_u.to_f32()[v * d..(v + 1) * d]).map(|(a, b)| a * f64::from(*b)).sum::<f64>()
                    + dec.b_u.as_ref().map_or(0.0, |b| f64::from(b[v]));
                match dec.softcap {
                    Some(c) => f64::from(c) * (z / f64::from(c)).tanh(),
                    None => z,
                }
            })
            .collect()
    };
    let mut total = 0.0;
    for (i, hi) in h.iter().enumerate() {
        let mut sum = 0.0;
        for p in 0..n {
            let x: Vec<f64> = hi[p * d..(p + 1) * d].iter().map(|&v| f64::from(v)).collect();
            let t: Vec<f64> =
                (0..d).map(|r| x[r] + (0..d).map(|c| f64::from(lens.weights[i][r * d + c]) * x[c]).sum::<f64>() + f64::from(lens.biases[i][r])).collect();
            let f: Vec<f64> = finals[p * d..(p + 1) * d].iter().map(|&v| f64::from(v)).collect();
            let lq = log_softmax(&decode(&t));
            let lp = log_softmax(&decode(&f));
            sum += lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
        }
        total += sum / n as f64;
    }
    total
}

fn check_gradient(dec: &lens_model::lens::kernel::Decoder, what: &str) {
    let d = dec.d_model;
    let (n, n_tr) = (5, 3);
    let mut seed = 12345u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 20001) as f32 / 10000.0 - 1.0
    };
    let mut lens = TunedLens::zeros(lens_model::lens::tuned_lens::TunedLensConfig {
        base_model_name_or_path: String::new(),
        base_model_revision: None,
        d_model: d,
        num_hidden_layers: n_tr,
        bias: true,
        unembed_hash: None,
        include_input: true,
    });
    for w in lens.weights.iter_mut().chain(lens.biases.iter_mut()) {
        for x in w.iter_mut() {
            *x = 0.1 * rnd();
        }
    }
    let h: Vec<Vec<f32>> = (0..n_tr).map(|_| (0..n * d).map(|_| 2.0 * rnd()).collect()).collect();
    let finals: Vec<f32> = (0..n * d).map(|_| 2.0 * rnd()).collect();
    // A chunk that does not divide the vocabulary, so the last chunk is short.
    let got = batch_gradient(&lens, dec, &h, &finals, 37, &Progress::default()).unwrap();
    let loss0 = naive_loss(dec, &lens, &h, &finals);
    let ours: f64 = got.iter().map(|g| g.kl).sum();
    assert!((ours - loss0).abs() < 1e-4 * loss0.max(1.0), "{what}: loss {ours} vs naive {loss0}");
    let eps = 1e-2f32;
    let mut worst = 0f64;
    for (i, g) in got.iter().enumerate() {
        for k in [0, 7, d + 3, d * d - 1, 5 * d + 11] {
            let mut plus = lens.clone();
            plus.weights[i][k] += eps;
            let mut minus = lens.clone();
            minus.weights[i][k] -= eps;
            let fd = (naive_loss(dec, &plus, &h, &finals) - naive_loss(dec, &minus, &h, &finals)) / (2.0 * f64::from(eps));
            worst = worst.max((fd - f64::from(g.d_w[k])).abs() / fd.abs().max(1e-2));
        }
        for k in [0, d / 2, d - 1] {
            let mut plus = lens.clone();
            plus.biases[i][k] += eps;
            let mut minus = lens.clone();
            minus.biases[i][k] -= eps;
            let fd = (naive_loss(dec, &plus, &h, &finals) - naive_loss(dec, &minus, &h, &finals)) / (2.0 * f64::from(eps));
            worst = worst.max((fd - f64::from(g.d_b[k])).abs() / fd.abs().max(1e-2));
        }
    }
    assert!(worst < 2e-2, "{what}: gradient vs finite differences, worst relative difference {worst:e}");
}

#[test]
fn gradient_matches_finite_differences_of_a_naive_loss() {
    // GPT-2 (LayerNorm), Llama (RMSNorm), and the GPT-2 decoder with a soft cap and a bias.
    let gpt2 = engine_of("gpt2");
    check_gradient(&gpt2.decoder, "gpt2");
    let llama = engine_of("llama");
    check_gradient(&llama.decoder, "llama");
    let mut capped = gpt2.decoder.clone();
    capped.softcap = Some(3.0);
    capped.b_u = Some((0..capped.d_vocab).map(|v| ((v * 37) % 11) as f32 * 0.1 - 0.5).collect());
    check_gradient(&capped, "gpt2 + soft cap + bias");
    // A quantized bundle's f16 unembedding (widened chunk by chunk in the gradient).
    let mut halved = llama.decoder.clone();
    halved.w_u = llama.decoder.w_u.to_f32().iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>().into();
    assert!(halved.w_u.is_half());
    check_gradient(&halved, "llama with an f16 unembedding");
}

/// The demo model's held-out stories (`heldout.txt`, 32 TinyStories stories it never saw), cut
/// at a line break near the middle: the first half evaluates, the second half trains the lens.
fn heldout_halves() -> (String, String) {
    let text = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap();
    let cut = text[text.len() / 2..].find('\n').unwrap() + text.len() / 2;
    (text[..cut].to_string(), text[cut..].to_string())
}

/// Mean KL(final ‖ site) of each site under `decoder` on the evaluation half, by the corpus mode.
fn heldout_kl(engine: &mut LensEngine, decoder: DecoderKind) -> Vec<f64> {
    let text = heldout_halves().0;
    let opts = lens_model::analyses::corpus::CorpusOptions {
        window: Some(256),
        max_tokens: Some(2048),
        resamples: 10,
        lens: LensOptions { k: 1, decoder, ..LensOptions::default() },
        ..Default::default()
    };
    lens_model::analyses::corpus::run_corpus(engine, &text, &opts, &Progress::default()).unwrap().per_site.kl_to_final.mean
}

#[test]
fn fitting_on_the_demo_model_beats_the_logit_lens_on_held_out_text() {
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    let mut engine = common::open(&dir);
    let text = heldout_halves().1;
    let out = unique_temp_dir("tl-fit");
    let opts = FitOptions { steps: 12, tokens_per_step: 512, checkpoint_every: 4, ..FitOptions::default() };
    // Cancelled after step 5: a checkpoint of step 5 (the one of step 4 replaced) is left.
    let progress = Progress::default();
    let p2 = progress.clone();
    let e = fit(
        &mut engine,
        &text,
        &opts,
        &out,
        false,
        &mut |s| {
            if s.step == 5 {
                p2.cancel()
            }
        },
        &progress,
    )
    .unwrap_err();
    assert!(matches!(e, lens_model::LensError::Cancelled), "{e}");
    assert!(has_checkpoint(&out));
    assert!(!out.join("params.pt").exists(), "a cancelled fit wrote a lens");
    let mut steps_after = Vec::new();
    let resumed = fit(&mut engine, &text, &opts, &out, true, &mut |s| steps_after.push(s.step), &Progress::default()).unwrap();
    assert_eq!(steps_after, (6..=12).collect::<Vec<_>>());
    assert_eq!(resumed.history.len(), 12);
    assert!(!has_checkpoint(&out));
    // The same fit without interruption gives the same lens.
    let out2 = unique_temp_dir("tl-fit2");
    let whole = fit(&mut engine, &text, &opts, &out2, false, &mut |_| {}, &Progress::default()).unwrap();
    let diff = whole.lens.weights.iter().flatten().zip(resumed.lens.weights.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "resumed and uninterrupted fits differ by {diff}");
    // The loss went down on the training batches.
    let first: f64 = whole.history[0].loss.iter().sum();
    let last: f64 = whole.history[11].loss.iter().sum();
    assert!(last < 0.7 * first, "training loss {first} -> {last}");
    // Held out: lower KL than the logit lens at every site but the last (where both are 0).
    let plain = heldout_kl(&mut engine, DecoderKind::LogitLens);
    engine.set_tuned_lens(Some(TunedLens::open(&out).unwrap())).unwrap();
    let tuned = heldout_kl(&mut engine, DecoderKind::TunedLens);
    let last_site = plain.len() - 1;
    for s in 0..last_site {
        assert!(tuned[s] < plain[s], "site {s}: tuned {} vs logit lens {}", tuned[s], plain[s]);
    }
    assert!(tuned[last_site].abs() < 1e-6 && plain[last_site].abs() < 1e-6);
}

/// A fit touches only what it made (issue 24): a `checkpoint/` of the user's in the output folder
/// is refused before any work and left as it was; a model folder is never an output folder; a
/// finished fit removes its own checkpoint files and nothing else.
#[test]
fn a_fit_never_removes_or_overwrites_the_users_files() {
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    let mut engine = common::open(&dir);
    let text = heldout_halves().1;
    let opts = FitOptions { steps: 2, tokens_per_step: 256, checkpoint_every: 1, ..FitOptions::default() };
    // The user's own checkpoint/ folder.
    let out = unique_temp_dir("tl-fit-users");
    std::fs::create_dir_all(out.join("checkpoint")).unwrap();
    std::fs::write(out.join("checkpoint/notes.txt"), "my notes").unwrap();
    std::fs::write(out.join("checkpoint/state.json"), "{\"mine\": true}").unwrap();
    let e = fit(&mut engine, &text, &opts, &out, false, &mut |_| {}, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("not a logit-lens fit checkpoint"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("checkpoint/notes.txt")).unwrap(), "my notes");
    assert_eq!(std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap(), "{\"mine\": true}");
    assert!(!out.join("params.pt").exists());
    // A model folder (here the demo checkpoint's own layout) is never an output folder.
    let model_like = unique_temp_dir("tl-fit-model");
    std::fs::create_dir_all(&model_like).unwrap();
    std::fs::write(model_like.join("config.json"), "{}").unwrap();
    std::fs::write(model_like.join("model.safetensors"), "weights").unwrap();
    let e = fit(&mut engine, &text, &opts, &model_like, false, &mut |_| {}, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("holds a model"), "{e}");
    assert_eq!(std::fs::read_to_string(model_like.join("config.json")).unwrap(), "{}");
    // A finished fit (checkpointing every step) leaves the lens and none of its checkpoint, and
    // keeps a file of the user's that appeared next to it.
    let out = unique_temp_dir("tl-fit-own");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("README.txt"), "mine").unwrap();
    fit(&mut engine, &text, &opts, &out, false, &mut |_| {}, &Progress::default()).unwrap();
    assert!(out.join("params.pt").is_file() && out.join("config.json").is_file());
    assert!(!out.join("checkpoint").exists(), "the finished fit left its checkpoint");
    assert_eq!(std::fs::read_to_string(out.join("README.txt")).unwrap(), "mine");
}

/// Hostile lens files (issue 24): a translator key with an absurd index, and a `params.pt` whose
/// translator is a zero-stride view of one element shaped [30000, 30000] (3.6 GB expanded, under pytorch-reader's own 10 GB limit; the
/// file is 1.8 KB, `tests/fixtures/tuned_lens/stride0/make_stride0.py`). Both are refused from
/// their names, shapes and strides before anything is allocated.
#[test]
fn hostile_lens_files_are_refused_before_anything_is_allocated() {
    let e = TunedLens::open(&fixtures().join("stride0")).unwrap_err().to_string();
    assert!(e.contains("tensor 0.weight (shape [30000, 30000])") && e.contains("zero-stride"), "{e}");
    // params.safetensors whose only translator is number 99,999,999,999 of a 3-layer model.
    let dir = unique_temp_dir("tl-huge-index");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("gpt2/lens/config.json"), dir.join("config.json")).unwrap();
    let header = serde_json::json!({"99999999999.weight": {"dtype": "F32", "shape": [32, 32], "data_offsets": [0, 4096]}}).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(dir.join("params.safetensors"), bytes).unwrap();
    let e = TunedLens::open(&dir).unwrap_err().to_string();
    assert!(e.contains("names translator 99999999999") && e.contains("3 layers"), "{e}");
}
