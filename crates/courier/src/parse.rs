//! Parsers for flag values that are more than a string: durations, `k=v`
//! application properties and message body sources.

use std::path::PathBuf;
use std::time::Duration;

/// Why a duration flag was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Nothing before the unit, or no value at all.
    #[error("'{0}' is not a duration: expected a number of seconds or a number with ms, s, m or h (e.g. 90s, 5m, 1h)")]
    Malformed(String),
    /// A unit this parser does not know.
    #[error("'{0}' has an unknown unit: use ms, s, m or h")]
    UnknownUnit(String),
    /// A value that overflows when converted to seconds.
    #[error("'{0}' is too long a duration")]
    TooLong(String),
}

/// Parses `90s`, `5m`, `1h`, `250ms` or a bare number of seconds.
pub(crate) fn duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| DurationError::TooLong(text.to_owned()))?;
    let too_long = || DurationError::TooLong(text.to_owned());
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => value
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(too_long),
        "h" => value
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(too_long),
        _ => Err(DurationError::UnknownUnit(text.to_owned())),
    }
}

/// Why an application property flag was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PropertyError {
    /// No `=` between name and value.
    #[error("'{0}' is not a property: expected name=value")]
    MissingEquals(String),
    /// `=value` with nothing before it.
    #[error("'{0}' has an empty property name")]
    EmptyName(String),
}

/// Parses `name=value`; the value may be empty and may itself contain `=`.
pub(crate) fn property(text: &str) -> Result<(String, String), PropertyError> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| PropertyError::MissingEquals(text.to_owned()))?;
    if name.is_empty() {
        return Err(PropertyError::EmptyName(text.to_owned()));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Where a message body comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodySource {
    /// The argument itself is the body.
    Literal(String),
    /// `@path`: the file's bytes.
    File(PathBuf),
    /// `-`: standard input until end of file.
    Stdin,
}

/// Reads `-` as stdin and `@path` as a file; anything else is the body itself.
pub(crate) fn body_source(text: &str) -> BodySource {
    if text == "-" {
        BodySource::Stdin
    } else if let Some(path) = text.strip_prefix('@') {
        BodySource::File(PathBuf::from(path))
    } else {
        BodySource::Literal(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_each_unit_and_bare_seconds() {
        let cases = [
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("250ms", Duration::from_millis(250)),
            ("42", Duration::from_secs(42)),
            (" 0 ", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn durations_refuse_missing_numbers_unknown_units_and_overflow() {
        assert_eq!(duration(""), Err(DurationError::Malformed(String::new())));
        assert_eq!(duration("s"), Err(DurationError::Malformed("s".into())));
        assert_eq!(duration("-5s"), Err(DurationError::Malformed("-5s".into())));
        assert_eq!(duration("5d"), Err(DurationError::UnknownUnit("5d".into())));
        assert_eq!(
            duration("1.5h"),
            Err(DurationError::UnknownUnit("1.5h".into()))
        );
        let huge = format!("{}h", u64::MAX);
        assert_eq!(duration(&huge), Err(DurationError::TooLong(huge.clone())));
        let overflow = "99999999999999999999999s";
        assert_eq!(
            duration(overflow),
            Err(DurationError::TooLong(overflow.into()))
        );
    }

    #[test]
    fn properties_split_at_the_first_equals_sign() {
        assert_eq!(property("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(property("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(property("empty="), Ok(("empty".into(), String::new())));
    }

    #[test]
    fn properties_need_a_name_and_an_equals_sign() {
        assert_eq!(
            property("novalue"),
            Err(PropertyError::MissingEquals("novalue".into()))
        );
        assert_eq!(property("=v"), Err(PropertyError::EmptyName("=v".into())));
    }

    #[test]
    fn body_sources_distinguish_stdin_files_and_literals() {
        assert_eq!(body_source("-"), BodySource::Stdin);
        assert_eq!(
            body_source("@msg.json"),
            BodySource::File("msg.json".into())
        );
        assert_eq!(body_source("hello"), BodySource::Literal("hello".into()));
        assert_eq!(body_source("--"), BodySource::Literal("--".into()));
    }
}
