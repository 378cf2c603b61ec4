//! The globals a pickle names, found by walking its opcodes without running anything.
//!
//! `pytorch_model.bin` is a zip whose `data.pkl` rebuilds the state dict by calling the globals it
//! names. pytorch-reader never runs them, but a file that names anything other than the tensor
//! rebuild functions is not a plain state dict: it is refused before it is read (the Hub's
//! "Detected Pickle imports" check, done here).

/// The globals a state dict of tensors needs.
pub const ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It names a global outside [`ALLOWED`] (`module.name`).
    Global(String),
    /// It uses an opcode that can name a callable this scan cannot follow (`INST`, `OBJ`, `EXT*`,
    /// or `STACK_GLOBAL` on values that are not plain strings).
    Opcode(&'static str),
    /// The opcode stream is malformed or truncated.
    Malformed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global(g) => write!(f, "it calls {g}, which a plain state dict of tensors never does"),
            Self::Opcode(op) => write!(f, "it uses the pickle opcode {op}, which a plain state dict of tensors never does"),
            Self::Malformed(m) => write!(f, "its pickle is malformed ({m})"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| Refusal::Malformed(format!("truncated at byte {}", self.at)))?;
        let s = self.b.get(self.at..end).ok_or_else(|| Refusal::Malformed("truncated".into()))?;
        self.at = end;
        Ok(s)
    }
    fn uint(&mut self, n: usize) -> Result<usize, Refusal> {
        let mut v: u64 = 0;
        for (i, &byte) in self.take(n)?.iter().enumerate() {
            v |= u64::from(byte) << (8 * i);
        }
        usize::try_from(v).map_err(|_| Refusal::Malformed("length overflows".into()))
    }
    fn line(&mut self) -> Result<&'a str, Refusal> {
        let rest = self.b.get(self.at..).unwrap_or_default();
        let n = rest.iter().position(|&c| c == b'\n').ok_or_else(|| Refusal::Malformed("unterminated line".into()))?;
        let s = self.take(n + 1)?;
        std::str::from_utf8(s.get(..n).unwrap_or_default()).map_err(|_| Refusal::Malformed("line is not UTF-8".into()))
    }
}

/// Longest string the scan keeps (for `STACK_GLOBAL`, through the memo): module and attribute
/// names are short; a longer string is remembered as "not a name", so that a pickle that memoizes
/// one big string many times costs nothing (each copy used to be kept: a few KB of opcodes over a
/// 4 MB string asked for gigabytes).
const MAX_NAME: usize = 256;

/// Most memo entries a state dict's pickle is allowed (a few per tensor); more is refused.
const MAX_MEMO: usize = 1 << 22;

