//! The errors of the scheduler's API and the one place they become `tonic::Status`.
//!
//! Every kind of bad input has its own gRPC code (see `scheduler.proto`), so a client can tell an
//! unknown tenant from a bad token from an unknown function without parsing messages; the
//! messages name what was wrong.

use sandstorm_naming::TenantId;
use tonic::{Code, Status};

use super::store::StoreError;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The call carried no `authorization` metadata.
    #[error("missing credentials: send `authorization: Bearer TOKEN` in the call's metadata")]
    MissingToken,
    /// The `authorization` metadata is not a bearer token of a known form.
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    /// The token's secret does not match its tenant's (or the admin's).
    #[error("bad token for {who}: the secret does not match")]
    BadToken { who: String },
    /// The token names a tenant that does not exist.
    #[error("unknown tenant {0}: the token names a tenant this scheduler does not have")]
    UnknownTenant(TenantId),
    /// A tenant's token on an admin call.
    #[error("permission denied: {0} needs the admin token")]
    AdminOnly(&'static str),
    /// The admin token on a call that acts as a tenant.
    #[error("permission denied: the admin token cannot {0}; use a tenant's token")]
    TenantOnly(&'static str),
    /// The tenant has no function of that name.
    #[error("unknown function {name:?} of {tenant}")]
    UnknownFunction { tenant: TenantId, name: String },
    /// No async invocation of that id belongs to the caller (or it was forgotten).
    #[error("unknown invocation inv-{0} (not started by this tenant, or its result was dropped)")]
    UnknownInvocation(u64),
    /// An input, module or value over its limit.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// A name that cannot be used.
    #[error("invalid {kind} name {name:?}: {why}")]
    InvalidName {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    /// A chain request that cannot be run.
    #[error("malformed chain: {0}")]
    MalformedChain(String),
    /// Any other request field out of range.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A tenant name already taken.
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    /// An admin call names a tenant that does not exist.
    #[error("no tenant named {0:?}")]
    NoSuchTenant(String),
    /// Placement found no node that can take the invocation.
    #[error("no node can take the invocation: {0}")]
    NoNode(String),
    /// no node of that name has registered
    #[error("no node named {0:?} has registered")]
    NoSuchNode(String),
    /// the cluster is not in a state that allows the request (the message says why)
    #[error("{0}")]
    Precondition(String),
    /// The node failed while the invocation ran, or could not be reached.
    #[error("node {node} failed: {message}")]
    NodeFailed { node: String, message: String },
    /// The node did not answer within the deadline.
    #[error("node {node} did not answer within {ms} ms")]
    NodeTimeout { node: String, ms: u64 },
    /// A node answered with an error about the request itself (the function failed, its module
    /// was rejected, a key was too long); the node's code is kept.
    #[error("node {node}: {message}")]
    Node {
        node: String,
        code: Code,
        message: String,
    },
    /// A join token that is malformed, unknown, wrong or expired.
    #[error("bad join token: {0}")]
    BadJoinToken(&'static str),
    /// A node name already bound to another node's certificate.
    #[error("{0}")]
    NodeTaken(String),
    /// An authenticated caller that may not do what it asked.
    #[error("permission denied: {0}")]
    Denied(String),
    /// A tenant quota is used up.
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// No node took a deploy (each node and its error named).
    #[error("deploy failed: {0}")]
    DeployFailed(String),
    /// The cluster's identity (CA, certificates) could not be read or made.
    #[error("cluster identity: {0}")]
    Identity(String),
    /// The persistent store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::MissingToken
            | ApiError::MalformedToken(_)
            | ApiError::BadToken { .. }
            | ApiError::BadJoinToken(_) => Code::Unauthenticated,
            ApiError::UnknownTenant(_)
            | ApiError::AdminOnly(_)
            | ApiError::TenantOnly(_)
            | ApiError::Denied(_) => Code::PermissionDenied,
            ApiError::NodeTaken(_) => Code::AlreadyExists,
            ApiError::Quota(_) => Code::ResourceExhausted,
            ApiError::DeployFailed(_) => Code::Unavailable,
            ApiError::Identity(_) => Code::Internal,
            ApiError::UnknownFunction { .. }
            | ApiError::UnknownInvocation(_)
            | ApiError::NoSuchTenant(_) => Code::NotFound,
            ApiError::TooLarge { .. } => Code::ResourceExhausted,
            ApiError::InvalidName { .. }
            | ApiError::MalformedChain(_)
            | ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::TenantExists(_) => Code::AlreadyExists,
            ApiError::NoNode(_) | ApiError::NodeFailed { .. } => Code::Unavailable,
            ApiError::NoSuchNode(_) => Code::NotFound,
            ApiError::Precondition(_) => Code::FailedPrecondition,
            ApiError::NodeTimeout { .. } => Code::DeadlineExceeded,
            ApiError::Node { code, .. } => *code,
            ApiError::Store(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Checks a function or tenant name: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), ApiError> {
    let bad = |why| {
        Err(ApiError::InvalidName {
            kind,
            name: name.chars().take(80).collect(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("longer than 64 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_bad_input_has_its_own_code() {
        let cases = [
            (ApiError::MissingToken, Code::Unauthenticated),
            (
                ApiError::BadToken { who: "t1".into() },
                Code::Unauthenticated,
            ),
            (ApiError::UnknownTenant(TenantId(9)), Code::PermissionDenied),
            (
                ApiError::UnknownFunction {
                    tenant: TenantId(1),
                    name: "f".into(),
                },
                Code::NotFound,
            ),
            (
                ApiError::TooLarge {
                    what: "input".into(),
                    size: 2,
                    limit: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                ApiError::MalformedChain("empty".into()),
                Code::InvalidArgument,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn names() {
        assert!(check_name("function", "kv-sum").is_ok());
        assert!(check_name("function", "a.b_c-D9").is_ok());
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            let e = check_name("function", bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid function name"), "{e}");
        }
    }
}
