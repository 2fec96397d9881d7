//! The guest SDK: what tenants write Sandstorm functions with.
//!
//! A function is a `wasm32-unknown-unknown` module that exports `run` and `memory` and imports
//! only the host calls below (module `sandstorm`). The same module runs unchanged inside a storage
//! node (the calls reach the local store directly) and on a compute node (the agent forwards each
//! data call to the storage node that owns the key). The interface is made of calls, never of
//! shared memory, so either side can change how it serves them.
//!
//! ```ignore
//! fn handler(input: &[u8]) -> Result<Vec<u8>, sandstorm_guest::Error> {
//!     let value = sandstorm_guest::get(input)?.unwrap_or_default();
//!     Ok(value)
//! }
//! sandstorm_guest::entry!(handler);
//! ```
//!
//! # The host interface (ABI version 1)
//!
//! All pointers and lengths are `i32` offsets into the guest's exported `memory`. A pointer or
//! length outside that memory traps the invocation. Negative results are [`Error`] codes.
//!
//! | import | returns |
//! |---|---|
//! | `input_len() -> i32` | size of the invocation's input |
//! | `input_read(ptr, len) -> i32` | bytes copied (the first `min(len, input_len)`) |
//! | `output_write(ptr, len) -> i32` | 0, or `OUTPUT_TOO_LARGE`; output is appended |
//! | `kv_get(key_ptr, key_len, buf_ptr, buf_cap) -> i64` | value length, or `NOT_FOUND`; if the length exceeds `buf_cap` nothing is copied and `result_read` fetches it |
//! | `kv_put(key_ptr, key_len, val_ptr, val_len) -> i32` | 0 |
//! | `kv_delete(key_ptr, key_len) -> i32` | 1 if the key existed, else 0 |
//! | `kv_multi_get(req_ptr, req_len, buf_ptr, buf_cap) -> i64` | encoded result length (see below), copied if it fits, else kept for `result_read` |
//! | `kv_scan(prefix_ptr, prefix_len, limit, buf_ptr, buf_cap) -> i64` | as `kv_multi_get` |
//! | `result_read(ptr, len) -> i32` | copies the kept result of the last call that did not fit |
//! | `log(ptr, len)` | nothing; the host rate-limits and truncates |
//!
//! Encodings (little-endian): a multi-get request is `n x ([u32 key_len][key])`; its result is
//! `n x ([i32 value_len or -1 if absent][value])` in request order. A scan result is
//! `m x ([u32 key_len][key][u32 value_len][value])` in key order, at most `limit` pairs.
//!
//! Every data call sees only the calling tenant's keyspace: the host prefixes nothing the guest
//! can choose, so no key bytes reach another tenant's data.
#![cfg_attr(not(test), no_std)]
// The SDK is the one place that crosses into the host; every `unsafe` is an FFI call into an
// import whose contract is the table above.
#![allow(unsafe_code)]

extern crate alloc;

#[cfg(all(target_arch = "wasm32", feature = "invocation-allocator"))]
pub mod invocation_alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Error codes of the host interface (negative results of the calls).
pub mod code {
    /// The key is absent.
    pub const NOT_FOUND: i64 = -1;
    /// The key is longer than the node allows.
    pub const KEY_TOO_LARGE: i64 = -2;
    /// The value is larger than the node allows.
    pub const VALUE_TOO_LARGE: i64 = -3;
    /// The output would exceed the node's payload limit.
    pub const OUTPUT_TOO_LARGE: i64 = -4;
    /// A request buffer was not in the documented encoding.
    pub const BAD_ENCODING: i64 = -5;
    /// The data could not be reached (compute node: the owning storage node did not answer).
    pub const UNAVAILABLE: i64 = -6;
    /// The call would exceed the invocation's quota of data calls or bytes.
    pub const QUOTA: i64 = -7;
}

/// What a host call or a function can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A host call returned this code (see [`code`]).
    Host(i64),
    /// The function's own error, returned to the caller as the invocation's error message.
    Message(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Host(code::KEY_TOO_LARGE) => f.write_str("key too large"),
            Error::Host(code::VALUE_TOO_LARGE) => f.write_str("value too large"),
            Error::Host(code::OUTPUT_TOO_LARGE) => f.write_str("output too large"),
            Error::Host(code::BAD_ENCODING) => f.write_str("bad request encoding"),
            Error::Host(code::UNAVAILABLE) => f.write_str("data unavailable"),
            Error::Host(code::QUOTA) => f.write_str("data call quota exceeded"),
            Error::Host(c) => write!(f, "host error {c}"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Message(message.into())
    }
}

