//! TLS for every listener: the generated development CA and server
//! certificate, and the rustls server configuration.
//!
//! Files in `{data_dir}/tls/` (keys 0600):
//! `ca.pem`, `ca-key.pem` (ECDSA P-256, 10 years) and `server.pem`,
//! `server-key.pem` (825 days, signed by the CA). Clients trust `ca.pem`; the
//! server certificate can be re-issued (new host name, near expiry) without
//! clients noticing, because the CA stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::datadir::{create_private_dir, write_private_atomic, DataDir, DataDirError};

/// Common name of the generated CA, as clients show it.
pub const DEV_CA_COMMON_NAME: &str = "Courier Development CA";
const CA_VALIDITY_DAYS: i64 = 3650;
const SERVER_VALIDITY_DAYS: i64 = 825;
/// A server certificate this close to expiry is re-issued at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Back-dating covers clients whose clocks run a little behind ours.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Certificate files a listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM) of the leaf.
    pub key: PathBuf,
    /// The CA clients should trust, when Courier generated it.
    pub ca: Option<PathBuf>,
}

/// Why certificates could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a certificate or key file failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of the CA certificate and its key exists.
    #[error("{present} exists but {missing} does not; restore it, or delete {dir} to generate a new CA (clients must then trust the new ca.pem)")]
    PartialCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
        /// The tls directory.
        dir: PathBuf,
    },
    /// rcgen could not generate a key or certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or settings.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The generated CA: its certificate (to check the server's against) and an issuer to sign with.
struct DevCa {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct TlsPaths {
    dir: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TlsPaths {
    fn new(data: &DataDir) -> TlsPaths {
        let dir = data.tls_dir();
        TlsPaths {
            ca_cert: data.ca_cert_path(),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            dir,
        }
    }
}

/// Makes sure `{data_dir}/tls` holds a development CA and a server
/// certificate valid for `hostname`, generating what is missing.
///
/// The CA is created once and then reused. The server certificate is re-issued
/// from the same CA when it does not cover `hostname`, does not chain to the
/// CA, or expires within 30 days.
pub fn ensure_dev_certs(dir: &DataDir, hostname: &str) -> Result<TlsFiles, TlsError> {
    let paths = TlsPaths::new(dir);
    create_private_dir(&paths.dir)?;
    let ca = match (paths.ca_cert.exists(), paths.ca_key.exists()) {
        (true, true) => load_ca(&paths)?,
        (false, false) => create_ca(&paths)?,
        (cert, _) => {
            let (present, missing) = if cert {
                (&paths.ca_cert, &paths.ca_key)
            } else {
                (&paths.ca_key, &paths.ca_cert)
            };
            return Err(TlsError::PartialCa {
                present: present.clone(),
                missing: missing.clone(),
                dir: paths.dir.clone(),
            });
        }
    };
    let renew_at = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + RENEW_BEFORE,
    );
    match server_cert_problem(&ca, &paths, hostname, renew_at) {
        None => {}
        Some(reason) => {
            tracing::info!(%reason, hostname, "issuing a new server certificate");
            issue_server_cert(&ca, &paths, hostname)?;
        }
    }
    Ok(TlsFiles {
        cert: paths.server_cert,
        key: paths.server_key,
        ca: Some(paths.ca_cert),
    })
}

fn ca_params() -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, DEV_CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    params
}

fn create_ca(paths: &TlsPaths) -> Result<DevCa, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params();
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the writes leaves a key without a
    // certificate, which PartialCa reports, never a CA nobody can sign with.
    write_private_atomic(&paths.ca_key, key.serialize_pem().as_bytes())?;
    write_private_atomic(&paths.ca_cert, cert.pem().as_bytes())?;
    tracing::info!(path = %paths.ca_cert.display(), "generated a development CA");
    Ok(DevCa {
        cert_der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn load_ca(paths: &TlsPaths) -> Result<DevCa, TlsError> {
    let cert_pem = read_to_string(&paths.ca_cert)?;
    let key_pem = read_to_string(&paths.ca_key)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| pem_err(&paths.ca_key, e))?;
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| pem_err(&paths.ca_cert, e))?;
    let issuer =
        Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| pem_err(&paths.ca_cert, e))?;
    Ok(DevCa { cert_der, issuer })
}

