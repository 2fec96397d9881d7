//! Reading CSV input files with errors a user can act on.
//!
//! Owns [`CsvError`] (every error names the file, the 1-based line and the column) and
//! [`CsvFile`], a thin wrapper over the `csv` crate that locates columns by header name, checks
//! that every row has as many fields as the header, and parses fields without panicking. The trace
//! readers and the data-profile reader share it.

use std::fs::File;
use std::path::{Path, PathBuf};

use csv::{ByteRecord, Reader, ReaderBuilder};

/// An error in a CSV input file. Each message starts with `FILE:LINE:` (line 1 is the header).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The CSV parser failed (for example, invalid quoting).
    #[error("{}:{line}: {source}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        source: csv::Error,
    },
    /// The file has no header line.
    #[error("{}:1: empty file: expected a header line with columns {expected}", path.display())]
    Empty { path: PathBuf, expected: String },
    /// The file has a header but no data rows where some are required.
    #[error("{}:2: no data rows after the header", path.display())]
    NoRows { path: PathBuf },
    /// A column the reader needs is not in the header.
    #[error("{}:1: missing column \"{column}\" in the header", path.display())]
    MissingColumn { path: PathBuf, column: String },
    /// A row does not have as many fields as the header.
    #[error("{}:{line}: malformed row: {found} fields, but the header has {expected}", path.display())]
    FieldCount {
        path: PathBuf,
        line: u64,
        expected: usize,
        found: usize,
    },
    /// A field holds a value of the wrong kind.
    #[error("{}:{line}: column \"{column}\": \"{value}\" is not {expected}", path.display())]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        expected: &'static str,
    },
}

/// An open CSV file whose first line is a header; see the module docs.
#[derive(Debug)]
pub struct CsvFile {
    path: PathBuf,
    reader: Reader<File>,
    header: Vec<String>,
}

impl CsvFile {
    /// Opens `path` and reads its header. `expected` describes the columns for the empty-file
    /// error.
    pub fn open(path: &Path, expected: &str) -> Result<Self, CsvError> {
        let file = File::open(path).map_err(|source| CsvError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(file);
        let mut record = ByteRecord::new();
        let read = reader
            .read_byte_record(&mut record)
            .map_err(|source| read_error(path, 1, source))?;
        if !read {
            return Err(CsvError::Empty {
                path: path.to_owned(),
                expected: expected.to_owned(),
            });
        }
        let header = record
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let text = String::from_utf8_lossy(field);
                let text = if i == 0 {
                    text.trim_start_matches('\u{feff}')
                } else {
                    &text
                };
                text.trim().to_owned()
            })
            .collect();
        Ok(Self {
            path: path.to_owned(),
            reader,
            header,
        })
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Index of the column named `name`, or an error naming it.
    pub fn column(&self, name: &str) -> Result<usize, CsvError> {
        self.find(name).ok_or_else(|| CsvError::MissingColumn {
            path: self.path.clone(),
            column: name.to_owned(),
        })
    }

    /// Index of the column named `name`, if the header has it.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The header's column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Reads the next data row into `record`; returns its 1-based line, or `None` at the end.
    /// A row with a different number of fields than the header is an error.
    pub fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, CsvError> {
        let read = self.reader.read_byte_record(record).map_err(|source| {
            let line = source.position().map_or(0, csv::Position::line);
            read_error(&self.path, line, source)
        })?;
        if !read {
            return Ok(None);
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != self.header.len() {
            return Err(CsvError::FieldCount {
                path: self.path.clone(),
                line,
                expected: self.header.len(),
                found: record.len(),
            });
        }
        Ok(Some(line))
    }

    /// The error for a field at `col` of the row at `line` that is not `expected`.
    pub fn bad(&self, line: u64, col: usize, value: &[u8], expected: &'static str) -> CsvError {
        CsvError::BadValue {
            path: self.path.clone(),
            line,
            column: self.header.get(col).cloned().unwrap_or_default(),
            value: String::from_utf8_lossy(value).into_owned(),
            expected,
        }
    }

    /// Field `col` as UTF-8 text (trimmed).
    pub fn text<'r>(
        &self,
        record: &'r ByteRecord,
        line: u64,
        col: usize,
    ) -> Result<&'r str, CsvError> {
        let raw = record.get(col).unwrap_or_default();
        std::str::from_utf8(raw)
            .map(str::trim)
            .map_err(|_| self.bad(line, col, raw, "UTF-8 text"))
    }

    /// Field `col` as a non-negative integer that fits in 32 bits.
    pub fn u32(&self, record: &ByteRecord, line: u64, col: usize) -> Result<u32, CsvError> {
        let raw = record.get(col).unwrap_or_default();
        parse_u32(raw).ok_or_else(|| self.bad(line, col, raw, "a non-negative integer"))
    }

    /// Field `col` as a non-negative integer that fits in 64 bits.
    pub fn u64(&self, record: &ByteRecord, line: u64, col: usize) -> Result<u64, CsvError> {
        let raw = record.get(col).unwrap_or_default();
        parse_u64(raw).ok_or_else(|| self.bad(line, col, raw, "a non-negative integer"))
    }

    /// Field `col` as a finite, non-negative number.
    pub fn non_negative(
        &self,
        record: &ByteRecord,
        line: u64,
        col: usize,
    ) -> Result<f64, CsvError> {
        let raw = record.get(col).unwrap_or_default();
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| self.bad(line, col, raw, "a finite non-negative number"))
    }
}

fn read_error(path: &Path, line: u64, source: csv::Error) -> CsvError {
    CsvError::Read {
        path: path.to_owned(),
        line,
        source,
    }
}

/// Parses ASCII digits (surrounding spaces allowed) into a `u64`; `None` on anything else or
/// overflow. Hand-written because the invocation counts are the bulk of a trace.
pub fn parse_u64(raw: &[u8]) -> Option<u64> {
    let digits = raw.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// As [`parse_u64`], limited to 32 bits.
pub fn parse_u32(raw: &[u8]) -> Option<u32> {
    parse_u64(raw).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        // (input, expected)
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"17", Some(17)),
            (b" 42 ", Some(42)),
            (b"", None),
            (b"-1", None),
            (b"1.0", None),
            (b"abc", None),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None), // u64::MAX + 1 overflows
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_u64(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(parse_u32(b"4294967296"), None); // 2^32 does not fit
    }
}
