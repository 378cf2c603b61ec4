//! Writing files `torch.load` reads (also with `weights_only=True`): a protocol-2 pickle of plain
//! values and float tensors, in the zip layout `torch.save` writes (`{archive}/data.pkl`,
//! `{archive}/data/{key}`, `byteorder`, `version`), replaced atomically.

use std::io::Write as _;
use std::path::Path;

use crate::error::{LensError, Result};

/// Pickle opcodes this writer uses.
pub(crate) mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPENDS: u8 = b'e';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINFLOAT: u8 = b'G';
    pub const BINPERSID: u8 = b'Q';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

/// A value to pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (32-bit range).
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A list.
    List(Vec<Py>),
    /// A dict, in order.
    Dict(Vec<(Py, Py)>),
    /// A tensor of storage `key` (its index among the file's storages), float16 or float32.
    Tensor {
        /// Index of its storage.
        key: usize,
        /// Shape (row-major, contiguous).
        shape: Vec<usize>,
        /// float16 (else float32).
        half: bool,
    },
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(op::BINUNICODE);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_int(out: &mut Vec<u8>, v: i64) -> Result<()> {
    let v = i32::try_from(v).map_err(|_| LensError::invalid(format!("the integer {v} is too large for this pickle writer")))?;
    out.push(op::BININT);
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

pub(crate) fn put_ints(out: &mut Vec<u8>, vs: &[usize]) -> Result<()> {
    out.push(op::MARK);
    for &v in vs {
        put_int(out, v as i64)?;
    }
    out.push(op::TUPLE);
    Ok(())
}

/// `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())` with its
/// storage the persistent id `("storage", torch.{Half,Float}Storage, key, "cpu", numel)`.
pub(crate) fn put_tensor(p: &mut Vec<u8>, key: usize, shape: &[usize], half: bool) -> Result<()> {
    p.push(op::GLOBAL);
    p.extend_from_slice(b"torch._utils\n_rebuild_tensor_v2\n");
    p.push(op::MARK); // the arguments
    p.push(op::MARK); // the persistent id
    put_str(p, "storage");
    p.push(op::GLOBAL);
    p.extend_from_slice(if half { b"torch\nHalfStorage\n" } else { b"torch\nFloatStorage\n" });
    put_str(p, &key.to_string());
    put_str(p, "cpu");
    put_int(p, shape.iter().product::<usize>() as i64)?;
    p.push(op::TUPLE);
    p.push(op::BINPERSID);
    put_int(p, 0)?; // storage offset
    put_ints(p, shape)?;
    let strides: Vec<usize> = (0..shape.len()).map(|i| shape.iter().skip(i + 1).product()).collect();
    put_ints(p, &strides)?;
    p.push(op::NEWFALSE); // requires_grad
    p.push(op::GLOBAL);
    p.extend_from_slice(b"collections\nOrderedDict\n");
    p.push(op::EMPTY_TUPLE);
    p.push(op::REDUCE); // backward hooks
    p.push(op::TUPLE);
    p.push(op::REDUCE);
    Ok(())
}

fn put(p: &mut Vec<u8>, v: &Py) -> Result<()> {
    match v {
        Py::None => p.push(op::NONE),
        Py::Bool(b) => p.push(if *b { op::NEWTRUE } else { op::NEWFALSE }),
        Py::Int(i) => put_int(p, *i)?,
        Py::Float(f) => {
            p.push(op::BINFLOAT);
            p.extend_from_slice(&f.to_be_bytes());
        }
        Py::Str(s) => put_str(p, s),
        Py::List(items) => {
            p.push(op::EMPTY_LIST);
            if !items.is_empty() {
                p.push(op::MARK);
                for i in items {
                    put(p, i)?;
                }
                p.push(op::APPENDS);
            }
        }
        Py::Dict(items) => {
            p.push(op::EMPTY_DICT);
            if !items.is_empty() {
                p.push(op::MARK);
                for (k, v) in items {
                    put(p, k)?;
                    put(p, v)?;
                }
                p.push(op::SETITEMS);
            }
        }
        Py::Tensor { key, shape, half } => put_tensor(p, *key, shape, *half)?,
    }
    Ok(())
}

/// The protocol-2 pickle of `value`.
pub fn pickle(value: &Py) -> Result<Vec<u8>> {
    let mut p = vec![op::PROTO, 2];
    put(&mut p, value)?;
    p.push(op::STOP);
    Ok(p)
}

/// Writes `path` through a file opened for `write` and synced to disk, with the reports' own
/// replace-when-whole mechanism ([`crate::files::write_replacing`]: a crash or a full disk leaves
/// the old file, never half of a new one).
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
    crate::files::write_replacing(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| LensError::io(tmp, e))?;
        write(&mut f).and_then(|()| f.sync_all()).map_err(|e| LensError::io(path, e))
    })
}

/// Writes a `torch.save` zip at `path` (atomically): the pickle and each storage's bytes (storage
/// `key` is its index in `storages`), under the folder `archive`.
pub fn write_zip(path: &Path, archive: &str, pickle: &[u8], storages: &[&[u8]]) -> Result<()> {
    write_atomic(path, |f| {
        let mut zip = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
        let io = |e: zip::result::ZipError| std::io::Error::other(e.to_string());
        zip.start_file(format!("{archive}/data.pkl"), opts).map_err(io)?;
        zip.write_all(pickle)?;
        zip.start_file(format!("{archive}/byteorder"), opts).map_err(io)?;
        zip.write_all(b"little")?;
        for (key, bytes) in storages.iter().enumerate() {
            zip.start_file(format!("{archive}/data/{key}"), opts).map_err(io)?;
            zip.write_all(bytes)?;
        }
        zip.start_file(format!("{archive}/version"), opts).map_err(io)?;
        zip.write_all(b"3\n")?;
        zip.finish().map_err(io)?;
        Ok(())
    })
}
