//! The globals a pickle names and the tensor views it builds, found by walking its opcodes on a
//! small model of the pickle machine's stack, without running anything.
//!
//! `pytorch_model.bin` is a zip whose `data.pkl` rebuilds the state dict by calling the globals it
//! names. pytorch-reader never runs them, but a file that names anything other than the tensor
//! rebuild functions is not a plain state dict: it is refused before it is read (the Hub's
//! "Detected Pickle imports" check, done here). Each tensor rebuild's storage, offset, shape and
//! strides are checked too: a view that repeats its storage (a zero stride, or more elements than
//! the storage holds) or reaches past it is refused before pytorch-reader would gather it.

use std::rc::Rc;

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
    /// A tensor view that repeats its storage or reaches past it (the text says which and how).
    View(String),
    /// The opcode stream is malformed or truncated.
    Malformed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global(g) => write!(f, "it calls {g}, which a plain state dict of tensors never does"),
            Self::Opcode(op) => write!(f, "it uses the pickle opcode {op}, which a plain state dict of tensors never does"),
            Self::View(v) => write!(f, "{v}"),
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

/// Longest string the scan keeps (global names, the storage tag, tensor names for messages): a
/// longer string is remembered as "not a name", so that a pickle that memoizes one big string many
/// times costs nothing (each copy used to be kept: a few KB of opcodes over a 4 MB string asked
/// for gigabytes).
const MAX_NAME: usize = 256;

/// Most memo entries a state dict's pickle is allowed (a few per tensor); more is refused.
const MAX_MEMO: usize = 1 << 22;

/// Deepest stack a state dict's pickle is allowed (`SETITEMS` batches 1,000 pairs); more is
/// refused, so that megabytes of `NONE` opcodes cannot grow the scan.
const MAX_STACK: usize = 1 << 20;

/// What the scan knows of a value on the pickle stack. Containers share their items (`Rc`), so a
/// memoized tuple fetched many times costs one pointer each time.
#[derive(Clone, Debug)]
enum V {
    /// The `MARK` opcode's marker.
    Mark,
    /// An integer that fits in `i64`.
    Int(i64),
    /// A string; `None` when longer than [`MAX_NAME`] or not UTF-8.
    Str(Option<Rc<str>>),
    /// A tuple.
    Tuple(Rc<[V]>),
    /// A global (`module.name`), already checked against [`ALLOWED`].
    Global(Rc<str>),
    /// A storage named by a persistent id: its element count.
    Storage(u64),
    /// Anything else (dicts, lists, None, bools, floats, bytes, rebuilt tensors).
    Other,
}

struct Machine {
    stack: Vec<V>,
    memo: std::collections::HashMap<usize, V>,
    found: Vec<String>,
    tensors: usize,
}

