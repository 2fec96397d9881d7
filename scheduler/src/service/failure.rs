//! How an attempt to run an invocation on a node failed, read from the node's answer: by the
//! failure kind the agent put in it (`FailureKind` in `common.proto`), never by its message. The
//! invocation path decides from it whether to run the invocation again, and where.

use sandstorm_proto::v1 as pb;
use tonic::Code;

/// How a failed attempt ended.
#[derive(Debug)]
pub enum Failure {
    /// The node does not have the function (it restarted): deploy and try again there.
    NotDeployed,
    /// The invocation never started there (unreachable, or no room): another node may take it.
    NeverStarted(String),
    /// The node failed while the invocation may have been running.
    MidRun(String),
    /// No answer within the deadline.
    Timeout(u64),
    /// The node answered with an error about the invocation itself (the function failed, ...).
    Function(Code, String),
}

/// How an attempt that ended in `status` failed: by the failure kind the node put in it (see
/// `FailureKind` in `common.proto`), never by its message. A status without one is the
/// transport's (or an older agent's): the invocation may have started, unless the connection
/// was refused outright.
pub fn classify(status: &tonic::Status) -> Failure {
    if refused_connection(status) {
        return Failure::NeverStarted(status.message().to_owned());
    }
    classify_error(sandstorm_proto::call_error(status))
}

/// [`classify`] of an error as a stream carries it.
pub fn classify_error(e: pb::CallError) -> Failure {
    use pb::FailureKind as Kind;
    let code = Code::from(e.code);
    match e.kind() {
        Kind::NotStarted if code == Code::NotFound => Failure::NotDeployed,
        Kind::NotStarted | Kind::Refused => Failure::NeverStarted(e.message),
        Kind::TimedOut | Kind::Function => Failure::Function(code, e.message),
        Kind::StartedThenFailed => Failure::MidRun(e.message),
        Kind::Unspecified => match code {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal => {
                Failure::MidRun(e.message)
            }
            code => Failure::Function(code, e.message),
        },
    }
}

/// Whether the transport failed to connect at all (so nothing was sent): an I/O error of kind
/// connection refused somewhere in the status's sources.
fn refused_connection(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_their_kind_not_their_message() {
        use pb::FailureKind as Kind;
        let failure = |code, message: &str, kind| {
            classify(&sandstorm_proto::invocation_failure(code, message, kind))
        };
        // The same code and the same words mean different things by kind.
        assert!(matches!(
            failure(Code::ResourceExhausted, "queue full", Kind::Refused),
            Failure::NeverStarted(_)
        ));
        assert!(matches!(
            failure(Code::ResourceExhausted, "queue full", Kind::Function),
            Failure::Function(Code::ResourceExhausted, _)
        ));
        assert!(matches!(
            failure(
                Code::Unavailable,
                "connection refused",
                Kind::StartedThenFailed
            ),
            Failure::MidRun(_)
        ));
        assert!(matches!(
            failure(Code::Unavailable, "container died", Kind::NotStarted),
            Failure::NeverStarted(_)
        ));
        assert!(matches!(
            failure(Code::NotFound, "no fn", Kind::NotStarted),
            Failure::NotDeployed
        ));
        assert!(matches!(
            failure(Code::DeadlineExceeded, "deadline", Kind::TimedOut),
            Failure::Function(Code::DeadlineExceeded, _)
        ));
        // No kind: the transport's error; it may have started, whatever it says.
        let mid = tonic::Status::unavailable("tcp connect error: Connection refused");
        assert!(matches!(classify(&mid), Failure::MidRun(_)));
        assert!(matches!(
            classify(&tonic::Status::aborted("trap")),
            Failure::Function(Code::Aborted, _)
        ));
        // Unless its sources say the connection was refused: nothing was sent.
        let refused = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(classify(&refused), Failure::NeverStarted(_)));
    }
}
