//! TLS for the PostgreSQL connection with libpq's `sslmode` semantics, on rustls (no OpenSSL, so
//! the binary links statically):
//! - `allow`, `prefer`, `require` without a root certificate: encrypt, do not verify the server
//!   certificate (the handshake signatures are still checked);
//! - `verify-ca` (and `require` with a root certificate, as libpq does): verify the chain against
//!   the roots, not the host name;
//! - `verify-full`: verify the chain and that the certificate names the host.
//!
//! Roots come from `sslrootcert` (a PEM file) or `system` (the operating system's store); a client
//! certificate and key (`sslcert`, `sslkey`) are presented when given.

use crate::config::{Database, RootCerts, SslMode};
use crate::error::Error;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector handed to tokio-postgres (unused when sslmode is `disable`). Certificate files
/// that cannot be parsed are a configuration error (exit 2).
pub fn connector(db: &Database) -> Result<MakeRustlsConnect, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("cannot set up TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (db.ssl_mode, &db.root_certs) {
        (SslMode::VerifyFull, Some(roots)) => webpki(roots, &provider)?,
        (SslMode::VerifyCa | SslMode::Require, Some(roots)) => {
            Arc::new(ChainOnly(webpki(roots, &provider)?))
        }
        _ => Arc::new(EncryptOnly(provider.clone())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &db.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| pem_error("sslcert", cert, &e))?;
            let key_path = key;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| pem_error("sslkey", key_path, &e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                // webpki takes only X.509 version 3; version 1 is what `openssl x509 -req`
                // makes without extensions.
                let fix = if e.to_string().contains("UnsupportedCertVersion") {
                    "The certificate is X.509 version 1 (what `openssl x509 -req` makes without \
                     -extfile), which is refused; reissue it as version 3"
                } else if matches!(e, rustls::Error::InvalidCertificate(_)) {
                    "The certificate itself cannot be used; check that sslcert holds the client \
                     certificate, in PEM"
                } else {
                    "Check that the key belongs to the certificate and is an unencrypted PEM key \
                     (PKCS#8, PKCS#1 or SEC1)"
                };
                Error::Config(format!(
                    "the client certificate {} and key {} (sslcert/sslkey) do not form a usable \
                     pair: {e}. {fix}.",
                    cert.display(),
                    key_path.display()
                ))
            })?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn pem_error(what: &str, path: &std::path::Path, e: &dyn std::fmt::Display) -> Error {
    Error::Config(format!(
        "{what}={}: not a PEM file this version can read ({e}). Give it the PEM text (the \
         -----BEGIN ...----- block), not DER or a password-protected key.",
        path.display()
    ))
}

/// rustls's standard verifier over the configured roots.
fn webpki(
    roots: &RootCerts,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, Error> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| pem_error("sslrootcert", path, &e))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Config(format!(
                    "sslrootcert={}: the file holds no usable CA certificate.",
                    path.display()
                )));
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Config(
                    "sslrootcert=system: no CA certificates were found in the operating system's \
                     store (in a container, copy /etc/ssl/certs/ca-certificates.crt into the \
                     image or set SSL_CERT_FILE)."
                        .into(),
                ));
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("cannot use the root certificates: {e}")))
}

/// `verify-ca`: the full chain check, but a certificate for another name is accepted. rustls
/// checks the chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate chain (libpq `require` without a root certificate) but verifies the
/// handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
