//! Reading CSV input files with errors a user can act on.
//!
//! Owns [`CsvError`] (every error names the file, the 1-based line and the column) and
//! [`CsvFile`], a thin wrapper over the `csv` crate that locates columns by header name, checks
//! that every row has as many fields as the header, and parses fields without panicking. The trace
//! readers and the data-profile reader share it.
//!
//! Line numbers are counted here, not taken from `csv::Position::line`: the csv crate counts a
//! CRLF line's `\n` only when it reads the *next* record, so in a CRLF file (the Azure traces are
//! CRLF) every row after the header is reported one line early (BurntSushi/rust-csv#395), and a
//! blank line before a row is not counted either. [`LineTracker`] sits between the file and the
//! csv reader, keeps the bytes the parser has not yet passed, and turns a record's byte offset
//! into the true line of its first byte.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use csv::{ByteRecord, Reader, ReaderBuilder};

/// An error in a CSV input file. Each message starts with `FILE:LINE:` (line 1 is the header).
///
/// Underlying errors are part of the message, not error sources (the fields are named `error`,
/// not `source`), so a chain printed with `{:#}` does not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The CSV parser failed (for example, invalid quoting).
    #[error("{}:{line}: {error}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        error: csv::Error,
    },
    /// The file has no header line.
    #[error("{}:1: empty file: expected a header line with columns {expected}", path.display())]
    Empty { path: PathBuf, expected: String },
    /// The file has a header but no data rows where some are required.
    #[error("{}:2: no data rows after the header", path.display())]
    NoRows { path: PathBuf },
    /// A column the reader needs is not in the header.
    #[error("{}:{line}: missing column \"{column}\" in the header", path.display())]
    MissingColumn {
        path: PathBuf,
        line: u64,
        column: String,
    },
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
    reader: Reader<LineTracker<File>>,
    header: Vec<String>,
    /// The header's line: 1 unless blank lines precede it.
    header_line: u64,
}

impl CsvFile {
    /// Opens `path` and reads its header. `expected` describes the columns for the empty-file
    /// error.
    pub fn open(path: &Path, expected: &str) -> Result<Self, CsvError> {
        let file = File::open(path).map_err(|error| CsvError::Io {
            path: path.to_owned(),
            error,
        })?;
        let mut reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(LineTracker::new(file));
        let mut record = ByteRecord::new();
        let read = reader
            .read_byte_record(&mut record)
            .map_err(|error| read_error(path, 1, error))?;
        if !read {
            return Err(CsvError::Empty {
                path: path.to_owned(),
                expected: expected.to_owned(),
            });
        }
        let header_line = record_line(&mut reader, &record);
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
            header_line,
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
            line: self.header_line,
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
        let read = match self.reader.read_byte_record(record) {
            Ok(read) => read,
            Err(error) => {
                // The line the parser had reached when it failed.
                let at = self.reader.position().byte();
                let line = self.reader.get_mut().line_of(at);
                return Err(read_error(&self.path, line, error));
            }
        };
        if !read {
            return Ok(None);
        }
        let line = record_line(&mut self.reader, record);
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

/// The true 1-based line of the record just read (see the module docs).
fn record_line(reader: &mut Reader<LineTracker<File>>, record: &ByteRecord) -> u64 {
    let at = record
        .position()
        .map_or_else(|| reader.position().byte(), csv::Position::byte);
    reader.get_mut().line_of(at)
}

/// A reader that counts lines itself: it passes bytes through to the csv parser and keeps those
/// the parser has not yet been asked about, so [`LineTracker::line_of`] can turn a record's byte
/// offset into its line. It holds at most the parser's read-ahead (one buffer) plus one record.
#[derive(Debug)]
struct LineTracker<R> {
    inner: R,
    /// Bytes read from `inner` from file offset `start` on.
    pending: VecDeque<u8>,
    start: u64,
    /// Line breaks before `start`.
    newlines_before: u64,
}

impl<R> LineTracker<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            pending: VecDeque::new(),
            start: 0,
            newlines_before: 0,
        }
    }

    /// The 1-based line of the record the parser started at byte `offset`. The parser's record
    /// offsets may point at line ends it has not consumed yet (the `\n` of a CRLF, blank lines),
    /// so those are skipped: the record's line is that of its first other byte. Offsets must not
    /// decrease from one call to the next; bytes before `offset` are forgotten.
    fn line_of(&mut self, offset: u64) -> u64 {
        let skip = usize::try_from(offset.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.pending.len());
        let first = self
            .pending
            .range(skip..)
            .position(|&b| b != b'\r' && b != b'\n')
            .map_or(self.pending.len(), |i| skip + i);
        // A line ends at `\n`, `\r\n` or a lone `\r` (the csv parser accepts all three).
        let mut breaks = 0;
        let mut bytes = self.pending.range(..first).peekable();
        while let Some(&b) = bytes.next() {
            let lone_cr = b == b'\r' && bytes.peek().is_none_or(|&&next| next != b'\n');
            breaks += u64::from(b == b'\n' || lone_cr);
        }
        self.newlines_before += breaks;
        self.pending.drain(..first);
        self.start += first as u64;
        self.newlines_before + 1
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.extend(&buf[..n]);
        Ok(n)
    }
}

