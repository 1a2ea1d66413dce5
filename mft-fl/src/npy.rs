//! NumPy's `.npy` format for the float32 arrays Flower exchanges: what `np.save` writes for a
//! C-ordered `float32` array (format 1.0, `'<f4'`, header padded to 64 bytes) and a reader that
//! accepts any header version but only little-endian float32 in C order, refusing the rest by
//! name rather than misreading it.

use crate::error::{Error, Result};

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the data (the header's end) to this many bytes.
const ALIGN: usize = 64;
/// NumPy leaves room in the header for the first axis to grow to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// `values` (row-major, `shape`) as `np.save(buffer, array.astype("<f4"), allow_pickle=False)`
/// writes them, byte for byte.
///
/// # Panics
/// If `shape`'s product differs from `values.len()` (a programming error).
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "npy: shape and values differ");
    let dims = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // magic (6) + version (2) + header length (2), then the header ended by a newline.
    let unpadded = 10 + header.len() + 1;
    let pad = ALIGN - unpadded % ALIGN;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    let len = u16::try_from(header.len()).expect("a float32 header of a few dims fits 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A decoded float32 array.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Array {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// Reads a `.npy` payload holding a little-endian float32 array in C order.
///
/// # Errors
/// [`Error::Npy`] naming the problem: not `.npy`, an unknown version, a header that is not the
/// dictionary NumPy writes, another dtype, Fortran order, or data whose length differs from the
/// shape's.
pub fn decode_f32(bytes: &[u8]) -> Result<F32Array> {
    let bad = |problem: String| Error::Npy { problem };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy payload (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(bad(format!("format version {v}.{} is not supported", bytes[7]))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(format!("the header ({header_len} bytes) runs past the payload")))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad("the header is not text".into()))?;
    let descr =
        dict_value(header, "descr").ok_or_else(|| bad(format!("no 'descr' in {header:?}")))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" {
        return Err(bad(format!("dtype '{descr}' is not little-endian float32 ('<f4')")));
    }
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => return Err(bad("Fortran-ordered arrays are not supported".into())),
        other => return Err(bad(format!("'fortran_order' is {other:?}, not True or False"))),
    }
    let shape_text =
        dict_value(header, "shape").ok_or_else(|| bad(format!("no 'shape' in {header:?}")))?;
    let shape = parse_shape(shape_text).ok_or_else(|| bad(format!("bad shape {shape_text}")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let data = &bytes[end..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(bad(format!(
            "shape {shape:?} needs {count} float32 values ({} bytes); the data has {} bytes",
            count.saturating_mul(4),
            data.len()
        )));
    }
    let values =
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(F32Array { shape, values })
}

/// The text of `key`'s value in the header dictionary `{'descr': '<f4', ...}`: up to the next
/// top-level `,` or `}` (a shape's parentheses kept whole).
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let quoted = [format!("'{key}':"), format!("\"{key}\":")];
    let at = quoted.iter().find_map(|q| header.find(q.as_str()).map(|i| i + q.len()))?;
    let rest = &header[at..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// `(2, 3)`, `(5,)`, `()` as dimensions.
fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_shapes_of_every_rank() {
        for shape in [vec![], vec![5], vec![2, 3], vec![0, 4], vec![1, 2, 3], vec![123_456, 1]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let bytes = encode_f32(&shape, &values);
            assert_eq!((bytes.len() - n * 4) % ALIGN, 0, "header aligned for {shape:?}");
            let back = decode_f32(&bytes).unwrap();
            assert_eq!(back.shape, shape);
            assert_eq!(back.values, values);
        }
    }

    #[test]
    fn header_is_numpys() {
        // np.save(b, np.zeros((2, 3), dtype=np.float32)): the header NumPy 2.4 writes.
        let bytes = encode_f32(&[2, 3], &[0.0; 6]);
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00v\x00");
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with(" \n"));
        assert_eq!(bytes.len(), 152);
        assert_eq!(encode_f32(&[5], &[0.0; 5]).len(), 148);
        assert_eq!(encode_f32(&[], &[0.0]).len(), 132);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let good = encode_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        // Same-length edits of the header, so the data stays where it was.
        let swap = |from: &str, to: &str| {
            assert_eq!(from.len(), to.len());
            let mut bytes = good.clone();
            let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
            bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
            decode_f32(&bytes).unwrap_err().to_string()
        };
        assert!(swap("<f4", "<f8").contains("'<f8' is not little-endian float32"));
        assert!(swap("<f4", ">f4").contains("'>f4'"));
        assert!(swap("False", "True ").contains("Fortran"));
        assert!(swap("(2, 2)", "(2, 3)").contains("needs 6 float32 values"));
        assert!(decode_f32(b"PK\x03\x04 not npy").unwrap_err().to_string().contains("magic"));
        assert!(decode_f32(&good[..20]).unwrap_err().to_string().contains("runs past"));
        let mut v9 = good.clone();
        v9[6] = 9;
        assert!(decode_f32(&v9).unwrap_err().to_string().contains("version 9.0"));
    }
}
