//! `counter KEY [DELTA]`: read-modify-write of a decimal counter (absent = 0, DELTA defaults to 1);
//! returns the new value.
use sandstorm_example_functions::words;
use sandstorm_guest::{Error, get, parse_i64, put};

fn counter(input: &[u8]) -> Result<Vec<u8>, Error> {
    let args = words(input)?;
    let Some(key) = args.first() else {
        return Err("usage: counter KEY [DELTA]".into());
    };
    let delta = match args.get(1) {
        Some(d) => parse_i64(d.as_bytes())?,
        None => 1,
    };
    let current = match get(key.as_bytes())? {
        Some(v) => parse_i64(&v)?,
        None => 0,
    };
    let next = current.wrapping_add(delta);
    put(key.as_bytes(), next.to_string().as_bytes())?;
    Ok(next.to_string().into_bytes())
}
sandstorm_guest::entry!(counter);