fn read_error(path: &Path, line: u64, error: csv::Error) -> CsvError {
    CsvError::Read {
        path: path.to_owned(),
        line,
        error,
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

    /// The header's line and every row's line, as `CsvFile` reports them for `text`.
    fn lines_of(text: &[u8]) -> Vec<u64> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).expect("writing the CSV");
        let mut file = CsvFile::open(&path, "a,b").expect("opens");
        let mut lines = vec![file.header_line];
        let mut record = ByteRecord::new();
        while let Some(line) = file.next_row(&mut record).expect("reads") {
            lines.push(line);
        }
        lines
    }

    #[test]
    fn rows_report_their_true_line() {
        // (file, lines of the header and each row). csv's own Position::line says 1, 1, 2 for the
        // CRLF case (rust-csv#395).
        let cases: &[(&[u8], &[u64])] = &[
            (b"a,b\n1,2\n3,4\n", &[1, 2, 3]),
            (b"a,b\r\n1,2\r\n3,4\r\n", &[1, 2, 3]),
            (b"a,b\r\n1,2\r\n3,4", &[1, 2, 3]), // no final line end
            (b"a,b\r1,2\r3,4\r", &[1, 2, 3]),   // old Mac line ends
            (b"a,b\n1,2\r\n3,4\n", &[1, 2, 3]), // mixed
            (b"\r\n\na,b\r\n\r\n1,2\r\n\n\r\n3,4\r\n", &[3, 5, 8]), // blank lines are skipped
            (b"a,b\r\n\"x\r\ny\",2\r\n3,4\r\n", &[1, 2, 4]), // a quoted field spans two lines
            (b"\xef\xbb\xbfa,b\r\n1,2\r\n", &[1, 2]), // a byte-order mark
        ];
        for (text, want) in cases {
            assert_eq!(lines_of(text), *want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn lines_stay_true_past_the_read_buffer() {
        // Rows longer than the parser's 64 KiB buffer, CRLF: row n is on line n + 1.
        let long = "9".repeat(40_000);
        let mut text = String::from("a,b\r\n");
        for _ in 0..10 {
            text.push_str(&format!("{long},{long}\r\n"));
        }
        let want: Vec<u64> = (1..=11).collect();
        assert_eq!(lines_of(text.as_bytes()), want);
    }

    #[test]
    fn errors_name_the_true_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "a,b\r\n1,2\r\n3\r\n").expect("writing the CSV");
        let mut file = CsvFile::open(&path, "a,b").expect("opens");
        let mut record = ByteRecord::new();
        assert_eq!(file.next_row(&mut record).expect("row 1"), Some(2));
        let err = file.next_row(&mut record).expect_err("row 2 is short");
        assert!(
            err.to_string()
                .ends_with("t.csv:3: malformed row: 1 fields, but the header has 2"),
            "{err}"
        );
        std::fs::write(&path, "\r\na,c\r\n").expect("writing the CSV");
        let file = CsvFile::open(&path, "a,b").expect("opens");
        let err = file.column("b").expect_err("no column b");
        assert!(
            err.to_string()
                .ends_with("t.csv:2: missing column \"b\" in the header"),
            "{err}"
        );
    }
}
