//! Downloading a model from the Hugging Face hub (or a mirror: `HF_ENDPOINT`) into the local hub
//! cache, laid out as `huggingface_hub` lays it out (`models--ORG--NAME/{blobs, snapshots/REV,
//! refs}`), so Python and logit-lens share one cache. Only what the lens needs is fetched: the
//! config, the weights (one safetensors file, the shards an index lists, or a `.bin`) and the
//! tokenizer. `HF_TOKEN` is sent for gated models, only to the endpoint (over https, or to an
//! `HF_ENDPOINT` the user set, with a warning when that is plain http; never on a redirect); a cut
//! connection resumes where it stopped (HTTP `Range`, its `Content-Range` checked); a stalled one
//! is an error after [`stall_timeout`] and is retried; cancelling answers within a second and
//! keeps the partial file for the next try. A blob is linked into the snapshot only once its size
//! (and, for LFS files, the sha256 the hub sends) is checked; two processes fetching the same file
//! take turns (a lock file next to the partial).

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

/// The token to send with a request to the endpoint: over https, or to an `HF_ENDPOINT` the user
/// set (plain http there gets a warning on stderr, once).
fn token_for_endpoint() -> Option<String> {
    let t = token()?;
    let ep = endpoint();
    if ep.starts_with("https://") {
        return Some(t);
    }
    let user_set = std::env::var("HF_ENDPOINT").is_ok_and(|e| !e.is_empty());
    if !user_set {
        return None;
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("warning: HF_TOKEN is sent over plain http to {ep} (HF_ENDPOINT); anyone on the way can read it"));
    Some(t)
}

/// Whether `rev` can be a revision: a branch, tag or commit name (`main`, `v1.0`, `refs/pr/3`,
/// a hash). It becomes part of a URL and of cache paths, so nothing else is: no `..`, no empty
/// segment, no leading `/` or `.`, no character outside `A-Z a-z 0-9 - _ . /`, at most 256 bytes.
pub fn valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 256
        && !rev.starts_with('.')
        && rev.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && rev.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Whether a snapshot folder holds its weights: `model.safetensors`, `pytorch_model.bin`, or an
/// index whose every shard is there (a download stopped half-way is not a cached model).
pub fn snapshot_has_weights(snap: &Path) -> bool {
    if snap.join("model.safetensors").is_file() || snap.join("pytorch_model.bin").is_file() {
        return true;
    }
    let index = snap.join("model.safetensors.index.json");
    index.is_file()
        && crate::source::checkpoint::shards_of(&index).is_ok_and(|v| !v.is_empty() && v.iter().all(|f| safe_name(f).is_ok() && snap.join(f).is_file()))
}

/// Seconds without a byte before a download counts as stalled (an error, then a retry that
/// resumes); `LOGIT_LENS_HUB_STALL_S` sets it (tests use 1).
pub fn stall_timeout() -> Duration {
    let s = std::env::var("LOGIT_LENS_HUB_STALL_S").ok().and_then(|v| v.parse::<u64>().ok()).filter(|&s| s > 0).unwrap_or(60);
    Duration::from_secs(s)
}

