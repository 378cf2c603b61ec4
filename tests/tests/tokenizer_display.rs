//! The tokenizer wrapper: exact encoding (truncation/padding in tokenizer.json are disabled) and
//! display text that shows whitespace and never a replacement character.

use lens_model::source::tokenizer::{LensTokenizer, display_bytes};
use lens_tests::fixture::{gpt2_tokenizer_json, unique_temp_dir};

#[test]
fn display_text_is_visible_and_lossless() {
    let tok = LensTokenizer::from_file(&gpt2_tokenizer_json()).unwrap();
    let text = "Héllo world 😀\n\tplasma ⚛ end";
    let ids = tok.encode(text).unwrap();
    let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
    assert_eq!(bytes, text.as_bytes(), "token bytes reassemble the prompt exactly");
    let shown: Vec<String> = ids.iter().map(|&id| tok.display(id)).collect();
    assert!(shown.iter().all(|s| !s.contains('\u{FFFD}')), "{shown:?}");
    assert!(shown.contains(&"␣world".to_string()), "{shown:?}");
    assert!(shown.iter().any(|s| s.contains('↵')), "{shown:?}");
    // The emoji is split into byte tokens: at least one shows hex bytes.
    assert!(shown.iter().any(|s| s.contains("<0xF0>") || s.contains("<0x9F>")), "{shown:?}");
    assert_eq!(display_bytes(b"a b\n"), "a␣b↵");
    assert_eq!(display_bytes(&[0xE2, 0x9A]), "<0xE2><0x9A>");
    assert_eq!(tok.token_id(" plasma").map(|id| tok.display(id)), Some("␣plasma".to_string()));
}

#[test]
fn truncation_and_padding_in_tokenizer_json_are_ignored() {
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(gpt2_tokenizer_json()).unwrap()).unwrap();
    j["truncation"] = serde_json::json!({"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0});
    j["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 50256, "pad_type_id": 0, "pad_token": "<|endoftext|>"});
    let dir = unique_temp_dir("tok-trunc");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, j.to_string()).unwrap();
    let plain = LensTokenizer::from_file(&gpt2_tokenizer_json()).unwrap();
    let tok = LensTokenizer::from_file(&path).unwrap();
    let text = "one two three four five six seven";
    assert_eq!(tok.encode(text).unwrap(), plain.encode(text).unwrap());
    assert_eq!(tok.encode(text).unwrap().len(), 7);
}
