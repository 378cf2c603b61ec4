//! A naive, obviously-correct f64 GPT-2 forward pass and the lens metrics of DESIGN 3.2-3.3,
//! reading a Hugging Face GPT-2 folder (`config.json` + `model.safetensors`) directly.
//!
//! Plain loops, f64 everywhere, no shared code with `lens_model`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One transformer block's weights, Hugging Face Conv1D layout (`[in][out]`, row-major).
#[derive(Debug, Clone)]
pub struct RefBlock {
    pub ln1_w: Vec<f64>,
    pub ln1_b: Vec<f64>,
    /// `[d][3d]`: columns `0..d` are Q, `d..2d` K, `2d..3d` V; head h uses `h*d_head..(h+1)*d_head`.
    pub c_attn_w: Vec<f64>,
    pub c_attn_b: Vec<f64>,
    /// `[d][d]`.
    pub attn_proj_w: Vec<f64>,
    pub attn_proj_b: Vec<f64>,
    pub ln2_w: Vec<f64>,
    pub ln2_b: Vec<f64>,
    /// `[d][d_mlp]`.
    pub fc_w: Vec<f64>,
    pub fc_b: Vec<f64>,
    /// `[d_mlp][d]`.
    pub mlp_proj_w: Vec<f64>,
    pub mlp_proj_b: Vec<f64>,
}

/// GPT-2 weights in f64.
#[derive(Debug, Clone)]
pub struct RefModel {
    pub n_layer: usize,
    pub n_head: usize,
    pub d_model: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub eps: f64,
    /// `[d_vocab][d_model]`.
    pub wte: Vec<f64>,
    /// `[n_ctx][d_model]`.
    pub wpe: Vec<f64>,
    pub blocks: Vec<RefBlock>,
    pub ln_f_w: Vec<f64>,
    pub ln_f_b: Vec<f64>,
    /// The unembedding stored as `[d_vocab][d_model]` (row t = column t of W_U): `lm_head.weight`
    /// if the checkpoint has it, else `wte` (tied).
    pub unembed: Vec<f64>,
}

/// Everything `forward` computes.
#[derive(Debug, Clone)]
pub struct RefTrace {
    /// TransformerLens hook names (`blocks.{l}.hook_resid_pre`, `hook_attn_out`,
    /// `hook_resid_mid`, `hook_mlp_out`, `hook_resid_post`), each `[pos][d_model]`.
    pub hooks: BTreeMap<String, Vec<Vec<f64>>>,
    /// `[pos][d_vocab]`.
    pub logits: Vec<Vec<f64>>,
}

impl RefTrace {
    /// A hook's activations; panics with the name if absent.
    pub fn hook(&self, name: &str) -> &Vec<Vec<f64>> {
        self.hooks.get(name).unwrap_or_else(|| panic!("no hook {name}"))
    }
}

/// Which decoder to apply at each site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefDecoder {
    /// LayerNorm_final (x's own statistics) then W_U.
    LogitLens,
    /// x · W_U, no LayerNorm.
    Raw,
}

/// Read all tensors of a safetensors file as f64, keyed by bare name (a `transformer.` prefix is
/// removed). Supports F32, F16, BF16 and F64.
pub fn read_safetensors_f64(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e:?}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let vals: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F32 => data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            safetensors::Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect(),
            safetensors::Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect(),
            safetensors::Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            // Non-float buffers (e.g. a bool `attn.bias` mask) are not needed by the reference.
            _ => continue,
        };
        let bare = name.strip_prefix("transformer.").unwrap_or(&name).to_owned();
        out.insert(bare, (view.shape().to_vec(), vals));
    }
    out
}

