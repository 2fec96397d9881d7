//! Bad trace input: every error names the file, the 1-based line and the column.

use super::*;

/// A copy of the tiny 2019 fixture in a temporary directory, with `file` (its prefix) edited.
fn tiny_with(prefix: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture("tiny2019")).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("fixture file");
        let text = if name.starts_with(prefix) {
            edit(&text)
        } else {
            text
        };
        std::fs::write(dir.path().join(&name), text).expect("write");
    }
    dir
}

/// Replaces field `col` (0-based) of line `line` (1-based).
fn set_field(text: &str, line: usize, col: usize, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = lines[line - 1].split(',').collect();
    fields[col] = value;
    lines[line - 1] = fields.join(",");
    lines.join("\n") + "\n"
}

const DUR: &str = "function_durations_percentiles.anon.d01.csv";
const MEM: &str = "app_memory_percentiles.anon.d01.csv";

fn load_err(dir: &tempfile::TempDir) -> sandstorm_sim::trace::TraceError {
    Trace::load_azure2019(dir.path(), "d01", None).expect_err("bad input must fail")
}

#[test]
fn bad_2019_counts_name_file_line_column() {
    // Line 2 is f1; field 5 is minute column "2".
    let dir = tiny_with("invocations", |t| set_field(t, 2, 5, "-1"));
    let err = load_err(&dir);
    assert_names(
        &err,
        &[&format!(
            "{INV}:2: column \"2\": \"-1\" is not a non-negative integer"
        )],
    );
    // Line 4 is f3; field 6 is minute column "3".
    let dir = tiny_with("invocations", |t| set_field(t, 4, 6, "abc"));
    assert_names(
        &load_err(&dir),
        &[&format!("{INV}:4: column \"3\": \"abc\"")],
    );
    // Outside the window too: every count is validated.
    let dir = tiny_with("invocations", |t| set_field(t, 3, 1000, "1.5"));
    assert_names(&load_err(&dir), &[INV, ":3:", "column \"997\"", "\"1.5\""]);
}

#[test]
fn bad_2019_rows_and_columns() {
    // A row with one field missing (line 3).
    let dir = tiny_with("invocations", |t| {
        let mut lines: Vec<String> = t.lines().map(str::to_owned).collect();
        let short = lines[2].rsplit_once(',').map(|(head, _)| head.to_owned());
        lines[2] = short.expect("has commas");
        lines.join("\n")
    });
    assert_names(
        &load_err(&dir),
        &[&format!(
            "{INV}:3: malformed row: 1443 fields, but the header has 1444"
        )],
    );
    // A duration percentile column missing from the header.
    let dir = tiny_with("function_durations", |t| {
        t.replacen("percentile_Average_99,", "p99,", 1)
    });
    assert_names(
        &load_err(&dir),
        &[&format!(
            "{DUR}:1: missing column \"percentile_Average_99\""
        )],
    );
    // The trigger column missing.
    let dir = tiny_with("invocations", |t| t.replacen("Trigger", "Kind", 1));
    assert_names(&load_err(&dir), &[INV, ":1:", "\"Trigger\""]);
    // A bad memory value.
    let dir = tiny_with("app_memory", |t| set_field(t, 3, 11, "lots"));
    assert_names(
        &load_err(&dir),
        &[&format!(
            "{MEM}:3: column \"AverageAllocatedMb_pct100\": \"lots\""
        )],
    );
    // A negative duration percentile.
    let dir = tiny_with("function_durations", |t| set_field(t, 2, 9, "-4"));
    assert_names(
        &load_err(&dir),
        &[DUR, ":2:", "column \"percentile_Average_25\"", "\"-4\""],
    );
}

