//! Downloading a model from the Hugging Face hub (or a mirror: `HF_ENDPOINT`) into the local hub
//! cache, laid out as `huggingface_hub` lays it out (`models--ORG--NAME/{blobs, snapshots/REV,
//! refs}`), so Python and logit-lens share one cache. Only what the lens needs is fetched: the
//! config, the weights (one safetensors file, the shards an index lists, or a `.bin`) and the
//! tokenizer. `HF_TOKEN` is sent for gated models; a cut connection resumes where it stopped
//! (HTTP `Range`); cancelling stops between pieces and keeps the partial file for the next try.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{LensError, Progress, Result};

/// Attempts per file before a broken connection is an error.
const ATTEMPTS: usize = 4;

/// The hub endpoint: `HF_ENDPOINT` or `https://huggingface.co`.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| "https://huggingface.co".into()).trim_end_matches('/').to_string()
}

fn token() -> Option<String> {
    ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"].iter().find_map(|k| std::env::var(k).ok().filter(|t| !t.is_empty()))
}

/// Whether downloads are forbidden (`HF_HUB_OFFLINE=1` or `LOGIT_LENS_NO_DOWNLOAD=1`).
pub fn offline() -> bool {
    ["HF_HUB_OFFLINE", "LOGIT_LENS_NO_DOWNLOAD"].iter().any(|k| std::env::var(k).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(None)
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str, range_from: u64) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut req = agent.get(url);
    if let Some(t) = token() {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if range_from > 0 {
        req = req.header("Range", format!("bytes={range_from}-"));
    }
    req.call()
}

fn status_error(id: &str, url: &str, status: u16) -> LensError {
    match status {
        401 | 403 => LensError::invalid(format!(
            "{id} is gated or private ({url} answered {status}): accept its licence on the model's page and set HF_TOKEN to a token with access"
        )),
        404 => LensError::invalid(format!("{url} was not found (404): is {id} the right model id and revision?")),
        s => LensError::invalid(format!("{url} answered HTTP {s}")),
    }
}

/// The files of a repository revision and its commit hash.
fn repo_info(agent: &ureq::Agent, id: &str, revision: &str) -> Result<(String, Vec<String>)> {
    #[derive(serde::Deserialize)]
    struct Sibling {
        rfilename: String,
    }
    #[derive(serde::Deserialize)]
    struct Info {
        sha: String,
        siblings: Vec<Sibling>,
    }
    let url = format!("{}/api/models/{id}/revision/{revision}", endpoint());
    let resp = get(agent, &url, 0).map_err(|e| {
        LensError::invalid(format!("cannot reach {}: {e} (offline? set HF_ENDPOINT for a mirror, or download the model elsewhere)", endpoint()))
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status_error(id, &url, status));
    }
    let text = resp.into_body().read_to_string().map_err(|e| LensError::invalid(format!("{url}: {e}")))?;
    let info: Info = serde_json::from_str(&text).map_err(|e| LensError::invalid(format!("{url} did not return a model description: {e}")))?;
    if info.sha.len() < 7 || !info.sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LensError::invalid(format!("{url} returned an invalid commit {:?}", info.sha)));
    }
    Ok((info.sha, info.siblings.into_iter().map(|s| s.rfilename).collect()))
}

/// Which of `files` the lens needs (weights are chosen after the index is read).
fn wanted(files: &[String]) -> Result<Vec<String>> {
    let has = |f: &str| files.iter().any(|x| x == f);
    if !has("config.json") {
        return Err(LensError::invalid("the repository has no config.json: not a transformers model"));
    }
    let mut v = vec!["config.json".to_string()];
    for f in ["tokenizer_config.json", "tokenizer.json"] {
        if has(f) {
            v.push(f.into());
        }
    }
    if !has("tokenizer.json") {
        v.extend(["vocab.json", "merges.txt"].iter().filter(|f| has(f)).map(|f| (*f).to_string()));
    }
    if has("model.safetensors") {
        v.push("model.safetensors".into());
    } else if has("model.safetensors.index.json") {
        v.push("model.safetensors.index.json".into());
    } else if has("pytorch_model.bin") {
        v.push("pytorch_model.bin".into());
    } else {
        return Err(LensError::invalid("the repository has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"));
    }
    Ok(v)
}

fn safe_name(f: &str) -> Result<()> {
    let ok = !f.is_empty() && !f.starts_with('/') && !f.contains('\\') && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok { Ok(()) } else { Err(LensError::invalid(format!("refusing the file name {f:?}: it leaves the snapshot folder"))) }
}

