//! Microsoft Entra ID (v2 endpoints): token endpoint, issuer and audience as Entra issues them,
//! and certificate credentials.
//!
//! - Token endpoint: `{authority host}{tenant}/oauth2/v2.0/token`, the authority host being
//!   `https://login.microsoftonline.com/` unless overridden (sovereign clouds,
//!   `AZURE_AUTHORITY_HOST`, tests).
//! - Certificate credentials ("Microsoft identity platform application authentication
//!   certificate credentials"): `private_key_jwt` with a client assertion signed by the
//!   certificate's RSA key, `iss` = `sub` = client id, `aud` = the token endpoint, and the
//!   certificate's thumbprints in the header (`x5t`: base64url SHA-1, `x5t#S256`: base64url
//!   SHA-256, both of the DER certificate). The document asks for `RS256` in its older revisions
//!   and `PS256` in its newest; Entra accepts both, MSAL still signs `RS256`, so do we.
//!
//! Validation of the access tokens: resources registered by Microsoft (Azure Health Data
//! Services DICOM among them) get v1 access tokens, whose `iss` is `https://sts.windows.net/{tenant
//! GUID}/`, while v2 tokens carry [`issuer`]; both come from the same tenant JWKS
//! ([`jwks_uri`]). [`accepted_issuers`] gives both. `aud` is the resource's App ID URI, which
//! [`audience_from_scope`] derives from a `.default` scope.

use super::client_credentials::sign_assertion;
use crate::error::{Error, ErrorCode};
use crate::secret::Secret;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::io::Read as _;
use std::path::Path;
use url::Url;
use zeroize::Zeroizing;

/// Entra ID's public-cloud authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
/// The scope of Azure Health Data Services DICOM.
pub const DICOM_SCOPE: &str = "https://dicom.healthcareapis.azure.com/.default";
/// The signature algorithm of certificate-credential assertions.
pub const CERTIFICATE_ALGORITHM: &str = "RS256";
/// Certificate files larger than this are not PEM certificates with a key.
const MAX_CERTIFICATE_FILE_BYTES: u64 = 1 << 20;

/// An authority host (`https://login.microsoftonline.com/` when `None`), with a trailing slash.
/// HTTPS, except on loopback (test emulators). CFG-002 otherwise.
pub fn authority_host(text: Option<&str>) -> Result<Url, Error> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    let Some(text) = text else {
        return Ok(Url::parse(DEFAULT_AUTHORITY_HOST).expect("valid default authority"));
    };
    // A URL with user information could carry a password: never echo it.
    let shown = if text.contains('@') {
        "(not shown)"
    } else {
        text
    };
    let invalid = |why: &str| {
        Error::coded(
            ErrorCode::Cfg002,
            format!("the Entra authority host '{shown}' {why}"),
        )
    };
    let mut url = Url::parse(text).map_err(|_| invalid("is not a URL"))?;
    let loopback = matches!(
        url.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url.host_str() == Some("localhost");
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(invalid("must be an https URL")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid("must have no query, fragment or user name"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Checks a tenant (a GUID, a verified domain such as `contoso.onmicrosoft.com`, or
/// `organizations`): it becomes a URL path segment. CFG-002 otherwise.
pub fn validate_tenant(tenant: &str) -> Result<(), Error> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !tenant.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::coded(
            ErrorCode::Cfg002,
            format!(
                "TenantId '{}' is not an Entra tenant id or domain (letters, digits, '-' and '.')",
                tenant
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect::<String>()
            ),
        ))
    }
}

fn tenant_url(authority: &Url, tenant: &str, rest: &str) -> Result<Url, Error> {
    validate_tenant(tenant)?;
    authority.join(&format!("{tenant}/{rest}")).map_err(|_| {
        Error::coded(
            ErrorCode::Cfg002,
            "cannot build the Entra URL from the authority host and TenantId",
        )
    })
}

/// The v2 token endpoint: `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
pub fn token_endpoint(authority_host: Option<&str>, tenant: &str) -> Result<Url, Error> {
    token_endpoint_at(&self::authority_host(authority_host)?, tenant)
}

/// [`token_endpoint`] for an already checked authority host (see [`authority_host`]).
pub fn token_endpoint_at(authority: &Url, tenant: &str) -> Result<Url, Error> {
    tenant_url(authority, tenant, "oauth2/v2.0/token")
}

/// The tenant's signing keys: `https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys`
/// (the same keys sign v1 and v2 tokens).
pub fn jwks_uri(authority_host: Option<&str>, tenant: &str) -> Result<Url, Error> {
    tenant_url(
        &self::authority_host(authority_host)?,
        tenant,
        "discovery/v2.0/keys",
    )
}

/// The `iss` of v2 access tokens: `https://login.microsoftonline.com/{tenant}/v2.0`.
/// Tokens carry the tenant GUID: with a domain as TenantId this does not match (see
/// [`accepted_issuers`]).
pub fn issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}

