//! The J-lens (issue 26) against TransformerLens 4.3's own files and a float64 readout
//! (`tests/fixtures/jacobian_lens`, made by `make_fixture.py`; the script also checks its float64
//! readout against TransformerLens's `JacobianLens.readout` on a `TransformerBridge`, within 6e-6):
//! * lenses written by `JacobianLens.save` (fp16 and f32) on a random GPT-2, Llama and Gemma 2
//!   (soft cap): every metric of every transported row within 1e-4 of the float64 readout, and the
//!   final row the model's own;
//! * a lens fitted at only some layers: those rows transported, the others marked `no_transport`
//!   and equal to the logit lens; the embed row always marked;
//! * a fit checkpoint (`jacobian_sum`, `n_done`) reads as the mean;
//! * bad files: wrong width, a layer past the model, NaN, a foreign pickle global (nothing runs),
//!   truncated, a tuned lens's file, a folder.

mod common;

use std::path::PathBuf;

use lens_model::error::Progress;
use lens_model::lens::jacobian_lens::JacobianLens;
use lens_model::lens::kernel::DecoderKind;
use lens_model::{LensEngine, LensOptions, LensReport};
use lens_tests::fixture::unique_temp_dir;
use lens_tests::reference::read_safetensors_f64;

fn here() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/jacobian_lens"))
}

fn model_dir(case: &str) -> PathBuf {
    let f = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    match case {
        "gpt2" => f.join("tuned_lens/gpt2"),
        "llama" => f.join("families/llama_f32"),
        "gemma2" => f.join("families/gemma2_f32"),
        other => panic!("no case {other}"),
    }
}

fn engine_of(case: &str) -> LensEngine {
    let bundle = unique_temp_dir(&format!("jl-{case}"));
    lens_model::build::convert::convert_hf_checkpoint(&model_dir(case), &bundle, &Progress::default()).unwrap();
    common::open(&bundle)
}

fn expected(case: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(here().join(case).join("expected.json")).unwrap()).unwrap()
}

