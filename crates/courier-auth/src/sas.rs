//! SAS tokens: `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` (wire spec §1.3).
//!
//! The signature covers `sr` *exactly as written in the token* (SDKs disagree on how to encode
//! it), so parsing keeps the raw field and never re-encodes it.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The scheme word every SAS token starts with (followed by one space).
pub const SAS_PREFIX: &str = "SharedAccessSignature";

/// Everything except `A-Za-z0-9-_.~` is escaped, like Node's `encodeUriComponentStrict`.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Standard alphabet; padding optional on input, since nothing is gained by refusing it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a SAS token could not be parsed or signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The token does not start with `SharedAccessSignature `.
    #[error("token does not start with 'SharedAccessSignature '")]
    MissingPrefix,
    /// A `&`-separated field has no `=`.
    #[error("token field '{0}' is not of the form name=value")]
    MalformedField(String),
    /// `sr`, `sig`, `se` or `skn` given twice.
    #[error("token field '{0}' appears more than once")]
    DuplicateField(String),
    /// `sr`, `sig` or `se` missing or empty.
    #[error("token has no '{0}' field")]
    MissingField(&'static str),
    /// `skn`'s percent-encoding does not decode to UTF-8.
    #[error("token field '{0}' is not valid percent-encoded UTF-8")]
    InvalidEncoding(&'static str),
    /// `sig` is not base64.
    #[error("token signature is not base64")]
    InvalidSignature,
    /// `se` is not a decimal number of seconds.
    #[error("token expiry '{0}' is not a decimal number of seconds since 1970")]
    InvalidExpiry(String),
    /// The signing key is empty or not base64.
    #[error("shared access key is empty or not base64")]
    InvalidKey,
}

/// A parsed SAS token.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as in the token: the bytes the signature covers.
    pub resource_raw: String,
    /// `sr` percent-decoded once (invalid UTF-8 replaced by U+FFFD).
    pub resource: String,
    /// `sig`, percent-decoded then base64-decoded.
    pub signature: Vec<u8>,
    /// `se`: expiry in seconds since 1970.
    pub expiry: u64,
    /// `se` exactly as in the token (it is part of the signed string).
    pub expiry_raw: String,
    /// `skn`, percent-decoded; `None` when absent or empty (C sends `skn=` on device tokens).
    pub key_name: Option<String>,
}

impl SasToken {
    /// Parses a token; fields in any order, unknown fields ignored, `sr` kept raw.
    pub fn parse(token: &str) -> Result<Self, SasError> {
        let fields = token
            .strip_prefix(SAS_PREFIX)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(SasError::MissingPrefix)?;

        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        // Empty fields (`&&`, trailing `&`) are skipped, as Microsoft's own parser did.
        for field in fields.split('&').filter(|f| !f.is_empty()) {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| SasError::MalformedField(field.to_owned()))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                // The signature covers only sr and se, so extra fields cannot change meaning.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::DuplicateField(name.to_owned()));
            }
        }

        let resource_raw = sr
            .filter(|v| !v.is_empty())
            .ok_or(SasError::MissingField("sr"))?;
        // Lossy: C sends device ids raw, and an id like `x%FF` is valid there; verification
        // also reads `resource_raw` undecoded, so nothing is lost for it.
        let resource = percent_decode_str(resource_raw)
            .decode_utf8_lossy()
            .into_owned();

        let sig = sig
            .filter(|v| !v.is_empty())
            .ok_or(SasError::MissingField("sig"))?;
        // Percent-decoding only: a raw `+` is a base64 character here, never a space.
        let sig: Vec<u8> = percent_decode_str(sig).collect();
        let signature = LENIENT_BASE64
            .decode(sig)
            .map_err(|_| SasError::InvalidSignature)?;

        let expiry_raw = se
            .filter(|v| !v.is_empty())
            .ok_or(SasError::MissingField("se"))?;
        let expiry = parse_expiry(expiry_raw)?;

        let key_name = match skn {
            Some(v) => Some(decode_utf8(v, "skn")?).filter(|v| !v.is_empty()),
            None => None,
        };

        Ok(SasToken {
            resource_raw: resource_raw.to_owned(),
            resource,
            signature,
            expiry,
            expiry_raw: expiry_raw.to_owned(),
            key_name,
        })
    }

    /// The exact string the signature covers: raw `sr`, newline, raw `se`.
    pub fn string_to_sign(&self) -> String {
        format!("{}\n{}", self.resource_raw, self.expiry_raw)
    }

    /// Whether the signature is HMAC-SHA256 of [`Self::string_to_sign`] under `key_b64`
    /// (compared in constant time; a key that is not base64 matches nothing).
    pub fn is_signed_by(&self, key_b64: &str) -> bool {
        match mac(&self.string_to_sign(), key_b64) {
            Ok(expected) => expected.as_slice().ct_eq(&self.signature).into(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for SasToken {
    /// The signature is left out: with `sr` and `se` it is a usable credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource_raw", &self.resource_raw)
            .field("resource", &self.resource)
            .field("signature", &"<redacted>")
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish()
    }
}

fn decode_utf8(value: &str, field: &'static str) -> Result<String, SasError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| SasError::InvalidEncoding(field))
}

fn parse_expiry(raw: &str) -> Result<u64, SasError> {
    // `u64::from_str` alone would accept a leading `+`, which no SDK writes.
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SasError::InvalidExpiry(raw.to_owned()));
    }
    raw.parse()
        .map_err(|_| SasError::InvalidExpiry(raw.to_owned()))
}