/// The `iss` of v1 access tokens (Microsoft's own resources, Azure Health Data Services):
/// `https://sts.windows.net/{tenant}/`.
pub fn v1_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// Both issuers a token of `tenant` may carry (v2 first), or `None` when `tenant` is not a
/// GUID: tokens name the tenant by GUID, so an issuer cannot be derived from a domain
/// (the caller then warns and relies on `JWTIssuer`, or skips the issuer check).
pub fn accepted_issuers(tenant: &str) -> Option<Vec<String>> {
    is_guid(tenant).then(|| vec![issuer(tenant), v1_issuer(tenant)])
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `aud` of the access tokens requested with `scope`: the resource's App ID URI, i.e. a
/// single `….default` scope without its `/.default`
/// (`https://dicom.healthcareapis.azure.com/.default` → `https://dicom.healthcareapis.azure.com`).
/// `None` when the scope does not name one resource that way (the caller warns and skips the
/// audience check, or uses `JWTAudience`).
pub fn audience_from_scope(scope: &str) -> Option<String> {
    let mut scopes = scope.split_whitespace();
    let only = scopes.next()?;
    if scopes.next().is_some() {
        return None;
    }
    let resource = only.strip_suffix("/.default")?;
    (!resource.is_empty()).then(|| resource.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Certificate credentials
// ---------------------------------------------------------------------------------------------

/// A certificate credential: a PEM holding the certificate and its (unencrypted) RSA private
/// key, as `openssl pkcs12 -in cert.pfx -nodes` or Key Vault's PEM export write it.
#[derive(Clone, Debug)]
pub struct CertificateCredential {
    /// The private key, as a PEM block (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub key_pem: Secret,
    /// base64url (no padding) SHA-1 of the DER certificate: the `x5t` header.
    pub x5t: String,
    /// base64url (no padding) SHA-256 of the DER certificate: the `x5t#S256` header.
    pub x5t_s256: String,
    /// `RS256`.
    pub algorithm: &'static str,
}

impl CertificateCredential {
    /// Reads the certificate and key from PEM text. Any other blocks (the chain, openssl's
    /// `Bag Attributes`) are ignored; the certificate used is the one whose public key matches
    /// the private key. CFG-002 on a missing certificate or key, an encrypted or non-RSA key, or
    /// a key that belongs to no certificate in the file; messages never contain key material.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        let blocks = pem_blocks(text)?;
        let mut certificates = Vec::new();
        let mut keys = Vec::new();
        for block in &blocks {
            match block.label.as_str() {
                "CERTIFICATE" | "X509 CERTIFICATE" => certificates.push(block),
                "PRIVATE KEY" | "RSA PRIVATE KEY" => keys.push(block),
                "ENCRYPTED PRIVATE KEY" => return Err(cert_error(
                    "the private key is encrypted; store it unencrypted, readable only by Orthanc \
                         (e.g. openssl pkcs12 -in cert.pfx -out cert.pem -nodes)",
                )),
                "EC PRIVATE KEY" => {
                    return Err(cert_error(
                        "the private key is an EC key; certificate credentials need an RSA key",
                    ))
                }
                _ => {}
            }
        }
        if certificates.is_empty() && keys.is_empty() {
            return Err(cert_error(
                "holds no PEM certificate and no PEM private key (it needs both: \
                 -----BEGIN CERTIFICATE----- and -----BEGIN PRIVATE KEY-----)",
            ));
        }
        if certificates.is_empty() {
            return Err(cert_error(
                "holds a private key but no certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        let key_block = match keys.as_slice() {
            [] => {
                return Err(cert_error(
                    "holds a certificate but no private key (-----BEGIN PRIVATE KEY-----)",
                ))
            }
            [one] => *one,
            _ => return Err(cert_error("holds more than one private key")),
        };
        if key_block.encrypted {
            return Err(cert_error(
                "the private key is encrypted; store it unencrypted, readable only by Orthanc",
            ));
        }
        let key = EncodingKey::from_rsa_pem(key_block.text.as_bytes()).map_err(|_| {
            if EncodingKey::from_ec_pem(key_block.text.as_bytes()).is_ok() {
                cert_error("the private key is an EC key; certificate credentials need an RSA key")
            } else {
                cert_error("the private key is not a valid RSA private key")
            }
        })?;
        let probe = b"orthanc-dicomweb-oauth certificate credential check";
        let signature = jsonwebtoken::crypto::sign(probe, &key, Algorithm::RS256)
            .map_err(|_| cert_error("the private key cannot sign (RS256)"))?;
        let mut non_rsa = 0;
        let mut unreadable = 0;
        for certificate in &certificates {
            let public_key = match certificate_rsa_public_key(&certificate.der) {
                Ok(k) => k,
                Err(CertKeyError::NotRsa) => {
                    non_rsa += 1;
                    continue;
                }
                Err(CertKeyError::Malformed) => {
                    unreadable += 1;
                    continue;
                }
            };
            let decoding = DecodingKey::from_rsa_der(public_key);
            if jsonwebtoken::crypto::verify(&signature, probe, &decoding, Algorithm::RS256)
                .unwrap_or(false)
            {
                let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let sha1 =
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &certificate.der);
                let sha256 = ring::digest::digest(&ring::digest::SHA256, &certificate.der);
                return Ok(CertificateCredential {
                    key_pem: Secret::new(key_block.text.as_str()),
                    x5t: url.encode(sha1.as_ref()),
                    x5t_s256: url.encode(sha256.as_ref()),
                    algorithm: CERTIFICATE_ALGORITHM,
                });
            }
        }
        Err(cert_error(&if unreadable == certificates.len() {
            "the certificate is not a valid X.509 certificate".to_owned()
        } else if non_rsa + unreadable == certificates.len() {
            "the certificate's key is not an RSA key".to_owned()
        } else {
            format!(
                "the private key does not belong to the certificate{} in the file",
                if certificates.len() > 1 { "s" } else { "" }
            )
        }))
    }

    /// [`from_pem`](Self::from_pem) on a file. CFG-002 when it cannot be read (naming the path
    /// and the reason, never the content).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| {
            Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "ClientCertificate: cannot read {} ({})",
                    path.display(),
                    e.kind()
                ),
            )
        })?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_CERTIFICATE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                Error::coded(
                    ErrorCode::Cfg002,
                    format!(
                        "ClientCertificate: cannot read {} ({})",
                        path.display(),
                        e.kind()
                    ),
                )
            })?;
        if bytes.len() as u64 > MAX_CERTIFICATE_FILE_BYTES {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "ClientCertificate: {} is larger than 1 MiB: not a PEM certificate and key",
                    path.display()
                ),
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "ClientCertificate: {} is not PEM text (convert a .pfx/.p12 with \
                     openssl pkcs12 -in cert.pfx -out cert.pem -nodes)",
                    path.display()
                ),
            )
        })?;
        Self::from_pem(text).map_err(|e| match e {
            Error::Coded { code, message } => Error::coded(
                code,
                message.replacen(
                    "ClientCertificate:",
                    &format!("ClientCertificate {}:", path.display()),
                    1,
                ),
            ),
            other => other,
        })
    }

    /// The signing key (parsed again from [`key_pem`](Self::key_pem); CFG-002 if it is not an
    /// RSA key, which [`from_pem`](Self::from_pem) already checked).
    pub fn encoding_key(&self) -> Result<EncodingKey, Error> {
        EncodingKey::from_rsa_pem(self.key_pem.expose().as_bytes())
            .map_err(|_| cert_error("the private key is not a valid RSA private key"))
    }

    /// A client assertion for `client_id` at `token_endpoint` (its `aud`), with the `x5t` and
    /// `x5t#S256` headers, valid two minutes, with a fresh `jti`.
    pub fn client_assertion(&self, client_id: &str, token_endpoint: &str) -> Result<String, Error> {
        sign_assertion(
            client_id,
            token_endpoint,
            &self.encoding_key()?,
            Algorithm::RS256,
            &None,
            &Some(self.x5t.clone()),
            &Some(self.x5t_s256.clone()),
        )
    }
}