#[test]
fn bad_2019_files() {
    let dir = tiny_with("app_memory", |_| String::new());
    assert_names(&load_err(&dir), &[&format!("{MEM}:1: empty file")]);
    let dir = tiny_with("invocations", |t| {
        t.lines().next().unwrap_or_default().to_owned()
    });
    assert_names(&load_err(&dir), &[INV, ":2: no data rows"]);
    let dir = tiny_with("", |t| t.to_owned());
    std::fs::remove_file(dir.path().join(DUR)).expect("remove");
    assert_names(&load_err(&dir), &[DUR]);
    let err = Trace::load_azure2019(&fixture("tiny2019"), "d02", None).expect_err("no such day");
    assert_names(&err, &["invocations_per_function_md.anon.d02.csv"]);
    let err = Trace::load_azure2019(&fixture("tiny2019"), "d01", Some((10, 10)))
        .expect_err("empty window");
    assert_names(&err, &["[10, 10)"]);
}

#[test]
fn bad_2021_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad2021.csv");
    std::fs::write(
        &path,
        "app,func,end_timestamp,duration\nA,x,2.5,0.5\nA,y,1.0,fast\n",
    )
    .expect("write");
    let err = Trace::load_azure2021(&path).expect_err("bad duration");
    assert_names(
        &err,
        &["bad2021.csv:3: column \"duration\": \"fast\" is not a finite non-negative number"],
    );
    std::fs::write(&path, "app,func,end,duration\nA,x,2.5,0.5\n").expect("write");
    assert_names(
        &Trace::load_azure2021(&path).expect_err("no end column"),
        &["bad2021.csv:1:", "\"end_timestamp\""],
    );
    std::fs::write(&path, "app,func,end_timestamp,duration\nA,x,2.5\n").expect("write");
    assert_names(
        &Trace::load_azure2021(&path).expect_err("short row"),
        &["bad2021.csv:2: malformed row"],
    );
}

#[test]
fn bad_2021_values_and_crlf_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad2021.csv");
    // (file, parts of the message). CRLF line ends, as the real trace has: the line is still true.
    let cases: &[(&str, &[&str])] = &[
        (
            "app,func,end_timestamp,duration\r\nA,x,2.5,0.5\r\nA,y,3.0,-1.0\r\n",
            &["bad2021.csv:3: column \"duration\": \"-1.0\" is not a finite non-negative number"],
        ),
        (
            "app,func,end_timestamp,duration\r\nA,x,2.5,0.5\r\n\r\nA,y,NaN,1.0\r\n",
            &["bad2021.csv:4: column \"end_timestamp\": \"NaN\""],
        ),
        // Times past 10^9 s would overflow the engine's microsecond clock.
        (
            "app,func,end_timestamp,duration\r\nA,x,1e300,0.5\r\n",
            &[
                "bad2021.csv:2: column \"end_timestamp\": \"1e300\" is not a number of seconds up to 1e9",
            ],
        ),
        (
            "app,func,end_timestamp,duration\r\nA,x,2.5,0.5\r\nA,x,2.5,2e9\r\n",
            &["bad2021.csv:3: column \"duration\": \"2e9\""],
        ),
        ("", &["bad2021.csv:1: empty file"]),
        (
            "app,func,end_timestamp,duration\r\n",
            &["bad2021.csv:2: no data rows"],
        ),
    ];
    for (text, parts) in cases {
        std::fs::write(&path, text).expect("write");
        assert_names(&Trace::load_azure2021(&path).expect_err(text), parts);
    }
    // Binary garbage is a file without the expected header, not a panic.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, garbage).expect("write");
    assert_names(
        &Trace::load_azure2021(&path).expect_err("garbage"),
        &["bad2021.csv:", "missing column"],
    );
}

#[test]
fn huge_2019_duration_is_an_error() {
    // Line 2's percentile_Average_100 (field 13): 10^300 ms would overflow the engine's clock.
    let dir = tiny_with("function_durations", |t| set_field(t, 2, 13, "1e300"));
    assert_names(
        &load_err(&dir),
        &[
            DUR,
            ":2:",
            "column \"percentile_Average_100\"",
            "up to 1e12 ms",
        ],
    );
}
