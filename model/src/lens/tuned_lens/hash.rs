//! The `tuned-lens` package's unembedding hash: `sha256(np.array_str(W_U, precision=1))` of the
//! float32 unembedding `[d_vocab, d_model]` (`tuned_lens.utils.tensor_hash`). NumPy prints a
//! large array summarized (its first and last 3 rows and columns), so the hash depends on those
//! values rounded to one decimal — which is what this module reproduces: NumPy 1.14+'s default
//! printing (`floatmode="maxprec"`, line width 75, threshold 1000, 3 edge items).

use sha2::{Digest as _, Sha256};

const EDGE: usize = 3;
const THRESHOLD: usize = 1000;
const LINE_WIDTH: usize = 75;

/// The hash a lens trained on this unembedding records // w: [rows, cols] row-major
pub fn unembedding_hash(w: &[f32], rows: usize, cols: usize) -> String {
    sha_hex(&array_str(w, rows, cols))
}

/// [`unembedding_hash`] of the decoder's unembedding, whatever its storage (an f16 one is hashed
/// as the f32 values it widens to, reading only the printed edge values).
pub fn unembedding_hash_of(w: &crate::lens::kernel::Unembedding, rows: usize, cols: usize) -> String {
    sha_hex(&array_str_by(&|i| w.value(i), rows, cols))
}

fn sha_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Indices printed along an axis of `n`, and whether a `...` goes after the first [`EDGE`].
fn shown(n: usize, summarize: bool) -> (Vec<usize>, bool) {
    if summarize && 2 * EDGE < n { ((0..EDGE).chain(n - EDGE..n).collect(), true) } else { ((0..n).collect(), false) }
}

/// `x` rounded to one decimal, ties to even, as (negative, integer digits, tenth).
fn positional(x: f32) -> (bool, String, u8) {
    // x · 10 is exact in f64 (24 + 4 bits), so the rounding is of the exact value, as Dragon4's.
    let y = (f64::from(x) * 10.0).abs().round_ties_even();
    let int = (y / 10.0).trunc();
    let tenth = (y - int * 10.0) as u8;
    (x.is_sign_negative(), format!("{int:.0}"), tenth)
}

/// `x` as `d.d` × 10^e rounded to two significant digits, ties to even: (negative, int digit, tenth, exponent).
fn scientific(x: f32) -> (bool, u8, u8, i32) {
    let a = f64::from(x).abs();
    if a == 0.0 {
        return (x.is_sign_negative(), 0, 0, 0);
    }
    let mut e = a.log10().floor() as i32;
    let scaled = |e: i32| -> f64 {
        let k = 1 - e;
        if k >= 0 { a * 10f64.powi(k) } else { a / 10f64.powi(-k) }
    };
    // log10 may be off by one at exact powers of ten.
    if scaled(e) >= 100.0 {
        e += 1;
    } else if scaled(e) < 10.0 {
        e -= 1;
    }
    let mut m = scaled(e).round_ties_even();
    if m >= 100.0 {
        e += 1;
        m = (m / 10.0).round_ties_even();
    }
    let m = m as u32;
    (x.is_sign_negative(), (m / 10) as u8, (m % 10) as u8, e)
}

