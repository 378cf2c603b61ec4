//! The nnsight engine: the logit lens computed inside an nnsight trace by our Python module
//! (`assets/nnsight/logit_lens_nnsight.py`, its message format in its docstring), locally or on
//! NDIF, and only the reduced rows sent back; the report is assembled by the same code as the
//! local engine's ([`crate::output::assemble`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build::spec::Residual;
use crate::error::{LensError, Progress, Result};
use crate::grid::Grid;
use crate::lens::attribution::Attribution;
use crate::lens::metrics::{NO_TARGET, RowMetrics};
use crate::output::assemble;
pub use crate::output::report::EngineInfo;
use crate::output::report::{LensReport, ModelInfo, RunInfo, SCHEMA};
use crate::run::engine::LensOptions;
use crate::run::sites::site_list;
use crate::source::tokenizer::LensTokenizer;

/// The message format's version, the module's `PROTOCOL`.
pub const PROTOCOL: u64 = 2;
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

/// The longest line the module may send (a result of thousands of positions is tens of MB).
pub const MAX_LINE_BYTES: usize = 512 << 20;

/// One line of the module's stdout, at most [`MAX_LINE_BYTES`], without its newline; `None` at
/// the end of the stream.
fn read_line_capped(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(buf.get(..take).unwrap_or(buf));
        reader.consume(take);
        if line.len() > MAX_LINE_BYTES {
            return Err(std::io::Error::other(format!("the nnsight engine sent a line of over {} MB", MAX_LINE_BYTES >> 20)));
        }
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

/// What the module says about the model before any run (a `describe` request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteModel {
    /// Blocks.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Context length (0 where the config names none).
    pub n_ctx: usize,
    /// The config's `model_type`.
    pub family: String,
}

/// A running module: one Python process serving requests in turn (the model loaded once).
/// Dropping it stops the process.
pub struct NnsightSession {
    opts: NnsightOptions,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    tail: Option<std::thread::JoinHandle<String>>,
    model: Option<RemoteModel>,
}