/// `(start, total)` of a `Content-Range: bytes START-END/TOTAL` (`bytes */TOTAL`: start `None`).
fn content_range(v: &str) -> Option<(Option<u64>, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (start, _) = range.split_once('-')?;
    Some((Some(start.trim().parse().ok()?), total))
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

/// A GET of an endpoint URL (ureq follows redirects and never sends the token on one).
fn get(agent: &ureq::Agent, url: &str, range_from: u64) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut req = agent.get(url);
    if let Some(t) = token_for_endpoint() {
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
    let url = format!("{}/api/models/{id}/revision/{}", endpoint(), revision.replace('/', "%2F"));
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
    for f in ["tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"] {
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
    if !valid_revision(revision) {
        return Err(LensError::invalid(format!("{revision:?} is not a revision (a branch, tag or commit name)")));
    }
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
            for shard in crate::source::checkpoint::shards_of(&snap.join(&f))? {
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

/// Downloads one file `file` of the repository `id` at `revision` into the hub cache `cache` (the
/// same layout, resume, token, lock and checks as [`download`]) and returns its path in the
/// snapshot. A file already in the snapshot of a commit `revision` is returned without a request;
/// offline ([`offline`]) anything else is an error that says how to fetch it.
pub fn download_file(cache: &Path, id: &str, revision: &str, file: &str, progress: &Progress) -> Result<PathBuf> {
    if !valid_revision(revision) {
        return Err(LensError::invalid(format!("{revision:?} is not a revision (a branch, tag or commit name)")));
    }
    safe_name(file)?;
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let pinned = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(r) if valid_revision(r.trim()) => Some(r.trim().to_string()),
        _ => (revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())).then(|| revision.to_string()),
    };
    if let Some(sha) = &pinned
        && repo.join("snapshots").join(sha).join(file).is_file()
    {
        return Ok(repo.join("snapshots").join(sha).join(file));
    }
    if offline() {
        return Err(LensError::invalid(format!(
            "{file} of {id} is not in the Hugging Face cache ({}) and downloads are off (HF_HUB_OFFLINE / LOGIT_LENS_NO_DOWNLOAD): fetch it with `huggingface-cli download {id} {file} --revision {revision}`",
            cache.display()
        )));
    }
    let agent = agent();
    let sha = match pinned {
        Some(sha) => sha,
        None => repo_info(&agent, id, revision)?.0,
    };
    let snap = repo.join("snapshots").join(&sha);
    let parent = snap.join(file).parent().map(Path::to_path_buf).unwrap_or_else(|| snap.clone());
    for d in [repo.join("blobs"), parent, repo.join("refs")] {
        std::fs::create_dir_all(&d).map_err(|e| LensError::io(&d, e))?;
    }
    fetch_file(&agent, &repo, &snap, id, &sha, file, progress)?;
    if revision != sha {
        let r = repo.join("refs").join(revision);
        if let Some(parent) = r.parent() {
            std::fs::create_dir_all(parent).map_err(|e| LensError::io(parent, e))?;
        }
        std::fs::write(&r, &sha).map_err(|e| LensError::io(&r, e))?;
    }
    Ok(snap.join(file))
}

/// Takes the lock of one file's download (`blobs/NAME.lock`), waiting for another process that
/// holds it (cancel answers while waiting). Released when the returned file is dropped.
fn lock_download(lock: &Path, file: &str, progress: &Progress) -> Result<File> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(lock).map_err(|e| LensError::io(lock, e))?;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                progress.report(&format!("waiting for another download of {file}"), 0.0);
                progress.check()?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LensError::io(lock, e)),
        }
    }
}

/// What one attempt's response says about the bytes to come.
struct Plan {
    /// Append to the partial file (a 206 that starts where it ends).
    append: bool,
    /// The file's whole size, when the response says it.
    total: Option<u64>,
    /// The sha256 of the whole file (an LFS file's `X-Linked-Etag`).
    sha256: Option<String>,
    /// The blob's name: the etag where it is a plain token.
    etag: Option<String>,
}

