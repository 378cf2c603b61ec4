//! Downloading from the hub, against a local HTTP server started by the test that serves the
//! hub's URL layout (`/api/models/{id}/revision/{rev}`, `/{id}/resolve/{sha}/{file}`) from the
//! fixture files: the files land in a hub cache laid out as `huggingface_hub` does; a connection
//! cut half-way through the weights resumes with `Range`; a second open uses the cache; a gated
//! repo without a token is a clear error and works with `HF_TOKEN`. (This file sets `HF_*` and
//! `LOGIT_LENS_CACHE` for its own process.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lens_model::error::Progress;
use lens_model::resolve::resolve_model;
use lens_model::runtime::init_runtime;
use lens_tests::fixture::unique_temp_dir;
use sha2::{Digest, Sha256};

const SHA: &str = "1111111111111111111111111111111111111111";
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// One logged request: path, Range header, Authorization header.
type Log = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

fn serve(files: HashMap<String, Vec<u8>>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut cut_once = true;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
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
            log2.lock().unwrap().push((path.clone(), range.clone(), auth.clone()));
            let gated = path.contains("gated-org/");
            if gated && auth.as_deref() != Some("Bearer secret-token") {
                let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            if path.starts_with("/api/models/") {
                let body = serde_json::json!({"sha": SHA, "siblings": [{"rfilename": "config.json"}, {"rfilename": "tokenizer.json"}, {"rfilename": "model.safetensors"}, {"rfilename": "README.md"}]}).to_string();
                let _ =
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                continue;
            }
            let file = path.rsplit('/').next().unwrap_or("");
            let Some(bytes) = files.get(file).filter(|_| path.contains(&format!("/resolve/{SHA}/"))) else {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            };
            let etag = format!("{:x}", Sha256::digest(bytes));
            let from: usize = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
            let body = &bytes[from.min(bytes.len())..];
            let status =
                if from > 0 { format!("206 Partial Content\r\nContent-Range: bytes {from}-{}/{}", bytes.len() - 1, bytes.len()) } else { "200 OK".into() };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nETag: \"{etag}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            if file == "model.safetensors" && from == 0 && cut_once {
                // Cut the connection half-way through the weights.
                cut_once = false;
                let _ = stream.write_all(&body[..body.len() / 2]);
                let _ = stream.flush();
                continue;
            }
            let _ = stream.write_all(body);
        }
    });
    (addr, log)
}

#[test]
fn a_hub_id_downloads_resumes_caches_and_needs_a_token_when_gated() {
    init_runtime(None).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families/llama_f32");
    let files: HashMap<String, Vec<u8>> = FILES.iter().map(|f| ((*f).to_string(), std::fs::read(src.join(f)).unwrap())).collect();
    let (addr, log) = serve(files.clone());
    let hub = unique_temp_dir("dl-hub");
    // SAFETY: set before anything in this process reads them; the runtime is already loaded.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &addr);
        std::env::set_var("HF_HUB_CACHE", &hub);
        std::env::set_var("LOGIT_LENS_CACHE", unique_temp_dir("dl-bundles"));
        std::env::remove_var("HF_TOKEN");
        std::env::remove_var("HF_HUB_OFFLINE");
    }
    let bundle = resolve_model(Some(Path::new("tiny-org/llama-dl")), &Progress::default()).unwrap();
    assert_eq!(lens_model::bundle::Bundle::open(&bundle).unwrap().family, "llama");

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
}
