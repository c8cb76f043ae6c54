//! A private certificate authority made at run time, for HTTPS test servers.
//!
//! Nothing is checked in and nothing expires: each test makes its own CA
//! (self-signed, `CA:true`) and has it sign a server certificate for
//! `127.0.0.1` and `localhost`. A client trusts the server only if it is
//! given the CA's PEM ([`TestCa::write_ca_pem`], e.g. for Orthanc's
//! `HttpsCACertificates` or the plugin's CA bundle), so both "trusted" and
//! "unknown issuer" paths can be tested without touching the system store.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The crypto provider for every rustls config made here: ring, named
/// explicitly so that nothing depends on a process-wide default provider
/// (none is installed, and aws-lc-rs is not built).
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A private certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA with a fresh ECDSA P-256 key (validity 1975–4096, rcgen's
    /// default, so no test depends on the clock).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Each CA gets its own name: verifiers look an issuer up by name, so
        // two CAs named alike would turn "unknown issuer" into "bad signature".
        static CAS: AtomicUsize = AtomicUsize::new(0);
        let number = CAS.fetch_add(1, Ordering::Relaxed);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("testkit private CA {}-{number}", std::process::id()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "orthanc-dicomweb-oauth tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate the CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate PEM to `dir/test-ca.pem` and returns the path
    /// (a CA bundle file for the client under test).
    pub fn write_ca_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, self.ca_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A server certificate signed by this CA, valid for IP `127.0.0.1` and
    /// DNS `localhost` (subjectAltName: clients match on it, not on the CN).
    pub fn issue_server_cert(&self) -> TestCert {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("DNS name")),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate the server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        TestCert {
            cert_pem: format!("{}{}", cert.pem(), self.ca_pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client configuration that trusts this CA only (for tests that
    /// talk HTTPS to a test server directly).
    pub fn rustls_client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("add the CA to a root store");
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A server certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct TestCert {
    /// The chain: the server certificate, then the CA certificate.
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

impl TestCert {
    /// A rustls server configuration presenting this certificate (no client
    /// authentication, no ALPN, so every client falls back to HTTP/1.1).
    pub fn rustls_server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the certificate chain PEM");
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse the key PEM");
        let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a usable certificate and key");
        Arc::new(config)
    }
}
