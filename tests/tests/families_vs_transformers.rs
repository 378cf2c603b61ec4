//! Every family end to end (converter + ONNX Runtime + lens + decoders) against `transformers`
//! in float64: the fixtures in `tests/fixtures/families/` were made by `make_fixtures.py` there
//! (random checkpoints with odd shapes, perturbed norms and biases, f32/f16/bf16; hooks, logits
//! and the last-block / last-MLP decoder inputs captured with forward hooks on the real modules).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_tests::fixture::unique_temp_dir;
use lens_tests::reference::{self, RefSiteMetrics, read_safetensors_f64};

/// The prompt the fixtures were computed on (`PROMPT` in `make_fixtures.py`).
const PROMPT: &str = "Sometimes, when people say plasma, they mean a state of matter.";
/// Hooks, logits and metrics agree with the float64 reference to this.
const TOL: f64 = 1e-4;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families").join(case)
}

struct Reference {
    ids: Vec<u32>,
    t: HashMap<String, (Vec<usize>, Vec<f64>)>,
}

impl Reference {
    fn load(case: &str) -> Self {
        let path = fixture(case).join("reference.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ids_view = st.tensor("input_ids").unwrap();
        assert_eq!(ids_view.dtype(), safetensors::Dtype::I64);
        let ids = ids_view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
        Reference { ids, t: read_safetensors_f64(&path) }
    }
    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        self.t.get(name).unwrap_or_else(|| panic!("reference lacks {name}"))
    }
    /// A `[rows, width]` tensor (or row `i` of a 3-D one) as rows.
    fn rows(&self, name: &str, i: Option<usize>) -> Vec<Vec<f64>> {
        let (dims, v) = self.get(name);
        let width = *dims.last().unwrap();
        let n = dims[dims.len() - 2];
        let start = i.map_or(0, |i| i * n * width);
        v[start..start + n * width].chunks(width).map(<[f64]>::to_vec).collect()
    }
    fn has(&self, name: &str) -> bool {
        self.t.contains_key(name)
    }
    /// The naive f64 decoder: LayerNorm or RMSNorm (own statistics) · unembedᵀ + bias.
    fn decode(&self, x: &[f64]) -> Vec<f64> {
        let w = &self.get("decoder.norm_weight").1;
        let b = &self.get("decoder.norm_bias").1;
        let eps = self.get("decoder.norm_eps").1[0];
        let rms = self.t.get("decoder.norm_rms").is_some_and(|(_, v)| v[0] == 1.0);
        let h = if rms {
            let s = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
            x.iter().zip(w).map(|(v, g)| v / s * g).collect()
        } else {
            reference::layer_norm(x, w, b, eps)
        };
        let (ud, u) = self.get("decoder.unembed");
        let bias = &self.get("decoder.unembed_bias").1;
        (0..ud[0]).map(|t| self.cap(u[t * ud[1]..(t + 1) * ud[1]].iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() + bias[t])).collect()
    }
    /// Gemma 2's final soft cap `cap · tanh(x / cap)` (identity without one).
    fn cap(&self, x: f64) -> f64 {
        match self.t.get("decoder.final_softcap").map(|(_, v)| v[0]) {
            Some(c) if c > 0.0 => c * (x / c).tanh(),
            _ => x,
        }
    }
}

fn max_diff(a: &ndarray::Array2<f32>, b: &[Vec<f64>]) -> f64 {
    common::max_diff_2d(a, b)
}

/// Converts the fixture, runs the lens with every decoder and compares with the reference.
fn check_case(case: &str, family: &str, parallel: bool) {
    check_checkpoint(&fixture(case), case, family, parallel);
}

