//! The nnsight engine: the logit lens computed inside an nnsight trace by our Python module
//! (`assets/nnsight/logit_lens_nnsight.py`, its message format in its docstring), locally or on
//! NDIF, and only the reduced rows sent back; the report is assembled by the same code as the
//! local engine's ([`crate::output::assemble`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build::spec::Residual;
use crate::error::{LensError, Progress, Result};
use crate::lens::attribution::Attribution;
use crate::lens::metrics::{NO_TARGET, RowMetrics};
use crate::output::assemble;
pub use crate::output::report::EngineInfo;
use crate::output::report::{LensReport, ModelInfo, RunInfo, SCHEMA};
use crate::run::engine::LensOptions;
use crate::run::sites::site_list;
use crate::source::tokenizer::LensTokenizer;

/// The message format's version, the module's `PROTOCOL`.
pub const PROTOCOL: u64 = 1;
/// The Python that runs the module, when `--python` is not given.
pub const PYTHON_ENV: &str = "LOGIT_LENS_PYTHON";
/// The module's path, overriding where the app looks for it.
pub const SCRIPT_ENV: &str = "LOGIT_LENS_NNSIGHT_SCRIPT";
/// The module's file name.
pub const SCRIPT_FILE: &str = "logit_lens_nnsight.py";

/// How the engine runs the model.
#[derive(Debug, Clone)]
pub struct NnsightOptions {
    /// A Hugging Face checkpoint folder or hub id, as nnsight loads it.
    pub model: String,
    /// On NDIF (`NDIF_API_KEY` in the environment) instead of this machine.
    pub remote: bool,
    /// The Python with torch and nnsight.
    pub python: PathBuf,
    /// The engine module.
    pub script: PathBuf,
}

/// Where the module may be: [`SCRIPT_ENV`], beside the executable (installed layouts), the source tree.
pub fn script_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os(SCRIPT_ENV).filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        v.push(exe_dir.join("nnsight").join(SCRIPT_FILE));
        v.push(exe_dir.join("../share/logit-lens/nnsight").join(SCRIPT_FILE));
    }
    v.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/nnsight/")).join(SCRIPT_FILE));
    v
}

/// The engine module, or an error naming where it was looked for.
pub fn find_script() -> Result<PathBuf> {
    let c = script_candidates();
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        LensError::invalid(format!("the nnsight engine module {SCRIPT_FILE} is missing (looked in {}): reinstall logit-lens", tried.join(", ")))
    })
}

/// The Python to run: `arg`, else [`PYTHON_ENV`], else `python3`.
pub fn python_of(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf).or_else(|| std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("python3"))
}

/// A number of a JSON row, NaN for `null`.
fn num(v: &serde_json::Value) -> Result<f64> {
    match v {
        serde_json::Value::Null => Ok(f64::NAN),
        v => v.as_f64().ok_or_else(|| LensError::Runtime(format!("the nnsight engine sent {v} where a number belongs"))),
    }
}

/// A list of a JSON row.
fn list(v: &serde_json::Value) -> Result<&Vec<serde_json::Value>> {
    v.as_array().ok_or_else(|| LensError::Runtime(format!("the nnsight engine sent {v} where a list belongs")))
}

