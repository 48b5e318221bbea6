//! `.npy` files (NumPy's array format, version 1.0): how tensors enter and leave the CLI.
//!
//! Layout: the magic `\x93NUMPY`, the version bytes `1 0`, a little-endian `u16` header length,
//! then an ASCII Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a
//! newline so the data starts on a 64-byte boundary, then the elements in C order. Reading also
//! accepts versions 2 and 3 (a `u32` header length). Supported element types: `<f4` (f32) and
//! `<f8` (f64); Fortran order is refused.

use crate::checkpoint::write_atomic;
use gantry_core::{DType, Device, Error, Result, Tensor};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Encodes an f32 or f64 tensor as `.npy` bytes.
pub fn to_npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let (descr, data): (&str, Vec<u8>) = match t.dtype() {
        DType::F32 => (
            "<f4",
            t.to_vec::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            "<f8",
            t.to_vec::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        d => {
            return Err(Error::dtype(
                "write_npy",
                format!("only f32 and f64 tensors can be written, got {d}"),
            ))
        }
    };
    let shape = match t.dims() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header ends on a multiple of 64,
    // the header ending in '\n'.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Decodes `.npy` bytes; `what` names the source in errors.
pub fn from_npy_bytes(bytes: &[u8], what: &str) -> Result<Tensor> {
    let bad = |msg: String| Error::invalid("read_npy", format!("{what}: {msg}"));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-text header".into()))?;
    let descr = dict_value(header, "descr")
        .ok_or_else(|| bad(format!("no 'descr' in header {header:?}")))?;
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| bad("no 'fortran_order' in header".into()))?;
    let shape = dict_value(header, "shape").ok_or_else(|| bad("no 'shape' in header".into()))?;
    if fortran.trim() != "False" {
        return Err(bad(
            "Fortran-order arrays are not supported (save with C order)".into(),
        ));
    }
    let dims = shape
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad shape {shape}")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape} overflows")))?;
    let data = &bytes[start + header_len..];
    let descr = descr.trim().trim_matches('\'').trim_matches('"');
    macro_rules! read {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            if data.len() != count * N {
                return Err(bad(format!(
                    "shape {dims:?} needs {} bytes of data, the file has {}",
                    count * N,
                    data.len()
                )));
            }
            let v: Vec<$t> = data
                .chunks_exact(N)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("N bytes")))
                .collect();
            Tensor::from_vec(v, dims, Device::Cpu)
        }};
    }
    match descr {
        "<f4" => read!(f32),
        "<f8" => read!(f64),
        d => Err(Error::dtype(
            "read_npy",
            format!(
                "{what}: element type {d} is not supported (use float32 '<f4' or float64 '<f8')"
            ),
        )),
    }
}

/// The text of `key`'s value in a Python dict literal: up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Writes an f32 or f64 tensor as a `.npy` file, atomically.
pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    write_atomic(path.as_ref(), &to_npy_bytes(t)?)
}

/// Reads a `.npy` file of f32 or f64 values in C order.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    from_npy_bytes(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_bytes_and_round_trips() {
        for dims in [vec![], vec![5], vec![2, 3, 4]] {
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let t = Tensor::from_vec(v.clone(), dims.clone(), Device::Cpu).unwrap();
            let bytes = to_npy_bytes(&t).unwrap();
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            let back = from_npy_bytes(&bytes, "test").unwrap();
            assert_eq!(back.dims(), &dims[..]);
            assert_eq!(back.to_vec::<f32>().unwrap(), v);
        }
    }

    #[test]
    fn reads_what_numpy_writes() {
        // Bytes of `np.save(f, np.arange(6, dtype='<f8').reshape(2, 3))` (NumPy 1.x/2.x).
        let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        header.push_str(&" ".repeat(118 - header.len() - 1));
        header.push('\n');
        bytes.extend_from_slice(header.as_bytes());
        for i in 0..6 {
            bytes.extend_from_slice(&(i as f64).to_le_bytes());
        }
        let t = from_npy_bytes(&bytes, "numpy").unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        assert_eq!(
            t.to_vec::<f64>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0], [2], Device::Cpu).unwrap();
        let good = to_npy_bytes(&t).unwrap();
        // Replaces bytes of the header (same length, so the layout stays valid).
        let patch = |from: &[u8], to: &[u8]| {
            let mut b = good.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + from.len()].copy_from_slice(to);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not npy".to_vec(), "magic"),
            (good[..good.len() - 1].to_vec(), "needs 8 bytes"),
            (patch(b"False", b"True "), "Fortran"),
            (patch(b"<f4", b"<i4"), "<i4"),
        ];
        for (bytes, needle) in cases {
            let e = from_npy_bytes(&bytes, "x.npy").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("x.npy"), "{e}");
        }
    }
}