fn ids_of(case: &str) -> Vec<u32> {
    expected(case)["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn log_softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    l.iter().map(|v| v - lse).collect()
}

fn argmax(l: &[f64]) -> u32 {
    l.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// The largest difference of the report's row `row`'s metrics from `logits` (float64, [n, V]);
/// top-1 and the rank of the final top-1 must be equal.
fn row_gap(report: &LensReport, row: usize, logits: &[f64], finals: &[f64], ids: &[u32], v: usize, what: &str) -> f64 {
    let m = &report.metrics;
    let n = ids.len();
    let mut worst = 0f64;
    for p in 0..n {
        let l = &logits[p * v..(p + 1) * v];
        let f = &finals[p * v..(p + 1) * v];
        let (lq, lp) = (log_softmax(l), log_softmax(f));
        let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
        let ent: f64 = -lq.iter().map(|a| a.exp() * a).sum::<f64>();
        let top = argmax(l);
        let fin = argmax(f);
        assert_eq!(m.top1_id[row][p], top, "{what} row {row} pos {p}: top-1");
        let rank = 1 + l.iter().filter(|&&x| x > l[fin as usize]).count() as u32;
        assert_eq!(m.rank_of_final_top1[row][p], rank, "{what} row {row} pos {p}: rank of the final top-1");
        worst = worst
            .max((m.kl_to_final[row][p] - kl).abs())
            .max((m.entropy[row][p] - ent).abs())
            .max((m.top1_prob[row][p] - lq[top as usize].exp()).abs())
            .max((f64::from(m.top1_logit[row][p]) - l[top as usize]).abs());
        if p + 1 < n {
            worst = worst.max((m.nll_next[row][p].unwrap() + lq[ids[p + 1] as usize]).abs());
        }
    }
    worst
}

fn run(engine: &mut LensEngine, ids: &[u32], decoder: DecoderKind, subblocks: bool) -> LensReport {
    engine.run_ids(ids, &LensOptions { decoder, k: 5, subblocks, ..LensOptions::default() }, &Progress::default()).unwrap()
}

fn check_case(case: &str) {
    let mut engine = engine_of(case);
    let ids = ids_of(case);
    let r = read_safetensors_f64(&here().join(case).join("reference.safetensors"));
    let (_, finals) = &r["final_logits"];
    for dtype in ["f16", "f32"] {
        let lens = JacobianLens::open(&here().join(case).join(format!("lens_{dtype}.pt"))).unwrap();
        assert_eq!(lens.n_prompts, 7);
        assert_eq!(lens.model_name.as_deref(), Some(format!("fixture-{case}").as_str()));
        engine.set_jacobian_lens(Some(lens)).unwrap();
        let (shape, jl) = &r[&format!("jlens_{dtype}")];
        let (layers, n, v) = (shape[0], shape[1], shape[2]);
        let report = run(&mut engine, &ids, DecoderKind::JacobianLens, false);
        assert_eq!(report.decoder, "jacobian_lens");
        assert!(report.run.jacobian_lens.as_deref().is_some_and(|p| p.ends_with(&format!("lens_{dtype}.pt"))), "{:?}", report.run.jacobian_lens);
        assert_eq!(report.sites.len(), layers + 2, "embed, every block");
        // Only the embed row has no transport; row l + 1 is J[l] applied to block l's output.
        assert_eq!(report.no_transport, [0]);
        let mut worst = 0f64;
        for l in 0..layers {
            worst = worst.max(row_gap(&report, l + 1, &jl[l * n * v..(l + 1) * n * v], finals, &ids, v, &format!("{case}/{dtype}")));
        }
        worst = worst.max(row_gap(&report, layers + 1, finals, finals, &ids, v, &format!("{case}/{dtype} final")));
        assert!(worst < 1e-4, "{case}/{dtype}: worst metric difference {worst:e}");
        // The lens graph (the ONNX Runtime path the GPU providers take) decodes the transported
        // rows the same.
        let graph = engine
            .run_ids(
                &ids,
                &LensOptions { decoder: DecoderKind::JacobianLens, k: 5, path: lens_model::lens::graph::LensPath::Graph, ..LensOptions::default() },
                &Progress::default(),
            )
            .unwrap();
        assert!(graph.run.lens_path.starts_with("graph"), "{}", graph.run.lens_path);
        assert_eq!(graph.metrics.top1_id, report.metrics.top1_id, "{case}/{dtype}: graph top-1");
        assert_eq!(graph.metrics.rank_of_final_top1, report.metrics.rank_of_final_top1, "{case}/{dtype}: graph ranks");
        assert_eq!(graph.no_transport, report.no_transport);
        for (a, b) in graph.metrics.kl_to_final.iter().flatten().zip(report.metrics.kl_to_final.iter().flatten()) {
            assert!((a - b).abs() < 1e-4, "{case}/{dtype}: graph KL {a} vs kernel {b}");
        }
        // The embed row, untransported, is the logit lens's own.
        let plain = run(&mut engine, &ids, DecoderKind::LogitLens, false);
        assert_eq!(plain.metrics.top1_id[0], report.metrics.top1_id[0]);
        assert_eq!(plain.metrics.kl_to_final[0], report.metrics.kl_to_final[0]);
        let moved = (0..n).map(|p| (plain.metrics.kl_to_final[1][p] - report.metrics.kl_to_final[1][p]).abs()).fold(0.0, f64::max);
        assert!(moved > 1e-3, "{case}: the J-lens equals the logit lens at row 1");
    }
}

#[test]
fn transformer_lens_files_on_gpt2_match_the_float64_readout() {
    check_case("gpt2");
}

#[test]
fn transformer_lens_files_on_llama_match_the_float64_readout() {
    check_case("llama");
}

#[test]
fn transformer_lens_files_on_gemma2_with_soft_cap_match_the_float64_readout() {
    check_case("gemma2");
}

#[test]
fn a_lens_fitted_at_some_layers_marks_the_others_and_sub_blocks() {
    for case in ["llama", "gemma2"] {
        let mut engine = engine_of(case);
        let ids = ids_of(case);
        let partial: Vec<usize> = expected(case)["partial_layers"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let lens = JacobianLens::open(&here().join(case).join("lens_partial.pt")).unwrap();
        assert_eq!(lens.source_layers(), partial);
        assert_eq!(lens.n_prompts, 3);
        engine.set_jacobian_lens(Some(lens)).unwrap();
        let r = read_safetensors_f64(&here().join(case).join("reference.safetensors"));
        let (_, finals) = &r["final_logits"];
        let (shape, jl) = &r["jlens_f16"];
        let (layers, n, v) = (shape[0], shape[1], shape[2]);
        let report = run(&mut engine, &ids, DecoderKind::JacobianLens, false);
        let plain = run(&mut engine, &ids, DecoderKind::LogitLens, false);
        let unfitted: Vec<usize> = std::iter::once(0).chain((0..layers).filter(|l| !partial.contains(l)).map(|l| l + 1)).collect();
        assert_eq!(report.no_transport, unfitted, "{case}");
        for l in 0..layers {
            let row = l + 1;
            if partial.contains(&l) {
                let gap = row_gap(&report, row, &jl[l * n * v..(l + 1) * n * v], finals, &ids, v, case);
                assert!(gap < 1e-4, "{case} row {row}: {gap:e}");
            } else {
                assert_eq!(report.metrics.top1_id[row], plain.metrics.top1_id[row], "{case} row {row}");
                assert_eq!(report.metrics.kl_to_final[row], plain.metrics.kl_to_final[row], "{case} row {row}");
            }
        }
        // With sub-blocks: every .attn row is marked too, and the report says which.
        let sub = run(&mut engine, &ids, DecoderKind::JacobianLens, true);
        for (i, site) in sub.sites.iter().enumerate().take(sub.sites.len() - 1) {
            let fitted = site.parse::<usize>().is_ok_and(|l| partial.contains(&l));
            assert_eq!(sub.no_transport.contains(&i), !fitted, "{case} site {site}");
        }
        // The report round-trips through JSON with its marks, and through .npz.
        let json = serde_json::to_string(&sub).unwrap();
        let back = LensReport::from_json(&json, std::path::Path::new("r.json")).unwrap();
        assert_eq!(back.no_transport, sub.no_transport);
    }
}

#[test]
fn a_fit_checkpoint_reads_as_its_mean() {
    let ck = JacobianLens::open(&here().join("gpt2/checkpoint.pt")).unwrap();
    let lens = JacobianLens::open(&here().join("gpt2/lens_f32.pt")).unwrap();
    assert!(ck.from_checkpoint);
    assert_eq!(ck.n_prompts, 4);
    assert_eq!(ck.source_layers(), lens.source_layers());
    for l in lens.source_layers() {
        let (a, b) = (ck.matrices[&l].to_f32().unwrap(), lens.matrices[&l].to_f32().unwrap());
        let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-6, "layer {l}: {gap}");
    }
}

/// A `torch.save`-shaped zip holding `pickle` (no tensors).
fn write_zip(path: &std::path::Path, pickle: &[u8], data: &[(&str, Vec<u8>)]) {
    use std::io::Write as _;
    let f = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("lens/data.pkl", o).unwrap();
    zip.write_all(pickle).unwrap();
    for (name, bytes) in data {
        zip.start_file(format!("lens/data/{name}"), o).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("lens/version", o).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// Rewrites the storages of a lens file: `edit(name, bytes)` for every `data/N` entry.
fn rewrite(from: &std::path::Path, to: &std::path::Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    use std::io::{Read as _, Write as _};
    let mut zin = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
    for i in 0..zin.len() {
        let mut e = zin.by_index(i).unwrap();
        let name = e.name().unwrap().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        if name.contains("/data/") {
            edit(&name, &mut bytes);
        }
        zout.start_file(name, o).unwrap();
        zout.write_all(&bytes).unwrap();
    }
    zout.finish().unwrap();
}

#[test]
fn bad_lens_files_are_refused_with_a_clear_error() {
    let tmp = unique_temp_dir("jl-bad");
    std::fs::create_dir_all(&tmp).unwrap();
    let gpt2_lens = here().join("gpt2/lens_f16.pt");
    // Wrong width: the gpt2 lens (d 32) on the Gemma 2 model (d 48).
    let mut gemma = engine_of("gemma2");
    let e = gemma.set_jacobian_lens(Some(JacobianLens::open(&gpt2_lens).unwrap())).unwrap_err().to_string();
    assert!(e.contains("width d_model 32") && e.contains("48"), "{e}");
    // A lens of a deeper model: the gemma2 lens (4 layers: J[0..=2]) has layer 2; the same
    // width on a 3-layer model has source layers 0..=1 only.
    let e = JacobianLens::open(&here().join("gemma2/lens_f16.pt")).unwrap().check_model(3, 48).unwrap_err().to_string();
    assert!(e.contains("layer 2") && e.contains("3 layers") && e.contains("0..=1"), "{e}");
    // NaN in a matrix (fp16 0x7E00), named by layer.
    let nan = tmp.join("nan.pt");
    rewrite(&gpt2_lens, &nan, |name, b| {
        if name.ends_with("/data/1") {
            b[10] = 0x00;
            b[11] = 0x7E;
        }
    });
    let e = JacobianLens::open(&nan).unwrap_err().to_string();
    assert!(e.contains("NaN") && e.contains("layer 1") && e.contains("nan.pt"), "{e}");
    // Truncated.
    let cut = tmp.join("cut.pt");
    let bytes = std::fs::read(&gpt2_lens).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = JacobianLens::open(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.pt"), "{e}");
    // A pickle that calls os.system: refused by name, never executed.
    let marker = tmp.join("pwned");
    let cmd = format!("touch {}", marker.display());
    let mut pickle = vec![0x80, 2, b'c'];
    pickle.extend_from_slice(b"posix\nsystem\n");
    pickle.push(b'X');
    pickle.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pickle.extend_from_slice(cmd.as_bytes());
    pickle.extend_from_slice(b"\x85R.");
    let evil = tmp.join("evil.pt");
    write_zip(&evil, &pickle, &[]);
    let e = JacobianLens::open(&evil).unwrap_err().to_string();
    assert!(e.contains("posix.system"), "{e}");
    assert!(!marker.exists(), "the pickle ran");
    // A tuned lens's params.pt, and a tuned-lens folder.
    let tuned = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tuned_lens/gpt2/lens"));
    let e = JacobianLens::open(&tuned.join("params.pt")).unwrap_err().to_string();
    assert!(e.contains("not a J-lens") && e.contains("tuned lens"), "{e}");
    let e = JacobianLens::open(&tuned).unwrap_err().to_string();
    assert!(e.contains("--tuned-lens"), "{e}");
    // A model's own weights file is not a J-lens either.
    let e = JacobianLens::open(&tmp.join("missing.pt")).unwrap_err().to_string();
    assert!(e.contains("missing.pt"), "{e}");
    // The J-lens decoder without a lens says how to open one.
    let mut gpt2 = engine_of("gpt2");
    let e = gpt2
        .run_ids(&ids_of("gpt2"), &LensOptions { decoder: DecoderKind::JacobianLens, ..LensOptions::default() }, &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--jacobian-lens"), "{e}");
}

/// The lens-quality suite against a naive recomputation from whole reports: for every item the
/// full lens report with every intermediate's tokens pinned, ranks read at the last position;
/// pass@k, the mean ranks per layer and the best ranks recomputed here.
#[test]
fn eval_lens_scores_match_a_naive_recomputation() {
    use lens_model::analyses::lens_eval::{EvalOptions, evaluate, read_set, word_tokens};
    let mut engine = engine_of("gpt2");
    engine.set_jacobian_lens(Some(JacobianLens::open(&here().join("gpt2/lens_partial.pt")).unwrap())).unwrap();
    let sets_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lens_eval"));
    let sets = vec![read_set(&sets_dir.join("multihop_small.json")).unwrap(), read_set(&sets_dir.join("association_small.json")).unwrap()];
    let decoders = vec![DecoderKind::LogitLens, DecoderKind::JacobianLens];
    let opts = EvalOptions { decoders: decoders.clone(), ks: vec![1, 5, 10, 50], resamples: 200, seed: 7 };
    let report = evaluate(&mut engine, &sets, &opts, &Progress::default()).unwrap();
    let n_layers = 3;
    assert_eq!(report.layers, ["0", "1"], "the block outputs below the final one");
    for (set, scores) in sets.iter().zip(&report.sets) {
        assert_eq!(scores.name, set.name);
        for (d, dec) in decoders.iter().enumerate() {
            let got = &scores.decoders[d];
            assert_eq!(got.decoder, dec.name());
            // J-lens partial at layer 1: layer 0 (row 1) is decoded as it is.
            assert_eq!(got.no_transport, if *dec == DecoderKind::JacobianLens { vec!["0".to_string()] } else { Vec::<String>::new() });
            let mut best_all = Vec::new();
            let mut rank_sum = vec![0f64; n_layers - 1];
            let mut pairs = 0usize;
            for item in &set.items {
                let cands: Vec<Vec<u32>> = item.intermediates.iter().map(|w| word_tokens(&engine.tokenizer, w)).collect();
                // The rule: first token of " word" and of "word", tokens of whitespace alone skipped
                // (this tokenizer splits " Paris" into " ", "P", …).
                let first = |t: &str| *engine.tokenizer.encode_plain(t).unwrap().iter().find(|&&id| engine.tokenizer.token_bytes(id) != b" ").unwrap();
                for (w, c) in item.intermediates.iter().zip(&cands) {
                    let a = first(&format!(" {w}"));
                    let b = first(w);
                    let mut want = vec![a];
                    if b != a {
                        want.push(b);
                    }
                    assert_eq!(c, &want, "{w}");
                }
                let pins: Vec<u32> = cands.iter().flatten().copied().collect();
                let ids = engine.tokenize(&item.prompt, false).unwrap();
                let r = engine.run_ids(&ids, &LensOptions { decoder: *dec, pinned: pins.clone(), ..LensOptions::default() }, &Progress::default()).unwrap();
                let p = r.pinned.as_ref().unwrap();
                let last = ids.len() - 1;
                let mut best = Vec::new();
                for c in &cands {
                    let at = |site: usize| c.iter().map(|id| p.rank[pins.iter().position(|x| x == id).unwrap()][site][last]).min().unwrap();
                    let per_layer: Vec<u32> = (1..n_layers).map(at).collect();
                    for (l, r) in per_layer.iter().enumerate() {
                        rank_sum[l] += f64::from(*r);
                    }
                    pairs += 1;
                    best.push(*per_layer.iter().min().unwrap());
                }
                best_all.push(best);
            }
            assert_eq!(got.best_rank, best_all, "{} {}", set.name, dec.name());
            for pa in &got.pass_at {
                let want =
                    best_all.iter().map(|b| b.iter().filter(|&&r| r as usize <= pa.k).count() as f64 / b.len() as f64).sum::<f64>() / best_all.len() as f64;
                assert!((pa.estimate.mean - want).abs() < 1e-12, "{} {} pass@{}: {} vs {want}", set.name, dec.name(), pa.k, pa.estimate.mean);
                assert!(pa.estimate.ci95_low <= want + 1e-12 && want <= pa.estimate.ci95_high + 1e-12, "{pa:?}");
            }
            for (l, s) in rank_sum.iter().enumerate() {
                assert!((got.mean_rank[l] - s / pairs as f64).abs() < 1e-9, "{} {} layer {l}", set.name, dec.name());
            }
        }
    }
    // Deterministic for a seed; the CSV has a row per statistic.
    let again = evaluate(&mut engine, &sets, &opts, &Progress::default()).unwrap();
    assert_eq!(again, report);
    let csv = report.to_csv();
    assert_eq!(csv.lines().filter(|l| l.contains(",pass@k,")).count(), 2 * 2 * 4);
    // A set that is not one is refused by name.
    let tmp = unique_temp_dir("jl-eval");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("bad.json"), r#"{"items": [{"name": "x", "prompt": "", "intermediates": ["a"]}]}"#).unwrap();
    let e = read_set(&tmp.join("bad.json")).unwrap_err().to_string();
    assert!(e.contains("empty prompt") && e.contains("bad.json"), "{e}");
}

/// Measurement, not a check run by default: the peak memory of reading a Llama-3-8B-shaped J-lens
/// (31 layers of 4096 × 4096 fp16, 1.04 GB; made with torch, path in `LOGIT_LENS_BIG_JLENS`).
/// Matrices are read one at a time and kept as fp16: the peak should be the file plus about one
/// layer.
#[test]
#[ignore = "measurement: needs a 1 GB lens file (see the doc comment)"]
fn big_lens_memory() {
    let Ok(path) = std::env::var("LOGIT_LENS_BIG_JLENS") else { return };
    let peak = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = peak();
    let t = std::time::Instant::now();
    let lens = JacobianLens::open(std::path::Path::new(&path)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let file = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "J-lens {} layers × {}²: file {:.2} GB, held {:.2} GB, peak RSS {:.2} GB (before {:.2} GB), {secs:.1} s",
        lens.matrices.len(),
        lens.d_model,
        file as f64 / 1e9,
        lens.bytes() as f64 / 1e9,
        peak() as f64 / 1e9,
        before as f64 / 1e9
    );
    assert!(peak() < before + file + 3 * (lens.d_model * lens.d_model * 4) as u64, "more than the lens and one widened layer");
}
