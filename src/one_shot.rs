//! What the one-shot commands (`audit`, `explain`, `migrate`) share: what they
//! say about a failed API call, and how they read a kubectl-style target.

/// The API server's status code, when it answered.
pub(crate) fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// One line of a kube error: the API server's message, or the transport's
/// with each cause once.
pub(crate) fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => {
            let mut text = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let t = s.to_string();
                if !text.contains(&t) {
                    text.push_str(": ");
                    text.push_str(&t);
                }
                src = s.source();
            }
            text.replace('\n', " ")
        }
    }
}

/// A target as kubectl writes it: `RESOURCE/NAME` or the two words
/// `RESOURCE NAME`; `None` for anything else.
pub(crate) fn split_target(words: &[String]) -> Option<(&str, &str)> {
    match words {
        [one] => one.split_once('/'),
        [kind, name] if !kind.contains('/') => Some((kind.as_str(), name.as_str())),
        _ => None,
    }
}