impl RefModel {
    /// Load an HF GPT-2 folder: `config.json` and `model.safetensors` (either key style; any float
    /// dtype; `attn.bias` / `attn.masked_bias` buffers are ignored). Panics on any problem.
    pub fn load(dir: &Path) -> RefModel {
        let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap_or_else(|e| panic!("reading {}/config.json: {e}", dir.display()));
        let cfg: serde_json::Value = serde_json::from_str(&cfg_text).unwrap();
        let get = |k: &str| cfg.get(k).and_then(serde_json::Value::as_u64).map(|v| v as usize);
        let n_layer = get("n_layer").expect("config n_layer");
        let n_head = get("n_head").expect("config n_head");
        let d_model = get("n_embd").expect("config n_embd");
        let eps = cfg.get("layer_norm_epsilon").and_then(serde_json::Value::as_f64).unwrap_or(1e-5);
        if let Some(act) = cfg.get("activation_function").and_then(serde_json::Value::as_str) {
            assert_eq!(act, "gelu_new", "reference implements gelu_new only");
        }

        let mut t = read_safetensors_f64(&dir.join("model.safetensors"));
        // Shapes we do not know from the config alone.
        let wte_shape = t.get("wte.weight").expect("missing tensor wte.weight").0.clone();
        assert_eq!(wte_shape.len(), 2);
        let d_vocab = wte_shape[0];
        assert_eq!(wte_shape[1], d_model);
        let n_ctx = t.get("wpe.weight").expect("missing tensor wpe.weight").0[0];
        let d_mlp = t.get("h.0.mlp.c_fc.bias").map(|x| x.0[0]).unwrap_or(4 * d_model);
        let has_lm_head = t.contains_key("lm_head.weight");
        if let Some(v) = get("vocab_size") {
            assert_eq!(v, d_vocab, "config vocab_size vs wte");
        }
        assert_eq!(d_model % n_head, 0);
        let mut take = |name: &str, shape: &[usize]| -> Vec<f64> {
            let (s, v) = t.remove(name).unwrap_or_else(|| panic!("missing tensor {name}"));
            assert_eq!(s, shape, "shape of {name}");
            v
        };

        let wte = take("wte.weight", &[d_vocab, d_model]);
        let wpe = take("wpe.weight", &[n_ctx, d_model]);
        let d = d_model;
        let blocks = (0..n_layer)
            .map(|l| RefBlock {
                ln1_w: take(&format!("h.{l}.ln_1.weight"), &[d]),
                ln1_b: take(&format!("h.{l}.ln_1.bias"), &[d]),
                c_attn_w: take(&format!("h.{l}.attn.c_attn.weight"), &[d, 3 * d]),
                c_attn_b: take(&format!("h.{l}.attn.c_attn.bias"), &[3 * d]),
                attn_proj_w: take(&format!("h.{l}.attn.c_proj.weight"), &[d, d]),
                attn_proj_b: take(&format!("h.{l}.attn.c_proj.bias"), &[d]),
                ln2_w: take(&format!("h.{l}.ln_2.weight"), &[d]),
                ln2_b: take(&format!("h.{l}.ln_2.bias"), &[d]),
                fc_w: take(&format!("h.{l}.mlp.c_fc.weight"), &[d, d_mlp]),
                fc_b: take(&format!("h.{l}.mlp.c_fc.bias"), &[d_mlp]),
                mlp_proj_w: take(&format!("h.{l}.mlp.c_proj.weight"), &[d_mlp, d]),
                mlp_proj_b: take(&format!("h.{l}.mlp.c_proj.bias"), &[d]),
            })
            .collect();
        let ln_f_w = take("ln_f.weight", &[d]);
        let ln_f_b = take("ln_f.bias", &[d]);
        let unembed = if has_lm_head { take("lm_head.weight", &[d_vocab, d]) } else { wte.clone() };
        RefModel { n_layer, n_head, d_model, d_mlp, d_vocab, n_ctx, eps, wte, wpe, blocks, ln_f_w, ln_f_b, unembed }
    }

    /// Column `t` of W_U (`[d_model]`).
    pub fn w_u(&self, t: u32) -> &[f64] {
        let d = self.d_model;
        let t = t as usize;
        &self.unembed[t * d..(t + 1) * d]
    }

