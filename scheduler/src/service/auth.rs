//! Tokens: how they look, how they are made, hashed and checked.
//!
//! A tenant's token is `t<ID>.<SECRET>` and the admin's `admin.<SECRET>`, where SECRET is 32
//! random bytes in hex. The prefix says whose token it claims to be, so a call with a token for a
//! tenant that does not exist (unknown tenant) is told apart from one whose secret is wrong (bad
//! token). Only the SHA-256 of a whole token is stored; checking one hashes it and compares the
//! digests without an early exit.

use sandstorm_naming::TenantId;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use super::error::ApiError;

/// The SHA-256 of a token, as stored.
pub type TokenHash = [u8; 32];

/// Whose token a call presents (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Admin { token: String },
    Tenant { tenant: TenantId, token: String },
}

/// Who a checked call comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(TenantId),
}

impl Caller {
    /// The tenant a call acts as; the admin token cannot act as a tenant.
    pub fn tenant(self, action: &'static str) -> Result<TenantId, ApiError> {
        match self {
            Caller::Tenant(t) => Ok(t),
            Caller::Admin => Err(ApiError::TenantOnly(action)),
        }
    }

    pub fn admin(self, action: &'static str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::AdminOnly(action)),
        }
    }
}

/// Reads the bearer token of a call's metadata.
pub fn presented(metadata: &MetadataMap) -> Result<Presented, ApiError> {
    let value = metadata
        .get("authorization")
        .ok_or(ApiError::MissingToken)?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::MalformedToken("the authorization value is not ASCII"))?;
    parse(value)
}

/// Parses `Bearer TOKEN`.
pub fn parse(header: &str) -> Result<Presented, ApiError> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(ApiError::MalformedToken(
            "expected `authorization: Bearer TOKEN`",
        ))?
        .trim();
    let (who, secret) = token.split_once('.').ok_or(ApiError::MalformedToken(
        "a token is `t<TENANT-ID>.<SECRET>` or `admin.<SECRET>`",
    ))?;
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::MalformedToken("the secret must be hexadecimal"));
    }
    if who == "admin" {
        return Ok(Presented::Admin {
            token: token.to_owned(),
        });
    }
    let id = who
        .strip_prefix('t')
        .and_then(|id| id.parse::<u32>().ok())
        .ok_or(ApiError::MalformedToken(
            "a token starts with `t<TENANT-ID>.` or `admin.`",
        ))?;
    Ok(Presented::Tenant {
        tenant: TenantId(id),
        token: token.to_owned(),
    })
}

/// A fresh random secret: 32 bytes from the operating system, hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// The token of `tenant` with `secret`.
pub fn tenant_token(tenant: TenantId, secret: &str) -> String {
    format!("t{}.{secret}", tenant.0)
}

/// The admin token with `secret`.
pub fn admin_token(secret: &str) -> String {
    format!("admin.{secret}")
}

pub fn hash(token: &str) -> TokenHash {
    hash_bytes(token.as_bytes())
}

/// SHA-256 of any bytes (tokens, modules).
pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `token` hashes to `stored`, comparing every byte.
pub fn matches(token: &str, stored: &TokenHash) -> bool {
    let got = hash(token);
    got.iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_forms_and_names_what_is_malformed() {
        assert_eq!(
            parse("Bearer t7.00ff").expect("tenant token"),
            Presented::Tenant {
                tenant: TenantId(7),
                token: "t7.00ff".into()
            }
        );
        assert_eq!(
            parse("Bearer admin.abc").expect("admin token"),
            Presented::Admin {
                token: "admin.abc".into()
            }
        );
        // (header, what the message says)
        let table = [
            ("t7.00ff", "Bearer TOKEN"),
            ("Basic dXNlcg==", "Bearer TOKEN"),
            ("Bearer t7", "t<TENANT-ID>.<SECRET>"),
            ("Bearer t7.xyz", "hexadecimal"),
            ("Bearer t7.", "hexadecimal"),
            ("Bearer tx.00", "starts with"),
            ("Bearer root.00", "starts with"),
        ];
        for (header, says) in table {
            let e = parse(header).expect_err(header).to_string();
            assert!(e.contains(says), "{header}: {e}");
        }
    }

    #[test]
    fn tokens_check_against_their_hash_only() {
        let secret = new_secret().expect("os randomness");
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, new_secret().expect("os randomness"));
        let token = tenant_token(TenantId(3), &secret);
        let stored = hash(&token);
        assert!(matches(&token, &stored));
        assert!(!matches(&tenant_token(TenantId(4), &secret), &stored));
        assert!(!matches(&admin_token(&secret), &stored));
        assert_eq!(hex(&[0, 1, 0xab]), "0001ab");
    }

    #[test]
    fn callers_act_only_in_their_role() {
        assert_eq!(
            Caller::Tenant(TenantId(1)).tenant("invoke").ok(),
            Some(TenantId(1))
        );
        assert!(Caller::Admin.tenant("invoke").is_err());
        assert!(Caller::Admin.admin("create tenants").is_ok());
        assert!(Caller::Tenant(TenantId(1)).admin("create tenants").is_err());
    }
}