#[cfg(target_arch = "wasm32")]
mod ffi {
    #[link(wasm_import_module = "sandstorm")]
    unsafe extern "C" {
        pub fn input_len() -> i32;
        pub fn input_read(ptr: *mut u8, len: i32) -> i32;
        pub fn output_write(ptr: *const u8, len: i32) -> i32;
        pub fn kv_get(key: *const u8, key_len: i32, buf: *mut u8, cap: i32) -> i64;
        pub fn kv_put(key: *const u8, key_len: i32, val: *const u8, val_len: i32) -> i32;
        pub fn kv_delete(key: *const u8, key_len: i32) -> i32;
        pub fn kv_multi_get(req: *const u8, req_len: i32, buf: *mut u8, cap: i32) -> i64;
        pub fn kv_scan(prefix: *const u8, len: i32, limit: i32, buf: *mut u8, cap: i32) -> i64;
        pub fn result_read(ptr: *mut u8, len: i32) -> i32;
        pub fn log(ptr: *const u8, len: i32);
    }
}

/// Host builds (tests, docs) link no host; every call reports the data as unavailable.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc, missing_docs)]
mod ffi {
    use super::code::UNAVAILABLE;
    pub unsafe fn input_len() -> i32 {
        0
    }
    pub unsafe fn input_read(_: *mut u8, _: i32) -> i32 {
        0
    }
    pub unsafe fn output_write(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE as i32
    }
    pub unsafe fn kv_get(_: *const u8, _: i32, _: *mut u8, _: i32) -> i64 {
        UNAVAILABLE
    }
    pub unsafe fn kv_put(_: *const u8, _: i32, _: *const u8, _: i32) -> i32 {
        UNAVAILABLE as i32
    }
    pub unsafe fn kv_delete(_: *const u8, _: i32) -> i32 {
        UNAVAILABLE as i32
    }
    pub unsafe fn kv_multi_get(_: *const u8, _: i32, _: *mut u8, _: i32) -> i64 {
        UNAVAILABLE
    }
    pub unsafe fn kv_scan(_: *const u8, _: i32, _: i32, _: *mut u8, _: i32) -> i64 {
        UNAVAILABLE
    }
    pub unsafe fn result_read(_: *mut u8, _: i32) -> i32 {
        0
    }
    pub unsafe fn log(_: *const u8, _: i32) {}
}

/// Lengths cross the ABI as `i32`; wasm32 memory is at most 4 GiB, so a slice's length fits
/// unless it is over 2 GiB, which the host would refuse anyway.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn check(result: i64) -> Result<i64, Error> {
    if result < 0 {
        Err(Error::Host(result))
    } else {
        Ok(result)
    }
}

/// Buffer size tried first for variable-length results; larger ones take a second call.
const FIRST_TRY: usize = 256;

/// Runs a call that fills `buf` or reports a longer length, then fetches the kept result.
fn read_result(call: impl FnOnce(*mut u8, i32) -> i64) -> Result<Option<Vec<u8>>, Error> {
    let mut buf = Vec::with_capacity(FIRST_TRY);
    let n = call(buf.as_mut_ptr(), len_i32(FIRST_TRY));
    if n == code::NOT_FOUND {
        return Ok(None);
    }
    let len = usize::try_from(check(n)?).unwrap_or(usize::MAX);
    if len <= FIRST_TRY {
        // SAFETY: the host wrote exactly `len` initialised bytes into the buffer's capacity.
        unsafe { buf.set_len(len) };
    } else {
        buf.reserve_exact(len);
        // SAFETY: the host copies the kept result of the previous call, `len` bytes, into a
        // buffer with that much capacity and returns how many it wrote.
        let copied = unsafe { ffi::result_read(buf.as_mut_ptr(), len_i32(len)) };
        let copied = usize::try_from(copied).unwrap_or(0).min(len);
        // SAFETY: `copied` bytes were initialised by the host.
        unsafe { buf.set_len(copied) };
    }
    Ok(Some(buf))
}

/// The invocation's input.
pub fn input() -> Vec<u8> {
    // SAFETY: no pointers.
    let len = usize::try_from(unsafe { ffi::input_len() }).unwrap_or(0);
    let mut buf = Vec::with_capacity(len);
    // SAFETY: the host copies at most `len` bytes into a buffer with that capacity.
    let copied = unsafe { ffi::input_read(buf.as_mut_ptr(), len_i32(len)) };
    // SAFETY: the host initialised `copied` (<= len) bytes.
    unsafe { buf.set_len(usize::try_from(copied).unwrap_or(0).min(len)) };
    buf
}

/// Appends to the invocation's output.
pub fn output(bytes: &[u8]) -> Result<(), Error> {
    // SAFETY: the host reads `bytes.len()` bytes from a live slice.
    check(i64::from(unsafe {
        ffi::output_write(bytes.as_ptr(), len_i32(bytes.len()))
    }))?;
    Ok(())
}