/// [`check_case`] for the checkpoint in folder `dir`, against the reference of `case`.
fn check_checkpoint(dir: &Path, case: &str, family: &str, parallel: bool) {
    let bundle = unique_temp_dir(&format!("fam-{case}"));
    let summary = lens_model::build::convert::convert_hf_checkpoint(dir, &bundle, &Progress::default()).unwrap();
    assert_eq!(summary.family.model_type(), family);
    let mut engine = common::open(&bundle);
    assert_eq!(engine.bundle.family, family);
    // The session reads its unembedding from the decoder's buffer: one copy in memory.
    assert!(engine.decoder.w_u.is_shared(), "{case}: the unembedding is not shared with the session");
    assert_eq!(engine.bundle.residual.name(), if parallel { "parallel" } else { "sequential" });
    let r = Reference::load(case);
    let ids = engine.tokenize(PROMPT, false).unwrap();
    assert_eq!(ids, r.ids, "{case}: our tokenization of the prompt differs from the fixture's");
    let trace = engine.trace(&ids).unwrap();
    let n_layers = engine.bundle.shape.n_layers;
    let n = ids.len();

    // Every hook within TOL of transformers.
    for l in 0..n_layers {
        let pre = if l == 0 { &trace.embed } else { &trace.resid_post[l - 1] };
        let mut hooks = vec![("resid_pre", pre), ("attn_out", &trace.attn_out[l]), ("mlp_out", &trace.mlp_out[l]), ("resid_post", &trace.resid_post[l])];
        if !parallel {
            hooks.push(("resid_mid", &trace.resid_mid[l]));
        } else {
            assert!(!r.has(&format!("blocks.{l}.hook_resid_mid")));
        }
        for (hook, ours) in hooks {
            let d = max_diff(ours, &r.rows(&format!("blocks.{l}.hook_{hook}"), None));
            assert!(d < TOL, "{case}: blocks.{l}.hook_{hook} differs by {d}");
        }
    }
    // Incremental edits: the trace of a prefix, extended on its key/value cache, gives every
    // hook of the whole prompt (GPT-Neo's and Gemma's local windows, rotary offsets, GQA).
    assert!(engine.bundle.kv_cache.is_some(), "{case}: the converted graph has no key/value cache");
    for p in [1, n / 2, n - 1] {
        let (head, reused) = engine.trace_edit(None, &ids[..p], &Progress::default()).unwrap();
        assert_eq!(reused, 0);
        assert_eq!(head.kv.as_ref().map(|kv| kv.n_pos), Some(p));
        let (edited, reused) = engine.trace_edit(Some((&ids[..p], &head)), &ids, &Progress::default()).unwrap();
        assert_eq!((reused, edited.n_pos), (p, n), "{case}: forward positions reused");
        assert_eq!(edited.logits_top1, trace.logits_top1, "{case}: model top-1 after extending {p} positions");
        for l in 0..n_layers {
            for (hook, ours) in [("attn_out", &edited.attn_out[l]), ("mlp_out", &edited.mlp_out[l]), ("resid_post", &edited.resid_post[l])] {
                let d = max_diff(ours, &r.rows(&format!("blocks.{l}.hook_{hook}"), None));
                assert!(d < TOL, "{case}: blocks.{l}.hook_{hook} after extending {p} cached positions differs by {d}");
            }
        }
        // Removing tokens from the end runs nothing: the prefix of the trace.
        let (cut, reused) = engine.trace_edit(Some((&ids, &edited)), &ids[..p], &Progress::default()).unwrap();
        assert_eq!((reused, cut.n_pos), (p, p));
        assert_eq!(cut.resid_post[n_layers - 1], edited.resid_post[n_layers - 1].slice(ndarray::s![..p, ..]));
    }

    // The naive decoder reproduces the model's logits (so it is the model's decoder): exactly, but
    // for transformers' RMSNorm, which computes in float32 even in a float64 model (≤ 1.4e-6).
    let exact = if r.has("decoder.norm_rms") { 1e-5 } else { 1e-9 };
    let logits = r.rows("logits", None);
    let last = r.rows(&format!("blocks.{}.hook_resid_post", n_layers - 1), None);
    for p in 0..n {
        let ours = r.decode(&last[p]);
        let worst = ours.iter().zip(&logits[p]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < exact, "{case}: naive decoder vs logits {worst}");
    }

    // Sites in sub-block order, as the reference stores the decoder inputs.
    let mut site_rows: Vec<Vec<Vec<f64>>> = vec![r.rows("blocks.0.hook_resid_pre", None)];
    for l in 0..n_layers {
        let pre = r.rows(&format!("blocks.{l}.hook_resid_pre"), None);
        let attn = r.rows(&format!("blocks.{l}.hook_attn_out"), None);
        site_rows.push(pre.iter().zip(&attn).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect()).collect());
        site_rows.push(r.rows(&format!("blocks.{l}.hook_resid_post"), None));
    }
    let n_sites = 2 * n_layers + 1;
    let k = 5;
    for (decoder, stored) in
        [(DecoderKind::LogitLens, None), (DecoderKind::LastBlock, Some("last_block_resid")), (DecoderKind::LastMlp, Some("last_mlp_resid"))]
    {
        let opts = LensOptions { subblocks: true, k, decoder, ..LensOptions::default() };
        let report = engine.lens(&ids, &trace, &opts, &Progress::default()).unwrap();
        assert_eq!(report.decoder, decoder.name());
        assert_eq!(report.sites.len(), n_sites);
        let sub = if parallel { "pre+attn" } else { "attn" };
        assert_eq!(report.sites[1], format!("0.{sub}"), "{case}: sub-block row label");
        // Reference logits per site: the final site is the model's own output under every decoder.
        let want: Vec<Vec<RefSiteMetrics>> = (0..n_sites)
            .map(|s| {
                let inputs = match stored {
                    Some(name) if s + 1 < n_sites => r.rows(name, Some(s)),
                    _ => site_rows[s].clone(),
                };
                inputs.iter().map(|x| RefSiteMetrics::new(r.decode(x), k)).collect()
            })
            .collect();
        let m = &report.metrics;
        for s in 0..n_sites {
            for p in 0..n {
                let at = format!("{case} {} site {} pos {p}", decoder.name(), report.sites[s]);
                let w = &want[s][p];
                let fin = &want[n_sites - 1][p];
                let emb = &want[0][p];
                // Top-1 (a near-tie within TOL may flip), its logit and probability.
                if w.top_logits[0] - w.top_logits[1] > TOL {
                    assert_eq!(m.top1_id[s][p], w.top_ids[0], "top-1 at {at}");
                    assert_eq!(report.top_k.ids[s][p][0], w.top_ids[0], "top-k at {at}");
                }
                assert!((f64::from(m.top1_logit[s][p]) - w.top_logits[0]).abs() < TOL, "top-1 logit at {at}: {} vs {}", m.top1_logit[s][p], w.top_logits[0]);
                assert!((m.top1_prob[s][p] - w.top_probs[0]).abs() < TOL, "top-1 prob at {at}");
                let kl_f = reference::kl_log_probs(&fin.log_probs, &w.log_probs);
                assert!((m.kl_to_final[s][p] - kl_f).abs() < TOL, "KL(final) at {at}: {} vs {kl_f}", m.kl_to_final[s][p]);
                let kl_i = reference::kl_log_probs(&emb.log_probs, &w.log_probs);
                assert!((m.kl_to_input[s][p] - kl_i).abs() < TOL, "KL(input) at {at}: {} vs {kl_i}", m.kl_to_input[s][p]);
                assert!((m.entropy[s][p] - w.entropy).abs() < TOL, "entropy at {at}");
                match m.nll_next[s][p] {
                    Some(v) => assert!((v - w.nll(ids[p + 1])).abs() < TOL, "nll at {at}"),
                    None => assert_eq!(p + 1, n),
                }
                // Ranks exact outside near-ties: within the band of tokens as close as TOL.
                let in_band = |ours: u32, t: u32| {
                    let lt = w.logits[t as usize];
                    let lo = 1 + w.logits.iter().filter(|&&v| v > lt + TOL).count();
                    let hi = 1 + w.logits.iter().enumerate().filter(|&(i, &v)| i != t as usize && v > lt - TOL).count();
                    (lo..=hi).contains(&(ours as usize))
                };
                assert!(in_band(m.rank_of_input[s][p], ids[p]), "rank of input at {at}");
                if let Some(rk) = m.rank_of_next[s][p] {
                    assert!(in_band(rk, ids[p + 1]), "rank of next at {at}");
                }
                assert!(in_band(m.rank_of_final_top1[s][p], fin.top_ids[0]), "rank of final top-1 at {at}");
            }
        }
        // The lens is not trivial here: the embed row disagrees with the final one.
        let mean_kl: f64 = m.kl_to_final[0].iter().sum::<f64>() / n as f64;
        assert!(mean_kl > 0.05, "{case}: {} embed KL {mean_kl}", decoder.name());

        // Direct logit attribution sums to the model's final logit (before a soft cap, which is
        // not linear: the capped sum is the logit).
        let att = &report.attribution;
        assert_eq!(att.components.len(), 2 * n_layers + 2);
        for p in 0..n {
            let t = att.final_top1_ids[p] as usize;
            let sum: f64 = r.cap(att.final_top1.iter().map(|row| row[p]).sum());
            assert!((sum - logits[p][t]).abs() < 1e-3, "{case}: DLA sum {sum} vs logit {} at {p}", logits[p][t]);
        }
    }
    // The decoders differ where they should: the last-block rows are not the plain lens.
    let plain = engine.lens(&ids, &trace, &LensOptions { k, ..LensOptions::default() }, &Progress::default()).unwrap();
    let lb = engine.lens(&ids, &trace, &LensOptions { k, decoder: DecoderKind::LastBlock, ..LensOptions::default() }, &Progress::default()).unwrap();
    assert_ne!(plain.metrics.kl_to_final[0], lb.metrics.kl_to_final[0]);
    assert_eq!(plain.metrics.kl_to_final.last(), lb.metrics.kl_to_final.last(), "the final site is the model's output under every decoder");
}

