//! Helpers the example functions share: their text formats.
//!
//! Values are ASCII: integers in decimal, adjacency lists as comma-separated node ids. Inputs are
//! space-separated words, so `sandstorm invoke` can pass them on a command line.

use sandstorm_guest::Error;

/// The input as UTF-8 words.
pub fn words(input: &[u8]) -> Result<Vec<&str>, Error> {
    let text = core::str::from_utf8(input).map_err(|_| Error::from("input is not UTF-8"))?;
    Ok(text.split_whitespace().collect())
}

/// Parses an optional numeric argument.
pub fn number(word: Option<&&str>, default: u64, what: &str) -> Result<u64, Error> {
    match word {
        None => Ok(default),
        Some(w) => w
            .parse()
            .map_err(|_| Error::Message(format!("{what} must be a non-negative integer, got {w:?}"))),
    }
}
