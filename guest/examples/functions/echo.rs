//! `echo`: returns its input. The smallest function: what a warm start costs with no work.
fn echo(input: &[u8]) -> Result<Vec<u8>, sandstorm_guest::Error> {
    Ok(input.to_vec())
}
sandstorm_guest::entry!(echo);
