//! Tokenizing long texts (a corpus, a tuned-lens fit's training text) piece by piece, with the
//! same ids as tokenizing the whole text at once.
//!
//! A tokenizer's output near a cut can differ from the whole text's (a word split in two, a
//! SentencePiece `▁` put before the piece's first word). Pieces therefore overlap: each piece starts
//! a little before the previous one ended, and the two are joined at the first token where both
//! agree on [`AGREE`] tokens in a row, ids and byte spans alike. Where no such seam exists (a text
//! whose tokenization is not local), the whole text is tokenized at once instead, so the result is
//! always the whole text's.

use crate::error::{LensError, Result};
use crate::source::tokenizer::LensTokenizer;

/// Bytes of text tokenized at a time by [`encode_long`] (the corpus and the fit).
pub const PIECE_BYTES: usize = 256 * 1024;

/// Bytes each piece re-reads of the previous one.
const OVERLAP: usize = 4096;

/// Tokens in a row both pieces must agree on for a seam.
const AGREE: usize = 16;

/// Where a piece that should end near byte `from` ends: just past the first line break within
/// [`OVERLAP`] bytes of `from`, else just past the first ASCII whitespace there, else at the first
/// character boundary at or after `from` (a text without spaces); the end of the text if sooner.
fn cut_after(text: &str, from: usize) -> usize {
    if from >= text.len() {
        return text.len();
    }
    let window = text.as_bytes().get(from..(from + OVERLAP).min(text.len())).unwrap_or_default();
    let past = |i: usize| from + i + 1;
    if let Some(i) = window.iter().position(|&b| b == b'\n') {
        return past(i);
    }
    if let Some(i) = window.iter().position(u8::is_ascii_whitespace) {
        return past(i);
    }
    (from..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len())
}

/// Where the piece after one ending at `end` starts: just past the last line break in the
/// [`OVERLAP`] bytes before `end - OVERLAP`, else the character boundary at or before
/// `end - OVERLAP`; always past `after`.
fn next_start(text: &str, after: usize, end: usize) -> usize {
    let want = end.saturating_sub(OVERLAP).max(after + 1);
    let from = want.saturating_sub(OVERLAP).max(after + 1);
    let line = text.as_bytes().get(from..want).and_then(|s| s.iter().rposition(|&b| b == b'\n')).map(|i| from + i + 1);
    line.unwrap_or_else(|| (after + 1..=want).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(want))
}

/// The ids of `text`, as [`LensTokenizer::encode`] gives them (template and BOS included),
/// tokenizing at most about `piece` bytes at a time. `on_piece` is told the fraction done after
/// each piece; an error from it (a cancel) stops the work.
pub fn encode_long(tok: &LensTokenizer, text: &str, piece: usize, on_piece: &mut dyn FnMut(f32) -> Result<()>) -> Result<Vec<u32>> {
    let piece = piece.max(2 * OVERLAP);
    if text.len() <= 2 * piece {
        return tok.encode(text);
    }
    let (lead, trail) = tok.template()?;
    let mut out = lead;
    // The previous piece's tokens from the current piece's start on (absolute byte spans).
    let mut pending: Vec<(u32, usize, usize)> = Vec::new();
    let mut start = 0;
    loop {
        let end = cut_after(text, start + piece);
        let slice = text.get(start..end).ok_or_else(|| LensError::invalid("internal: a text cut inside a character"))?;
        let toks: Vec<(u32, usize, usize)> = tok.encode_plain_spans(slice)?.into_iter().map(|(id, a, b)| (id, a + start, b + start)).collect();
        let cur: &[(u32, usize, usize)] = if pending.is_empty() {
            &toks
        } else {
            // The seam: the first pending token that starts a run of AGREE equal tokens in both.
            let by_start: std::collections::HashMap<usize, usize> = toks.iter().enumerate().rev().map(|(j, t)| (t.1, j)).collect();
            let seam = pending.iter().enumerate().find_map(|(i, t)| {
                let &j = by_start.get(&t.1)?;
                let (a, b) = (pending.get(i..i + AGREE)?, toks.get(j..j + AGREE)?);
                (a == b).then_some((i, j))
            });
            let Some((i, j)) = seam else {
                // Not local: the whole text at once is the only exact answer.
                return tok.encode(text);
            };
            out.extend(pending.iter().take(i).map(|t| t.0));
            toks.get(j..).unwrap_or_default()
        };
        if end == text.len() {
            out.extend(cur.iter().map(|t| t.0));
            break;
        }
        let next = next_start(text, start, end);
        let keep = cur.partition_point(|t| t.1 < next);
        out.extend(cur.iter().take(keep).map(|t| t.0));
        pending = cur.get(keep..).unwrap_or_default().to_vec();
        start = next;
        on_piece(end as f32 / text.len() as f32)?;
    }
    out.extend(trail);
    Ok(tok.with_forced_bos(out))
}

/// The first `max` tokens of `text`, tokenizing only as much of it as they need: prefixes cut
/// near a line break or a space, each four times the last, until one gives `max` tokens and 64 more (the
/// tokens near a cut can differ from the whole text's; those 64 are dropped). The same ids as
/// tokenizing the whole text and keeping `max` (tested), without tokenizing a long file for a
/// short run.
pub fn encode_prefix(tokenizer: &LensTokenizer, text: &str, max: usize) -> Result<Vec<u32>> {
    const MARGIN: usize = 64;
    let mut want = max.saturating_add(MARGIN).saturating_mul(8).max(4096);
    loop {
        // The cut: after a line break or a space near `want` bytes (the whole text if shorter).
        let end = cut_after(text, want);
        let piece = text.get(..end).ok_or_else(|| LensError::invalid("internal: a corpus cut inside a character"))?;
        let mut ids = tokenizer.encode(piece)?;
        if end == text.len() || ids.len() >= max.saturating_add(MARGIN) {
            ids.truncate(max);
            return Ok(ids);
        }
        want = want.saturating_mul(4);
    }
}