fn cert_error(what: &str) -> Error {
    Error::coded(ErrorCode::Cfg002, format!("ClientCertificate: {what}"))
}

struct PemBlock {
    label: String,
    /// The block re-assembled (BEGIN line, base64 lines, END line).
    text: Zeroizing<String>,
    der: Zeroizing<Vec<u8>>,
    /// A legacy `Proc-Type: 4,ENCRYPTED` header.
    encrypted: bool,
}

/// The PEM blocks of `text` (RFC 7468, with RFC 1421 headers tolerated); text between blocks
/// is ignored. Errors name labels and line numbers only.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, Error> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize, Zeroizing<String>, bool)> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some((open, start, _, _)) = &current {
                return Err(cert_error(&format!(
                    "the PEM block '{open}' opened on line {} is not closed",
                    start + 1
                )));
            }
            current = Some((
                label.to_owned(),
                number,
                Zeroizing::new(String::new()),
                false,
            ));
            continue;
        }
        if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((open, start, base64, encrypted)) = current.take() else {
                return Err(cert_error(&format!(
                    "line {}: END without BEGIN in the PEM text",
                    number + 1
                )));
            };
            if open != label {
                return Err(cert_error(&format!(
                    "the PEM block '{open}' opened on line {} ends as '{label}'",
                    start + 1
                )));
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map_err(|_| {
                    cert_error(&format!(
                        "the PEM block '{open}' on line {} is not valid base64",
                        start + 1
                    ))
                })?;
            let mut block_text = Zeroizing::new(format!("-----BEGIN {open}-----\n"));
            for chunk in base64.as_bytes().chunks(64) {
                block_text.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                block_text.push('\n');
            }
            block_text.push_str(&format!("-----END {open}-----\n"));
            blocks.push(PemBlock {
                label: open,
                text: block_text,
                der: Zeroizing::new(der),
                encrypted,
            });
            continue;
        }
        if let Some((_, _, base64, encrypted)) = &mut current {
            if line.contains(':') {
                // RFC 1421 header (legacy encrypted PKCS#1 keys).
                if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                    *encrypted = true;
                }
            } else {
                base64.push_str(line);
            }
        }
    }
    if let Some((open, start, _, _)) = current {
        return Err(cert_error(&format!(
            "the PEM block '{open}' opened on line {} is not closed",
            start + 1
        )));
    }
    Ok(blocks)
}