/// Walks every opcode of `pickle` and checks every global it names against [`ALLOWED`].
/// Returns the globals named (each once, in order of first use).
pub fn check(pickle: &[u8]) -> Result<Vec<String>, Refusal> {
    let mut r = Reader { b: pickle, at: 0 };
    let mut found: Vec<String> = Vec::new();
    // Strings pushed recently (for STACK_GLOBAL) and the memo (strings only).
    let mut recent: Vec<Option<String>> = Vec::new();
    let mut memo: std::collections::HashMap<usize, Option<String>> = std::collections::HashMap::new();
    let note = |g: String, found: &mut Vec<String>| -> Result<(), Refusal> {
        if !ALLOWED.contains(&g.as_str()) {
            return Err(Refusal::Global(g));
        }
        if !found.contains(&g) {
            found.push(g);
        }
        Ok(())
    };
    loop {
        let op = *r.take(1)?.first().ok_or_else(|| Refusal::Malformed("empty".into()))?;
        let mut pushed: Option<Option<String>> = Some(None);
        match op {
            b'.' => return Ok(found),
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?;
                note(format!("{module}.{name}"), &mut found)?;
            }
            0x93 => {
                let name = recent.pop().flatten();
                let module = recent.pop().flatten();
                match (module, name) {
                    (Some(m), Some(n)) => note(format!("{m}.{n}"), &mut found)?,
                    _ => return Err(Refusal::Opcode("STACK_GLOBAL")),
                }
            }
            b'i' => return Err(Refusal::Opcode("INST")),
            b'o' => return Err(Refusal::Opcode("OBJ")),
            0x82..=0x84 => return Err(Refusal::Opcode("EXT")),
            // Strings (kept for STACK_GLOBAL).
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = match op {
                    0x8c | b'U' => r.uint(1)?,
                    0x8d => r.uint(8)?,
                    _ => r.uint(4)?,
                };
                let bytes = r.take(n)?;
                pushed = Some(if n <= MAX_NAME { std::str::from_utf8(bytes).ok().map(str::to_string) } else { None });
            }
            b'V' | b'S' => {
                let line = r.line()?;
                pushed = Some((line.len() <= MAX_NAME).then(|| line.to_string()));
            }
            // Memo.
            b'q' | b'r' | b'p' => {
                let idx = match op {
                    b'q' => r.uint(1)?,
                    b'r' => r.uint(4)?,
                    _ => r.line()?.trim().parse().map_err(|_| Refusal::Malformed("bad PUT".into()))?,
                };
                if memo.len() >= MAX_MEMO && !memo.contains_key(&idx) {
                    return Err(Refusal::Malformed(format!("more than {MAX_MEMO} memo entries")));
                }
                memo.insert(idx, recent.last().cloned().flatten());
                pushed = None;
            }
            0x94 => {
                if memo.len() >= MAX_MEMO {
                    return Err(Refusal::Malformed(format!("more than {MAX_MEMO} memo entries")));
                }
                memo.insert(memo.len(), recent.last().cloned().flatten());
                pushed = None;
            }
            b'h' | b'j' | b'g' => {
                let idx = match op {
                    b'h' => r.uint(1)?,
                    b'j' => r.uint(4)?,
                    _ => r.line()?.trim().parse().map_err(|_| Refusal::Malformed("bad GET".into()))?,
                };
                pushed = Some(memo.get(&idx).cloned().flatten());
            }
            // Opcodes with fixed-size arguments.
            b'K' | 0x80 => {
                r.take(1)?;
            }
            b'M' => {
                r.take(2)?;
            }
            b'J' => {
                r.take(4)?;
            }
            b'G' | 0x95 => {
                r.take(8)?;
            }
            0x8a => {
                let n = r.uint(1)?;
                r.take(n)?;
            }
            0x8b => {
                let n = r.uint(4)?;
                r.take(n)?;
            }
            b'C' => {
                let n = r.uint(1)?;
                r.take(n)?;
            }
            b'B' => {
                let n = r.uint(4)?;
                r.take(n)?;
            }
            0x8e | 0x96 => {
                let n = r.uint(8)?;
                r.take(n)?;
            }
            // Newline-terminated arguments.
            b'I' | b'L' | b'F' | b'P' => {
                r.line()?;
            }
            // No arguments.
            b'(' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | b'a' | b'e' | b'l' | b't' | b'd' | b's' | b'u' | b'b' | b'R' | 0x81
            | 0x92 | 0x85 | 0x86 | 0x87 | b'Q' | 0x8f | 0x90 | 0x91 | 0x97 | 0x98 => {}
            other => return Err(Refusal::Malformed(format!("unknown opcode 0x{other:02x} at byte {}", r.at - 1))),
        }
        if let Some(p) = pushed {
            recent.push(p);
            if recent.len() > 64 {
                recent.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dict_pickle_passes_and_os_system_is_refused() {
        // pickle.dumps(OrderedDict(), protocol=2)
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert_eq!(check(ok), Ok(vec!["collections.OrderedDict".to_string()]));
        let evil = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x14\x00\x00\x00transformer.w.weightq\x02cos\nsystem\nq\x03X\n\x00\x00\x00echo pwnedq\x04\x85q\x05Rq\x06s.";
        assert_eq!(check(evil), Err(Refusal::Global("os.system".into())));
        // Protocol 4: STACK_GLOBAL on two short strings.
        let p4 = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.";
        assert_eq!(check(p4), Err(Refusal::Global("os.system".into())));
        assert!(matches!(check(b"\x80\x02c"), Err(Refusal::Malformed(_))));
    }

    /// A memory bomb of a few KB of opcodes: one 8 MB string memoized 4,000 times (32 GB when
    /// each memo entry copied it), then an `os.system` call. The scan stays small and still finds
    /// the global.
    #[test]
    fn memoizing_a_big_string_many_times_costs_nothing() {
        let mut p = b"\x80\x04".to_vec();
        p.push(0x8d);
        p.extend((8u64 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', 8 << 20));
        p.extend(std::iter::repeat_n(0x94, 4000));
        p.extend(b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94.");
        assert_eq!(check(&p), Err(Refusal::Global("os.system".into())));
        // Too many memo entries is refused outright.
        let mut q = b"\x80\x04N".to_vec();
        q.extend(std::iter::repeat_n(0x94, MAX_MEMO + 1));
        q.push(b'.');
        assert!(matches!(check(&q), Err(Refusal::Malformed(m)) if m.contains("memo entries")));
    }
}