    /// The full forward pass with every hook recorded.
    pub fn forward(&self, ids: &[u32]) -> RefTrace {
        let d = self.d_model;
        let n = ids.len();
        assert!(n >= 1 && n <= self.n_ctx, "{n} tokens for n_ctx {}", self.n_ctx);
        let mut hooks = BTreeMap::new();

        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let id = id as usize;
                assert!(id < self.d_vocab, "token id {id} out of vocab");
                (0..d).map(|i| self.wte[id * d + i] + self.wpe[p * d + i]).collect()
            })
            .collect();

        for (l, b) in self.blocks.iter().enumerate() {
            hooks.insert(format!("blocks.{l}.hook_resid_pre"), x.clone());

            let h: Vec<Vec<f64>> = x.iter().map(|r| layer_norm(r, &b.ln1_w, &b.ln1_b, self.eps)).collect();
            let attn_out = self.attention(b, &h);
            let resid_mid: Vec<Vec<f64>> = add_rows(&x, &attn_out);

            let h2: Vec<Vec<f64>> = resid_mid.iter().map(|r| layer_norm(r, &b.ln2_w, &b.ln2_b, self.eps)).collect();
            let mlp_out: Vec<Vec<f64>> = h2
                .iter()
                .map(|r| {
                    let f: Vec<f64> = linear(r, &b.fc_w, &b.fc_b, d, self.d_mlp).into_iter().map(gelu_new).collect();
                    linear(&f, &b.mlp_proj_w, &b.mlp_proj_b, self.d_mlp, d)
                })
                .collect();
            let resid_post = add_rows(&resid_mid, &mlp_out);

            hooks.insert(format!("blocks.{l}.hook_attn_out"), attn_out);
            hooks.insert(format!("blocks.{l}.hook_resid_mid"), resid_mid);
            hooks.insert(format!("blocks.{l}.hook_mlp_out"), mlp_out);
            hooks.insert(format!("blocks.{l}.hook_resid_post"), resid_post.clone());
            x = resid_post;
        }

        let logits = x.iter().map(|r| self.decode(r)).collect();
        RefTrace { hooks, logits }
    }

    /// Causal multi-head self-attention on already-normalised rows `h` (`[pos][d]`), including
    /// the output projection and its bias.
    fn attention(&self, b: &RefBlock, h: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let d = self.d_model;
        let n = h.len();
        let dh = d / self.n_head;
        let scale = 1.0 / (dh as f64).sqrt();
        let qkv: Vec<Vec<f64>> = h.iter().map(|r| linear(r, &b.c_attn_w, &b.c_attn_b, d, 3 * d)).collect();
        let mut z = vec![vec![0.0f64; d]; n];
        for head in 0..self.n_head {
            let q_off = head * dh;
            let k_off = d + head * dh;
            let v_off = 2 * d + head * dh;
            for i in 0..n {
                // Scores against positions 0..=i only (causal).
                let scores: Vec<f64> = (0..=i).map(|j| (0..dh).map(|e| qkv[i][q_off + e] * qkv[j][k_off + e]).sum::<f64>() * scale).collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = w.iter().sum();
                for (j, wj) in w.iter().enumerate() {
                    let p = wj / total;
                    for e in 0..dh {
                        z[i][head * dh + e] += p * qkv[j][v_off + e];
                    }
                }
            }
        }
        z.iter().map(|r| linear(r, &b.attn_proj_w, &b.attn_proj_b, d, d)).collect()
    }

    /// LayerNorm_final of `x` with x's own mean and (biased) variance.
    pub fn ln_final(&self, x: &[f64]) -> Vec<f64> {
        layer_norm(x, &self.ln_f_w, &self.ln_f_b, self.eps)
    }

    /// σ_final of a residual row: sqrt(var(x) + eps), biased variance.
    pub fn sigma_final(&self, x: &[f64]) -> f64 {
        let (_, var) = mean_var(x);
        (var + self.eps).sqrt()
    }

    /// Logit-lens decoder: LayerNorm_final(x) (x's own statistics) · W_U. `[d_vocab]`.
    pub fn decode(&self, x: &[f64]) -> Vec<f64> {
        self.decode_raw(&self.ln_final(x))
    }

    /// Raw decoder: x · W_U, no LayerNorm. `[d_vocab]`.
    pub fn decode_raw(&self, x: &[f64]) -> Vec<f64> {
        let d = self.d_model;
        assert_eq!(x.len(), d);
        self.unembed.chunks_exact(d).map(|row| dot(row, x)).collect()
    }

    /// Decode with the chosen decoder.
    pub fn decode_with(&self, decoder: RefDecoder, x: &[f64]) -> Vec<f64> {
        match decoder {
            RefDecoder::LogitLens => self.decode(x),
            RefDecoder::Raw => self.decode_raw(x),
        }
    }

    /// Direct logit attribution to `token` at `pos`: terms `embed`, then `{l}.attn`, `{l}.mlp` per
    /// layer, then `ln_bias`. Each component o gives (o - mean(o)) / σ_final(pos) · (γ ⊙ W_U[:, t]),
    /// σ_final = sqrt(var(resid_post_last[pos]) + eps); `ln_bias` = β · W_U[:, t].
    /// The terms sum to `trace.logits[pos][token]`.
    pub fn dla(&self, trace: &RefTrace, pos: usize, token: u32) -> Vec<(String, f64)> {
        let last = self.n_layer - 1;
        let resid = &trace.hook(&format!("blocks.{last}.hook_resid_post"))[pos];
        let sigma = self.sigma_final(resid);
        let dir: Vec<f64> = self.w_u(token).iter().zip(&self.ln_f_w).map(|(w, g)| w * g).collect();
        let term = |o: &[f64]| {
            let (m, _) = mean_var(o);
            o.iter().zip(&dir).map(|(oi, di)| (oi - m) * di).sum::<f64>() / sigma
        };
        let mut out = vec![("embed".to_owned(), term(&trace.hook("blocks.0.hook_resid_pre")[pos]))];
        for l in 0..self.n_layer {
            out.push((format!("{l}.attn"), term(&trace.hook(&format!("blocks.{l}.hook_attn_out"))[pos])));
            out.push((format!("{l}.mlp"), term(&trace.hook(&format!("blocks.{l}.hook_mlp_out"))[pos])));
        }
        out.push(("ln_bias".to_owned(), dot(&self.ln_f_b, self.w_u(token))));
        out
    }

    /// Every metric of the report (DESIGN 3.4) for `ids`, computed naively from `forward(ids)`.
    pub fn report(&self, ids: &[u32], subblocks: bool, k: usize, decoder: RefDecoder) -> RefReport {
        let trace = self.forward(ids);
        self.report_from_trace(&trace, ids, subblocks, k, decoder)
    }

    /// Same as [`RefModel::report`] for an existing trace of `ids`.
    pub fn report_from_trace(&self, trace: &RefTrace, ids: &[u32], subblocks: bool, k: usize, decoder: RefDecoder) -> RefReport {
        let site_rows = sites(trace, self.n_layer, subblocks);
        let n = ids.len();
        // metrics[site][pos]
        let metrics: Vec<Vec<RefSiteMetrics>> =
            site_rows.iter().map(|(_, rows)| rows.iter().map(|x| RefSiteMetrics::new(self.decode_with(decoder, x), k)).collect()).collect();
        let final_m = metrics.last().unwrap();
        let embed_m = metrics.first().unwrap();
        let grid = |f: &dyn Fn(&RefSiteMetrics, usize) -> f64| -> Vec<Vec<f64>> {
            metrics.iter().map(|row| row.iter().enumerate().map(|(p, m)| f(m, p)).collect()).collect()
        };
        let grid_u = |f: &dyn Fn(&RefSiteMetrics, usize) -> usize| -> Vec<Vec<usize>> {
            metrics.iter().map(|row| row.iter().enumerate().map(|(p, m)| f(m, p)).collect()).collect()
        };
        RefReport {
            sites: site_rows.iter().map(|(s, _)| s.clone()).collect(),
            top1_id: metrics.iter().map(|row| row.iter().map(|m| m.top_ids[0]).collect()).collect(),
            top1_logit: grid(&|m, _| m.top_logits[0]),
            top1_prob: grid(&|m, _| m.top_probs[0]),
            rank_of_final_top1: grid_u(&|m, p| m.rank_of(final_m[p].top_ids[0])),
            rank_of_next: metrics.iter().map(|row| row.iter().enumerate().map(|(p, m)| (p + 1 < n).then(|| m.rank_of(ids[p + 1]))).collect()).collect(),
            rank_of_input: grid_u(&|m, p| m.rank_of(ids[p])),
            kl_to_final: grid(&|m, p| kl_log_probs(&final_m[p].log_probs, &m.log_probs)),
            kl_to_input: grid(&|m, p| kl_log_probs(&embed_m[p].log_probs, &m.log_probs)),
            entropy: grid(&|m, _| m.entropy),
            nll_next: metrics.iter().map(|row| row.iter().enumerate().map(|(p, m)| (p + 1 < n).then(|| m.nll(ids[p + 1]))).collect()).collect(),
            top_k_ids: metrics.iter().map(|row| row.iter().map(|m| m.top_ids.clone()).collect()).collect(),
            top_k_logits: metrics.iter().map(|row| row.iter().map(|m| m.top_logits.clone()).collect()).collect(),
            top_k_probs: metrics.iter().map(|row| row.iter().map(|m| m.top_probs.clone()).collect()).collect(),
        }
    }
}

