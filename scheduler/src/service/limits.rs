//! Oversized messages get RESOURCE_EXHAUSTED naming the limit, as every other size limit of the
//! API does. tonic refuses a request message over a service's decoding limit before any handler
//! runs, with OUT_OF_RANGE ("decoded message length too large"); [`OversizeLayer`] rewrites that
//! status on the way out. (A streaming call's oversized message reaches its handler as an error
//! item instead; the handlers map it with [`oversize`].)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};

/// The text tonic's decoder puts in the status of a message over the limit.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// `status` as RESOURCE_EXHAUSTED naming the sizes if it is tonic's oversized-message refusal.
pub fn oversize(status: Status) -> Status {
    if status.code() != Code::OutOfRange || !status.message().contains(TONIC_TOO_LARGE) {
        return status;
    }
    // "Error, decoded message length too large: found N bytes, the limit is: M bytes"
    let numbers: Vec<&str> = status
        .message()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    match numbers.as_slice() {
        [found, limit] => Status::resource_exhausted(format!(
            "the request message of {found} bytes is over the limit of {limit} bytes"
        )),
        _ => Status::resource_exhausted(format!(
            "the request message is over the size limit ({})",
            status.message()
        )),
    }
}

/// A tower layer applying [`oversize`] to every response's status.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, R, B> tower::Service<R> for Oversize<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            if let Some(status) = Status::from_header_map(response.headers())
                && status.code() == Code::OutOfRange
            {
                let mapped = oversize(status);
                if mapped.code() != Code::OutOfRange {
                    let _ = mapped.add_header(response.headers_mut());
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonics_refusal_becomes_resource_exhausted_naming_the_limit() {
        let refused = Status::out_of_range(
            "Error, decoded message length too large: found 5242893 bytes, the limit is: 4194304 bytes",
        );
        let mapped = oversize(refused);
        assert_eq!(mapped.code(), Code::ResourceExhausted);
        assert_eq!(
            mapped.message(),
            "the request message of 5242893 bytes is over the limit of 4194304 bytes"
        );
        // Anything else passes unchanged.
        let other = oversize(Status::out_of_range("offset past the end"));
        assert_eq!(other.code(), Code::OutOfRange);
    }
}
