//! The JSON form of a report: what `sandstorm sim --json` writes and the dashboard reads back.
//! The schema is documented field by field in `sim/REPORT.md`; it is exactly the serde form of
//! [`SimReport`].
//!
//! JSON has no NaN or infinity: an undefined figure is written as `null` and read back as NaN.

use super::{ReportError, SCHEMA_VERSION, SimReport};

/// The report as pretty-printed JSON (two-space indent, fields in declaration order).
pub fn to_json(report: &SimReport) -> String {
    // Serializing plain structs with string keys into memory cannot fail; serde_json only errors
    // on non-string map keys or a failing writer, neither of which a SimReport has.
    serde_json::to_string_pretty(report).expect("a SimReport always serializes to JSON")
}

/// Reads a report written by [`to_json`] (this or an older schema version).
///
/// The version is checked before the fields, so a report from a newer build fails with
/// [`ReportError::UnsupportedVersion`] rather than a confusing missing-field error.
pub fn from_json(text: &str) -> Result<SimReport, ReportError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    if let Some(found) = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        && found > u64::from(SCHEMA_VERSION)
    {
        return Err(ReportError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(serde_json::from_value(value)?)
}
