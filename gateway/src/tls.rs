//! TLS on rustls (ring provider): the listeners' server side, whose certificate, key and client CA are reloaded
//! when their files change, and the client side of the links out (remote upstreams, etcd, other replicas).
//!
//! A listener's TLS is one [`ServerTls`]: the current `rustls::ServerConfig` behind an `ArcSwap`. Each new
//! connection takes the config current at its accept, so a rotation (cert-manager writing new files) never touches
//! a connection already open, and the next one gets the new certificate. A new set of files is checked as a whole
//! before it replaces the old: every file readable, the key matching the certificate, the certificate inside its
//! validity period, the client CA parseable. Anything else is refused and the old config kept.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, SupportedProtocolVersion};

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::V1_2 => rustls::ALL_VERSIONS,
            TlsVersion::V1_3 => &TLS13_ONLY,
        }
    }
}

/// TLS of one listener (`[server.tls]`, `[server.grpc_tls]`, `[server.metrics_tls]`, `[admin.tls]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs that sign client certificates: set, every client must present one (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How often the files are read again for a rotation.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    5_000
}

impl ListenerTls {
    /// Config errors, named by `section` (`server.tls`): files that are not there, a zero interval. Whether the
    /// files hold a usable certificate is checked when the listener starts.
    pub fn check(&self, section: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (field, path) in
            [("cert", Some(&self.cert)), ("key", Some(&self.key)), ("client_ca", self.client_ca.as_ref())]
        {
            if let Some(path) = path
                && !path.is_file()
            {
                errors.push(format!("{section}.{field} '{}' is not a readable file", path.display()));
            }
        }
        if self.reload_interval_ms == 0 {
            errors.push(format!("{section}.reload_interval_ms must be greater than 0"));
        }
        errors
    }
}

/// The client side of a link out (`[upstreams.tls]`, `[cluster.tls]`): whom to trust, and who we are.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM bundle of the CAs to trust; unset, the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that require mTLS (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Config errors, named by `section` (`upstreams.tls`).
    pub fn check(&self, section: &str) -> Vec<String> {
        let mut errors = match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => vec![format!("{section}: set both cert and key, or neither")],
            _ => Vec::new(),
        };
        for (field, path) in [("ca_file", &self.ca_file), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(path) = path
                && !path.is_file()
            {
                errors.push(format!("{section}.{field} '{}' is not a readable file", path.display()));
            }
        }
        errors
    }
}

/// Why a certificate, key or CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no usable PEM private key in it ({reason})")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: the certificate is not valid X.509 ({reason})")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: the certificate expired at {not_after} (unix time)")]
    Expired { path: PathBuf, not_after: i64 },
    #[error("{path}: the certificate is not valid before {not_before} (unix time)")]
    NotYetValid { path: PathBuf, not_before: i64 },
    #[error("the key {key} does not belong to the certificate {cert}: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("{context}: {reason}")]
    Rustls { context: String, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Key { path: path.to_owned(), reason: e.to_string() })
}

/// A certificate's validity period, as unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// The leaf's validity period; an expired or not-yet-valid leaf is an error at `now`.
pub fn validity(path: &Path, leaf: &CertificateDer<'_>, now: i64) -> Result<Validity, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
    let v = Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    if now > v.not_after {
        return Err(TlsError::Expired { path: path.to_owned(), not_after: v.not_after });
    }
    if now < v.not_before {
        return Err(TlsError::NotYetValid { path: path.to_owned(), not_before: v.not_before });
    }
    Ok(v)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        store.add(cert).map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
    }
    Ok(store)
}

/// A certificate chain and its key, checked to belong together and to be valid now.
fn certified_key(
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(CertifiedKey, Validity), TlsError> {
    let chain = certificates(cert, cert_pem)?;
    let validity = validity(cert, &chain[0], unix_now())?;
    let der = private_key(key, key_pem)?;
    let mismatch = |reason: String| TlsError::Mismatch { cert: cert.to_owned(), key: key.to_owned(), reason };
    let signing = provider().key_provider.load_private_key(der).map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| mismatch(e.to_string()))?;
    Ok((certified, validity))
}

/// The files of a listener's TLS, read in one go so a check and the config built from it see the same bytes.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(cfg: &ListenerTls) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&cfg.cert)?,
            key: read(&cfg.key)?,
            client_ca: cfg.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.cert, &self.key, &self.client_ca).hash(&mut h);
        h.finish()
    }
}