#[test]
fn gpt_neo_f32_local_and_global_attention() {
    check_case("gpt_neo_f32", "gpt_neo", false);
}

#[test]
fn gpt_neo_bf16() {
    check_case("gpt_neo_bf16", "gpt_neo", false);
}

#[test]
fn ctrl_f32_sinusoidal_scaled_embedding_relu_lm_head_bias() {
    check_case("ctrl_f32", "ctrl", false);
}

#[test]
fn ctrl_f16() {
    check_case("ctrl_f16", "ctrl", false);
}

#[test]
fn gpt_neox_parallel_partial_rotary_padded_vocab() {
    check_case("gpt_neox_parallel_f32", "gpt_neox", true);
}

#[test]
fn gpt_neox_sequential_f16() {
    check_case("gpt_neox_sequential_f16", "gpt_neox", false);
}

#[test]
fn gptj_f32_interleaved_rotary_shared_norm() {
    check_case("gptj_f32", "gptj", true);
}

#[test]
fn gptj_bf16() {
    check_case("gptj_bf16", "gptj", true);
}

/// The same CTRL weights saved as `pytorch_model.bin` (torch.save, zip, pickle protocol 2, with the
/// tied `lm_head.weight` as old Hub files carry it) give the same results.
#[test]
fn ctrl_f16_from_pytorch_model_bin() {
    assert!(!fixture("ctrl_f16_bin").join("model.safetensors").exists());
    check_checkpoint(&fixture("ctrl_f16_bin"), "ctrl_f16", "ctrl", false);
}