fn mac(string_to_sign: &str, key_b64: &str) -> Result<Vec<u8>, SasError> {
    let key = LENIENT_BASE64
        .decode(key_b64)
        .map_err(|_| SasError::InvalidKey)?;
    // An empty key would make every registry entry with a blank key verify anything signed
    // with a blank key; IoT Hub never issues one.
    if key.is_empty() {
        return Err(SasError::InvalidKey);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SasError::InvalidKey)?;
    mac.update(string_to_sign.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Base64 HMAC-SHA256 of `string_to_sign` under the base64 key `key_b64` (not URL-encoded).
pub fn sign(string_to_sign: &str, key_b64: &str) -> Result<String, SasError> {
    mac(string_to_sign, key_b64).map(|m| STANDARD.encode(m))
}

/// Mints `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` the way the Node SDK does:
/// `sr` is `resource_uri` strictly percent-encoded, and the signature covers that encoded form.
pub fn generate_token(
    resource_uri: &str,
    key_b64: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    let sr = utf8_percent_encode(resource_uri, STRICT).to_string();
    let sig = sign(&format!("{sr}\n{expiry_unix}"), key_b64)?;
    let sig = utf8_percent_encode(&sig, STRICT);
    let mut token = format!("{SAS_PREFIX} sr={sr}&sig={sig}&se={expiry_unix}");
    if let Some(name) = key_name.filter(|n| !n.is_empty()) {
        token.push_str("&skn=");
        token.extend(utf8_percent_encode(name, STRICT));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";

    #[test]
    fn parses_python_device_token_from_trace() {
        let t = SasToken::parse("SharedAccessSignature sr=localhost%2Fdevices%2Fharness-dev-1&sig=GgjGhZW%2B6Gk0P6zd604Nsht1NGvD0gF4S1fknZ9Esv4%3D&se=1795417604").unwrap();
        assert_eq!(t.resource_raw, "localhost%2Fdevices%2Fharness-dev-1");
        assert_eq!(t.resource, "localhost/devices/harness-dev-1");
        assert_eq!(t.expiry, 1_795_417_604);
        assert_eq!(t.expiry_raw, "1795417604");
        assert_eq!(t.key_name, None);
        assert_eq!(
            t.signature,
            STANDARD
                .decode("GgjGhZW+6Gk0P6zd604Nsht1NGvD0gF4S1fknZ9Esv4=")
                .unwrap()
        );
        assert_eq!(t.signature.len(), 32);
        assert_eq!(
            t.string_to_sign(),
            "localhost%2Fdevices%2Fharness-dev-1\n1795417604"
        );
    }

    #[test]
    fn parses_node_service_token_with_skn_before_se() {
        let t = SasToken::parse("SharedAccessSignature sr=localhost&sig=MdAhNZVFuhGDdVn1P5DW%2ByPD%2BSDBT8sW1qAFAG5srJA%3D&skn=iothubowner&se=1795417607").unwrap();
        assert_eq!(t.resource_raw, "localhost");
        assert_eq!(t.key_name.as_deref(), Some("iothubowner"));
        assert_eq!(t.expiry, 1_795_417_607);
        assert_eq!(t.signature.len(), 32);
    }

    #[test]
    fn parses_python_service_sig_with_raw_slash() {
        // uAMQP leaves '/' unencoded in sig.
        let t = SasToken::parse(
            "SharedAccessSignature sr=localhost&sig=FGb/SGBCcLJmI%2BgHXy8k4SQJlkdQ5oxVhFW9MpcVoak%3D&se=1795417609&skn=iothubowner",
        )
        .unwrap();
        assert_eq!(
            t.signature,
            STANDARD
                .decode("FGb/SGBCcLJmI+gHXy8k4SQJlkdQ5oxVhFW9MpcVoak=")
                .unwrap()
        );
    }

    #[test]
    fn empty_skn_is_absent_and_encoded_skn_is_decoded() {
        let t = SasToken::parse("SharedAccessSignature sr=h/devices/d&sig=AAAA&se=1&skn=").unwrap();
        assert_eq!(t.key_name, None);
        let t =
            SasToken::parse("SharedAccessSignature sr=h&sig=AAAA&se=1&skn=my%40policy").unwrap();
        assert_eq!(t.key_name.as_deref(), Some("my@policy"));
    }

    #[test]
    fn java_order_and_raw_slashes() {
        let t = SasToken::parse(
            "SharedAccessSignature sig=AAAA&se=1795417604&sr=hub.test/devices/dev%2B1",
        )
        .unwrap();
        assert_eq!(t.resource_raw, "hub.test/devices/dev%2B1");
        assert_eq!(t.resource, "hub.test/devices/dev+1");
    }

    #[test]
    fn parse_errors() {
        use SasError as E;
        let cases: &[(&str, E)] = &[
            ("sr=h&sig=AAAA&se=1", E::MissingPrefix),
            ("sharedaccesssignature sr=h&sig=AAAA&se=1", E::MissingPrefix),
            ("SharedAccessSignaturesr=h&sig=AAAA&se=1", E::MissingPrefix),
            ("SharedAccessSignature sig=AAAA&se=1", E::MissingField("sr")),
            (
                "SharedAccessSignature sr=&sig=AAAA&se=1",
                E::MissingField("sr"),
            ),
            ("SharedAccessSignature sr=h&se=1", E::MissingField("sig")),
            ("SharedAccessSignature sr=h&sig=AAAA", E::MissingField("se")),
            (
                "SharedAccessSignature sr=h&sr=h&sig=AAAA&se=1",
                E::DuplicateField("sr".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig=AAAA&se=1&skn=a&skn=b",
                E::DuplicateField("skn".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig&se=1",
                E::MalformedField("sig".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig=***&se=1",
                E::InvalidSignature,
            ),
            (
                "SharedAccessSignature sr=h&sig=AAAA&se=+1",
                E::InvalidExpiry("+1".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig=AAAA&se=1.5",
                E::InvalidExpiry("1.5".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig=AAAA&se=99999999999999999999999",
                E::InvalidExpiry("99999999999999999999999".into()),
            ),
            (
                "SharedAccessSignature sr=h&sig=AAAA&se=1&skn=%FF",
                E::InvalidEncoding("skn"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SasToken::parse(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn signature_covers_raw_sr_in_every_captured_shape() {
        let captured = [
            // Python device (MQTT), fields sr, sig, se.
            "SharedAccessSignature sr=localhost%2Fdevices%2Fharness-dev-1&sig=GgjGhZW%2B6Gk0P6zd604Nsht1NGvD0gF4S1fknZ9Esv4%3D&se=1795417604",
            // Python service (AMQP CBS), fields sr, sig, se, skn.
            "SharedAccessSignature sr=localhost&sig=ECImrGYoWDT86Tb%2B6vjAyijZ3TLZXL86dZlETglhASs%3D&se=1795417604&skn=iothubowner",
            // Node service, skn before se.
            "SharedAccessSignature sr=localhost&sig=MdAhNZVFuhGDdVn1P5DW%2ByPD%2BSDBT8sW1qAFAG5srJA%3D&skn=iothubowner&se=1795417607",
        ];
        for token in captured {
            let captured = SasToken::parse(token).unwrap();
            // The captured signature was made with a key we do not have.
            assert!(!captured.is_signed_by(KEY));
            let ours = sign(&captured.string_to_sign(), KEY).unwrap();
            let resigned = SasToken {
                signature: STANDARD.decode(ours).unwrap(),
                ..captured.clone()
            };
            assert!(resigned.is_signed_by(KEY), "{token}");
            assert!(!resigned.is_signed_by(&STANDARD.encode([9u8; 32])));
            // Re-encoding sr (here: using the decoded form) changes the signed bytes.
            if captured.resource != captured.resource_raw {
                let decoded = SasToken {
                    resource_raw: resigned.resource.clone(),
                    ..resigned
                };
                assert!(!decoded.is_signed_by(KEY));
            }
        }
    }

    #[test]
    fn sign_matches_known_hmac_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = STANDARD.encode(b"Jefe");
        let sig = sign("what do ya want for nothing?", &key).unwrap();
        assert_eq!(
            STANDARD.decode(sig).unwrap(),
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ]
        );
        assert_eq!(sign("x", "not base64!"), Err(SasError::InvalidKey));
        assert_eq!(sign("x", ""), Err(SasError::InvalidKey));
    }

    #[test]
    fn generate_token_encodes_like_node() {
        let token = generate_token("hub.test/devices/a(b)!*'", KEY, None, 1_700_000_000).unwrap();
        assert!(
            token.starts_with(
                "SharedAccessSignature sr=hub.test%2Fdevices%2Fa%28b%29%21%2A%27&sig="
            ),
            "{token}"
        );
        assert!(token.ends_with("&se=1700000000"), "{token}");
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.resource, "hub.test/devices/a(b)!*'");
        assert!(parsed.is_signed_by(KEY));

        let token = generate_token("hub.test", KEY, Some("iothubowner"), 5).unwrap();
        assert!(token.ends_with("&se=5&skn=iothubowner"), "{token}");
        let sig_field = token.split('&').find(|f| f.starts_with("sig=")).unwrap();
        assert!(!sig_field[4..].contains(['+', '/', '=']), "{sig_field}");
    }

    #[test]
    fn debug_hides_signature() {
        let t = SasToken::parse("SharedAccessSignature sr=h&sig=AAAA&se=1").unwrap();
        assert!(format!("{t:?}").contains("<redacted>"));
    }
}
