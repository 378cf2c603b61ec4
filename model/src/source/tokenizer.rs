//! `tokenizers::Tokenizer` wrapper: exact encoding (no truncation or padding) and display text.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Result};

/// One token of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Vocabulary id.
    pub id: u32,
    /// Display text: spaces as `␣`, newlines as `↵`, tabs as `⇥`, partial UTF-8 bytes as `<0xNN>`.
    pub text: String,
    /// The token's exact text (`" plasma"`), for comparing with strings in Python; a token that is
    /// only part of a UTF-8 character holds U+FFFD there (its bytes are in `text` as `<0xNN>`).
    #[serde(default)]
    pub decoded: String,
    /// A special token of the tokenizer (a BOS such as `<s>`, `<bos>`, `<|begin_of_text|>`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub special: bool,
}

/// File beside `tokenizer.json` that may ask for a BOS its post-processor does not add.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The BOS keys of `tokenizer_config.json` (the only ones the lens reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BosConfig {
    /// `add_bos_token`: `true` asks for a BOS before every prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_bos_token: Option<bool>,
    /// `bos_token`: its text (the file may give a string or an added-token object).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "token_text")]
    pub bos_token: Option<String>,
}

fn token_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Plain(String),
        Added { content: String },
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Text>::deserialize(d)? {
        Some(Text::Plain(s)) | Some(Text::Added { content: s }) => Some(s),
        Some(Text::Other(_)) | None => None,
    })
}

impl BosConfig {
    /// Reads the BOS keys of a `tokenizer_config.json`; a missing file means no keys. A file that
    /// is not JSON is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| LensError::bad_file(path, format!("not a valid tokenizer_config.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(LensError::io(path, e)),
        }
    }
}

/// The tokenizer of a model.
pub struct LensTokenizer {
    inner: tokenizers::Tokenizer,
    byte_decoder: std::collections::HashMap<char, u8>,
    /// Ids of the tokenizer's special added tokens (BOS, EOS, …), read once.
    special: std::collections::HashSet<u32>,
    /// The BOS to put first when `tokenizer_config.json` asks for one and the post-processor does
    /// not add it.
    forced_bos: Option<u32>,
}

impl std::fmt::Debug for LensTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LensTokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

/// GPT-2's byte-to-unicode table (bytes that are not printable map to U+0100 + n).
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0u32..256 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.into_iter().zip(chars).filter_map(|(b, c)| Some((u8::try_from(b).ok()?, char::from_u32(c)?))).collect()
}

/// Renders raw bytes for display: visible whitespace, and `<0xNN>` for bytes that are not valid UTF-8.
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_visible(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_visible(&mut out, std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len()).max(1).min(bad.len());
                for b in bad.iter().take(n) {
                    out.push_str(&format!("<0x{b:02X}>"));
                }
                rest = bad.get(n..).unwrap_or_default();
            }
        }
    }
    out
}

fn push_visible(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ' ' => out.push('␣'),
            '\n' => out.push('↵'),
            '\r' => out.push('␍'),
            '\t' => out.push('⇥'),
            c if c.is_control() => out.push_str(&format!("<0x{:02X}>", u32::from(c))),
            c => out.push(c),
        }
    }
}