/// One row of the result (see the module's docstring) as the kernel's [`RowMetrics`].
fn row_metrics(row: &serde_json::Value, k: usize, n_targets: usize, d_vocab: usize) -> Result<RowMetrics> {
    let f = list(row)?;
    let [lse, entropy, klf, kli, ids, logits, tl, tr] = f.as_slice() else {
        return Err(LensError::Runtime(format!("the nnsight engine sent a row of {} fields, not 8", f.len())));
    };
    let id = |v: &serde_json::Value| -> Result<u32> {
        v.as_u64().filter(|&i| (i as usize) < d_vocab).map(|i| i as u32).ok_or_else(|| LensError::Runtime(format!("the nnsight engine sent token id {v}")))
    };
    let (ids, logits) = (list(ids)?, list(logits)?);
    if ids.len() != logits.len() || ids.len() != k.min(d_vocab) {
        return Err(LensError::Runtime(format!("the nnsight engine sent {} top tokens, asked for {k}", ids.len())));
    }
    let top = ids.iter().zip(logits).map(|(i, l)| Ok((id(i)?, num(l)? as f32))).collect::<Result<Vec<_>>>()?;
    let (tl, tr) = (list(tl)?, list(tr)?);
    if tl.len() != n_targets || tr.len() != n_targets {
        return Err(LensError::Runtime(format!("the nnsight engine sent {} target logits and {} ranks, expected {n_targets}", tl.len(), tr.len())));
    }
    let target_logit = tl.iter().map(|v| num(v).map(|x| x as f32)).collect::<Result<Vec<_>>>()?;
    let target_rank = tr
        .iter()
        .map(|v| v.as_u64().map(|r| r as u32).ok_or_else(|| LensError::Runtime(format!("the nnsight engine sent rank {v}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(RowMetrics { lse: num(lse)?, entropy: num(entropy)?, top, target_logit, target_rank, kl_to_final: num(klf)?, kl_to_input: num(kli)? })
}

/// Runs the module and returns its result message, its bytes counted; status lines go to
/// `progress`. Cancelling `progress` kills the Python process.
fn exchange(opts: &NnsightOptions, request: &serde_json::Value, progress: &Progress) -> Result<(serde_json::Value, usize)> {
    let mut child = Command::new(&opts.python)
        .arg(&opts.script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LensError::invalid(format!("cannot start {} for the nnsight engine: {e} (set --python or {PYTHON_ENV})", opts.python.display())))?;
    let mut stdin = child.stdin.take().ok_or_else(|| LensError::Runtime("internal: no stdin for the nnsight engine".into()))?;
    let stdout = child.stdout.take().ok_or_else(|| LensError::Runtime("internal: no stdout for the nnsight engine".into()))?;
    let stderr = child.stderr.take().ok_or_else(|| LensError::Runtime("internal: no stderr for the nnsight engine".into()))?;
    writeln!(stdin, "{request}").map_err(|e| LensError::Runtime(format!("cannot send the request to the nnsight engine: {e}")))?;
    drop(stdin);
    let (tx, rx) = mpsc::channel::<std::io::Result<String>>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let tail = std::thread::spawn(move || {
        let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for line in BufReader::new(stderr).lines().map_while(std::io::Result::ok) {
            if last.len() == 12 {
                last.pop_front();
            }
            last.push_back(line);
        }
        last.into_iter().collect::<Vec<_>>().join("\n")
    });
    let outcome = loop {
        if progress.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LensError::Cancelled);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(line)) => {
                let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                match msg.get("type").and_then(serde_json::Value::as_str) {
                    Some("status") => progress.report(msg.get("message").and_then(serde_json::Value::as_str).unwrap_or("nnsight"), 0.5),
                    Some("result") => break Ok((msg, line.len())),
                    Some("error") => {
                        let text = msg.get("message").and_then(serde_json::Value::as_str).unwrap_or("(no message)");
                        break Err(LensError::invalid(format!("the nnsight engine: {text}")));
                    }
                    _ => {}
                }
            }
            Ok(Err(e)) => break Err(LensError::Runtime(format!("reading the nnsight engine's output: {e}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(LensError::Runtime(String::new())),
        }
    };
    let status = child.wait().map_err(|e| LensError::Runtime(format!("the nnsight engine: {e}")))?;
    let stderr_tail = tail.join().unwrap_or_default();
    match outcome {
        Err(LensError::Runtime(m)) if m.is_empty() => Err(LensError::Runtime(format!(
            "the nnsight engine ({}) stopped without a result ({status}); its last output:\n{stderr_tail}",
            opts.python.display()
        ))),
        other => other,
    }
}

/// The lens report of `ids` computed by the nnsight engine; `tokenizer` is the model's (token texts,
/// the report's `tokens` and `vocab`). Sites: the embeddings and every block's output, with
/// `lens.subblocks` each block's `resid_pre + attention output` too; no direct logit attribution
/// (its components are not read back yet).
pub fn lens_nnsight(opts: &NnsightOptions, tokenizer: &LensTokenizer, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<LensReport> {
    let t0 = Instant::now();
    if ids.is_empty() {
        return Err(LensError::invalid("the prompt has no tokens"));
    }
    let mut followed = lens.pinned.clone();
    for g in &lens.groups {
        followed.extend_from_slice(&g.token_ids);
    }
    let n_pos = ids.len();
    let all = assemble::targets(ids, 0, n_pos, &vec![NO_TARGET; n_pos], &followed);
    let n_t = assemble::FIXED_TARGETS + followed.len();
    let per_pos: Vec<Vec<i64>> = all.chunks_exact(n_t).map(|c| c.iter().skip(1).map(|&t| if t == NO_TARGET { -1 } else { i64::from(t) }).collect()).collect();
    let k = lens.k.max(1);
    let request = serde_json::json!({
        "protocol": PROTOCOL, "model": opts.model, "remote": opts.remote, "ids": ids, "k": k, "targets": per_pos, "dtype": "float32", "subblocks": lens.subblocks,
    });
    let (msg, bytes) = exchange(opts, &request, progress)?;
    let field = |name: &str| {
        msg.get(name)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| LensError::Runtime(format!("the nnsight engine's result has no {name}")))
    };
    if msg.get("protocol").and_then(serde_json::Value::as_u64) != Some(PROTOCOL) {
        return Err(LensError::invalid(format!("the nnsight engine module speaks another protocol than this app ({PROTOCOL}): reinstall logit-lens")));
    }
    let (n_layers, d_model, d_vocab) = (field("n_layers")?, field("d_model")?, field("d_vocab")?);
    let sites = site_list(n_layers, lens.subblocks);
    let residual = if msg.get("parallel").and_then(serde_json::Value::as_bool).unwrap_or(false) { Residual::Parallel } else { Residual::Sequential };
    let n_sites = sites.len();
    let rows_json =
        msg.get("rows").and_then(serde_json::Value::as_array).ok_or_else(|| LensError::Runtime("the nnsight engine's result has no rows".into()))?;
    if rows_json.len() != n_pos * n_sites {
        return Err(LensError::Runtime(format!("the nnsight engine sent {} rows for {n_pos} positions × {n_sites} sites", rows_json.len())));
    }
    if let Some(bad) = followed.iter().find(|&&t| t as usize >= d_vocab) {
        return Err(LensError::invalid(format!("token id {bad} is outside the model's vocabulary of {d_vocab}")));
    }
    let rows = rows_json.iter().map(|r| row_metrics(r, k, n_t, d_vocab)).collect::<Result<Vec<_>>>()?;
    let next: Vec<Option<u32>> = (0..n_pos).map(|p| ids.get(p + 1).copied()).collect();
    let location = if opts.remote { "ndif" } else { "local" };
    let mut report = LensReport {
        schema: SCHEMA.into(),
        model: ModelInfo {
            name: opts.model.clone(),
            family: msg.get("family").and_then(serde_json::Value::as_str).unwrap_or_default().to_string(),
            residual: Some(residual.name().into()),
            final_softcap: None,
            n_layers,
            d_model,
            d_vocab,
            n_ctx: field("n_ctx")?,
            weights_sha256: None,
        },
        decoder: crate::lens::kernel::DecoderKind::LogitLens.name().into(),
        tokens: tokenizer.tokens(ids),
        sites: sites.iter().map(|s| s.label_in(residual)).collect(),
        metrics: assemble::metrics(&rows, n_sites, &next, false)?,
        top_k: assemble::top_k(&rows, n_sites, k)?,
        attribution: Attribution::default(),
        pinned: assemble::pinned(&rows, n_sites, tokenizer.tokens(&lens.pinned))?,
        groups: assemble::groups(&rows, n_sites, lens.pinned.len(), lens.groups.iter().map(|g| (g.name.clone(), tokenizer.tokens(&g.token_ids))).collect())?,
        run: RunInfo {
            provider: format!("nnsight ({location})"),
            forward_ms: t0.elapsed().as_secs_f64() * 1e3,
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
            lens_path: "nnsight".into(),
            // The module loads the model in float32 (its request's dtype).
            weights: "f32".into(),
            engine: Some(EngineInfo { name: "nnsight".into(), model_id: opts.model.clone(), location: location.into(), bytes_received: bytes }),
            ..RunInfo::default()
        },
        ..LensReport::default()
    };
    report.vocab = tokenizer.tokens(&report.named_ids());
    Ok(report)
}
