//! The `logit-lens` binary: `lens` writes the report JSON (README, "Metrics"); every bad input is a clear error
//! with a non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logit-lens"))
}

/// One converted tiny bundle shared by the tests of this file.
fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let hf = unique_temp_dir("cli-hf");
        write_checkpoint(&hf, &RandomGpt2::tiny(21)).unwrap();
        let b = unique_temp_dir("cli-bundle");
        let out = bin().arg("convert").arg(&hf).arg(&b).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        b
    })
}

fn lens(args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("lens").arg("--model").arg(bundle());
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    cmd.args(args).output().unwrap()
}

fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn lens_writes_the_report_json() {
    let dir = unique_temp_dir("cli-ok");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = lens(&["--prompt", "The cat sat on the mat.", "--subblocks", "--top-k", "3", "--pin", " plasma", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "logit-lens/report@1");
    assert_eq!(r["decoder"], "logit_lens");
    assert_eq!(r["model"]["n_layers"], 2);
    assert_eq!(r["model"]["d_vocab"], 50257);
    let n_pos = r["tokens"].as_array().unwrap().len();
    assert_eq!(n_pos, 7);
    assert_eq!(r["tokens"][1]["text"], "␣cat");
    // The exact string beside the display text, for `== " cat"` in Python (issue 11, item 10).
    assert_eq!(r["tokens"][1]["decoded"], " cat");
    assert_eq!(r["sites"], serde_json::json!(["embed", "0.attn", "0", "1.attn", "1"]));
    for key in
        ["top1_id", "top1_logit", "top1_prob", "rank_of_final_top1", "rank_of_next", "rank_of_input", "kl_to_final", "kl_to_input", "entropy", "nll_next"]
    {
        let grid = r["metrics"][key].as_array().unwrap_or_else(|| panic!("{key}"));
        assert_eq!(grid.len(), 5, "{key}");
        assert!(grid.iter().all(|row| row.as_array().unwrap().len() == n_pos), "{key}");
    }
    // Unknown values at the last position are null; the final row's KL to itself is 0 and its
    // top-1 has rank 1.
    assert!(r["metrics"]["rank_of_next"][4][n_pos - 1].is_null());
    assert!(r["metrics"]["nll_next"][0][n_pos - 1].is_null());
    assert!(r["metrics"]["nll_next"][0][0].as_f64().unwrap() > 0.0);
    assert_eq!(r["metrics"]["kl_to_final"][4][0].as_f64().unwrap(), 0.0);
    assert_eq!(r["metrics"]["rank_of_final_top1"][4][3].as_u64().unwrap(), 1);
    assert_eq!(r["metrics"]["top1_id"][4][3], r["attribution"]["final_top1_ids"][3]);
    assert_eq!(r["top_k"]["k"], 3);
    assert_eq!(r["top_k"]["ids"][2][0].as_array().unwrap().len(), 3);
    assert_eq!(r["pinned"]["tokens"][0]["text"], "␣plasma");
    assert_eq!(r["attribution"]["components"].as_array().unwrap().len(), 6);
}

#[test]
fn prompt_errors_are_clear() {
    let dir = unique_temp_dir("cli-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let j = json.to_str().unwrap();
    assert_clean_error(&lens(&["--prompt", "", "--json", j]), "the prompt is empty");
    assert_clean_error(&lens(&["--prompt-file", dir.join("missing.txt").to_str().unwrap(), "--json", j]), "cannot read the prompt file");
    let bin_file = dir.join("binary.txt");
    std::fs::write(&bin_file, [0x66, 0x6f, 0xff, 0xfe, 0x00]).unwrap();
    assert_clean_error(&lens(&["--prompt-file", bin_file.to_str().unwrap(), "--json", j]), "not UTF-8");
    let big = dir.join("big.txt");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(11 * 1024 * 1024).unwrap();
    assert_clean_error(&lens(&["--prompt-file", big.to_str().unwrap(), "--json", j]), "limited to 10 MB");
    assert_clean_error(&lens(&["--prompt-file", dir.to_str().unwrap(), "--json", j]), "is a folder");
    let long = ["word"; 200].join(" ");
    assert_clean_error(&lens(&["--prompt", &long, "--json", j]), "model's context is 64");
    let out = lens(&["--prompt", &long, "--truncate", "left", "--json", j]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The report says what was dropped (it kept no trace of it: issue 11, item 13).
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(j).unwrap()).unwrap();
    assert_eq!(r["tokens"].as_array().unwrap().len(), 64);
    assert_eq!(r["truncated"], serde_json::json!({"original_tokens": 200, "dropped_tokens": 136}));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the first 136 were dropped"));
    assert_clean_error(&lens(&["--prompt", "hi", "--json", dir.join("no/such/dir/r.json").to_str().unwrap()]), "does not exist");
    assert_clean_error(&lens(&["--prompt", "hi", "--json", dir.to_str().unwrap()]), "it is a folder");
    assert_clean_error(&lens(&["--prompt", "hi", "--device", "tpu", "--json", j]), "unknown device");
    assert_clean_error(&lens(&["--prompt", "hi", "--pin", "two words", "--json", j]), "not a single token");
    assert_clean_error(&lens(&["--prompt", "hi", "--device", "cuda", "--json", j]), "CUDA");
}

#[test]
fn runtime_library_errors_are_clear() {
    let dir = unique_temp_dir("cli-ort");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let out = bin().args(["info", "--ort-lib"]).arg(&fake).output().unwrap();
    assert_clean_error(&out, "cannot load the ONNX Runtime library");
    let out = bin().args(["info"]).env("ORT_DYLIB_PATH", dir.join("missing.so")).output().unwrap();
    assert_clean_error(&out, "cannot load the ONNX Runtime library");
}

#[test]
fn info_reports_runtime_providers_and_shape() {
    let out = bin().args(["info", "--device", "cpu", "--model"]).arg(bundle()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ONNX Runtime 1."), "{text}");
    assert!(text.contains("n_layers 2, d_model 32, n_heads 4"), "{text}");
    assert!(text.contains("execution provider: CPU"), "{text}");
    let out = bin().args(["info", "--device", "auto", "--model"]).arg(bundle()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CUDA: ") && text.contains("auto: fell back to CPU"), "{text}");
}

/// `--device auto` falling back to the CPU on a machine without a GPU build says nothing (it printed
/// three `note:` lines on every command); `--verbose` gives the reasons, each naming the right
/// remedy.
#[test]
fn auto_fallback_is_quiet_unless_verbose() {
    let dir = unique_temp_dir("cli-quiet");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = lens(&["--device", "auto", "--prompt", "The cat sat.", "--json", json.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("note:"), "{err}");
    let out = lens(&["--device", "auto", "--verbose", "--prompt", "The cat sat.", "--json", json.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Where the runtime has no GPU provider compiled in (this machine's CPU wheel), the reasons
    // are printed, and the DirectML one does not send the user to the CUDA wheel.
    let info = bin().args(["info", "--model"]).arg(bundle()).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    if info.contains("providers compiled in: CPU\n") {
        assert!(err.contains("note: CUDA: this ONNX Runtime was built without CUDA (the onnxruntime-gpu wheel has it)"), "{err}");
        assert!(err.contains("note: auto: fell back to CPU"), "{err}");
        let dml = err.lines().find(|l| l.starts_with("note: DirectML")).unwrap();
        assert!(!dml.contains("onnxruntime-gpu") && dml.contains("Windows-only"), "{dml}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lens --npz` writes numpy's own format (no `--json` needed); Export data… takes `.npz` too.
#[test]
fn lens_writes_npz() {
    let dir = unique_temp_dir("cli-npz");
    std::fs::create_dir_all(&dir).unwrap();
    let npz = dir.join("r.npz");
    let out = lens(&["--prompt", "The cat sat.", "--npz", npz.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&npz).unwrap();
    assert_eq!(&bytes[..2], b"PK", "a zip archive");
    assert!(bytes.windows(11).any(|w| w == b"top1_id.npy"));
    // Neither output: a clear error.
    let out = lens(&["--prompt", "The cat sat."]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--json"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ctrl+C during a conversion stops it and removes its partial folder: nothing is left in the
/// destination's folder, and the exit status is 130 (issue 11, item 12: a hidden
/// `.NAME.partial-…` folder of the checkpoint's size stayed behind).
#[test]
fn ctrl_c_during_convert_leaves_nothing() {
    use std::io::{BufRead, BufReader};
    let hf = unique_temp_dir("cli-int-hf");
    write_checkpoint(&hf, &RandomGpt2::gpt2_shape("distilgpt2").unwrap()).unwrap();
    let parent = unique_temp_dir("cli-int-out");
    std::fs::create_dir_all(&parent).unwrap();
    let dst = parent.join("bundle");
    let mut child = bin().arg("convert").arg(&hf).arg(&dst).stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Interrupt once the weights are being written (the partial folder exists then).
    for line in lines.by_ref() {
        let line = line.unwrap();
        let writing = line.starts_with("converting weights") && !line.ends_with(" 0%");
        seen.push(line);
        if writing {
            break;
        }
    }
    let partial_then = std::fs::read_dir(&parent).unwrap().count();
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    seen.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(partial_then, 1, "the conversion was writing its partial folder when interrupted");
    let left: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&hf).unwrap();
}

/// `--group NAME=TEXT|TEXT` and `--group-word WORD` add token groups to the report; a TEXT that
/// is not one token is an error that names it (issue 15, item 3).
#[test]
fn lens_writes_token_groups() {
    let dir = unique_temp_dir("cli-groups");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = lens(&["--prompt", "The cat sat on the mat.", "--group", "cat= cat|cat| Cat", "--group-word", "dog", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["name"], "cat");
    let texts: Vec<&str> = groups[0]["tokens"].as_array().unwrap().iter().map(|t| t["decoded"].as_str().unwrap()).collect();
    assert_eq!(texts, [" cat", "cat", " Cat"]);
    assert_eq!(groups[1]["name"], "dog");
    assert!(groups[1]["tokens"].as_array().unwrap().iter().any(|t| t["decoded"] == " dog"));
    let n_sites = r["sites"].as_array().unwrap().len();
    for g in groups {
        assert_eq!(g["prob"].as_array().unwrap().len(), n_sites);
        assert!(g["prob"][0].as_array().unwrap().iter().all(|p| (0.0..=1.0).contains(&p.as_f64().unwrap())));
        assert!(g["best_rank"][0].as_array().unwrap().iter().all(|k| k.as_u64().unwrap() >= 1));
    }
    let out = lens(&["--prompt", "The cat sat.", "--group", "x= cat| zqxvbn", "--json", json.to_str().unwrap()]);
    assert_clean_error(&out, "\" zqxvbn\" is not a single token");
    let out = lens(&["--prompt", "The cat sat.", "--group", "nothing", "--json", json.to_str().unwrap()]);
    assert_clean_error(&out, "expected NAME=TEXT");
}

/// `corpus` writes the `logit-lens/corpus@1` JSON and the per-site CSV; a bad window is a clear
/// error (issue 15, item 2).
#[test]
fn corpus_writes_json_and_csv() {
    let dir = unique_temp_dir("cli-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "The cat sat on the mat. The dog sat on the rug. A bird sang in the tree. ".repeat(20)).unwrap();
    let (json, csv) = (dir.join("c.json"), dir.join("c.csv"));
    let out = bin()
        .args(["corpus", "--device", "cpu", "--model"])
        .arg(bundle())
        .arg("--text")
        .arg(&text)
        .args(["--window", "32", "--resamples", "200", "--json", json.to_str().unwrap(), "--csv", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "logit-lens/corpus@1");
    assert_eq!(r["window"], 32);
    let n_sites = r["sites"].as_array().unwrap().len();
    for key in ["kl_to_final", "nll_next", "nll_bits_per_byte", "top1_agrees_final", "top1_is_next", "entropy"] {
        for part in ["mean", "ci95_low", "ci95_high"] {
            assert_eq!(r["per_site"][key][part].as_array().unwrap().len(), n_sites, "{key}.{part}");
        }
    }
    let n_tokens = r["n_tokens"].as_u64().unwrap();
    assert_eq!(r["n_windows"].as_u64().unwrap(), n_tokens.div_ceil(32) - u64::from(n_tokens % 32 == 1));
    let table = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(table.lines().count(), n_sites + 1);
    assert!(table.starts_with("site,prediction_depth_count,kl_to_final_mean,"));
    let out = bin()
        .args(["corpus", "--device", "cpu", "--model"])
        .arg(bundle())
        .arg("--text")
        .arg(&text)
        .args(["--window", "1", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_error(&out, "--window 1");
}

/// `lens --compare-decoder D` / `--compare-prompt T` write both reports and A − B
/// (`logit-lens/compare@1`; issue 15, item 1).
#[test]
fn lens_compares_two_runs() {
    let dir = unique_temp_dir("cli-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("c.json");
    let out = lens(&["--prompt", "The cat sat on the mat.", "--compare-decoder", "raw", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["schema"], "logit-lens/compare@1");
    assert_eq!((c["varied"].as_str(), c["aligned_by"].as_str()), (Some("decoder"), Some("position")));
    assert_eq!((c["a"]["decoder"].as_str(), c["b"]["decoder"].as_str()), (Some("logit_lens"), Some("raw")));
    let (s, k) = (1, 2);
    let d = c["diff"]["kl_to_final"][s][k].as_f64().unwrap();
    let want = c["a"]["metrics"]["kl_to_final"][s][k].as_f64().unwrap() - c["b"]["metrics"]["kl_to_final"][s][k].as_f64().unwrap();
    assert!((d - want).abs() < 1e-12, "{d} vs {want}");
    let out = lens(&["--prompt", "The cat sat on the mat.", "--compare-prompt", "The big cat sat on the mat.", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["aligned_by"], "common_tokens");
    assert_eq!(c["alignment"].as_array().unwrap().len(), 7);
    let npz = dir.join("c.npz");
    let out = lens(&["--prompt", "The cat sat.", "--compare-decoder", "raw", "--npz", npz.to_str().unwrap()]);
    assert_clean_error(&out, "--npz holds one report");
}

#[test]
fn fit_lens_writes_a_lens_that_lens_render_and_corpus_use() {
    let dir = unique_temp_dir("cli-fit");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("train.txt");
    std::fs::write(&text, "The cat sat on the mat. The dog sat on the rug. A bird sang in the old tree. ".repeat(40)).unwrap();
    let lens_dir = dir.join("lens");
    let fit = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["fit-lens", "--device", "cpu", "--steps", "5", "--tokens", "128", "--model"])
            .arg(bundle())
            .arg("--text")
            .arg(&text)
            .arg("--out")
            .arg(&lens_dir);
        cmd.args(extra).output().unwrap()
    };
    let out = fit(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("step ").count(), 5, "one line per step: {err}");
    assert!(err.contains("step 5/5") && err.contains("KL embed"), "{err}");
    assert!(lens_dir.join("params.pt").is_file() && lens_dir.join("config.json").is_file());
    // A second fit does not silently replace it.
    assert_clean_error(&fit(&[]), "already holds a tuned lens");
    assert_clean_error(&fit(&["--resume"]), "no checkpoint");
    // lens: the tuned lens by default with --tuned-lens; compared with the logit lens.
    let json = dir.join("c.json");
    let l = lens_dir.to_str().unwrap();
    let out = lens(&["--prompt", "The cat sat on the mat.", "--tuned-lens", l, "--compare-decoder", "logit_lens", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((c["a"]["decoder"].as_str(), c["b"]["decoder"].as_str()), (Some("tuned_lens"), Some("logit_lens")));
    assert!(c["a"]["run"]["tuned_lens"].as_str().unwrap().ends_with("lens"));
    // Without a lens, the decoder says how to get one; a folder that is not a lens is refused.
    assert_clean_error(&lens(&["--prompt", "The cat", "--decoder", "tuned_lens", "--json", json.to_str().unwrap()]), "--tuned-lens");
    assert_clean_error(&lens(&["--prompt", "The cat", "--tuned-lens", dir.to_str().unwrap(), "--json", json.to_str().unwrap()]), "config.json");
    // render records the lens; --from opens it again.
    let svg = dir.join("fig.svg");
    let out = bin()
        .args(["render", "--device", "cpu", "--prompt", "The cat sat on the mat.", "--tuned-lens", l, "--model"])
        .arg(bundle())
        .arg("--out")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fig = std::fs::read_to_string(&svg).unwrap();
    assert!(fig.contains("tuned_lens (lens)"), "the subtitle names the decoder and the lens");
    let again = dir.join("again.svg");
    let out = bin().args(["render", "--device", "cpu", "--from"]).arg(&svg).arg("--out").arg(&again).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&again).unwrap().contains("tuned_lens (lens)"));
    // Before opening them, it says which model and lens the figure names (issue 24).
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("names the model") && said.contains("names the tuned lens") && said.contains(l), "{said}");
    // corpus under the tuned lens.
    let cj = dir.join("corpus.json");
    let out =
        bin().args(["corpus", "--device", "cpu", "--tuned-lens", l, "--model"]).arg(bundle()).arg("--text").arg(&text).arg("--json").arg(&cj).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cj).unwrap()).unwrap();
    assert_eq!(c["decoder"], "tuned_lens");
}

#[test]
fn lens_path_chooses_the_kernel_or_the_lens_graph() {
    let dir = unique_temp_dir("cli-path");
    std::fs::create_dir_all(&dir).unwrap();
    let (ja, jb) = (dir.join("k.json"), dir.join("g.json"));
    let out = lens(&["--prompt", "The cat sat on the mat.", "--json", ja.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel (CPU)"));
    let out = lens(&["--prompt", "The cat sat on the mat.", "--lens-path", "graph", "--json", jb.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ja).unwrap()).unwrap();
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&jb).unwrap()).unwrap();
    assert_eq!((a["run"]["lens_path"].as_str(), b["run"]["lens_path"].as_str()), (Some("kernel (CPU)"), Some("graph (CPU)")));
    assert_eq!(a["metrics"]["top1_id"], b["metrics"]["top1_id"]);
    assert_clean_error(&lens(&["--prompt", "The cat", "--lens-path", "gpu", "--json", ja.to_str().unwrap()]), "--lens-path");
    let out = bin().args(["info", "--device", "cpu", "--model"]).arg(bundle()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("lens: kernel (CPU)"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The shared argument groups parse their values once, for every command (issue 23): a bad
/// decoder, device, lens path or truncation is clap's usage error (exit code 2) naming the
/// choices, whichever command it is given to.
#[test]
fn typed_arguments_are_refused_with_their_choices() {
    let cases: [(&[&str], &str); 6] = [
        (&["lens", "--prompt", "hi", "--json", "/tmp/never.json", "--decoder", "bogus"], "use one of logit_lens, tuned_lens"),
        (&["render", "--prompt", "hi", "--out", "/tmp/never.svg", "--decoder", "bogus"], "use one of logit_lens, tuned_lens"),
        (&["corpus", "--text", "/tmp/never.txt", "--json", "/tmp/never.json", "--device", "tpu"], "use auto, cpu, cuda or directml"),
        (&["info", "--device", "tpu"], "use auto, cpu, cuda or directml"),
        (&["lens", "--prompt", "hi", "--json", "/tmp/never.json", "--lens-path", "gpu"], "use auto, kernel or graph"),
        (&["lens", "--prompt", "hi", "--json", "/tmp/never.json", "--truncate", "right"], "use --truncate left"),
    ];
    for (args, needle) in cases {
        let o = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The J-lens on every face of the CLI (issue 26), with TransformerLens's file for the random
/// GPT-2 of the J-lens fixtures: `lens` (report, npz), the comparison with the logit lens,
/// `render` and `render --from`, `corpus`, `eval-lens`; `published` and a wrong lens are clear
/// errors.
#[test]
fn the_jacobian_lens_goes_everywhere_the_tuned_lens_goes() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let model = fixtures.join("tuned_lens/gpt2");
    let model = model.to_str().unwrap();
    let lens_file = fixtures.join("jacobian_lens/gpt2/lens_partial.pt");
    let l = lens_file.to_str().unwrap();
    let dir = unique_temp_dir("cli-jlens");
    std::fs::create_dir_all(&dir).unwrap();
    let prompt = "Sometimes, when people say plasma, they mean a state of matter.";
    let run = |args: &[&str]| bin().args(args).output().unwrap();
    // lens: the J-lens by default with --jacobian-lens; the rows it has no matrix for are listed.
    let json = dir.join("r.json");
    let npz = dir.join("r.npz");
    let out = run(&[
        "lens",
        "--device",
        "cpu",
        "--model",
        model,
        "--jacobian-lens",
        l,
        "--prompt",
        prompt,
        "--json",
        json.to_str().unwrap(),
        "--npz",
        npz.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["decoder"], "jacobian_lens");
    assert_eq!(r["no_transport"], serde_json::json!([0, 1]), "embed and layer 0 (the lens has layer 1 only)");
    assert!(r["run"]["jacobian_lens"].as_str().unwrap().ends_with("lens_partial.pt"));
    let npz_bytes = std::fs::read(&npz).unwrap();
    assert!(npz_bytes.windows(b"no_transport.npy".len()).any(|w| w == b"no_transport.npy"));
    assert!(npz_bytes.windows(b"jacobian_lens.npy".len()).any(|w| w == b"jacobian_lens.npy"));
    // Compared with the logit lens.
    let cmp = dir.join("c.json");
    let out = run(&[
        "lens",
        "--device",
        "cpu",
        "--model",
        model,
        "--jacobian-lens",
        l,
        "--compare-decoder",
        "logit_lens",
        "--prompt",
        prompt,
        "--json",
        cmp.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cmp).unwrap()).unwrap();
    assert_eq!((c["a"]["decoder"].as_str(), c["b"]["decoder"].as_str()), (Some("jacobian_lens"), Some("logit_lens")));
    // render names the lens and the rows it did not transport; --from opens it again.
    let svg = dir.join("fig.svg");
    let out = run(&["render", "--device", "cpu", "--model", model, "--jacobian-lens", l, "--prompt", prompt, "--out", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fig = std::fs::read_to_string(&svg).unwrap();
    assert!(fig.contains("jacobian_lens (lens_partial.pt)") && fig.contains("2 rows not transported"), "the subtitle names the lens and the grey rows");
    assert!(fig.contains("embed (as is)") && fig.contains("0 (as is)"), "the grey rows are labelled");
    let again = dir.join("again.svg");
    let out = run(&["render", "--device", "cpu", "--from", svg.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&again).unwrap().contains("jacobian_lens (lens_partial.pt)"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names the J-lens"));
    // corpus under the J-lens.
    let text = dir.join("t.txt");
    std::fs::write(&text, prompt.repeat(8)).unwrap();
    let cj = dir.join("corpus.json");
    let out = run(&["corpus", "--device", "cpu", "--model", model, "--jacobian-lens", l, "--text", text.to_str().unwrap(), "--json", cj.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cj).unwrap()).unwrap();
    assert_eq!(c["decoder"], "jacobian_lens");
    // eval-lens: both decoders side by side, JSON, CSV and a figure with its provenance.
    let sets = fixtures.join("lens_eval/multihop_small.json");
    let (ej, ec, ef) = (dir.join("e.json"), dir.join("e.csv"), dir.join("e.svg"));
    let out = run(&[
        "eval-lens",
        "--device",
        "cpu",
        "--model",
        model,
        "--jacobian-lens",
        l,
        "--set",
        sets.to_str().unwrap(),
        "--k",
        "1,10",
        "--json",
        ej.to_str().unwrap(),
        "--csv",
        ec.to_str().unwrap(),
        "--figure",
        ef.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ej).unwrap()).unwrap();
    assert_eq!(e["schema"], "logit-lens/lens-eval@1");
    let decs: Vec<&str> = e["sets"][0]["decoders"].as_array().unwrap().iter().map(|d| d["decoder"].as_str().unwrap()).collect();
    assert_eq!(decs, ["logit_lens", "jacobian_lens"]);
    assert!(std::fs::read_to_string(&ec).unwrap().starts_with("set,decoder,statistic,at,value,ci95_low,ci95_high\n"));
    let fig = std::fs::read_to_string(&ef).unwrap();
    assert!(fig.contains("multihop_small (5 items)") && fig.contains("jacobian_lens (1 layers as is)"));
    // Clear errors: no lens for the decoder, published for a model with none, another model's lens.
    assert_clean_error(
        &run(&["lens", "--device", "cpu", "--model", model, "--decoder", "jacobian_lens", "--prompt", prompt, "--json", json.to_str().unwrap()]),
        "--jacobian-lens",
    );
    // (The demo model's folder names no published model; a folder named `gpt2` would be taken for GPT-2.)
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/demo-model");
    assert_clean_error(
        &run(&[
            "lens",
            "--device",
            "cpu",
            "--model",
            demo.to_str().unwrap(),
            "--jacobian-lens",
            "published",
            "--prompt",
            prompt,
            "--json",
            json.to_str().unwrap(),
        ]),
        "no published J-lens is known",
    );
    assert_clean_error(
        &run(&["lens", "--device", "cpu", "--jacobian-lens", "published", "--prompt", prompt, "--json", json.to_str().unwrap()]),
        "needs --model",
    );
    let gemma_lens = fixtures.join("jacobian_lens/gemma2/lens_f16.pt");
    assert_clean_error(
        &run(&[
            "lens",
            "--device",
            "cpu",
            "--model",
            model,
            "--jacobian-lens",
            gemma_lens.to_str().unwrap(),
            "--prompt",
            prompt,
            "--json",
            json.to_str().unwrap(),
        ]),
        "width d_model 48",
    );
    assert_clean_error(
        &run(&[
            "eval-lens",
            "--device",
            "cpu",
            "--model",
            model,
            "--decoders",
            "jacobian_lens",
            "--set",
            sets.to_str().unwrap(),
            "--json",
            ej.to_str().unwrap(),
        ]),
        "--jacobian-lens",
    );
}

/// `patch` (issue 27): JSON, CSV and a figure per kind of site on the demo model; the
/// mismatched-length, multi-token target and missing-prompt errors.
#[test]
fn patch_writes_json_csv_and_figures_and_refuses_bad_inputs() {
    let dir = unique_temp_dir("cli-patch");
    std::fs::create_dir_all(&dir).unwrap();
    let (json, csv, fig) = (dir.join("p.json"), dir.join("p.csv"), dir.join("p.svg"));
    let base = ["patch", "--device", "cpu", "--prompt", "The Eiffel Tower is in the city of", "--corrupt-prompt", "The Colosseum is in the city of"];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--target", " Paris", "--against", " Rome", "--sites", "resid,attn,resid", "--json", json.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    let npz = dir.join("p.npz");
    args.extend(["--figure", fig.to_str().unwrap(), "--npz", npz.to_str().unwrap()]);
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "logit-lens/patch@1");
    assert_eq!(r["metric"], "logit_diff");
    let grids = r["grids"].as_array().unwrap();
    assert_eq!(grids.len(), 2, "a kind named twice is swept once");
    assert_eq!(grids[0]["kind"], "resid");
    assert_eq!(grids[0]["sites"].as_array().unwrap().len(), 9, "embed and 8 layers");
    assert_eq!(grids[1]["sites"][0], "0.attn");
    // The last block's output at the last position is the clean run's: normalised effect 1.
    let n_pos = r["corrupt_tokens"].as_array().unwrap().len();
    assert_eq!(grids[0]["normalized"][8][n_pos - 1].as_f64().unwrap(), 1.0);
    let lines = std::fs::read_to_string(&csv).unwrap();
    assert!(lines.starts_with("kind,site,position,corrupt_token,effect,normalized\n"));
    assert_eq!(lines.lines().count(), 1 + (9 + 8) * n_pos);
    let npz_bytes = std::fs::read(&npz).unwrap();
    for name in ["effect_resid.npy", "normalized_attn.npy", "sites_attn.npy", "corrupt_tokens.npy", "clean_metric.npy"] {
        assert!(npz_bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{name} in the .npz");
    }
    let svg = std::fs::read_to_string(&fig).unwrap();
    assert!(svg.contains("Activation patching (resid)") && svg.contains("normalised effect"));
    assert!(std::fs::read_to_string(dir.join("p.attn.svg")).unwrap().contains("Activation patching (attn)"));
    assert!(!dir.join("p.estimate.svg").exists() && grids[0].get("estimate").is_none(), "no estimate unless asked");
    // --estimate: attribution patching beside the exact sweep, in every output.
    let est_dir = dir.join("est");
    std::fs::create_dir_all(&est_dir).unwrap();
    let (ej, ec, ef, en) = (est_dir.join("p.json"), est_dir.join("p.csv"), est_dir.join("p.svg"), est_dir.join("p.npz"));
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--target", " Paris", "--against", " Rome", "--sites", "resid,mlp", "--estimate", "--json", ej.to_str().unwrap()]);
    args.extend(["--csv", ec.to_str().unwrap(), "--figure", ef.to_str().unwrap(), "--npz", en.to_str().unwrap()]);
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resid: the first-order estimate correlates with the exact effects at r = "));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ej).unwrap()).unwrap();
    let eg = e["grids"].as_array().unwrap();
    assert_eq!(eg[0]["effect"], grids[0]["effect"], "the exact sweep is the same with --estimate");
    let est = eg[0]["estimate"].as_array().unwrap();
    assert_eq!((est.len(), est[0].as_array().unwrap().len()), (9, n_pos));
    assert!(eg[1]["estimate"].as_array().is_some(), "the mlp grid has its estimate");
    assert!(std::fs::read_to_string(&ec).unwrap().starts_with("kind,site,position,corrupt_token,effect,normalized,estimate\n"));
    let npz_bytes = std::fs::read(&en).unwrap();
    assert!(npz_bytes.windows(18).any(|w| w == b"estimate_resid.npy"), "estimate_resid in the .npz");
    let svg = std::fs::read_to_string(est_dir.join("p.estimate.svg")).unwrap();
    assert!(svg.contains("Attribution patching (resid, first-order estimate)") && svg.contains("with the exact effects"), "the estimate's figure");
    assert!(est_dir.join("p.mlp.svg").is_file() && est_dir.join("p.mlp.estimate.svg").is_file());
    // Errors.
    let out = bin()
        .args([
            "patch",
            "--device",
            "cpu",
            "--prompt",
            "The Eiffel Tower is in",
            "--corrupt-prompt",
            "Rome",
            "--target",
            " Paris",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_clean_error(&out, "same length");
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--target", " Parisian", "--json", json.to_str().unwrap()]);
    assert_clean_error(&bin().args(&args).output().unwrap(), "not a single token");
    let out = bin().args(["patch", "--device", "cpu", "--prompt", "a", "--target", " Paris", "--json", json.to_str().unwrap()]).output().unwrap();
    assert_clean_error(&out, "corrupt-prompt");
    // Steering is compared only with another decoder (B reads the same steered run).
    let out = bin()
        .args([
            "lens",
            "--device",
            "cpu",
            "--prompt",
            "Once upon a time",
            "--steer",
            "2= happy| sad*3",
            "--compare-prompt",
            "Once upon a day",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_clean_error(&out, "compared only with another decoder");
}

/// `render` and `corpus` with `--engine nnsight` (issue 29), when `LOGIT_LENS_NNSIGHT_PYTHON`
/// names a Python with torch and nnsight (`.ci/run` makes one; else SKIPPED): the figure records
/// the engine and `render --from` runs nnsight again to the same figure; the corpus report names
/// the engine and equals the local engine's corpus of the same model; options the engine does
/// not take are refused by name.
#[test]
fn render_and_corpus_run_on_nnsight() {
    let Some(python) = std::env::var_os("LOGIT_LENS_NNSIGHT_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("SKIPPED: LOGIT_LENS_NNSIGHT_PYTHON names no Python with torch and nnsight");
        return;
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/families/llama_f32");
    let dir = unique_temp_dir("cli-nnsight");
    std::fs::create_dir_all(&dir).unwrap();
    let (svg, again) = (dir.join("a.svg"), dir.join("b.svg"));
    let out = bin()
        .args(["render", "--engine", "nnsight", "--view", "ranks", "--prompt", "The cat sat on the mat"])
        .arg("--python")
        .arg(&python)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prov = lens_app::figure::output::read_provenance(&svg).unwrap();
    let engine = prov.engine.clone().expect("the figure records its engine");
    assert_eq!((engine.name.as_str(), engine.remote), ("nnsight", false));
    assert_eq!(prov.model_path, model.display().to_string());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("logit_lens · nnsight (local)"), "the subtitle names the engine");
    let out = bin().args(["render", "--from"]).arg(&svg).arg("--python").arg(&python).arg("--out").arg(&again).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let strip = |s: String| s.lines().filter(|l| !l.contains("forward_ms") && !l.contains("logit-lens-provenance")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(std::fs::read_to_string(&again).unwrap()), strip(text), "render --from reruns nnsight to the same figure");
    // Options the engine does not take.
    let out = bin()
        .args(["render", "--engine", "nnsight", "--prompt", "a b", "--compare-prompt", "c d"])
        .arg("--python")
        .arg(&python)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(dir.join("c.svg"))
        .output()
        .unwrap();
    assert_clean_error(&out, "--compare-");
    // A corpus through one nnsight process, against the local engine's corpus.
    let corpus = dir.join("text.txt");
    std::fs::write(&corpus, "The cat sat on the mat. The dog sat on the log. A bird sang in the tree. ".repeat(3)).unwrap();
    let (a, b) = (dir.join("nn.json"), dir.join("local.json"));
    let out = bin()
        .args(["corpus", "--engine", "nnsight", "--window", "16", "--resamples", "20"])
        .arg("--python")
        .arg(&python)
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&corpus)
        .arg("--json")
        .arg(&a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin()
        .args(["corpus", "--device", "cpu", "--window", "16", "--resamples", "20"])
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&corpus)
        .arg("--json")
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (nn, local) = (read(&a), read(&b));
    assert_eq!(nn["run"]["provider"], "nnsight (local)");
    assert_eq!(nn["n_windows"], local["n_windows"]);
    let means = |v: &serde_json::Value| -> Vec<f64> { v["per_site"]["kl_to_final"]["mean"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    for (x, y) in means(&nn).iter().zip(means(&local)) {
        assert!((x - y).abs() < 1e-4, "corpus KL {x} vs {y}");
    }
    let out = bin()
        .args(["corpus", "--engine", "nnsight", "--decoder", "raw"])
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&corpus)
        .arg("--json")
        .arg(dir.join("x.json"))
        .output()
        .unwrap();
    assert_clean_error(&out, "logit lens only");
}
