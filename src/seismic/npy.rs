//! `.npy` reading, our own: the header is validated against the file's length before anything
//! is allocated, so a header declaring a huge shape or a truncated file is a one-line error
//! (ndarray-npy allocates what the header declares, and reports truncation as a bad descriptor).
//!
//! Format (numpy's `NEP 1`): the magic `\x93NUMPY`, a version (1.0: 2-byte header length;
//! 2.0/3.0: 4-byte), then a Python dict literal `{'descr': '<f4', 'fortran_order': False,
//! 'shape': (3, 4), }` padded with spaces, then the raw values.

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use std::path::Path;

/// Element types we read: floats for data, integers for class targets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Element {
    F32,
    F64,
    I32,
    I64,
}

impl Element {
    fn bytes(self) -> usize {
        match self {
            Element::F32 | Element::I32 => 4,
            Element::F64 | Element::I64 => 8,
        }
    }
}

/// What the header declares.
#[derive(Debug, PartialEq)]
struct Header {
    element: Element,
    little_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Where the values start.
    data_start: usize,
}

/// Opens an input file, saying "is a directory" (not "cannot map: No such device" or a read
/// error) when it is one. Every reader of a user-named input goes through this.
pub fn open_input(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    match file.metadata() {
        Ok(m) if m.is_dir() => Err(format!("{}: is a directory, not a data file", path.display())),
        Ok(_) => Ok(file),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Reads a float32/float64/int32/int64 `.npy` (either byte order, C or Fortran order) as f64.
pub fn read(path: &Path) -> Result<ArrayD<f64>, String> {
    use std::io::Read;
    let fail = |reason: String| format!("{}: {reason}", path.display());
    let mut file = open_input(path)?;
    let mut bytes = vec![];
    file.read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse(&bytes).map_err(fail)
}

/// Reads a `.npy` that must hold values (a section or samples to run a model on): an array with
/// a zero-length axis is an error naming the file and its shape.
pub fn read_nonempty(path: &Path) -> Result<ArrayD<f64>, String> {
    let a = read(path)?;
    if a.is_empty() {
        return Err(format!("{}: empty array of shape {:?}, nothing to read", path.display(), a.shape()));
    }
    Ok(a)
}

/// Parses a whole `.npy` file held in memory.
fn parse(bytes: &[u8]) -> Result<ArrayD<f64>, String> {
    let h = header(bytes)?;
    let count = h.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let held = (bytes.len() - h.data_start) / h.element.bytes();
    let Some(count) = count.filter(|c| c.checked_mul(h.element.bytes()).is_some()) else {
        return Err(format!(
            "truncated: header declares shape {:?}, more values than any file can hold; file holds {held}",
            h.shape
        ));
    };
    let data = &bytes[h.data_start..];
    let needed = count * h.element.bytes();
    if data.len() < needed {
        return Err(format!("truncated: header declares {count} values, file holds {held}"));
    }
    if data.len() > needed {
        return Err(format!(
            "header declares {count} values but the file holds {} more bytes after them",
            data.len() - needed
        ));
    }
    let data = &data[..needed];
    let values: Vec<f64> = match h.element {
        Element::F32 => {
            data.chunks_exact(4).map(|c| f32::from_bits(word4(c, h.little_endian)) as f64).collect()
        }
        Element::F64 => data.chunks_exact(8).map(|c| f64::from_bits(word8(c, h.little_endian))).collect(),
        Element::I32 => data.chunks_exact(4).map(|c| word4(c, h.little_endian) as i32 as f64).collect(),
        Element::I64 => data.chunks_exact(8).map(|c| word8(c, h.little_endian) as i64 as f64).collect(),
    };
    let shape = IxDyn(&h.shape);
    let array = if h.fortran_order {
        ArrayD::from_shape_vec(shape.f(), values)
    } else {
        ArrayD::from_shape_vec(shape, values)
    };
    let array = array.map_err(|e| format!("shape {:?}: {e}", h.shape))?;
    // Callers index rows as slices: hand out standard (C) order either way.
    Ok(if array.is_standard_layout() { array } else { array.as_standard_layout().into_owned() })
}

fn word4(c: &[u8], little: bool) -> u32 {
    let a = [c[0], c[1], c[2], c[3]];
    if little { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
}

fn word8(c: &[u8], little: bool) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&c[..8]);
    if little { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) }
}

