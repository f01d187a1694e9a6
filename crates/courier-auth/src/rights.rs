//! Shared access policy permissions, written as IoT Hub writes them (wire spec §1.5).

use std::fmt;
use std::str::FromStr;

/// One IoT Hub permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Read the identity registry.
    RegistryRead,
    /// Write the identity registry.
    RegistryWrite,
    /// Service-facing endpoints: send C2D, receive feedback.
    ServiceConnect,
    /// Device-facing endpoints: receive C2D, send D2C.
    DeviceConnect,
}

impl Right {
    /// Every right, in the order IoT Hub lists them.
    pub const ALL: [Right; 4] = [
        Right::RegistryRead,
        Right::RegistryWrite,
        Right::ServiceConnect,
        Right::DeviceConnect,
    ];

    /// The name IoT Hub uses for this right.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::RegistryRead => "RegistryRead",
            Right::RegistryWrite => "RegistryWrite",
            Right::ServiceConnect => "ServiceConnect",
            Right::DeviceConnect => "DeviceConnect",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A right name that IoT Hub does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IoT Hub right (expected RegistryRead, RegistryWrite, ServiceConnect or DeviceConnect)")]
pub struct ParseRightError(pub String);

impl FromStr for Right {
    type Err = ParseRightError;

    /// Case-insensitive, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Right::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseRightError(name.to_owned()))
    }
}

/// A set of [`Right`]s, serialized as IoT Hub's `"RegistryRead, ServiceConnect"` string.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const fn empty() -> Self {
        Rights(0)
    }

    /// All four rights (what `iothubowner` has).
    pub fn all() -> Self {
        Right::ALL.into_iter().fold(Rights::empty(), Rights::with)
    }

    /// This set plus `right`.
    #[must_use]
    pub fn with(self, right: Right) -> Self {
        Rights(self.0 | right.bit())
    }

    /// Whether `right` is in the set.
    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rights in the set, in IoT Hub's order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl From<Right> for Rights {
    fn from(right: Right) -> Self {
        Rights::empty().with(right)
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        iter.into_iter().fold(Rights::empty(), Rights::with)
    }
}

impl fmt::Display for Rights {
    /// `RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect` (comma + space, IoT Hub order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, right) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(right.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

impl FromStr for Rights {
    type Err = ParseRightError;

    /// Comma-separated names in any order and case; repeats are harmless; `""` is the empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Right::from_str)
            .collect()
    }
}

impl From<Rights> for String {
    fn from(rights: Rights) -> Self {
        rights.to_string()
    }
}

impl TryFrom<String> for Rights {
    type Error = ParseRightError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_in_iothub_order() {
        let r = Rights::empty()
            .with(Right::DeviceConnect)
            .with(Right::RegistryRead);
        assert_eq!(r.to_string(), "RegistryRead, DeviceConnect");
        assert_eq!(
            Rights::all().to_string(),
            "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"
        );
        assert_eq!(Rights::empty().to_string(), "");
    }

    #[test]
    fn parses_any_order_and_case() {
        let r: Rights = "deviceconnect,ServiceConnect ,  REGISTRYREAD"
            .parse()
            .unwrap();
        assert!(r.contains(Right::DeviceConnect));
        assert!(r.contains(Right::ServiceConnect));
        assert!(r.contains(Right::RegistryRead));
        assert!(!r.contains(Right::RegistryWrite));
        assert_eq!("".parse::<Rights>().unwrap(), Rights::empty());
        assert_eq!(
            "ServiceConnect, Bogus".parse::<Rights>(),
            Err(ParseRightError("Bogus".into()))
        );
    }

    #[test]
    fn every_subset_round_trips_through_text_and_serde() {
        for bits in 0u8..16 {
            let rights: Rights = Right::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, r)| r)
                .collect();
            assert_eq!(rights.iter().count(), bits.count_ones() as usize);
            assert_eq!(rights.to_string().parse::<Rights>().unwrap(), rights);
            let json = serde_json::to_string(&rights).unwrap();
            assert_eq!(json, format!("\"{rights}\""));
            assert_eq!(serde_json::from_str::<Rights>(&json).unwrap(), rights);
        }
    }

    #[test]
    fn serde_rejects_unknown_right() {
        assert!(serde_json::from_str::<Rights>("\"ServiceConnect, Admin\"").is_err());
    }
}