impl NnsightSession {
    /// Starts the module under `opts.python`.
    pub fn start(opts: &NnsightOptions) -> Result<Self> {
        let mut child =
            Command::new(&opts.python).arg(&opts.script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
                LensError::invalid(format!("cannot start {} for the nnsight engine: {e} (set --python or {PYTHON_ENV})", opts.python.display()))
            })?;
        let stdin = child.stdin.take().ok_or_else(|| LensError::Runtime("internal: no stdin for the nnsight engine".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| LensError::Runtime("internal: no stdout for the nnsight engine".into()))?;
        let stderr = child.stderr.take().ok_or_else(|| LensError::Runtime("internal: no stderr for the nnsight engine".into()))?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                match read_line_capped(&mut reader) {
                    Ok(Some(line)) => {
                        if tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
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
        Ok(Self { opts: opts.clone(), child, stdin: Some(stdin), lines: rx, tail: Some(tail), model: None })
    }

    /// The options it was started with.
    pub fn options(&self) -> &NnsightOptions {
        &self.opts
    }

    /// Stops the process and returns its last stderr lines.
    fn stop(&mut self) -> String {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.tail.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }

    /// Sends `request` and returns the module's answer (a `result` or `model` message) and its
    /// bytes; status lines go to `progress`. Cancelling `progress` kills the process; so does
    /// an error (the module exits after one).
    fn exchange(&mut self, request: &serde_json::Value, progress: &Progress) -> Result<(serde_json::Value, usize)> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{request}").and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("the engine has stopped")),
        };
        if let Err(e) = sent {
            let tail = self.stop();
            return Err(LensError::Runtime(format!("cannot send the request to the nnsight engine: {e}; its last output:\n{tail}")));
        }
        let outcome = loop {
            if progress.is_cancelled() {
                self.stop();
                return Err(LensError::Cancelled);
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(line)) => {
                    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
                    match msg.get("type").and_then(serde_json::Value::as_str) {
                        Some("status") => progress.report(msg.get("message").and_then(serde_json::Value::as_str).unwrap_or("nnsight"), 0.5),
                        Some("result" | "model") => return Ok((msg, line.len())),
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
        let status = self.child.try_wait().ok().flatten();
        let tail = self.stop();
        match outcome {
            Err(LensError::Runtime(m)) if m.is_empty() => Err(LensError::Runtime(format!(
                "the nnsight engine ({}) stopped without a result ({}); its last output:\n{tail}",
                self.opts.python.display(),
                status.map_or_else(|| "still running".to_string(), |s| s.to_string())
            ))),
            other => other,
        }
    }

    /// The model's shape, as the module reads it from the model's config (loading the model, or
    /// for NDIF its skeleton, once).
    pub fn describe(&mut self, progress: &Progress) -> Result<RemoteModel> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        let request = serde_json::json!({"protocol": PROTOCOL, "model": self.opts.model, "remote": self.opts.remote, "dtype": "float32", "describe": true});
        let (msg, _) = self.exchange(&request, progress)?;
        check_protocol(&msg)?;
        let m = RemoteModel {
            n_layers: field(&msg, "n_layers")?,
            d_model: field(&msg, "d_model")?,
            d_vocab: field(&msg, "d_vocab")?,
            n_ctx: field(&msg, "n_ctx")?,
            family: msg.get("family").and_then(serde_json::Value::as_str).unwrap_or_default().to_string(),
        };
        self.model = Some(m.clone());
        Ok(m)
    }
}

impl Drop for NnsightSession {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A non-negative integer field of a message.
fn field(msg: &serde_json::Value, name: &str) -> Result<usize> {
    msg.get(name)
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| LensError::Runtime(format!("the nnsight engine's answer has no {name}")))
}

/// Refuses a message of another protocol.
fn check_protocol(msg: &serde_json::Value) -> Result<()> {
    if msg.get("protocol").and_then(serde_json::Value::as_u64) == Some(PROTOCOL) {
        Ok(())
    } else {
        Err(LensError::invalid(format!("the nnsight engine module speaks another protocol than this app ({PROTOCOL}): reinstall logit-lens")))
    }
}

/// The direct logit attribution of a result, checked against the report's shape.
fn attribution_of(msg: &serde_json::Value, n_layers: usize, n_pos: usize, d_vocab: usize) -> Result<Attribution> {
    let Some(a) = msg.get("attribution").filter(|a| !a.is_null()) else { return Ok(Attribution::default()) };
    let components = crate::lens::attribution::component_names(n_layers);
    let sent: Vec<&str> = list(a.get("components").unwrap_or(&serde_json::Value::Null))?.iter().filter_map(serde_json::Value::as_str).collect();
    if sent != components {
        return Err(LensError::Runtime(format!("the nnsight engine sent attribution components {sent:?}, expected {components:?}")));
    }
    let grid = |name: &str| -> Result<Vec<Vec<Option<f64>>>> {
        let rows = list(a.get(name).unwrap_or(&serde_json::Value::Null))?;
        if rows.len() != components.len() {
            return Err(LensError::Runtime(format!("the nnsight engine sent {} attribution rows of {name}, expected {}", rows.len(), components.len())));
        }
        rows.iter()
            .map(|r| {
                let r = list(r)?;
                if r.len() != n_pos {
                    return Err(LensError::Runtime(format!("the nnsight engine sent an attribution row of {} positions, expected {n_pos}", r.len())));
                }
                r.iter().map(|v| if v.is_null() { Ok(None) } else { num(v).map(Some) }).collect()
            })
            .collect()
    };
    let top1 = grid("final_top1")?
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.ok_or_else(|| LensError::Runtime("the nnsight engine sent no attribution to a final top-1".into())))
                .collect::<Result<Vec<f64>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let ids = list(a.get("final_top1_ids").unwrap_or(&serde_json::Value::Null))?
        .iter()
        .map(|v| {
            v.as_u64().filter(|&i| (i as usize) < d_vocab).map(|i| i as u32).ok_or_else(|| LensError::Runtime(format!("the nnsight engine sent token id {v}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.len() != n_pos {
        return Err(LensError::Runtime(format!("the nnsight engine sent {} attribution targets for {n_pos} positions", ids.len())));
    }
    let next = Grid::from_rows(grid("next")?)?;
    Ok(Attribution { components, final_top1_ids: ids, final_top1: Grid::from_rows(top1)?, next })
}

/// The lens report of `ids` computed by the nnsight engine in a process of its own (see
/// [`NnsightSession::lens_ids`]).
pub fn lens_nnsight(opts: &NnsightOptions, tokenizer: &LensTokenizer, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<LensReport> {
    NnsightSession::start(opts)?.lens_ids(tokenizer, ids, lens, progress)
}

impl NnsightSession {
    /// The lens report of `ids`; `tokenizer` is the model's (token texts, the report's `tokens`
    /// and `vocab`). Sites: the embeddings and every block's output, with `lens.subblocks` each
    /// block's `resid_pre + attention output` too; the direct logit attribution where the
    /// model's modules expose the attention output (else it is empty and a stage says why).
    pub fn lens_ids(&mut self, tokenizer: &LensTokenizer, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<LensReport> {
        let opts = self.opts.clone();
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
        let per_pos: Vec<Vec<i64>> =
            all.chunks_exact(n_t).map(|c| c.iter().skip(1).map(|&t| if t == NO_TARGET { -1 } else { i64::from(t) }).collect()).collect();
        let k = lens.k.max(1);
        let request = serde_json::json!({
            "protocol": PROTOCOL, "model": opts.model, "remote": opts.remote, "ids": ids, "k": k, "targets": per_pos, "dtype": "float32",
            "subblocks": lens.subblocks, "attribution": !lens.final_only,
        });
        let (msg, bytes) = self.exchange(&request, progress)?;
        check_protocol(&msg)?;
        let field = |name: &str| field(&msg, name);
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
        let attribution = attribution_of(&msg, n_layers, n_pos, d_vocab)?;
        if let Some(note) = msg.get("attribution_note").and_then(serde_json::Value::as_str) {
            progress.report(note, 1.0);
        }
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
            attribution,
            pinned: assemble::pinned(&rows, n_sites, tokenizer.tokens(&lens.pinned))?,
            groups: assemble::groups(
                &rows,
                n_sites,
                lens.pinned.len(),
                lens.groups.iter().map(|g| (g.name.clone(), tokenizer.tokens(&g.token_ids))).collect(),
            )?,
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
        // The attribution's targets are the rows' final top-1s: one argmax, sent twice.
        if !report.attribution.final_top1_ids.is_empty() {
            let last = n_sites - 1;
            let top1: Vec<u32> = (0..n_pos).filter_map(|p| report.metrics.top1_id.get(last, p).copied()).collect();
            if top1 != report.attribution.final_top1_ids {
                return Err(LensError::Runtime("the nnsight engine's attribution targets are not its final top-1s".into()));
            }
        }
        Ok(report)
    }
}

/// A corpus's windows run by the nnsight engine: one process, the model loaded once.
pub struct NnsightRunner {
    /// The running module.
    pub session: NnsightSession,
    /// The model's tokenizer.
    pub tokenizer: LensTokenizer,
}

impl crate::analyses::corpus::WindowRunner for NnsightRunner {
    fn tokenizer(&self) -> &LensTokenizer {
        &self.tokenizer
    }
    fn context_and_vocab(&mut self, progress: &Progress) -> Result<(usize, usize)> {
        let m = self.session.describe(progress)?;
        if m.n_ctx == 0 {
            return Err(LensError::invalid(format!("{}'s config names no context length (max_position_embeddings)", self.session.opts.model)));
        }
        Ok((m.n_ctx, m.d_vocab))
    }
    fn check_window(&self, _window: usize) -> Result<()> {
        Ok(())
    }
    fn run_window(&mut self, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<LensReport> {
        self.session.lens_ids(&self.tokenizer, ids, lens, progress)
    }
    fn provider(&self) -> String {
        format!("nnsight ({})", if self.session.opts.remote { "ndif" } else { "local" })
    }
    fn weights(&self) -> String {
        "f32".into()
    }
}