/// The report's metric grids (DESIGN 3.4), each `[n_sites][n_positions]` (top-k: `[..][..][k]`).
#[derive(Debug, Clone)]
pub struct RefReport {
    pub sites: Vec<String>,
    pub top1_id: Vec<Vec<u32>>,
    pub top1_logit: Vec<Vec<f64>>,
    pub top1_prob: Vec<Vec<f64>>,
    pub rank_of_final_top1: Vec<Vec<usize>>,
    /// `None` at the last position.
    pub rank_of_next: Vec<Vec<Option<usize>>>,
    pub rank_of_input: Vec<Vec<usize>>,
    pub kl_to_final: Vec<Vec<f64>>,
    pub kl_to_input: Vec<Vec<f64>>,
    pub entropy: Vec<Vec<f64>>,
    /// `None` at the last position.
    pub nll_next: Vec<Vec<Option<f64>>>,
    pub top_k_ids: Vec<Vec<Vec<u32>>>,
    pub top_k_logits: Vec<Vec<Vec<f64>>>,
    pub top_k_probs: Vec<Vec<Vec<f64>>>,
}

/// Metrics of one decoded site at one position.
#[derive(Debug, Clone)]
pub struct RefSiteMetrics {
    /// The decoded logits, `[d_vocab]`.
    pub logits: Vec<f64>,
    /// log-softmax of `logits`.
    pub log_probs: Vec<f64>,
    /// The k largest logits' ids, ties by lower id.
    pub top_ids: Vec<u32>,
    pub top_logits: Vec<f64>,
    pub top_probs: Vec<f64>,
    /// -Σ q log q.
    pub entropy: f64,
    /// log Σ exp(logits).
    pub lse: f64,
}

