//! `spin [ROUNDS]`: burns CPU and honours nothing: it reads no data and, without ROUNDS (or
//! with 0), never returns, so only its deadline stops it. With ROUNDS it runs that many rounds
//! of a multiply-xorshift step and returns the final state in hex. The noisy neighbour of the
//! isolation tests and `sandstorm bench isolation`.
use core::hint::black_box;
use sandstorm_example_functions::{number, words};
use sandstorm_guest::Error;

fn step(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

fn spin(input: &[u8]) -> Result<Vec<u8>, Error> {
    let args = words(input)?;
    let rounds = number(args.first(), 0, "ROUNDS")?;
    let mut x = 1u64;
    if rounds == 0 {
        loop {
            x = black_box(step(x));
        }
    }
    for _ in 0..rounds {
        x = black_box(step(x));
    }
    Ok(format!("{x:016x}").into_bytes())
}
sandstorm_guest::entry!(spin);