/// Downloads `id` at `revision` into the hub cache `cache` and returns its snapshot folder.
pub fn download(cache: &Path, id: &str, revision: &str, progress: &Progress) -> Result<PathBuf> {
    let agent = agent();
    let (sha, files) = repo_info(&agent, id, revision)?;
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snap = repo.join("snapshots").join(&sha);
    for d in [repo.join("blobs"), snap.clone(), repo.join("refs")] {
        std::fs::create_dir_all(&d).map_err(|e| LensError::io(&d, e))?;
    }
    let mut todo = wanted(&files)?;
    let mut i = 0;
    while let Some(f) = todo.get(i).cloned() {
        safe_name(&f)?;
        progress.check()?;
        fetch_file(&agent, &repo, &snap, id, &sha, &f, progress)?;
        if f == "model.safetensors.index.json" {
            for shard in crate::checkpoint::shards_of(&snap.join(&f))? {
                if !todo.contains(&shard) {
                    todo.push(shard);
                }
            }
        }
        i += 1;
    }
    if revision != sha {
        let r = repo.join("refs").join(revision);
        if let Some(parent) = r.parent() {
            std::fs::create_dir_all(parent).map_err(|e| LensError::io(parent, e))?;
        }
        std::fs::write(&r, &sha).map_err(|e| LensError::io(&r, e))?;
    }
    Ok(snap)
}

/// Downloads one file into `blobs/` (resuming a partial one) and links it into the snapshot.
fn fetch_file(agent: &ureq::Agent, repo: &Path, snap: &Path, id: &str, sha: &str, file: &str, progress: &Progress) -> Result<()> {
    let target = snap.join(file);
    if target.is_file() {
        return Ok(());
    }
    let url = format!("{}/{id}/resolve/{sha}/{file}", endpoint());
    let partial = repo.join("blobs").join(format!("{}.{}.incomplete", file.replace('/', "__"), sha.get(..12).unwrap_or(sha)));
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        progress.check()?;
        let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
        let resp = match get(agent, &url, have) {
            Ok(r) => r,
            Err(e) => {
                last_err = Some(format!("{e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let append = match status {
            206 if have > 0 => true,
            200 => false,
            416 if have > 0 => true, // we already have every byte
            s => return Err(status_error(id, &url, s)),
        };
        let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let etag = header("x-linked-etag").or_else(|| header("etag")).map(|e| e.trim_start_matches("W/").trim_matches('"').to_string());
        let total = header("content-length").and_then(|l| l.parse::<u64>().ok()).map(|l| if append { l + have } else { l });
        let mut out = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&partial).map_err(|e| LensError::io(&partial, e))?;
        let mut got = if append { have } else { 0 };
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let outcome: std::result::Result<(), String> = loop {
            if progress.is_cancelled() {
                break Err("cancelled".into());
            }
            match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    let piece = buf.get(..n).ok_or_else(|| LensError::invalid("internal: a read returned more than its buffer"))?;
                    out.write_all(piece).map_err(|e| LensError::io(&partial, e))?;
                    got += n as u64;
                    if let Some(t) = total {
                        progress.report(&format!("downloading {file}"), got as f32 / t.max(1) as f32);
                    }
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        out.flush().map_err(|e| LensError::io(&partial, e))?;
        drop(out);
        progress.check()?;
        match outcome {
            Ok(()) if total.is_none_or(|t| got == t) => return finish(repo, &partial, &target, etag, file),
            Ok(()) => last_err = Some(format!("the connection closed after {got} of {} bytes", total.unwrap_or(0))),
            Err(e) => last_err = Some(e),
        }
    }
    Err(LensError::invalid(format!("downloading {url} failed {ATTEMPTS} times (last: {}); run again to resume", last_err.unwrap_or_default())))
}

/// Moves a complete download to `blobs/ETAG` (or its sha256) and links the snapshot file to it.
fn finish(repo: &Path, partial: &Path, target: &Path, etag: Option<String>, file: &str) -> Result<()> {
    let name = match etag.filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
        Some(e) => e,
        None => {
            let mut h = Sha256::new();
            let mut f = File::open(partial).map_err(|e| LensError::io(partial, e))?;
            std::io::copy(&mut f, &mut h).map_err(|e| LensError::io(partial, e))?;
            format!("{:x}", h.finalize())
        }
    };
    let blob = repo.join("blobs").join(&name);
    std::fs::rename(partial, &blob).map_err(|e| LensError::io(&blob, e))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LensError::io(parent, e))?;
    }
    // A relative symlink into blobs/ as huggingface_hub makes; where there are none (Windows
    // without developer mode), a copy.
    #[cfg(unix)]
    let linked = {
        let depth = file.matches('/').count() + 2;
        let rel: PathBuf = std::iter::repeat_n("..", depth).collect::<PathBuf>().join("blobs").join(&name);
        std::os::unix::fs::symlink(&rel, target).is_ok()
    };
    #[cfg(not(unix))]
    let linked = false;
    if !linked {
        std::fs::copy(&blob, target).map_err(|e| LensError::io(target, e))?;
    }
    Ok(())
}
