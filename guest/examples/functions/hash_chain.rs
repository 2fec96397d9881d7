//! `hash-chain KEY ROUNDS`: reads one value and hashes it ROUNDS times (64-bit FNV-1a over the
//! value, then chained), returning the final hash in hex. CPU-heavy with one read: the case for a
//! compute node's own cores.
use sandstorm_example_functions::{number, words};
use sandstorm_guest::{Error, get};

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hash_chain(input: &[u8]) -> Result<Vec<u8>, Error> {
    let args = words(input)?;
    let Some(key) = args.first() else {
        return Err("usage: hash-chain KEY ROUNDS".into());
    };
    let rounds = number(args.get(1), 1000, "ROUNDS")?;
    let value = get(key.as_bytes())?.unwrap_or_default();
    let mut h = fnv1a(0, &value);
    for _ in 0..rounds {
        h = fnv1a(h, &value);
    }
    Ok(format!("{h:016x}").into_bytes())
}
sandstorm_guest::entry!(hash_chain);