enum CertKeyError {
    NotRsa,
    Malformed,
}

/// The PKCS#1 `RSAPublicKey` of an X.509 certificate (RFC 5280 §4.1: the BIT STRING of
/// `tbsCertificate.subjectPublicKeyInfo`).
fn certificate_rsa_public_key(der: &[u8]) -> Result<&[u8], CertKeyError> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let malformed = || CertKeyError::Malformed;
    let (tag, certificate, _) = der_element(der).ok_or_else(malformed)?;
    if tag != 0x30 {
        return Err(malformed());
    }
    let (tag, tbs, _) = der_element(certificate).ok_or_else(malformed)?;
    if tag != 0x30 {
        return Err(malformed());
    }
    // [0] version (optional), serialNumber, signature, issuer, validity, subject, SPKI.
    let mut rest = tbs;
    let mut index = 0;
    loop {
        let (tag, content, next) = der_element(rest).ok_or_else(malformed)?;
        rest = next;
        if index == 0 && tag == 0xa0 {
            continue;
        }
        if index == 5 {
            if tag != 0x30 {
                return Err(malformed());
            }
            let (tag, algorithm, after) = der_element(content).ok_or_else(malformed)?;
            if tag != 0x30 {
                return Err(malformed());
            }
            let (tag, oid, _) = der_element(algorithm).ok_or_else(malformed)?;
            if tag != 0x06 {
                return Err(malformed());
            }
            if oid != RSA_ENCRYPTION {
                return Err(CertKeyError::NotRsa);
            }
            let (tag, bits, _) = der_element(after).ok_or_else(malformed)?;
            return match bits.split_first() {
                Some((0, key)) if tag == 0x03 => Ok(key),
                _ => Err(malformed()),
            };
        }
        index += 1;
    }
}

