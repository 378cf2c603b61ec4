//! Downloading from the hub, against a local HTTP server started by the test that serves the
//! hub's URL layout (`/api/models/{id}/revision/{rev}`, `/{id}/resolve/{sha}/{file}`) from the
//! fixture files: the files land in a hub cache laid out as `huggingface_hub` does; a connection
//! cut half-way through the weights resumes with `Range`; a second open uses the cache; a gated
//! repo without a token is a clear error and works with `HF_TOKEN`; a stalled connection, a resume
//! answered from the wrong byte, a 416 with an error page, a wrong LFS sha256, a snapshot that lost
//! its weights and a revision with `..` (issue 24). (This file sets `HF_*`, `LOGIT_LENS_CACHE` and
//! `LOGIT_LENS_HUB_STALL_S` for its own process.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lens_model::error::Progress;
use lens_model::run::resolve::resolve_model;
use lens_model::run::runtime::init_runtime;
use lens_tests::fixture::unique_temp_dir;
use sha2::{Digest, Sha256};

const SHA: &str = "1111111111111111111111111111111111111111";
const FILES: [&str; 4] = ["config.json", "tokenizer.json", "special_tokens_map.json", "model.safetensors"];

/// One logged request: path, Range header, Authorization header.
type Log = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// The hub's layout from `files`, each connection on its own thread. Repositories named for a
/// behaviour: `range-lie` answers a resume with a 206 that starts at 0; `bad-sha` sends an LFS
/// sha256 that is not the file's; `stall` sends half the weights and then nothing for 3 s; the
/// weights of `llama-dl` and `stall` are cut half-way once. A range past the end gets a 416 with
/// an HTML body (`Content-Range: bytes */LEN`), as a CDN sends.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = Arc::clone(&log);
    let files = Arc::new(files);
    let cut: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (files, log2, cut) = (Arc::clone(&files), Arc::clone(&log2), Arc::clone(&cut));
            std::thread::spawn(move || handle(stream, &files, &log2, &cut));
        }
    });
    (addr, log)
}