/// A listener's TLS config, swapped whole when its files change.
pub struct ServerTls {
    cfg: ListenerTls,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<rustls::ServerConfig>,
    /// The fingerprint of the files last tried (used or refused), so a refused set is reported once.
    tried: Mutex<u64>,
    validity: Mutex<Validity>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert", &self.cfg.cert).field("client_ca", &self.cfg.client_ca).finish()
    }
}

/// What a look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
}

impl ServerTls {
    /// Loads the files; `alpn` is what the listener speaks (`h2` for gRPC, `http/1.1` for the rest).
    pub fn load(cfg: &ListenerTls, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let files = Files::read(cfg)?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (config, validity) = build(cfg, &files, &alpn)?;
        Ok(Self {
            cfg: cfg.clone(),
            alpn,
            current: ArcSwap::from_pointee(config),
            tried: Mutex::new(files.fingerprint()),
            validity: Mutex::new(validity),
        })
    }

    /// The acceptor for a new connection: the config current now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and swaps the config if they changed. A refused set keeps the old config and is
    /// reported once (the error), not at every look, until the files change again.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let files = Files::read(&self.cfg);
        // An unreadable set (a file deleted mid-rotation) is reported once too, until something changes.
        let fingerprint = match &files {
            Ok(f) => f.fingerprint(),
            Err(e) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                e.to_string().hash(&mut h);
                h.finish()
            }
        };
        {
            let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
            if *tried == fingerprint {
                return Ok(Reload::Unchanged);
            }
            *tried = fingerprint;
        }
        let (config, validity) = build(&self.cfg, &files?, &self.alpn)?;
        self.current.store(Arc::new(config));
        *self.validity.lock().unwrap_or_else(|e| e.into_inner()) = validity;
        Ok(Reload::Reloaded)
    }

    /// The serving certificate's validity period.
    pub fn validity(&self) -> Validity {
        *self.validity.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cfg.reload_interval_ms.max(100))
    }
}

