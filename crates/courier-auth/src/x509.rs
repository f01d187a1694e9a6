//! X.509 thumbprints for self-signed device certificates (wire spec §1.6).

use std::fmt::Write as _;

use sha1::{Digest as _, Sha1};
use sha2::Sha256;

/// The SHA-1 and SHA-256 thumbprints of a DER certificate, as uppercase hex without separators.
pub fn thumbprints(cert_der: &[u8]) -> (String, String) {
    (
        upper_hex(&Sha1::digest(cert_der)),
        upper_hex(&Sha256::digest(cert_der)),
    )
}

/// Whether `registered` (SHA-1 or SHA-256 hex, any case, `:` or space separators allowed)
/// is the thumbprint of `cert_der`. An empty or malformed registration matches nothing.
pub fn thumbprint_matches(registered: &str, cert_der: &[u8]) -> bool {
    // Separators are how tools print thumbprints (openssl uses ':', Windows uses spaces).
    let wanted: String = registered
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect();
    let actual = match wanted.len() {
        40 => upper_hex(&Sha1::digest(cert_der)),
        64 => upper_hex(&Sha256::digest(cert_der)),
        _ => return false,
    };
    wanted.eq_ignore_ascii_case(&actual)
}

fn upper_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02X}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // FIPS 180 "abc" vectors stand in for a certificate: the hash does not care what the bytes are.
    const SHA1_ABC: &str = "A9993E364706816ABA3E25717850C26C9CD0D89D";
    const SHA256_ABC: &str = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";

    #[test]
    fn thumbprints_are_uppercase_hex_of_both_hashes() {
        assert_eq!(
            thumbprints(b"abc"),
            (SHA1_ABC.to_owned(), SHA256_ABC.to_owned())
        );
    }

    #[test]
    fn matches_either_hash_in_any_case_with_separators() {
        assert!(thumbprint_matches(SHA1_ABC, b"abc"));
        assert!(thumbprint_matches(SHA256_ABC, b"abc"));
        assert!(thumbprint_matches(&SHA1_ABC.to_ascii_lowercase(), b"abc"));
        let colons: Vec<String> = SHA256_ABC
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert!(thumbprint_matches(&colons.join(":"), b"abc"));
        assert!(thumbprint_matches(
            &colons.join(" ").to_ascii_lowercase(),
            b"abc"
        ));
    }

    #[test]
    fn rejects_other_certificates_and_malformed_registrations() {
        assert!(!thumbprint_matches(SHA1_ABC, b"abd"));
        assert!(!thumbprint_matches(SHA256_ABC, b"abd"));
        assert!(!thumbprint_matches("", b"abc"));
        assert!(!thumbprint_matches(&SHA1_ABC[..39], b"abc"));
        // A SHA-256 prefix of SHA-1 length must not match by accident.
        assert!(!thumbprint_matches(&SHA256_ABC[..40], b"abc"));
    }
}
