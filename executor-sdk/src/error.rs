//! The error a handler returns: a message that becomes the job's `error` line.

use std::fmt;

/// Why a job failed, as the text the worker reports (`{"status":"error","error":<message>}`).
///
/// Any [`std::error::Error`] converts into it with `?`, so a handler can propagate I/O or parse
/// errors directly; [`Error::new`] makes one from a message.
///
/// ```
/// use executor_sdk::Error;
///
/// let e = Error::new("division by zero");
/// assert_eq!(e.to_string(), "division by zero");
///
/// fn parse(text: &str) -> Result<i64, Error> {
///     Ok(text.parse::<i64>()?)
/// }
/// assert_eq!(parse("x").unwrap_err().to_string(), "invalid digit found in string");
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message. Keep it short and lowercase, saying what failed and why.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error of a job that stopped because it was cancelled.
    pub fn cancelled() -> Self {
        Self::new("cancelled")
    }

    /// The message as it is reported.
    pub fn message(&self) -> &str {
        &self.message
    }
}

// `Error` deliberately does not implement `std::error::Error`: that keeps this blanket conversion
// coherent, so `?` works on every error type a handler meets.
impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Self::new(err.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}