/// Downloads one file into `blobs/` (resuming a partial one) and links it into the snapshot.
fn fetch_file(agent: &ureq::Agent, repo: &Path, snap: &Path, id: &str, sha: &str, file: &str, progress: &Progress) -> Result<()> {
    let target = snap.join(file);
    if target.is_file() {
        return Ok(());
    }
    let url = format!("{}/{id}/resolve/{sha}/{file}", endpoint());
    let stem = format!("{}.{}", file.replace('/', "__"), sha.get(..12).unwrap_or(sha));
    let partial = repo.join("blobs").join(format!("{stem}.incomplete"));
    let _lock = lock_download(&repo.join("blobs").join(format!("{stem}.lock")), file, progress)?;
    if target.is_file() {
        return Ok(()); // another process finished it while we waited
    }
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
        let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let linked_etag = header("x-linked-etag").map(|e| e.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase());
        let sha256 = linked_etag.clone().filter(|e| e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit()));
        let etag = linked_etag.or_else(|| header("etag").map(|e| e.trim_start_matches("W/").trim_matches('"').to_string()));
        let linked_size = header("x-linked-size").and_then(|l| l.parse::<u64>().ok());
        let range = header("content-range").and_then(|v| content_range(&v));
        let length = header("content-length").and_then(|l| l.parse::<u64>().ok());
        let plan = match (status, range) {
            (200, _) => Plan { append: false, total: length, sha256, etag },
            // A 206 must start where the partial file ends; anything else starts again.
            (206, Some((Some(start), total))) if have > 0 && start == have => Plan { append: true, total: Some(total), sha256, etag },
            (206, _) => {
                let _ = std::fs::remove_file(&partial);
                last_err = Some(format!("the server answered a resume from byte {have} with Content-Range {:?}; starting again", header("content-range")));
                continue;
            }
            // Past the end: the partial file is whole when the size the server names is its own
            // (its body, an error page, is never data); otherwise it is dropped and fetched again.
            (416, Some((None, total))) if have > 0 && total == have => {
                drop(resp);
                check_whole(&partial, Some(total), linked_size, None)?;
                return finish(repo, &partial, &target, etag, file);
            }
            (416, _) if have > 0 => {
                let _ = std::fs::remove_file(&partial);
                last_err = Some(format!("the server refused a resume from byte {have} (416); starting again"));
                continue;
            }
            (s, _) => return Err(status_error(id, &url, s)),
        };
        if let (Some(t), Some(l)) = (plan.total, linked_size)
            && t != l
        {
            return Err(LensError::invalid(format!("{url}: the response is {t} bytes, the hub says the file has {l}")));
        }
        let total = plan.total.or(linked_size);
        let mut out =
            OpenOptions::new().create(true).write(true).append(plan.append).truncate(!plan.append).open(&partial).map_err(|e| LensError::io(&partial, e))?;
        let mut got = if plan.append { have } else { 0 };
        let outcome = read_body(resp.into_body().into_reader(), &mut out, &partial, progress, &mut |n| {
            got += n;
            if let Some(t) = total {
                progress.report(&format!("downloading {file}"), got as f32 / t.max(1) as f32);
            }
        })?;
        out.flush().map_err(|e| LensError::io(&partial, e))?;
        drop(out);
        progress.check()?;
        match outcome {
            Ok(()) if total.is_none_or(|t| got == t) => {
                check_whole(&partial, total, linked_size, plan.sha256.as_deref())?;
                return finish(repo, &partial, &target, plan.etag, file);
            }
            Ok(()) => last_err = Some(format!("the connection closed after {got} of {} bytes", total.unwrap_or(0))),
            Err(e) => last_err = Some(e),
        }
    }
    Err(LensError::invalid(format!("downloading {url} failed {ATTEMPTS} times (last: {}); run again to resume", last_err.unwrap_or_default())))
}

/// Copies a response body into `out`, piece by piece, from a reader thread: cancelling answers
/// within a quarter of a second, and [`stall_timeout`] without a byte ends the attempt. The outer
/// `Result` is a write error; the inner one how the body ended. (A reader left blocked on a dead
/// connection ends with it; it holds nothing but the socket.)
fn read_body(
    mut body: ureq::BodyReader<'static>,
    out: &mut File,
    partial: &Path,
    progress: &Progress,
    on_piece: &mut dyn FnMut(u64),
) -> Result<std::result::Result<(), String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match body.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() || n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    let stall = stall_timeout();
    let mut last = std::time::Instant::now();
    loop {
        if progress.is_cancelled() {
            return Ok(Err("cancelled".into()));
        }
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Ok(piece)) if piece.is_empty() => return Ok(Ok(())),
            Ok(Ok(piece)) => {
                out.write_all(&piece).map_err(|e| LensError::io(partial, e))?;
                on_piece(piece.len() as u64);
                last = std::time::Instant::now();
            }
            Ok(Err(e)) => return Ok(Err(e.to_string())),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if last.elapsed() >= stall => {
                return Ok(Err(format!("no data for {} s: the connection stalled", stall.as_secs())));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(Err("the connection's reader stopped".into())),
        }
    }
}

/// Checks a downloaded file before it becomes a blob: its size against the response's and the
/// hub's (`X-Linked-Size`), and its sha256 against an LFS file's. A file that fails is removed.
fn check_whole(partial: &Path, total: Option<u64>, linked_size: Option<u64>, sha256: Option<&str>) -> Result<()> {
    let size = std::fs::metadata(partial).map_err(|e| LensError::io(partial, e))?.len();
    for want in [total, linked_size].into_iter().flatten() {
        if size != want {
            let _ = std::fs::remove_file(partial);
            return Err(LensError::invalid(format!("the download has {size} bytes, the hub says {want}; removed it, run again")));
        }
    }
    if let Some(want) = sha256 {
        let mut h = Sha256::new();
        let mut f = File::open(partial).map_err(|e| LensError::io(partial, e))?;
        std::io::copy(&mut f, &mut h).map_err(|e| LensError::io(partial, e))?;
        let got = format!("{:x}", h.finalize());
        if got != want {
            let _ = std::fs::remove_file(partial);
            return Err(LensError::invalid(format!("the download's sha256 is {got}, the hub says {want}: corrupted on the way; removed it, run again")));
        }
    }
    Ok(())
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