impl Machine {
    fn push(&mut self, v: V) -> Result<(), Refusal> {
        if self.stack.len() >= MAX_STACK {
            return Err(Refusal::Malformed(format!("a stack deeper than {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> Result<V, Refusal> {
        self.stack.pop().ok_or_else(|| Refusal::Malformed("stack underflow".into()))
    }
    fn pop_mark(&mut self) -> Result<Vec<V>, Refusal> {
        let at = self.stack.iter().rposition(|v| matches!(v, V::Mark)).ok_or_else(|| Refusal::Malformed("no MARK".into()))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn pop_n(&mut self, n: usize) -> Result<Vec<V>, Refusal> {
        let at = self.stack.len().checked_sub(n).ok_or_else(|| Refusal::Malformed("stack underflow".into()))?;
        Ok(self.stack.split_off(at))
    }
    fn global(&mut self, g: String) -> Result<V, Refusal> {
        if !ALLOWED.contains(&g.as_str()) {
            return Err(Refusal::Global(g));
        }
        if !self.found.contains(&g) {
            self.found.push(g.clone());
        }
        Ok(V::Global(g.into()))
    }
    fn memo_put(&mut self, idx: usize) -> Result<(), Refusal> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return Err(Refusal::Malformed(format!("more than {MAX_MEMO} memo entries")));
        }
        let top = self.stack.last().cloned().ok_or_else(|| Refusal::Malformed("PUT on an empty stack".into()))?;
        self.memo.insert(idx, top);
        Ok(())
    }
}

fn short(bytes: &[u8]) -> V {
    V::Str(if bytes.len() <= MAX_NAME { std::str::from_utf8(bytes).ok().map(Rc::from) } else { None })
}

fn int_of(v: &V) -> Option<i64> {
    match v {
        V::Int(i) => Some(*i),
        _ => None,
    }
}

fn ints_of(v: &V) -> Option<Vec<i64>> {
    match v {
        V::Tuple(items) => items.iter().map(int_of).collect(),
        _ => None,
    }
}

/// Checks one `_rebuild_tensor(_v2)(storage, offset, size, stride, …)` call: a zero stride on a
/// dimension longer than one, more elements than the storage holds, or a view reaching past the
/// storage's end is refused.
fn check_view(args: &[V], name: &str) -> Result<(), Refusal> {
    let what = || Refusal::Malformed(format!("tensor {name} is rebuilt from arguments this scan cannot read"));
    let (Some(V::Storage(numel)), Some(offset), Some(size), Some(stride)) =
        (args.first(), args.get(1).and_then(int_of), args.get(2).and_then(ints_of), args.get(3).and_then(ints_of))
    else {
        return Err(what());
    };
    if size.len() != stride.len() || offset < 0 || size.iter().chain(&stride).any(|&x| x < 0) {
        return Err(what());
    }
    let to_u = |x: i64| u64::try_from(x).map_err(|_| what());
    if size.contains(&0) {
        return Ok(());
    }
    if let Some(d) = size.iter().zip(&stride).position(|(&n, &s)| n > 1 && s == 0) {
        return Err(Refusal::View(format!(
            "tensor {name} (shape {size:?}) repeats its storage along dimension {d} (a zero-stride view, as expand makes): a repeated view is refused, not expanded"
        )));
    }
    let mut elements: u64 = 1;
    let mut last: u64 = to_u(offset)?;
    for (&n, &s) in size.iter().zip(&stride) {
        elements = elements.checked_mul(to_u(n)?).ok_or_else(what)?;
        last = to_u(n - 1)?.checked_mul(to_u(s)?).and_then(|x| x.checked_add(last)).ok_or_else(what)?;
    }
    if elements > *numel {
        return Err(Refusal::View(format!(
            "tensor {name} (shape {size:?}, strides {stride:?}) has {elements} elements, its storage holds {numel}: a view that repeats its storage is refused, not expanded"
        )));
    }
    if last >= *numel {
        return Err(Refusal::View(format!(
            "tensor {name} (shape {size:?}, strides {stride:?}, offset {offset}) reaches element {last} of a storage of {numel}"
        )));
    }
    Ok(())
}

/// Walks every opcode of `pickle`: every global it names is checked against [`ALLOWED`], and
/// every tensor rebuild's view against its storage. Returns the globals named (each once, in
/// order of first use).
pub fn check(pickle: &[u8]) -> Result<Vec<String>, Refusal> {
    let mut r = Reader { b: pickle, at: 0 };
    let mut m = Machine { stack: Vec::new(), memo: std::collections::HashMap::new(), found: Vec::new(), tensors: 0 };
    loop {
        let op = *r.take(1)?.first().ok_or_else(|| Refusal::Malformed("empty".into()))?;
        let v = match op {
            b'.' => return Ok(m.found),
            // Globals.
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?;
                m.global(format!("{module}.{name}"))?
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                match (module, name) {
                    (V::Str(Some(a)), V::Str(Some(b))) => m.global(format!("{a}.{b}"))?,
                    _ => return Err(Refusal::Opcode("STACK_GLOBAL")),
                }
            }
            b'i' => return Err(Refusal::Opcode("INST")),
            b'o' => return Err(Refusal::Opcode("OBJ")),
            0x82..=0x84 => return Err(Refusal::Opcode("EXT")),
            // Calls.
            b'R' => {
                let args = m.pop()?;
                let callable = m.pop()?;
                if let V::Global(g) = &callable
                    && (g.as_ref() == "torch._utils._rebuild_tensor_v2" || g.as_ref() == "torch._utils._rebuild_tensor")
                {
                    // The key of a state dict entry is pushed just before its value.
                    let name = match m.stack.last() {
                        Some(V::Str(Some(k))) => k.to_string(),
                        _ => format!("number {}", m.tensors + 1),
                    };
                    let V::Tuple(items) = &args else {
                        return Err(Refusal::Malformed(format!("tensor {name} is rebuilt from arguments this scan cannot read")));
                    };
                    check_view(items, &name)?;
                    m.tensors += 1;
                }
                V::Other
            }
            0x81 => {
                m.pop_n(2)?;
                V::Other
            }
            0x92 => {
                m.pop_n(3)?;
                V::Other
            }
            b'Q' => match m.pop()? {
                V::Tuple(t) => match (t.first(), t.get(4).and_then(int_of)) {
                    (Some(V::Str(Some(tag))), Some(n)) if tag.as_ref() == "storage" => {
                        V::Storage(u64::try_from(n).map_err(|_| Refusal::Malformed("a negative storage size".into()))?)
                    }
                    _ => V::Other,
                },
                _ => V::Other,
            },
            b'P' => {
                r.line()?;
                V::Other
            }
            // Integers.
            b'K' => V::Int(r.uint(1)? as i64),
            b'M' => V::Int(r.uint(2)? as i64),
            b'J' => V::Int(i64::from(i32::from_le_bytes(r.take(4)?.try_into().map_err(|_| Refusal::Malformed("BININT".into()))?))),
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.uint(1)? } else { r.uint(4)? };
                let bytes = r.take(n)?;
                if (1..=8).contains(&n) {
                    let mut buf = [0u8; 8];
                    buf.get_mut(..n).ok_or_else(|| Refusal::Malformed("LONG".into()))?.copy_from_slice(bytes);
                    // Sign-extend from the top byte.
                    if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        for x in buf.iter_mut().skip(n) {
                            *x = 0xff;
                        }
                    }
                    V::Int(i64::from_le_bytes(buf))
                } else if n == 0 {
                    V::Int(0)
                } else {
                    V::Other
                }
            }
            b'I' | b'L' => {
                let line = r.line()?.trim_end_matches('L');
                line.parse::<i64>().map_or(V::Other, V::Int)
            }
            // Strings.
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = match op {
                    0x8c | b'U' => r.uint(1)?,
                    0x8d => r.uint(8)?,
                    _ => r.uint(4)?,
                };
                short(r.take(n)?)
            }
            b'V' | b'S' => {
                let line = r.line()?;
                let line = if op == b'S' { line.trim_matches(|c| c == '\'' || c == '"') } else { line };
                short(line.as_bytes())
            }
            // Other scalars and bytes.
            b'N' | 0x88 | 0x89 => V::Other,
            b'F' => {
                r.line()?;
                V::Other
            }
            b'G' => {
                r.take(8)?;
                V::Other
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'C' => r.uint(1)?,
                    b'B' => r.uint(4)?,
                    _ => r.uint(8)?,
                };
                r.take(n)?;
                V::Other
            }
            // Containers.
            b')' => V::Tuple(Rc::from(Vec::new())),
            b']' | b'}' | 0x8f => V::Other,
            b't' => V::Tuple(Rc::from(m.pop_mark()?)),
            0x85..=0x87 => V::Tuple(Rc::from(m.pop_n(usize::from(op - 0x84))?)),
            b'l' | b'd' | 0x91 => {
                m.pop_mark()?;
                V::Other
            }
            b'a' | b'b' => {
                m.pop()?;
                continue;
            }
            b's' => {
                m.pop_n(2)?;
                continue;
            }
            b'e' | b'u' | 0x90 => {
                m.pop_mark()?;
                continue;
            }
            // Stack.
            b'(' => V::Mark,
            b'0' => {
                m.pop()?;
                continue;
            }
            b'1' => {
                m.pop_mark()?;
                continue;
            }
            b'2' => m.stack.last().cloned().ok_or_else(|| Refusal::Malformed("DUP on an empty stack".into()))?,
            // Memo.
            b'q' | b'r' | b'p' => {
                let idx = match op {
                    b'q' => r.uint(1)?,
                    b'r' => r.uint(4)?,
                    _ => r.line()?.trim().parse().map_err(|_| Refusal::Malformed("bad PUT".into()))?,
                };
                m.memo_put(idx)?;
                continue;
            }
            0x94 => {
                let idx = m.memo.len();
                m.memo_put(idx)?;
                continue;
            }
            b'h' | b'j' | b'g' => {
                let idx = match op {
                    b'h' => r.uint(1)?,
                    b'j' => r.uint(4)?,
                    _ => r.line()?.trim().parse().map_err(|_| Refusal::Malformed("bad GET".into()))?,
                };
                m.memo.get(&idx).cloned().ok_or_else(|| Refusal::Malformed(format!("GET of memo entry {idx}, never PUT")))?
            }
            // Framing.
            0x80 => {
                r.take(1)?;
                continue;
            }
            0x95 => {
                r.take(8)?;
                continue;
            }
            // Out-of-band buffers (protocol 5): never in a state dict.
            0x97 | 0x98 => return Err(Refusal::Opcode("NEXT_BUFFER")),
            other => return Err(Refusal::Malformed(format!("unknown opcode 0x{other:02x} at byte {}", r.at - 1))),
        };
        m.push(v)?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
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

    /// `data.pkl` of `torch.save` (torch 2, protocol 2), made by the snippet in each test's comment.
    /// `{"w": t, "tied": t, "slice": t[1:], "scalar": torch.tensor(1.0), "empty": torch.zeros(0, 4)}`
    /// with `t = torch.arange(6.).reshape(2, 3)`.
    const PLAIN: &[u8] = b"\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x77\x71\x01\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72\x5f\x76\x32\x0a\x71\x02\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65\x71\x03\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x30\x71\x05\x58\x03\x00\x00\x00\x63\x70\x75\x71\x06\x4b\x06\x74\x71\x07\x51\x4b\x00\x4b\x02\x4b\x03\x86\x71\x08\x4b\x03\x4b\x01\x86\x71\x09\x89\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x0a\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d\x58\x04\x00\x00\x00\x74\x69\x65\x64\x71\x0e\x68\x0d\x58\x05\x00\x00\x00\x73\x6c\x69\x63\x65\x71\x0f\x68\x02\x28\x28\x68\x03\x68\x04\x68\x05\x68\x06\x4b\x06\x74\x71\x10\x51\x4b\x03\x4b\x01\x4b\x03\x86\x71\x11\x4b\x03\x4b\x01\x86\x71\x12\x89\x68\x0a\x29\x52\x71\x13\x74\x71\x14\x52\x71\x15\x58\x06\x00\x00\x00\x73\x63\x61\x6c\x61\x72\x71\x16\x68\x02\x28\x28\x68\x03\x68\x04\x58\x01\x00\x00\x00\x31\x71\x17\x68\x06\x4b\x01\x74\x71\x18\x51\x4b\x00\x29\x29\x89\x68\x0a\x29\x52\x71\x19\x74\x71\x1a\x52\x71\x1b\x58\x05\x00\x00\x00\x65\x6d\x70\x74\x79\x71\x1c\x68\x02\x28\x28\x68\x03\x68\x04\x58\x01\x00\x00\x00\x32\x71\x1d\x68\x06\x4b\x00\x74\x71\x1e\x51\x4b\x00\x4b\x00\x4b\x04\x86\x71\x1f\x4b\x04\x4b\x01\x86\x71\x20\x89\x68\x0a\x29\x52\x71\x21\x74\x71\x22\x52\x71\x23\x75\x2e";
    /// `{"w": torch.zeros(1).expand(4, 3)}`.
    const EXPAND: &[u8] = b"\x80\x02\x7d\x71\x00\x58\x01\x00\x00\x00\x77\x71\x01\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72\x5f\x76\x32\x0a\x71\x02\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65\x71\x03\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x30\x71\x05\x58\x03\x00\x00\x00\x63\x70\x75\x71\x06\x4b\x01\x74\x71\x07\x51\x4b\x00\x4b\x04\x4b\x03\x86\x71\x08\x4b\x00\x4b\x00\x86\x71\x09\x89\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x0a\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d\x73\x2e";
    /// `{"w": torch.zeros(6).as_strided((3, 3), (1, 1))}`: 9 elements over a storage of 6.
    const OVERLAP: &[u8] = b"\x80\x02\x7d\x71\x00\x58\x01\x00\x00\x00\x77\x71\x01\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72\x5f\x76\x32\x0a\x71\x02\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65\x71\x03\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x30\x71\x05\x58\x03\x00\x00\x00\x63\x70\x75\x71\x06\x4b\x06\x74\x71\x07\x51\x4b\x00\x4b\x03\x4b\x03\x86\x71\x08\x4b\x01\x4b\x01\x86\x71\x09\x89\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x0a\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d\x73\x2e";

    fn replaced(p: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = p.windows(from.len()).position(|w| w == from).unwrap();
        assert_eq!(p.windows(from.len()).filter(|w| *w == from).count(), 1, "the pattern is not unique");
        [&p[..at], to, &p[at + from.len()..]].concat()
    }

    #[test]
    fn torch_save_views_are_checked_against_their_storages() {
        // Shared storages, a slice at an offset, a scalar and an empty tensor all pass.
        assert_eq!(
            check(PLAIN),
            Ok(vec!["torch._utils._rebuild_tensor_v2".to_string(), "torch.FloatStorage".to_string(), "collections.OrderedDict".to_string()])
        );
        let e = check(EXPAND).unwrap_err().to_string();
        assert!(e.contains("tensor w (shape [4, 3])") && e.contains("zero-stride"), "{e}");
        let e = check(OVERLAP).unwrap_err().to_string();
        assert!(e.contains("has 9 elements, its storage holds 6"), "{e}");
        // The first storage claims 4 elements under a [2, 3] view.
        let small = replaced(PLAIN, b"K\x06tq\x07", b"K\x04tq\x07");
        let e = check(&small).unwrap_err().to_string();
        assert!(e.contains("tensor w (shape [2, 3], strides [3, 1]) has 6 elements, its storage holds 4"), "{e}");
        // The slice moved to offset 5: three elements, but the last is element 7 of 6.
        let past = replaced(PLAIN, b"QK\x03K\x01K\x03\x86q\x11", b"QK\x05K\x01K\x03\x86q\x11");
        let e = check(&past).unwrap_err().to_string();
        assert!(e.contains("tensor slice") && e.contains("reaches element 7 of a storage of 6"), "{e}");
        // A rebuild whose storage is not a persistent id cannot be checked, so it is refused.
        let no_storage = replaced(EXPAND, b"X\x07\x00\x00\x00storage", b"X\x07\x00\x00\x00storagf");
        assert!(matches!(check(&no_storage), Err(Refusal::Malformed(m)) if m.contains("cannot read")));
    }

    /// Megabytes of `NONE` opcodes (each a stack value) are refused at the stack limit, not held.
    #[test]
    fn a_deep_stack_is_refused() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'N', MAX_STACK + 1));
        p.push(b'.');
        assert!(matches!(check(&p), Err(Refusal::Malformed(m)) if m.contains("stack deeper")));
    }
}