/// Formats the printed values with NumPy's `FloatingFormat` (`maxprec`, precision 1, sign `-`).
fn formatter(values: &[f32]) -> impl Fn(f32) -> String {
    let nonzero: Vec<f64> = values.iter().filter(|v| **v != 0.0 && v.is_finite()).map(|v| f64::from(v.abs())).collect();
    let exp_format = if nonzero.is_empty() {
        false
    } else {
        let max = nonzero.iter().copied().fold(0.0, f64::max);
        let min = nonzero.iter().copied().fold(f64::INFINITY, f64::min);
        // NumPy compares in the array's own type (float32).
        let (max32, min32) = (max as f32, min as f32);
        max32 >= 1e8 || min32 < 0.0001 || max32 / min32 > 1000.0
    };
    if exp_format {
        let parts: Vec<(bool, u8, u8, i32)> = values.iter().map(|&v| scientific(v)).collect();
        let precision = usize::from(parts.iter().any(|p| p.2 != 0));
        let pad_left = parts.iter().map(|p| 1 + usize::from(p.0)).max().unwrap_or(1);
        let exp_size = parts.iter().map(|p| p.3.unsigned_abs().to_string().len().max(2)).max().unwrap_or(2);
        Box::new(move |v: f32| {
            let (neg, int, tenth, e) = scientific(v);
            let int = format!("{}{int}", if neg { "-" } else { "" });
            let frac = if precision == 1 { tenth.to_string() } else { String::new() };
            let sign = if e < 0 { '-' } else { '+' };
            format!("{int:>pad_left$}.{frac}e{sign}{:0>exp_size$}", e.unsigned_abs())
        }) as Box<dyn Fn(f32) -> String>
    } else {
        let parts: Vec<(bool, String, u8)> = values.iter().map(|&v| positional(v)).collect();
        let pad_left = parts.iter().map(|p| p.1.len() + usize::from(p.0)).max().unwrap_or(1);
        let pad_right = usize::from(parts.iter().any(|p| p.2 != 0));
        Box::new(move |v: f32| {
            let (neg, int, tenth) = positional(v);
            let int = format!("{}{int}", if neg { "-" } else { "" });
            let frac = if tenth != 0 { tenth.to_string() } else { String::new() };
            format!("{int:>pad_left$}.{frac:<pad_right$}")
        })
    }
}

/// `np.array_str(w, precision=1)` of a float32 matrix `[rows, cols]` (`rows, cols ≥ 1`).
pub fn array_str(w: &[f32], rows: usize, cols: usize) -> String {
    array_str_by(&|i| w.get(i).copied().unwrap_or(f32::NAN), rows, cols)
}

/// [`array_str`] of the matrix whose row-major element `i` is `value(i)`.
fn array_str_by(value: &dyn Fn(usize) -> f32, rows: usize, cols: usize) -> String {
    let summarize = rows * cols > THRESHOLD;
    let (ri, row_gap) = shown(rows, summarize);
    let (ci, col_gap) = shown(cols, summarize);
    let at = |r: usize, c: usize| value(r * cols + c);
    let printed: Vec<f32> = ri.iter().flat_map(|&r| ci.iter().map(move |&c| at(r, c))).collect();
    let fmt = formatter(&printed);
    // Rows: hanging indent "  ", width 75 − 1 for the outer "]", 1 more for the row's own.
    let indent = "  ";
    let elem_width = LINE_WIDTH - 2;
    let format_row = |r: usize| -> String {
        let mut s = String::new();
        let mut line = indent.to_string();
        let extend = |s: &mut String, line: &mut String, word: &str| {
            if line.len() + word.len() > elem_width && line.len() > indent.len() {
                s.push_str(line.trim_end());
                s.push('\n');
                *line = indent.to_string();
            }
            line.push_str(word);
        };
        let n = ci.len();
        for (j, &c) in ci.iter().enumerate() {
            extend(&mut s, &mut line, &fmt(at(r, c)));
            if j + 1 < n {
                line.push(' ');
            }
            if col_gap && j + 1 == EDGE {
                extend(&mut s, &mut line, "...");
                line.push(' ');
            }
        }
        s.push_str(&line);
        format!("[{}]", s.get(indent.len()..).unwrap_or(""))
    };
    let mut s = String::new();
    let n = ri.len();
    for (i, &r) in ri.iter().enumerate() {
        s.push(' ');
        s.push_str(&format_row(r));
        if i + 1 < n {
            s.push('\n');
        }
        if row_gap && i + 1 == EDGE {
            s.push_str(" ...\n");
        }
    }
    format!("[{}]", s.get(1..).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_arrays_print_like_numpy() {
        // np.array_str(np.array([[0.0, -0.04, 1.25], [12.0, 0.06, -3.5]], np.float32), precision=1)
        assert_eq!(array_str(&[0.0, -0.04, 1.25, 12.0, 0.06, -3.5], 2, 3), "[[ 0.  -0.   1.2]\n [12.   0.1 -3.5]]");
    }
}