/// Why the existing server certificate cannot be served as is, or `None` if it can.
fn server_cert_problem(
    ca: &DevCa,
    paths: &TlsPaths,
    hostname: &str,
    at: UnixTime,
) -> Option<String> {
    if !paths.server_key.exists() {
        return Some("no server key".into());
    }
    let pem = match std::fs::read(&paths.server_cert) {
        Ok(p) => p,
        Err(e) => return Some(format!("cannot read {}: {e}", paths.server_cert.display())),
    };
    let leaf = match CertificateDer::from_pem_slice(&pem) {
        Ok(c) => c,
        Err(e) => return Some(format!("{}: {e}", paths.server_cert.display())),
    };
    let name = match ServerName::try_from(hostname.to_owned()) {
        Ok(n) => n,
        Err(e) => return Some(format!("host name {hostname}: {e}")),
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Err(e) = roots.add(ca.cert_der.clone()) {
        return Some(format!("CA not usable as a root: {e}"));
    }
    // The same check a client makes: chains to our CA, valid at `at`, names the host.
    let verifier = match WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return Some(format!("cannot build a verifier: {e}")),
    };
    match verifier.verify_server_cert(&leaf, &[], &name, &[], at) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

fn issue_server_cert(ca: &DevCa, paths: &TlsPaths, hostname: &str) -> Result<(), TlsError> {
    let mut names = vec![hostname.to_owned(), "localhost".to_owned()];
    names.dedup();
    let mut params = CertificateParams::new(names)?;
    params.subject_alt_names.extend([
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ]);
    // An IPv4 host name became an IP SAN above; don't list it twice.
    let mut seen = Vec::new();
    params
        .subject_alt_names
        .retain(|san| match seen.contains(san) {
            true => false,
            false => {
                seen.push(san.clone());
                true
            }
        });
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // OpenSSL's strict mode (Python 3.13 default) wants the AKI on non-root certificates.
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(SERVER_VALIDITY_DAYS);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    write_private_atomic(&paths.server_key, key.serialize_pem().as_bytes())?;
    write_private_atomic(&paths.server_cert, cert.pem().as_bytes())?;
    Ok(())
}

fn read_to_string(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Builds the server configuration every listener uses: TLS 1.2 and 1.3
/// (the Python and Java SDKs pin 1.2), the ring provider, the given ALPN
/// protocols, and client certificates requested but not required
/// (see [`AnyClientCert`]).
pub fn server_config(
    cert_pem_path: &Path,
    key_pem_path: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_pem_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_err(cert_pem_path, e))?;
    if chain.is_empty() {
        return Err(pem_err(cert_pem_path, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem_path).map_err(|e| pem_err(key_pem_path, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyClientCert::new(&provider));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The leaf certificate (DER) the client presented, if any.
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
}

/// Client-certificate verifier that asks every client for a certificate,
/// lets clients without one in, and ACCEPTS ANY CERTIFICATE CHAIN.
///
/// # Security
///
/// **A handshake that passes this verifier proves nothing about who the
/// client is.** It proves only that the client holds the private key of the
/// certificate it sent: the handshake signature (CertificateVerify) is checked
/// with the ring provider's algorithms. Chains, issuers, expiry and names are
/// NOT checked, because IoT Hub's X.509 device auth is decided per device at
/// the application layer: self-signed devices by the SHA-1/SHA-256 thumbprint
/// registered for them, CA-signed devices against registered CAs (wire spec
/// §1.6). Every protocol head that accepts X.509 auth MUST therefore take the
/// leaf from [`peer_certificate`] (or the HTTPS `PeerCertificate` extension) and
/// check it against the device's registration before trusting it.
///
/// Certificates are requested, never required, because SAS clients connect on
/// the same ports (Java even asks over WebSockets that none be requested).
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> AnyClientCert {
        AnyClientCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients then offer whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Parsing rejects garbage early; trust is decided by the application.
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days_from_now: u64) -> UnixTime {
        UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(days_from_now * 86_400),
        )
    }

    fn verify(files: &TlsFiles, host: &str, when: UnixTime) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(files.ca.as_ref().unwrap()).unwrap())
            .unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_file(&files.cert).unwrap();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], when)
            .map(|_| ())
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_certificate_covers_host_and_loopback_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        let files = ensure_dev_certs(&dir, "hub.example.test").unwrap();
        assert_eq!(files.ca.as_deref(), Some(dir.ca_cert_path().as_path()));
        for host in ["hub.example.test", "localhost", "127.0.0.1", "::1"] {
            verify(&files, host, at(0)).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        assert!(verify(&files, "other.example.test", at(0)).is_err());
        assert!(verify(&files, "hub.example.test", at(800)).is_ok());
        assert!(
            verify(&files, "hub.example.test", at(830)).is_err(),
            "825 days"
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&files.key), 0o600);
            assert_eq!(mode(&dir.tls_dir().join("ca-key.pem")), 0o600);
            assert_eq!(mode(&dir.tls_dir()), 0o700);
        }
        let ca_der = CertificateDer::from_pem_file(dir.ca_cert_path()).unwrap();
        let cn = DEV_CA_COMMON_NAME.as_bytes();
        assert!(ca_der.windows(cn.len()).any(|w| w == cn), "CA common name");
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(dir.tls_dir().join("ca-key.pem")).unwrap())
                .unwrap();
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).unwrap();
        assert!(issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign));
    }

    #[test]
    fn later_starts_reuse_and_a_new_hostname_reissues_from_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        let first = ensure_dev_certs(&dir, "localhost").unwrap();
        let ca_before = std::fs::read(dir.ca_cert_path()).unwrap();
        let leaf_before = std::fs::read(&first.cert).unwrap();

        let again = ensure_dev_certs(&dir, "localhost").unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::read(&first.cert).unwrap(), leaf_before, "reused");

        let moved = ensure_dev_certs(&dir, "hub.example.test").unwrap();
        assert_eq!(
            std::fs::read(dir.ca_cert_path()).unwrap(),
            ca_before,
            "CA kept"
        );
        assert_ne!(
            std::fs::read(&moved.cert).unwrap(),
            leaf_before,
            "re-issued"
        );
        verify(&moved, "hub.example.test", at(0)).unwrap();
    }

    #[test]
    fn ipv4_hostname_gets_an_ip_san() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        let files = ensure_dev_certs(&dir, "192.168.7.7").unwrap();
        verify(&files, "192.168.7.7", at(0)).unwrap();
    }

    #[test]
    fn half_a_ca_is_an_error_not_a_silent_new_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        ensure_dev_certs(&dir, "localhost").unwrap();
        std::fs::remove_file(dir.tls_dir().join("ca-key.pem")).unwrap();
        let err = ensure_dev_certs(&dir, "localhost").unwrap_err();
        assert!(matches!(err, TlsError::PartialCa { .. }), "{err}");
    }

    #[test]
    fn server_config_offers_tls12_and_13_and_alpn() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        let files = ensure_dev_certs(&dir, "localhost").unwrap();
        let config = server_config(&files.cert, &files.key, &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let err = server_config(&files.key, &files.key, &[]).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    }
}
