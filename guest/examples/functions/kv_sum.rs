//! `kv-sum KEY...`: multi-gets the keys in one host call and returns the sum of their decimal
//! values (absent keys count 0). Data-heavy, compute-light: the case for running in storage.
use sandstorm_example_functions::words;
use sandstorm_guest::{Error, multi_get, parse_i64};

fn kv_sum(input: &[u8]) -> Result<Vec<u8>, Error> {
    let keys: Vec<&[u8]> = words(input)?.into_iter().map(str::as_bytes).collect();
    if keys.is_empty() {
        return Err("usage: kv-sum KEY...".into());
    }
    let mut sum: i64 = 0;
    for value in multi_get(&keys)?.into_iter().flatten() {
        sum = sum.wrapping_add(parse_i64(&value)?);
    }
    Ok(sum.to_string().into_bytes())
}
sandstorm_guest::entry!(kv_sum);
