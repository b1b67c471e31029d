//! Errors as one line for logs, `/healthz` and error replies.

/// `error` and every source below it, joined by `: `, each cause once: most of the project's
/// errors quote their source in their own message (which `{:#}` would then repeat), while a
/// transport's own message ("error sending request") hides the cause ("connection refused") in
/// its sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to the agent: {source}; check the socket")]
    struct Quoting {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    /// A cause its parent already quotes is not repeated; one it does not quote is kept.
    #[test]
    fn each_cause_is_shown_once() {
        let io = || std::io::Error::other("no such file");
        let report =
            eyre::Report::new(Quoting { source: io() }).wrap_err("the dstack guest agent failed");
        assert_eq!(
            error_chain(report.as_ref()),
            "the dstack guest agent failed: cannot connect to the agent: no such file; check the socket"
        );
        let plain = eyre::Report::new(io()).wrap_err("chain RPC");
        assert_eq!(error_chain(plain.as_ref()), "chain RPC: no such file");
        let nested = Outer(Middle(std::io::Error::other("connection refused")));
        assert_eq!(error_chain(&nested), "outer: middle: connection refused");
    }
}