impl LensTokenizer {
    /// Loads `tokenizer.json`, disabling any truncation or padding it carries, with the BOS
    /// request of a `tokenizer_config.json` beside it (see [`LensTokenizer::encode`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let config_path = path.with_file_name(TOKENIZER_CONFIG_FILE);
        let config = BosConfig::read(&config_path)?;
        let mut tok = Self::from_tokenizer_file(path)?;
        if config.add_bos_token == Some(true) {
            let Some(text) = &config.bos_token else {
                return Err(LensError::bad_file(&config_path, "add_bos_token is true but no bos_token is named"));
            };
            let Some(id) = tok.inner.token_to_id(text) else {
                return Err(LensError::bad_file(&config_path, format!("bos_token {text:?} is not in the tokenizer's vocabulary")));
            };
            tok.forced_bos = Some(id);
        }
        Ok(tok)
    }

    fn from_tokenizer_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LensError::bad_file(path, format!("not a valid tokenizer.json: {e}")))?;
        inner.with_truncation(None).map_err(|e| LensError::Tokenizer(format!("cannot disable truncation: {e}")))?;
        inner.with_padding(None);
        let byte_decoder = bytes_to_unicode().into_iter().map(|(b, c)| (c, b)).collect();
        let special = inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        Ok(Self { inner, byte_decoder, special, forced_bos: None })
    }

    /// Number of ids, including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Largest id the tokenizer can produce.
    pub fn max_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).values().copied().max()
    }

    /// Largest id of the tokenizer's own vocabulary, leaving out added tokens (Gemma 3's
    /// tokenizer adds `<image_soft_token>` at 262144, past the text model's 262,144 rows).
    pub fn max_base_id(&self) -> Option<u32> {
        self.inner.get_vocab(false).values().copied().max()
    }

    /// Encodes `text` as the model's tokenizer does: its post-processor's special tokens included
    /// (the BOS of Llama's and Gemma's templates; GPT-2's and Qwen's add none), and a BOS first
    /// where `tokenizer_config.json` sets `add_bos_token: true` and the post-processor did not add
    /// it (what transformers 4's Llama and Gemma tokenizers do on loading such a config).
    /// `add_bos_token: false` does not remove a BOS the post-processor adds (transformers 5 keeps
    /// it too).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| LensError::Tokenizer(e.to_string()))?;
        Ok(self.with_forced_bos(enc.get_ids().to_vec()))
    }

    /// The ids of `text` without any BOS or template, each with the byte range of `text` it came
    /// from (what [`crate::source::long_text`] stitches pieces of a long text with).
    pub fn encode_plain_spans(&self, text: &str) -> Result<Vec<(u32, usize, usize)>> {
        let enc = self.inner.encode(text, false).map_err(|e| LensError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().zip(enc.get_offsets()).map(|(&id, &(a, b))| (id, a, b)).collect())
    }

    /// What [`encode`](Self::encode) puts around a text's own ids: the post-processor's tokens
    /// before and after them (found on a one-letter text; a template does not depend on the text).
    pub fn template(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let with = self.inner.encode("a", true).map_err(|e| LensError::Tokenizer(e.to_string()))?;
        let plain = self.inner.encode("a", false).map_err(|e| LensError::Tokenizer(e.to_string()))?;
        let (with, plain) = (with.get_ids(), plain.get_ids());
        let extra = with.len().checked_sub(plain.len()).ok_or_else(|| LensError::Tokenizer("the template removes tokens".into()))?;
        (0..=extra)
            .find(|&i| with.get(i..i + plain.len()) == Some(plain))
            .and_then(|i| Some((with.get(..i)?.to_vec(), with.get(i + plain.len()..)?.to_vec())))
            .ok_or_else(|| LensError::Tokenizer("the template changes the text's own tokens".into()))
    }

    /// `ids` (a text's ids with its template) with the BOS `tokenizer_config.json` asks for put
    /// first, as [`encode`](Self::encode) does.
    pub fn with_forced_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let Some(bos) = self.forced_bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        ids
    }

    /// Whether `id` is a BOS: a special token of the tokenizer, or the one its config asks for.
    pub fn is_bos(&self, id: u32) -> bool {
        self.special.contains(&id) || self.forced_bos == Some(id)
    }

    /// Whether every prompt starts with a special token (a BOS) of the tokenizer's own.
    pub fn adds_bos(&self) -> bool {
        self.encode("a").ok().and_then(|ids| ids.first().copied()).is_some_and(|id| self.special.contains(&id) || self.forced_bos == Some(id))
    }

    /// The BOS that `tokenizer_config.json` asks for, if it does.
    pub fn forced_bos(&self) -> Option<u32> {
        self.forced_bos
    }

    /// The raw bytes of a token (GPT-2 byte-level tokens are decoded exactly).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(s) = self.inner.id_to_token(id) else { return Vec::new() };
        let bytes: Option<Vec<u8>> = s.chars().map(|c| self.byte_decoder.get(&c).copied()).collect();
        bytes.unwrap_or_else(|| s.replace('▁', " ").into_bytes())
    }

    /// Display text of a token.
    pub fn display(&self, id: u32) -> String {
        if self.inner.id_to_token(id).is_none() {
            return format!("<{id}>");
        }
        display_bytes(&self.token_bytes(id))
    }

    /// Token and display text for each id.
    pub fn tokens(&self, ids: &[u32]) -> Vec<Token> {
        ids.iter()
            .map(|&id| Token {
                id,
                text: self.display(id),
                decoded: String::from_utf8_lossy(&self.token_bytes(id)).into_owned(),
                special: self.special.contains(&id),
            })
            .collect()
    }

    /// The single-token variants of a word, for a token group: the word as typed, with a leading
    /// space, capitalised, lower and upper case (each with and without the space), in that order,
    /// without repeats; those that are not one token are left out.
    pub fn word_variants(&self, word: &str) -> Vec<(String, u32)> {
        let w = word.trim();
        let mut cap = w.chars();
        let capitalised = cap.next().map(|c| c.to_uppercase().chain(cap).collect::<String>()).unwrap_or_default();
        let mut out: Vec<(String, u32)> = Vec::new();
        for form in [w.to_string(), capitalised, w.to_lowercase(), w.to_uppercase()] {
            for text in [format!(" {form}"), form.clone()] {
                if !form.is_empty()
                    && let Some(id) = self.token_id(&text)
                    && !out.iter().any(|(_, i)| *i == id)
                {
                    out.push((text, id));
                }
            }
        }
        out
    }

    /// The ids of `text` without any BOS or template (`None` if it cannot be encoded).
    pub fn encode_plain(&self, text: &str) -> Option<Vec<u32>> {
        Some(self.inner.encode(text, false).ok()?.get_ids().to_vec())
    }

    /// Looks up the id of a token given as plain text (e.g. `" plasma"`), if it is a single token.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        // Without the template's or the config's BOS: the text's own tokens.
        let enc = self.inner.encode(text, false).ok()?;
        let ids = enc.get_ids();
        match ids {
            [id] => Some(*id),
            _ => None,
        }
    }
}