impl RefSiteMetrics {
    pub fn new(logits: Vec<f64>, k: usize) -> Self {
        let lse = log_sum_exp(&logits);
        let log_probs: Vec<f64> = logits.iter().map(|l| l - lse).collect();
        let top = top_k(&logits, k);
        RefSiteMetrics {
            top_ids: top.iter().map(|&(i, _)| i).collect(),
            top_logits: top.iter().map(|&(_, l)| l).collect(),
            top_probs: top.iter().map(|&(i, _)| log_probs[i as usize].exp()).collect(),
            entropy: -log_probs.iter().map(|lq| lq.exp() * lq).sum::<f64>(),
            lse,
            log_probs,
            logits,
        }
    }

    /// 1 + #{v : logit_v > logit_t}.
    pub fn rank_of(&self, t: u32) -> usize {
        rank(&self.logits, t as usize)
    }

    /// q(t).
    pub fn prob(&self, t: u32) -> f64 {
        self.log_probs[t as usize].exp()
    }

    /// -log q(t).
    pub fn nll(&self, t: u32) -> f64 {
        -self.log_probs[t as usize]
    }
}

/// Rows of every grid in DESIGN 3.2 order: `embed` (= blocks.0.hook_resid_pre), then per layer l:
/// `{l}.attn` (= blocks.l.hook_resid_mid, only if `subblocks`) and `{l}` (= blocks.l.hook_resid_post).
pub fn sites(trace: &RefTrace, n_layer: usize, subblocks: bool) -> Vec<(String, Vec<Vec<f64>>)> {
    let mut out = vec![("embed".to_owned(), trace.hook("blocks.0.hook_resid_pre").clone())];
    for l in 0..n_layer {
        if subblocks {
            out.push((format!("{l}.attn"), trace.hook(&format!("blocks.{l}.hook_resid_mid")).clone()));
        }
        out.push((format!("{l}"), trace.hook(&format!("blocks.{l}.hook_resid_post")).clone()));
    }
    out
}

