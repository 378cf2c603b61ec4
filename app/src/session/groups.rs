//! Token groups from what a user types, for every face: an explicit list `TEXT|TEXT|…` (each one
//! token) or a word's single-token variants ([`lens_model::source::tokenizer::LensTokenizer::word_variants`]).

use anyhow::{Result, bail};
use lens_model::TokenGroup;
use lens_model::source::tokenizer::LensTokenizer;

/// The group `name` of the tokens `TEXT|TEXT|…`: each TEXT must be one token (the error names
/// the one that is not and how many tokens it is); repeats are dropped.
pub fn group_of_tokens(tok: &LensTokenizer, name: &str, texts: &str) -> Result<TokenGroup> {
    let mut token_ids: Vec<u32> = Vec::new();
    for text in texts.split('|').filter(|t| !t.is_empty()) {
        match tok.token_id(text) {
            Some(id) if !token_ids.contains(&id) => token_ids.push(id),
            Some(_) => {}
            None => {
                let n = tok.encode_plain(text).map_or(0, |ids| ids.len());
                bail!("{text:?} is not a single token of this model's vocabulary (it is {n} tokens)")
            }
        }
    }
    if token_ids.is_empty() {
        bail!("{texts:?} names no token");
    }
    Ok(TokenGroup { name: name.to_string(), token_ids })
}

/// The group of a word's single-token variants (leading space, capitals), named after it.
pub fn group_of_word(tok: &LensTokenizer, word: &str) -> Result<TokenGroup> {
    let word = word.trim();
    let token_ids: Vec<u32> = tok.word_variants(word).into_iter().map(|(_, id)| id).collect();
    if token_ids.is_empty() {
        bail!("no variant of {word:?} (with a leading space, capitalised, lower or upper case) is a single token");
    }
    Ok(TokenGroup { name: word.to_string(), token_ids })
}
