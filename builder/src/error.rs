//! Cause chains. A library error names what failed (the file, field, image or digest) and keeps the
//! error that made it fail as its `source()`, never as text: the command line prints the chain, each
//! cause once (`error: ...`, then `caused by: ...`), and callers can still match on the typed cause.

use std::error::Error;

/// The error below a failed step: a library's own error type, or a sentence where nothing failed
/// beneath (`"not user:password".into()`).
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// A step that failed (`what`), caused by `source`.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Context {
    pub what: String,
    #[source]
    pub source: Cause,
}

/// For `map_err`: the error becomes the cause of a [`Context`] saying what was being done.
pub fn context<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Cause {
    let what = what.into();
    move |e| Box::new(Context { what, source: e.into() })
}

/// An error and its causes, outermost first.
pub fn chain<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn Error + 'static)| (*e).source())
}

/// The whole chain on one line (`a: b: c`), for logs and messages that are not the top level.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    chain(e).map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_typed_cause_and_says_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let outer: Cause = context("reading x")(io);
        assert_eq!(outer.to_string(), "reading x");
        let below = outer.source().expect("cause kept");
        assert!(below.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(one_line(outer.as_ref()), "reading x: gone");
        assert_eq!(chain(outer.as_ref()).count(), 2);
    }
}