/// 1 + #{v : logits[v] > logits[t]} (1 = top; ties do not push a token down).
pub fn rank(logits: &[f64], t: usize) -> usize {
    let lt = logits[t];
    1 + logits.iter().filter(|&&l| l > lt).count()
}

/// The k largest logits as (id, logit), largest first, ties broken by the lower id.
pub fn top_k(logits: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut best: Vec<(u32, f64)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &l) in logits.iter().enumerate() {
        // Ids come in increasing order, so an equal logit already kept has the lower id and wins.
        if best.len() == k && l <= best[k - 1].1 {
            continue;
        }
        let at = best.iter().position(|&(_, b)| l > b).unwrap_or(best.len());
        best.insert(at, (i as u32, l));
        best.truncate(k);
    }
    best
}

/// log Σ exp(logits), with the max subtracted first.
pub fn log_sum_exp(logits: &[f64]) -> f64 {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
}

/// logits - log Σ exp(logits).
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|l| l - lse).collect()
}

/// softmax(logits).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    log_softmax(logits).into_iter().map(f64::exp).collect()
}

/// KL(P || Q) = Σ p (log p - log q) in nats, exact (no clipping), P and Q given as logits.
pub fn kl(p_logits: &[f64], q_logits: &[f64]) -> f64 {
    assert_eq!(p_logits.len(), q_logits.len());
    kl_log_probs(&log_softmax(p_logits), &log_softmax(q_logits))
}

/// KL(P || Q) = Σ p (log p - log q) from log-probabilities.
pub fn kl_log_probs(log_p: &[f64], log_q: &[f64]) -> f64 {
    assert_eq!(log_p.len(), log_q.len());
    log_p.iter().zip(log_q).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// -Σ q log q of softmax(logits).
pub fn entropy(logits: &[f64]) -> f64 {
    -log_softmax(logits).iter().map(|lq| lq.exp() * lq).sum::<f64>()
}

/// -log softmax(logits)[t].
pub fn nll(logits: &[f64], t: usize) -> f64 {
    -(logits[t] - log_sum_exp(logits))
}

/// 0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³))).
pub fn gelu_new(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// Mean and biased variance.
pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var)
}

/// (x - mean) / sqrt(var + eps) ⊙ w + b, biased variance.
pub fn layer_norm(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let (mean, var) = mean_var(x);
    let s = (var + eps).sqrt();
    x.iter().zip(w).zip(b).map(|((xi, wi), bi)| (xi - mean) / s * wi + bi).collect()
}

