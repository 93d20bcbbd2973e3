//! TLS for `https://` and `grpcs://` targets: the server's CA (or the system's trust store), an optional client
//! certificate for mTLS, and the name to verify. Each worker's connection does its own handshake once, then
//! reuses the connection, as a keep-alive client does.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How to open a TLS connection to the target.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    /// The same trust and identity for tonic (gRPC).
    pub tonic: tonic::transport::ClientTlsConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl Tls {
    /// `alpn`: `h2` for gRPC, `http/1.1` for HTTP.
    pub fn new(
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
        server_name: &str,
        alpn: &[u8],
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let mut tonic = tonic::transport::ClientTlsConfig::new().domain_name(server_name);
        match ca {
            Some(path) => {
                let pem = read(path)?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    roots.add(cert.with_context(|| format!("{}: not a PEM certificate", path.display()))?)?;
                }
                tonic = tonic.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                tonic = tonic.with_native_roots();
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let (cert_pem, key_pem) = (read(cert)?, read(key)?);
                let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>()?;
                let der = PrivateKeyDer::from_pem_slice(&key_pem)?;
                tonic = tonic.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
                builder.with_client_auth_cert(chain, der)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: ServerName::try_from(server_name.to_string())
                .with_context(|| format!("'{server_name}' is not a server name"))?,
            tonic,
        })
    }

    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), stream).await
    }
}