/// The value of `key` in the tenant's keyspace, if present.
pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    read_result(|buf, cap| {
        // SAFETY: key is a live slice; buf has `cap` bytes of capacity.
        unsafe { ffi::kv_get(key.as_ptr(), len_i32(key.len()), buf, cap) }
    })
}

/// Stores `value` under `key`.
pub fn put(key: &[u8], value: &[u8]) -> Result<(), Error> {
    // SAFETY: both are live slices.
    let r = unsafe {
        ffi::kv_put(
            key.as_ptr(),
            len_i32(key.len()),
            value.as_ptr(),
            len_i32(value.len()),
        )
    };
    check(i64::from(r))?;
    Ok(())
}

/// Removes `key`; whether it existed.
pub fn delete(key: &[u8]) -> Result<bool, Error> {
    // SAFETY: key is a live slice.
    let r = unsafe { ffi::kv_delete(key.as_ptr(), len_i32(key.len())) };
    Ok(check(i64::from(r))? == 1)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if bytes.len() < n {
        return Err(Error::Host(code::BAD_ENCODING));
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, Error> {
    let b = take(bytes, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The values of `keys`, in order, in one host call.
pub fn multi_get(keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let mut request = Vec::with_capacity(keys.iter().map(|k| k.len() + 4).sum());
    for key in keys {
        request.extend_from_slice(&(len_i32(key.len()) as u32).to_le_bytes());
        request.extend_from_slice(key);
    }
    let encoded = read_result(|buf, cap| {
        // SAFETY: request is a live slice; buf has `cap` bytes of capacity.
        unsafe { ffi::kv_multi_get(request.as_ptr(), len_i32(request.len()), buf, cap) }
    })?
    .unwrap_or_default();
    let mut rest = encoded.as_slice();
    let mut values = Vec::with_capacity(keys.len());
    for _ in keys {
        let len = take_u32(&mut rest)? as i32;
        if len < 0 {
            values.push(None);
        } else {
            values.push(Some(take(&mut rest, len as usize)?.to_vec()));
        }
    }
    Ok(values)
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Up to `limit` key-value pairs whose keys start with `prefix`, in key order.
pub fn scan(prefix: &[u8], limit: u32) -> Result<Vec<Pair>, Error> {
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let encoded = read_result(|buf, cap| {
        // SAFETY: prefix is a live slice; buf has `cap` bytes of capacity.
        unsafe { ffi::kv_scan(prefix.as_ptr(), len_i32(prefix.len()), limit, buf, cap) }
    })?
    .unwrap_or_default();
    let mut rest = encoded.as_slice();
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let klen = take_u32(&mut rest)? as usize;
        let key = take(&mut rest, klen)?.to_vec();
        let vlen = take_u32(&mut rest)? as usize;
        pairs.push((key, take(&mut rest, vlen)?.to_vec()));
    }
    Ok(pairs)
}

/// Writes a line to the node's log (rate-limited and truncated by the host).
pub fn log(message: &str) {
    // SAFETY: message is a live slice.
    unsafe { ffi::log(message.as_ptr(), len_i32(message.len())) }
}

/// Runs a handler as the module's `run` export: input in, output or error message out.
/// Returns 0 on success, 1 when the handler failed (its message is the output).
#[doc(hidden)]
pub fn __run(handler: fn(&[u8]) -> Result<Vec<u8>, Error>) -> i32 {
    let input = input();
    match handler(&input) {
        Ok(out) => match output(&out) {
            Ok(()) => 0,
            Err(e) => fail(&e),
        },
        Err(e) => fail(&e),
    }
}

fn fail(error: &Error) -> i32 {
    let message = alloc::format!("{error}");
    let _ = output(message.as_bytes());
    1
}

/// Exports `handler: fn(&[u8]) -> Result<Vec<u8>, Error>` as the module's entry point `run`.
#[macro_export]
macro_rules! entry {
    ($handler:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn run() -> i32 {
            $crate::__run($handler)
        }
    };
}

/// Parses a decimal `i64` from ASCII bytes (the example functions' value format).
pub fn parse_i64(bytes: &[u8]) -> Result<i64, Error> {
    core::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(Error::Message(String::from(
            "value is not a decimal integer",
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_values() {
        assert_eq!(parse_i64(b" 42\n"), Ok(42));
        assert_eq!(parse_i64(b"-7"), Ok(-7));
        assert!(parse_i64(b"x").is_err());
    }

    #[test]
    fn decoder_rejects_truncated_buffers() {
        let mut rest: &[u8] = &[1, 0, 0];
        assert_eq!(take_u32(&mut rest), Err(Error::Host(code::BAD_ENCODING)));
    }
}