fn build(cfg: &ListenerTls, files: &Files, alpn: &[Vec<u8>]) -> Result<(rustls::ServerConfig, Validity), TlsError> {
    let (certified, validity) = certified_key(&cfg.cert, &cfg.key, &files.cert, &files.key)?;
    let rustls_err = |context: &str, e: &dyn std::fmt::Display| TlsError::Rustls {
        context: context.to_string(),
        reason: e.to_string(),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(cfg.min_version.versions())
        .map_err(|e| rustls_err("TLS versions", &e))?;
    let builder = match (&cfg.client_ca, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path, pem)?), provider())
                .build()
                .map_err(|e| rustls_err(&format!("client_ca {}", path.display()), &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.to_vec();
    Ok((config, validity))
}

/// The client side of a link out, loaded once: the rustls config (for HTTPS through hyper) and the PEM bytes
/// tonic's own TLS config is built from (gRPC upstreams, etcd).
#[derive(Clone)]
pub struct ClientTlsMaterial {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsMaterial")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

impl ClientTlsMaterial {
    pub fn load(cfg: &ClientTls) -> Result<Self, TlsError> {
        let ca_pem = cfg.ca_file.as_deref().map(read).transpose()?;
        let store = match (&cfg.ca_file, &ca_pem) {
            (Some(path), Some(pem)) => roots(path, pem)?,
            _ => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                store
            }
        };
        let identity = match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone(), read(cert)?, read(key)?)),
            _ => None,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| TlsError::Rustls { context: "TLS versions".into(), reason: e.to_string() })?
            .with_root_certificates(store);
        let config = match &identity {
            Some((cert, key, cert_pem, key_pem)) => {
                let (certified, _) = certified_key(cert, key, cert_pem, key_pem)?;
                let der = private_key(key, key_pem)?;
                builder.with_client_auth_cert(certified.cert, der).map_err(|e| TlsError::Mismatch {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self { ca_pem, identity: identity.map(|(_, _, c, k)| (c, k)), rustls: Arc::new(config) })
    }

    /// The rustls config (no ALPN: the HTTPS connector sets it).
    pub fn rustls(&self) -> rustls::ClientConfig {
        (*self.rustls).clone()
    }

    /// tonic's TLS config for a gRPC link; `server_name` overrides the name verified (default: the URL's host).
    pub fn tonic(&self, server_name: Option<&str>) -> tonic::transport::ClientTlsConfig {
        let mut t = tonic::transport::ClientTlsConfig::new();
        t = match &self.ca_pem {
            Some(pem) => t.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => t.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            t = t.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(name) = server_name {
            t = t.domain_name(name);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().expect("tempdir") }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// A self-signed certificate for `localhost`, valid from `from` to `to` (unix seconds), written as
        /// `{name}.crt` and `{name}.key`.
        fn cert(&self, name: &str, from: i64, to: i64) -> ListenerTls {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            params.not_before = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(from as u64);
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(to as u64);
            let cert = params.self_signed(&key).expect("self-signed");
            std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).expect("write");
            std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
            ListenerTls {
                cert: self.path(&format!("{name}.crt")),
                key: self.path(&format!("{name}.key")),
                client_ca: None,
                min_version: TlsVersion::V1_2,
                reload_interval_ms: 100,
            }
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn a_valid_pair_loads_and_a_rotation_is_picked_up_once() {
        let pki = Pki::new();
        let now = unix_now();
        let cfg = pki.cert("a", now - DAY, now + DAY);
        let tls = ServerTls::load(&cfg, &[b"h2"]).expect("loads");
        assert_eq!(tls.validity().not_after, now + DAY);
        assert_eq!(tls.reload().expect("same files"), Reload::Unchanged);
        pki.cert("a", now - DAY, now + 2 * DAY);
        assert_eq!(tls.reload().expect("new files"), Reload::Reloaded);
        assert_eq!(tls.validity().not_after, now + 2 * DAY);
        assert_eq!(tls.reload().expect("same again"), Reload::Unchanged);
    }

    #[test]
    fn bad_new_files_are_refused_once_and_the_old_config_is_kept() {
        let pki = Pki::new();
        let now = unix_now();
        let cfg = pki.cert("a", now - DAY, now + DAY);
        let tls = ServerTls::load(&cfg, &[]).expect("loads");
        let before = tls.validity();
        // An expired certificate.
        pki.cert("a", now - 3 * DAY, now - DAY);
        assert!(matches!(tls.reload(), Err(TlsError::Expired { .. })));
        assert_eq!(tls.reload().expect("reported once"), Reload::Unchanged);
        assert_eq!(tls.validity(), before);
        // A key that belongs to another certificate.
        pki.cert("a", now - DAY, now + DAY);
        pki.cert("b", now - DAY, now + DAY);
        std::fs::copy(pki.path("b.key"), pki.path("a.key")).expect("copy");
        assert!(matches!(tls.reload(), Err(TlsError::Mismatch { .. })), "a foreign key is refused");
        // Garbage, and a missing file.
        std::fs::write(pki.path("a.crt"), "not a certificate").expect("write");
        assert!(matches!(tls.reload(), Err(TlsError::NoCertificate { .. })));
        std::fs::remove_file(pki.path("a.crt")).expect("rm");
        assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));
        assert_eq!(tls.reload().expect("a missing file is reported once"), Reload::Unchanged);
        assert_eq!(tls.validity(), before);
        // Fixed files are taken.
        pki.cert("a", now - DAY, now + 3 * DAY);
        assert_eq!(tls.reload().expect("fixed"), Reload::Reloaded);
        assert_eq!(tls.validity().not_after, now + 3 * DAY);
    }

    #[test]
    fn a_certificate_not_yet_valid_is_refused_at_load() {
        let pki = Pki::new();
        let now = unix_now();
        let cfg = pki.cert("a", now + DAY, now + 2 * DAY);
        assert!(matches!(ServerTls::load(&cfg, &[]), Err(TlsError::NotYetValid { .. })));
    }

    #[test]
    fn client_tls_needs_both_cert_and_key() {
        let file = tempfile::NamedTempFile::new().expect("file");
        let half = ClientTls { cert: Some(file.path().to_owned()), ..ClientTls::default() };
        assert_eq!(half.check("upstreams.tls"), ["upstreams.tls: set both cert and key, or neither"]);
        assert!(ClientTls::default().check("upstreams.tls").is_empty());
    }
}