/// A `pytorch_model.bin` whose pickle calls `os.system` is refused before anything is read, and
/// the failed conversion leaves nothing behind.
#[test]
fn pytorch_model_bin_calling_os_system_is_refused() {
    let out = unique_temp_dir("evil-bin");
    let evil = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/evil_bin");
    let e = lens_model::build::convert::convert_hf_checkpoint(&evil, &out, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("pytorch_model.bin") && e.contains("os.system") && e.contains("refused"), "{e}");
    assert!(!out.exists());
    let parent_entries: Vec<_> =
        std::fs::read_dir(out.parent().unwrap()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("evil-bin")).collect();
    assert!(parent_entries.is_empty(), "left behind: {parent_entries:?}");
}

#[test]
fn llama_f32_grouped_query_rmsnorm_swiglu() {
    check_case("llama_f32", "llama", false);
}

#[test]
fn llama3_rope_scaling_bf16_tied() {
    check_case("llama3_scaled_bf16", "llama", false);
}

#[test]
fn mistral_f32_sliding_window() {
    check_case("mistral_f32", "mistral", false);
}

#[test]
fn qwen2_f16_qkv_bias_padded_vocab() {
    check_case("qwen2_f16", "qwen2", false);
}

#[test]
fn qwen3_f32_qk_norm_explicit_head_dim() {
    check_case("qwen3_f32", "qwen3", false);
}