/// One DER element: (tag, content, what follows). Single-byte tags and definite lengths of up
/// to four bytes, as certificates use.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoint_and_jwks_follow_entra_v2() {
        assert_eq!(
            token_endpoint(None, "contoso.onmicrosoft.com")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert_eq!(
            token_endpoint(Some("https://login.microsoftonline.us"), tenant)
                .unwrap()
                .as_str(),
            format!("https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token")
        );
        assert_eq!(
            token_endpoint(Some("http://127.0.0.1:8080/"), tenant)
                .unwrap()
                .as_str(),
            format!("http://127.0.0.1:8080/{tenant}/oauth2/v2.0/token")
        );
        assert_eq!(
            jwks_uri(None, tenant).unwrap().as_str(),
            format!("https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys")
        );
    }

    #[test]
    fn bad_tenants_and_authorities_are_cfg002() {
        for tenant in ["", "a/b", "x?y", "../etc", "t%2F", "tenant id"] {
            let e = token_endpoint(None, tenant).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{tenant}");
        }
        for host in [
            "http://login.example",
            "ftp://login.example/",
            "not a url",
            "https://h/?q=1",
        ] {
            let e = token_endpoint(Some(host), "t").unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{host}");
        }
        let e = authority_host(Some("https://user:pa55w0rd@login.example/")).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        assert!(!e.to_string().contains("pa55w0rd"), "{e}");
    }

    #[test]
    fn issuers_as_entra_writes_them() {
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert_eq!(
            issuer(tenant),
            format!("https://login.microsoftonline.com/{tenant}/v2.0")
        );
        assert_eq!(
            accepted_issuers(tenant).unwrap(),
            vec![issuer(tenant), format!("https://sts.windows.net/{tenant}/")]
        );
        assert_eq!(accepted_issuers("contoso.onmicrosoft.com"), None);
        assert!(is_guid(tenant));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
    }

    #[test]
    fn audience_is_the_scope_without_default() {
        assert_eq!(
            audience_from_scope(DICOM_SCOPE).as_deref(),
            Some("https://dicom.healthcareapis.azure.com")
        );
        assert_eq!(
            audience_from_scope(" api://0f1e2d3c/.default ").as_deref(),
            Some("api://0f1e2d3c")
        );
        // Resources whose App ID URI ends with '/' are written with '//.default'.
        assert_eq!(
            audience_from_scope("https://management.azure.com//.default").as_deref(),
            Some("https://management.azure.com/")
        );
        for scope in [
            "",
            "/.default",
            "dicom.read",
            "https://dicom.healthcareapis.azure.com/user_impersonation",
            "https://a/.default https://b/.default",
        ] {
            assert_eq!(audience_from_scope(scope), None, "{scope}");
        }
    }

    #[test]
    fn pem_without_blocks_or_with_broken_blocks_is_cfg002() {
        for text in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ] {
            let e = CertificateCredential::from_pem(text).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{text}");
            assert!(e.to_string().contains("ClientCertificate"), "{e}");
        }
    }

    #[test]
    fn der_walker_reads_lengths() {
        assert_eq!(
            der_element(&[0x30, 0x02, 0x05, 0x00, 0xff]),
            Some((0x30, &[0x05, 0x00][..], &[0xff][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(der_element(&long).unwrap().1.len(), 0x80);
        assert_eq!(der_element(&[0x30, 0x05, 0x00]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
        assert_eq!(der_element(&[0x30]), None);
    }
}