fn handle(mut stream: std::net::TcpStream, files: &HashMap<String, Vec<u8>>, log: &Log, cut: &Mutex<std::collections::HashSet<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    log.lock().unwrap().push((path.clone(), range.clone(), auth.clone()));
    let gated = path.contains("gated-org/");
    if gated && auth.as_deref() != Some("Bearer secret-token") {
        let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    if path.starts_with("/api/models/") {
        let body = serde_json::json!({"sha": SHA, "siblings": [{"rfilename": "config.json"}, {"rfilename": "tokenizer.json"}, {"rfilename": "special_tokens_map.json"}, {"rfilename": "model.safetensors"}, {"rfilename": "README.md"}]}).to_string();
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return;
    }
    let repo = path.split('/').nth(2).unwrap_or("").to_string();
    let file = path.rsplit('/').next().unwrap_or("");
    // Published J-lenses are fetched at the registry's pinned commit.
    let revision = lens_model::lens::jacobian_lens::registry::revision();
    let Some(bytes) = files.get(file).filter(|_| path.contains(&format!("/resolve/{SHA}/")) || path.contains(&format!("/resolve/{revision}/"))) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let weights = file == "model.safetensors";
    let sha = format!("{:x}", Sha256::digest(bytes));
    let lfs = if weights {
        let claimed = if repo == "bad-sha" { format!("{:x}", Sha256::digest(b"something else")) } else { sha.clone() };
        format!("X-Linked-Etag: \"{claimed}\"\r\nX-Linked-Size: {}\r\n", bytes.len())
    } else {
        String::new()
    };
    let from: usize = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
    if from > 0 && from >= bytes.len() {
        let page = "<html><body>416 Requested Range Not Satisfiable</body></html>";
        let _ = write!(
            stream,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            bytes.len(),
            page.len()
        );
        return;
    }
    let (status, body) = if from > 0 && repo == "range-lie" {
        (format!("206 Partial Content\r\nContent-Range: bytes 0-{}/{}", bytes.len() - 1, bytes.len()), &bytes[..])
    } else if from > 0 {
        (format!("206 Partial Content\r\nContent-Range: bytes {from}-{}/{}", bytes.len() - 1, bytes.len()), &bytes[from..])
    } else {
        ("200 OK".to_string(), &bytes[..])
    };
    let _ = write!(stream, "HTTP/1.1 {status}\r\nETag: \"{sha}\"\r\n{lfs}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    if weights && from == 0 && (repo == "llama-dl" || repo == "stall") && cut.lock().unwrap().insert(repo.clone()) {
        // Half the weights, then: the connection cut (llama-dl) or silence for 3 s (stall).
        let _ = stream.write_all(&body[..body.len() / 2]);
        let _ = stream.flush();
        if repo == "stall" {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        return;
    }
    let _ = stream.write_all(body);
}

#[test]
fn a_hub_id_downloads_resumes_caches_and_needs_a_token_when_gated() {
    init_runtime(None).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families/llama_f32");
    let mut files: HashMap<String, Vec<u8>> =
        FILES.iter().filter(|f| src.join(f).is_file()).map(|f| ((*f).to_string(), std::fs::read(src.join(f)).unwrap())).collect();
    files.insert("special_tokens_map.json".into(), b"{}".to_vec());
    // A J-lens file as TransformerLens writes it (the J-lens fixture of the random GPT-2).
    let jlens = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jacobian_lens/gpt2/lens_f16.pt");
    files.insert("gpt2_jacobian_lens.pt".into(), std::fs::read(jlens).unwrap());
    let (addr, log) = serve(files.clone());
    let hub = unique_temp_dir("dl-hub");
    // SAFETY: set before anything in this process reads them; the runtime is already loaded.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &addr);
        std::env::set_var("HF_HUB_CACHE", &hub);
        std::env::set_var("LOGIT_LENS_CACHE", unique_temp_dir("dl-bundles"));
        std::env::remove_var("HF_TOKEN");
        std::env::remove_var("HF_HUB_OFFLINE");
        std::env::set_var("LOGIT_LENS_HUB_STALL_S", "1");
    }
    let bundle = resolve_model(Some(Path::new("tiny-org/llama-dl")), &Progress::default()).unwrap();
    assert_eq!(lens_model::run::bundle::Bundle::open(&bundle).unwrap().family, "llama");

    // The cache is laid out as huggingface_hub does: refs, snapshot symlinks into blobs.
    let repo = hub.join("models--tiny-org--llama-dl");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), SHA);
    for f in FILES {
        let snap = repo.join("snapshots").join(SHA).join(f);
        assert!(std::fs::symlink_metadata(&snap).unwrap().file_type().is_symlink(), "{f} is not a symlink");
        assert_eq!(std::fs::read(&snap).unwrap(), files[f], "{f} differs");
    }
    assert!(!repo.join("snapshots").join(SHA).join("README.md").exists(), "only what the lens needs is fetched");
    // The cut weights resumed from where they stopped.
    let half = files["model.safetensors"].len() / 2;
    let requests = log.lock().unwrap().clone();
    assert!(
        requests.iter().any(|(p, r, _)| p.ends_with("/model.safetensors") && r.as_deref() == Some(&format!("bytes={half}-"))),
        "no resumed request: {requests:?}"
    );

    // A second open uses the cache: no request at all.
    let n = log.lock().unwrap().len();
    resolve_model(Some(Path::new("tiny-org/llama-dl")), &Progress::default()).unwrap();
    assert_eq!(log.lock().unwrap().len(), n);

    // A gated repository: without a token a clear error; with HF_TOKEN it downloads.
    let e = resolve_model(Some(Path::new("gated-org/secret")), &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("gated or private") && e.contains("HF_TOKEN"), "{e}");
    // SAFETY: as above; no other thread of this test process reads the environment now.
    unsafe { std::env::set_var("HF_TOKEN", "secret-token") };
    let gated = resolve_model(Some(Path::new("gated-org/secret")), &Progress::default()).unwrap();
    assert!(gated.join("model.onnx").is_file());
    assert!(log.lock().unwrap().iter().any(|(p, _, a)| p.contains("gated-org") && a.as_deref() == Some("Bearer secret-token")));
    // SAFETY: as above.
    unsafe { std::env::remove_var("HF_TOKEN") };

    // Hardening (issue 24). Each case ends with the exact file in the cache, or a clear error and
    // nothing linked.
    let weights_of = |name: &str| repo_file(&hub, name, "model.safetensors");
    // A stalled connection is an error after LOGIT_LENS_HUB_STALL_S (1 s) and the retry resumes.
    resolve_model(Some(Path::new("tiny-org/stall")), &Progress::default()).unwrap();
    assert_eq!(std::fs::read(weights_of("stall")).unwrap(), files["model.safetensors"]);
    assert!(log.lock().unwrap().iter().any(|(p, r, _)| p.contains("/stall/") && p.ends_with("/model.safetensors") && r.is_some()), "no resume after the stall");
    // A resume answered from byte 0 (a 206 that lies about its range) starts again, not appends.
    let blobs = hub.join("models--tiny-org--range-lie/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("model.safetensors.{}.incomplete", &SHA[..12]));
    std::fs::write(&partial, &files["model.safetensors"][..100]).unwrap();
    resolve_model(Some(Path::new("tiny-org/range-lie")), &Progress::default()).unwrap();
    assert_eq!(std::fs::read(weights_of("range-lie")).unwrap(), files["model.safetensors"]);
    // A whole partial file resumed past its end: the 416's HTML body is never appended.
    let blobs = hub.join("models--tiny-org--complete/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("model.safetensors.{}.incomplete", &SHA[..12])), &files["model.safetensors"]).unwrap();
    resolve_model(Some(Path::new("tiny-org/complete")), &Progress::default()).unwrap();
    assert_eq!(std::fs::read(weights_of("complete")).unwrap(), files["model.safetensors"]);
    // An LFS file whose sha256 is not the hub's: a clear error, nothing linked, the bytes removed.
    let e = resolve_model(Some(Path::new("tiny-org/bad-sha")), &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("sha256"), "{e}");
    assert!(!weights_of("bad-sha").exists());
    let left: Vec<String> = std::fs::read_dir(hub.join("models--tiny-org--bad-sha/blobs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".incomplete")), "{left:?}");
    for name in [format!("{:x}", Sha256::digest(&files["model.safetensors"])), format!("{:x}", Sha256::digest(b"something else"))] {
        assert!(!left.contains(&name), "{left:?}");
    }
    // special_tokens_map.json is fetched with the tokenizer.
    assert!(repo_file(&hub, "llama-dl", "special_tokens_map.json").is_file());
    // A snapshot that lost its weights is not "cached": it is fetched again.
    std::fs::remove_file(repo_file(&hub, "llama-dl", "model.safetensors")).unwrap();
    assert!(lens_model::run::resolve::cached_hub_id("tiny-org/llama-dl").is_err());
    // A revision that would leave the cache or change the URL is not a revision: no request.
    let n = log.lock().unwrap().len();
    assert!(!lens_model::run::resolve::is_hub_id("tiny-org/llama-dl@../../x"));
    let e = lens_model::source::hub::download(&hub, "tiny-org/llama-dl", "../x", &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("not a revision"), "{e}");
    assert_eq!(log.lock().unwrap().len(), n, "a request was made for a bad revision");

    // The published J-lens of GPT-2 (issue 26): fetched at the registry's commit into the same
    // cache, by its path in the repository, with no API call (the commit is pinned); it opens as
    // a J-lens; a second fetch makes no request; offline it comes from the cache, and a lens not
    // in the cache is an error that says how to fetch it.
    let published = lens_model::lens::jacobian_lens::registry::find("openai-community/gpt2").unwrap();
    let revision = lens_model::lens::jacobian_lens::registry::revision();
    let n = log.lock().unwrap().len();
    let got = lens_model::source::hub::download_file(&hub, &published.repo_id, &revision, &published.filename, &Progress::default()).unwrap();
    assert!(got.ends_with(&published.filename), "{}", got.display());
    assert!(got.starts_with(hub.join("models--neuronpedia--jacobian-lens/snapshots").join(&revision)));
    assert_eq!(std::fs::read(&got).unwrap(), files["gpt2_jacobian_lens.pt"]);
    let lens = lens_model::lens::jacobian_lens::JacobianLens::open(&got).unwrap();
    assert_eq!(lens.source_layers(), [0, 1]);
    let requests: Vec<String> = log.lock().unwrap()[n..].iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(requests, [format!("/neuronpedia/jacobian-lens/resolve/{revision}/{}", published.filename)]);
    let n = log.lock().unwrap().len();
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let again = lens_model::source::hub::download_file(&hub, &published.repo_id, &revision, &published.filename, &Progress::default()).unwrap();
    assert_eq!(again, got);
    let e = lens_model::source::hub::download_file(&hub, &published.repo_id, &revision, "qwen3-4b/jlens/x/Qwen3-4B_jacobian_lens.pt", &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("downloads are off") && e.contains("huggingface-cli download neuronpedia/jacobian-lens"), "{e}");
    // SAFETY: as above.
    unsafe { std::env::remove_var("HF_HUB_OFFLINE") };
    assert_eq!(log.lock().unwrap().len(), n, "the cached or offline fetch made a request");
}

fn repo_file(hub: &Path, name: &str, file: &str) -> std::path::PathBuf {
    hub.join(format!("models--tiny-org--{name}")).join("snapshots").join(SHA).join(file)
}