/// The same Llama checkpoint cut into two shards with a `model.safetensors.index.json`, as the
/// hub ships big models, gives the same results.
#[test]
fn llama_f32_sharded_safetensors() {
    let src = fixture("llama_f32");
    let dst = unique_temp_dir("llama-sharded");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dst.join(shard)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::Value::String(shard.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    std::fs::write(dst.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert!(!dst.join("model.safetensors").exists());
    check_checkpoint(&dst, "llama_f32", "llama", false);
}

/// A checkpoint whose `tokenizer_config.json` asks for a BOS (`add_bos_token: true`) that its
/// tokenizer.json's post-processor does not add: the bundle keeps the request, and every prompt
/// starts with that token (here `!`, id 0 of the fixture's GPT-2-style vocabulary).
#[test]
fn tokenizer_config_bos_is_kept_by_the_converter() {
    let src = fixture("llama_f32");
    let dst = lens_tests::fixture::TempDir::new("llama-bos").unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.path().join(f)).unwrap();
    }
    // The BOS named only in special_tokens_map.json, as older repos do.
    std::fs::write(dst.path().join("tokenizer_config.json"), r#"{"add_bos_token": true, "model_max_length": 128}"#).unwrap();
    std::fs::write(dst.path().join("special_tokens_map.json"), r#"{"bos_token": {"content": "!", "lstrip": false}}"#).unwrap();
    let bundle = lens_tests::fixture::TempDir::new("llama-bos-bundle").unwrap();
    let out = bundle.path().join("b");
    lens_model::build::convert::convert_hf_checkpoint(dst.path(), &out, &Progress::default()).unwrap();
    let kept: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(kept, serde_json::json!({"add_bos_token": true, "bos_token": "!"}));
    let engine = common::open(&out);
    let r = Reference::load("llama_f32");
    let ids = engine.tokenize(PROMPT, false).unwrap();
    assert_eq!(ids[0], 0);
    assert_eq!(ids[1..], r.ids[..]);
    // Cutting an over-long prompt to the context keeps the BOS first and drops what follows it.
    let long = [PROMPT; 8].join(" ");
    let all = engine.tokenizer.encode(&long).unwrap();
    let n_ctx = engine.bundle.shape.n_ctx;
    assert!(all.len() > n_ctx);
    let (cut, t) = engine.tokenize_with(&long, true).unwrap();
    assert_eq!(cut.len(), n_ctx);
    assert_eq!(cut[0], 0, "the BOS stays");
    assert_eq!(cut[1..], all[all.len() - (n_ctx - 1)..]);
    assert_eq!(t, Some(lens_model::output::report::Truncation { original_tokens: all.len(), dropped_tokens: all.len() - n_ctx }));
}

/// Gemma 3's tokenizer adds `<image_soft_token>` at id 262144, one past the text model's rows:
/// such a bundle opens (its own vocabulary fits), and a prompt holding that token is refused by
/// name instead of indexing past the unembedding.
#[test]
fn added_token_past_the_vocabulary_opens_and_is_refused_in_a_prompt() {
    let src = fixture("llama_f32");
    let dst = lens_tests::fixture::TempDir::new("llama-added").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.path().join(f)).unwrap();
    }
    let mut tj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap()).unwrap();
    let n = tj["model"]["vocab"].as_object().unwrap().len();
    tj["added_tokens"] = serde_json::json!([{"id": n, "content": "<image_soft_token>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}]);
    std::fs::write(dst.path().join("tokenizer.json"), tj.to_string()).unwrap();
    let out = dst.path().join("bundle");
    lens_model::build::convert::convert_hf_checkpoint(dst.path(), &out, &Progress::default()).unwrap();
    let engine = common::open(&out);
    assert_eq!(engine.bundle.shape.d_vocab, n);
    let r = Reference::load("llama_f32");
    assert_eq!(engine.tokenize(PROMPT, false).unwrap(), r.ids);
    let e = engine.tokenize(&format!("{PROMPT}<image_soft_token>"), false).unwrap_err().to_string();
    assert!(e.contains("<image_soft_token>") && e.contains(&format!("id {n}")), "{e}");
}

#[test]
fn gemma2_f32_softcaps_post_norms_sliding_layers() {
    check_case("gemma2_f32", "gemma2", false);
}

#[test]
fn gemma3_bf16_qk_norm_local_rope_base() {
    check_case("gemma3_bf16", "gemma3_text", false);
}

/// A Gemma 3 config as transformers 4.50 wrote it and the hub still ships it (gemma-3-1b-pt): no
/// `layer_types` but `sliding_window_pattern` (3 here: layers 0, 1, 3 slide, 2 is global), and
/// `rope_scaling` linear (factor 4) on the global layers only, the sliding layers at
/// `rope_local_base_freq`.
#[test]
fn gemma3_transformers_450_config_pattern_and_linear_rope() {
    check_case("gemma3_v450_f32", "gemma3_text", false);
}

/// An image-text Gemma 3 checkpoint (`gemma3`, Gemma3ForConditionalGeneration, the layout of
/// gemma-3-4b-pt and larger): its text model is read from `text_config` — sparse, with
/// transformers' defaults for every key it leaves out (`query_pre_attn_scalar` 256, the pattern 6,
/// the rope bases) — and from the `language_model.model.` keys; the vision tower is ignored.
#[test]
fn gemma3_multimodal_checkpoint_gives_its_text_model() {
    check_case("gemma3_multimodal_f32", "gemma3_text", false);
}
