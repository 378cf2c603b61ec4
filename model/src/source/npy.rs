//! Reading one vector from a NumPy `.npy` file (a steering vector): little-endian `float32` or
//! `float64`, C order, shape `(d,)` or `(1, d)`. Anything else is refused by name; nothing in the
//! file is evaluated (the header is parsed as the literal it must be).

use std::path::Path;

use crate::error::{LensError, Result};

/// Largest file read (bytes): a vector of a few hundred thousand values at most.
const MAX_BYTES: u64 = 64 << 20;

/// The value of `key` in a `.npy` header dict (`{'descr': '<f4', 'fortran_order': False, 'shape': (4096,), }`).
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}':"))? + key.len() + 3;
    let rest = header.get(at..)?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find(',')? };
    Some(rest.get(..end)?.trim())
}

/// Reads the vector in `path` as f32 (float64 values are rounded to f32).
pub fn read_vector(path: &Path) -> Result<Vec<f32>> {
    let len = std::fs::metadata(path).map_err(|e| LensError::io(path, e))?.len();
    if len > MAX_BYTES {
        return Err(LensError::bad_file(path, format!("{len} bytes; a vector file is at most {MAX_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| LensError::io(path, e))?;
    let bad = |m: &str| LensError::bad_file(path, format!("not a NumPy vector file (.npy): {m}"));
    if bytes.get(..6) != Some(b"\x93NUMPY".as_slice()) {
        return Err(bad("no \\x93NUMPY magic"));
    }
    let (hlen, start) = match bytes.get(6) {
        Some(1) => (bytes.get(8..10).and_then(|b| <[u8; 2]>::try_from(b).ok()).map(|b| u16::from_le_bytes(b) as usize), 10),
        Some(2 | 3) => (bytes.get(8..12).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(|b| u32::from_le_bytes(b) as usize), 12),
        _ => (None, 0),
    };
    let hlen = hlen.ok_or_else(|| bad("an unknown format version"))?;
    let header = bytes.get(start..start + hlen).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(|| bad("a truncated header"))?;
    let descr = field(header, "descr").ok_or_else(|| bad("no descr"))?.trim_matches(['\'', '"']);
    let width = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => return Err(bad(&format!("dtype {other}; a steering vector is float32 or float64 (<f4, <f8)"))),
    };
    if field(header, "fortran_order") != Some("False") {
        return Err(bad("Fortran order"));
    }
    let shape = field(header, "shape").ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("an unreadable shape"))?;
    let n = match dims.as_slice() {
        [d] | [1, d] => *d,
        other => return Err(bad(&format!("shape {other:?}; a steering vector is (d,) or (1, d)"))),
    };
    let data = bytes.get(start + hlen..).ok_or_else(|| bad("no data"))?;
    let want = n.checked_mul(width).ok_or_else(|| bad(&format!("shape ({n},) is too large")))?;
    if data.len() != want {
        return Err(bad(&format!("{} data bytes for {n} values of {width} bytes (truncated?)", data.len())));
    }
    let v: Vec<f32> = if width == 4 {
        data.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect()
    } else {
        data.as_chunks::<8>().0.iter().map(|c| f64::from_le_bytes(*c) as f32).collect()
    };
    if v.iter().any(|x| !x.is_finite()) {
        return Err(LensError::bad_file(path, "the vector holds NaN or infinite values"));
    }
    Ok(v)
}