/// The header, validated: magic, version, length within the file, and the three keys.
fn header(bytes: &[u8]) -> Result<Header, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic at its start)".into());
    }
    let major = bytes[6];
    let (len_bytes, text_start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => return Err(format!("unsupported .npy version {v}.{}", bytes[7])),
    };
    let Some(len_field) = bytes.get(8..8 + len_bytes) else {
        return Err(format!("truncated: the file ends inside the header ({} bytes)", bytes.len()));
    };
    let header_len = len_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | b as usize);
    let data_start = text_start + header_len;
    let Some(text) = bytes.get(text_start..data_start) else {
        return Err(format!(
            "truncated: the header says it is {header_len} bytes long, the file has {} after the length field",
            bytes.len() - text_start.min(bytes.len())
        ));
    };
    let text = std::str::from_utf8(text).map_err(|_| "the header is not text".to_string())?;
    let descr = dict_value(text, "descr").ok_or("the header has no 'descr'")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let (order, kind) = descr.split_at(descr.len().min(1));
    let little_endian = match order {
        "<" | "|" | "=" => true,
        ">" => false,
        _ => return Err(format!("unsupported element type '{descr}'")),
    };
    let element = match kind {
        "f4" => Element::F32,
        "f8" => Element::F64,
        "i4" => Element::I32,
        "i8" => Element::I64,
        _ => {
            return Err(format!(
                "unsupported element type '{descr}': expected float32/float64 (or int32/int64 for class targets)"
            ));
        }
    };
    let fortran_order = match dict_value(text, "fortran_order").map(str::trim) {
        Some("False") | None => false,
        Some("True") => true,
        Some(other) => return Err(format!("the header's fortran_order is `{other}`")),
    };
    let shape_text = dict_value(text, "shape").ok_or("the header has no 'shape'")?;
    let shape_text = shape_text.trim();
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("the header's shape `{shape_text}` is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("the header's shape `{shape_text}` is not a tuple of sizes"))?;
    Ok(Header { element, little_endian, fortran_order, shape, data_start })
}

/// The text of `'key': value` in a Python dict literal whose values are strings, booleans or
/// tuples (up to the next top-level comma or the closing brace).
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| text.find(k.as_str()).map(|i| i + k.len()))?;
    let rest = text[at..].trim_start().strip_prefix(':')?;
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` as numpy 1.x writes it: header padded so the data starts at a multiple of 64.
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_floats_and_ints_either_order() {
        let le: Vec<u8> = [1.5f32, -2.0, 3.25, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse(&npy("<f4", "(2, 2)", &le)).unwrap();
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1.5, -2.0, 3.25, 4.0]);
        let be: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse(&npy(">i8", "(2,)", &be)).unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![7.0, -3.0]);
    }

    #[test]
    fn fortran_order_is_transposed_back() {
        // numpy: np.asfortranarray([[1, 2, 3], [4, 5, 6]], dtype='<f8') stores 1 4 2 5 3 6.
        let data: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = npy("<f8", "(2, 3)", &data);
        // `False` → `True ` keeps the length, so the offsets hold.
        let at = bytes.windows(5).position(|w| w == b"False").unwrap();
        bytes[at..at + 5].copy_from_slice(b"True ");
        let a = parse(&bytes).unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn declared_sizes_are_checked_before_allocating() {
        // 4 TB declared, 16 bytes held: refused without allocating.
        let e = parse(&npy("<f4", "(1000000, 1000000)", &[0; 16])).unwrap_err();
        assert_eq!(e, "truncated: header declares 1000000000000 values, file holds 4");
        let e = parse(&npy("<f8", "(18446744073709551615, 3)", &[0; 8])).unwrap_err();
        assert!(e.starts_with("truncated: header declares shape"), "{e}");
        let e = parse(&npy("<f4", "(3, 4)", &[0; 40])).unwrap_err();
        assert_eq!(e, "truncated: header declares 12 values, file holds 10");
        let e = parse(&npy("<f4", "(2,)", &[0; 12])).unwrap_err();
        assert!(e.contains("4 more bytes"), "{e}");
    }

    #[test]
    fn empty_arrays_are_an_error_where_values_are_needed() {
        let dir = std::env::temp_dir().join(format!("geonetc-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.npy");
        std::fs::write(&p, npy("<f4", "(0, 100)", &[])).unwrap();
        assert_eq!(read(&p).unwrap().shape(), &[0, 100]);
        assert!(
            read_nonempty(&p)
                .unwrap_err()
                .ends_with("empty.npy: empty array of shape [0, 100], nothing to read")
        );
        let e = read(&dir).unwrap_err();
        assert!(e.ends_with(": is a directory, not a data file"), "{e}");
    }

    #[test]
    fn malformed_headers_are_one_line_errors() {
        let good = npy("<f4", "(1,)", &[0; 4]);
        for cut in [0, 5, 9, 20, 60] {
            let e = parse(&good[..cut]).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{cut}: {e}");
        }
        assert!(parse(&npy("<c16", "(1,)", &[0; 16])).unwrap_err().contains("unsupported element type"));
        assert!(parse(&npy("<f4", "[1]", &[0; 4])).unwrap_err().contains("not a tuple"));
        assert!(parse(&npy("<f4", "(-1,)", &[0; 4])).unwrap_err().contains("not a tuple of sizes"));
    }
}