/// x · W + b with W row-major `[n_in][n_out]` (HF Conv1D layout).
pub fn linear(x: &[f64], w: &[f64], b: &[f64], n_in: usize, n_out: usize) -> Vec<f64> {
    assert_eq!(x.len(), n_in);
    assert_eq!(w.len(), n_in * n_out);
    assert_eq!(b.len(), n_out);
    let mut out = b.to_vec();
    for (i, xi) in x.iter().enumerate() {
        let row = &w[i * n_out..(i + 1) * n_out];
        for (o, wio) in out.iter_mut().zip(row) {
            *o += xi * wio;
        }
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add_rows(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{Dtype, KeyStyle, RandomGpt2, unique_temp_dir, write_checkpoint};

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn checkpoint(spec: &RandomGpt2) -> (TempDir, RefModel) {
        let dir = TempDir(unique_temp_dir("reference"));
        write_checkpoint(&dir.0, spec).unwrap();
        let m = RefModel::load(&dir.0);
        (dir, m)
    }

    fn small(seed: u64) -> RandomGpt2 {
        RandomGpt2 { vocab_size: 300, ..RandomGpt2::tiny(seed) }
    }

    const IDS: [u32; 7] = [464, 3290, 318, 257, 1332, 13, 198];

    fn ids_for(m: &RefModel) -> Vec<u32> {
        IDS.iter().map(|&i| i % m.d_vocab as u32).collect()
    }

    #[test]
    fn softmax_sums_to_one() {
        let l = [1.0, -2.0, 3.5, 700.0, 699.0, -1e3];
        let s: f64 = softmax(&l).iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
        assert!(log_softmax(&l).iter().all(|x| x.is_finite()));
        let e = entropy(&[0.0; 8]);
        assert!((e - 8f64.ln()).abs() < 1e-12);
        assert!((nll(&[0.0; 4], 2) - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn rank_ties_and_top_k_order() {
        let l = [1.0, 3.0, 3.0, 2.0, 3.0, -1.0];
        assert_eq!(rank(&l, 1), 1);
        assert_eq!(rank(&l, 2), 1);
        assert_eq!(rank(&l, 4), 1);
        assert_eq!(rank(&l, 3), 4);
        assert_eq!(rank(&l, 0), 5);
        assert_eq!(rank(&l, 5), 6);
        assert_eq!(top_k(&l, 4), vec![(1, 3.0), (2, 3.0), (4, 3.0), (3, 2.0)]);
        assert_eq!(top_k(&l, 2), vec![(1, 3.0), (2, 3.0)]);
        assert!(top_k(&l, 0).is_empty());
        assert_eq!(top_k(&l, 10).len(), 6);
        assert_eq!(top_k(&l, 10).last(), Some(&(5, -1.0)));
        // Against a full sort.
        let mut rng = 12345u64;
        let v: Vec<f64> = (0..1000)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((rng >> 33) % 50) as f64
            })
            .collect();
        let mut idx: Vec<u32> = (0..1000).collect();
        idx.sort_by(|&a, &b| v[b as usize].partial_cmp(&v[a as usize]).unwrap().then(a.cmp(&b)));
        let tk: Vec<u32> = top_k(&v, 25).into_iter().map(|(i, _)| i).collect();
        assert_eq!(tk, idx[..25].to_vec());
    }

    #[test]
    fn kl_properties() {
        let p = [0.3, -1.0, 2.0, 0.0];
        assert!(kl(&p, &p).abs() < 1e-15);
        let shifted: Vec<f64> = p.iter().map(|x| x + 5.0).collect();
        assert!(kl(&p, &shifted).abs() < 1e-12);
        let q = [1.0, 1.0, -2.0, 0.5];
        assert!(kl(&p, &q) > 0.0);
        // Direct definition.
        let sp = softmax(&p);
        let sq = softmax(&q);
        let direct: f64 = sp.iter().zip(&sq).map(|(a, b)| a * (a.ln() - b.ln())).sum();
        assert!((kl(&p, &q) - direct).abs() < 1e-12);
    }

    #[test]
    fn dla_sums_to_logits_and_last_site_matches() {
        let spec = RandomGpt2::tiny(7);
        let (_dir, m) = checkpoint(&spec);
        assert_eq!((m.n_layer, m.n_head, m.d_model, m.d_vocab, m.n_ctx), (2, 4, 32, 50257, 64));
        let ids = ids_for(&m);
        let trace = m.forward(&ids);
        for pos in [0, 3, ids.len() - 1] {
            for t in [0u32, 464, 50256, trace.logits[pos].iter().enumerate().fold(0, |b, (i, &l)| if l > trace.logits[pos][b] { i } else { b }) as u32] {
                let terms = m.dla(&trace, pos, t);
                assert_eq!(terms.len(), 2 + 2 * m.n_layer);
                assert_eq!(terms[0].0, "embed");
                assert_eq!(terms[1].0, "0.attn");
                assert_eq!(terms[2].0, "0.mlp");
                assert_eq!(terms.last().unwrap().0, "ln_bias");
                let s: f64 = terms.iter().map(|(_, v)| v).sum();
                let want = trace.logits[pos][t as usize];
                assert!((s - want).abs() < 1e-10, "pos {pos} t {t}: {s} vs {want}");
            }
        }
        // The last site decoded is the model's logits; the lens is not trivial.
        let rows = sites(&trace, m.n_layer, true);
        let names: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["embed", "0.attn", "0", "1.attn", "1"]);
        assert_eq!(sites(&trace, m.n_layer, false).len(), 3);
        for (p, x) in rows.last().unwrap().1.iter().enumerate() {
            assert_eq!(m.decode(x), trace.logits[p]);
        }
        let r = m.report_from_trace(&trace, &ids, true, 5, RefDecoder::LogitLens);
        assert_eq!(r.sites.len(), 5);
        assert!(r.kl_to_final.last().unwrap().iter().all(|&k| k.abs() < 1e-12));
        assert!(r.kl_to_input[0].iter().all(|&k| k.abs() < 1e-12));
        assert!(r.kl_to_final[0].iter().all(|&k| k > 1e-3), "lens should not be trivial: {:?}", r.kl_to_final);
        assert!(r.rank_of_final_top1.last().unwrap().iter().all(|&k| k == 1));
        assert_eq!(r.rank_of_next[0].last(), Some(&None));
        assert_eq!(r.nll_next[0].last(), Some(&None));
        for (row, ent) in r.top_k_probs.iter().zip(&r.entropy) {
            for (probs, e) in row.iter().zip(ent) {
                assert!(probs.windows(2).all(|w| w[0] >= w[1]));
                assert!(*e > 0.0 && *e <= (m.d_vocab as f64).ln() + 1e-9);
            }
        }
    }

    #[test]
    fn causal_and_dtypes_and_key_styles() {
        let base = small(3);
        let (_d0, m32) = checkpoint(&base);
        let ids = ids_for(&m32);
        let full = m32.forward(&ids);
        let prefix = m32.forward(&ids[..4]);
        for p in 0..4 {
            for (a, b) in full.logits[p].iter().zip(&prefix.logits[p]) {
                assert!((a - b).abs() < 1e-12, "causality");
            }
        }
        for dtype in [Dtype::F16, Dtype::BF16] {
            let spec = RandomGpt2 { dtype, key_style: KeyStyle::Bare, with_attn_bias: true, with_lm_head: true, ..base.clone() };
            let (_d, m) = checkpoint(&spec);
            assert_eq!(m.unembed, m.wte);
            let t = m.forward(&ids);
            let tol = if dtype == Dtype::F16 { 0.02 } else { 0.15 };
            for (ra, rb) in t.logits.iter().zip(&full.logits) {
                for (a, b) in ra.iter().zip(rb) {
                    assert!((a - b).abs() < tol, "{dtype:?}: {a} vs {b}");
                }
            }
        }
        // Same dtype, other key style and extras: bit-identical weights.
        let spec = RandomGpt2 { key_style: KeyStyle::Bare, with_attn_bias: true, with_lm_head: true, ..base };
        let (_d, m) = checkpoint(&spec);
        assert_eq!(m.wte, m32.wte);
        assert_eq!(m.forward(&ids).logits, full.logits);
    }

    #[test]
    fn reference_speed_tiny_full_vocab() {
        let (_dir, m) = checkpoint(&RandomGpt2::tiny(1));
        let ids: Vec<u32> = (0..20).map(|i| (i * 2477 + 11) % 50257).collect();
        let t0 = std::time::Instant::now();
        let r = m.report(&ids, true, 10, RefDecoder::LogitLens);
        let dt = t0.elapsed();
        assert_eq!(r.top_k_ids[0][0].len(), 10);
        eprintln!("reference report for 20 tokens x 5 sites: {dt:?}");
    }
}
