//! Identifiers that validate on construction.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A device id must be 1–128 characters.
    #[error("device id must be 1 to 128 characters long, got {0}")]
    DeviceIdLength(usize),
    /// A device id may only hold IoT Hub's allowed characters.
    #[error(
        "device id contains {0:?}; allowed are A-Z a-z 0-9 and - : . + % _ # * ? ! ( ) , = @ ; $ '"
    )]
    DeviceIdCharacter(char),
    /// A lock token is a GUID.
    #[error("lock token {0:?} is not a GUID")]
    LockToken(String),
}

/// A device identity, as IoT Hub allows it: 1–128 characters of
/// `A-Z a-z 0-9 - : . + % _ # * ? ! ( ) , = @ ; $ '`. Case-sensitive.
///
/// Shared, not copied: every event, index entry and delivery names its
/// device, so a clone is a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DeviceId(Arc<str>);

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl DeviceId {
    /// Validates `id` against IoT Hub's rules.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let len = id.chars().count();
        if !(1..=128).contains(&len) {
            return Err(IdError::DeviceIdLength(len));
        }
        if let Some(c) = id.chars().find(|c| !is_device_id_char(*c)) {
            return Err(IdError::DeviceIdCharacter(c));
        }
        Ok(DeviceId(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` may appear in a device id.
pub fn is_device_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c)
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        DeviceId::new(s)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The token that names one lock on one delivered message: a GUID, shown
/// hyphenated and lower-case as IoT Hub's ETag/lock token. Its 16 bytes are
/// what AMQP carries as the delivery tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockToken(pub [u8; 16]);

impl LockToken {
    /// Parses a GUID, hyphenated or not, any case, with or without braces.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let trimmed = s.trim_matches(|c| c == '{' || c == '}');
        let hex: Vec<u8> = trimmed.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || trimmed.len() > 36 {
            return Err(IdError::LockToken(s.to_owned()));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(|| IdError::LockToken(s.to_owned()))?;
            let lo = hex_val(pair[1]).ok_or_else(|| IdError::LockToken(s.to_owned()))?;
            out[i] = hi << 4 | lo;
        }
        Ok(LockToken(out))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The hub-assigned, per-queue, strictly increasing number of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SequenceNumber(pub u64);

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_iot_hub_rules() {
        assert!(DeviceId::new("dev-1:a.b+c%d_e#f*g?h!i(j)k,l=m@n;o$p'q").is_ok());
        assert_eq!(DeviceId::new(""), Err(IdError::DeviceIdLength(0)));
        assert_eq!(
            DeviceId::new("a".repeat(129)),
            Err(IdError::DeviceIdLength(129))
        );
        assert!(DeviceId::new("a".repeat(128)).is_ok());
        assert_eq!(DeviceId::new("a/b"), Err(IdError::DeviceIdCharacter('/')));
        assert_eq!(DeviceId::new("a b"), Err(IdError::DeviceIdCharacter(' ')));
    }

    #[test]
    fn lock_tokens_round_trip_through_text() {
        let t = LockToken([
            0x35, 0x56, 0x7c, 0xd3, 0xab, 0xf5, 0x4b, 0x5e, 0xaa, 0x09, 0x9b, 0x29, 0xda, 0xd7,
            0x36, 0x3f,
        ]);
        let s = t.to_string();
        assert_eq!(s, "35567cd3-abf5-4b5e-aa09-9b29dad7363f");
        assert_eq!(LockToken::parse(&s), Ok(t));
        assert_eq!(LockToken::parse(&s.to_uppercase()), Ok(t));
        assert_eq!(LockToken::parse(&s.replace('-', "")), Ok(t));
        assert_eq!(LockToken::parse(&format!("{{{s}}}")), Ok(t));
        assert!(LockToken::parse("35567cd3").is_err());
        assert!(LockToken::parse("zz567cd3-abf5-4b5e-aa09-9b29dad7363f").is_err());
    }
}
