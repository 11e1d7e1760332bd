//! TLS termination with rustls, for `paywarden serve` and `up`'s proxy (`--tls-cert`,
//! `--tls-key`): the certificate chain and key read from PEM files at start, TLS 1.2 and 1.3
//! with rustls' safe defaults (ring provider), HTTP/1.1 by ALPN.
//!
//! A handshake must finish within [`HANDSHAKE_TIMEOUT`]: a client that opens a connection and
//! stalls its handshake holds nothing for longer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest certificate or key file read.
pub const PEM_BYTES_MAX: u64 = 1 << 20;

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). Errors name the file and what is wrong with it.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    for (flag, p) in [("--tls-cert", cert), ("--tls-key", key)] {
        let len = std::fs::metadata(p).map_err(|e| format!("{flag} {}: {e}", p.display()))?.len();
        if len > PEM_BYTES_MAX {
            return Err(format!("{flag} {}: {len} bytes, more than a PEM file of {PEM_BYTES_MAX} bytes should be", p.display()));
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no CERTIFICATE block in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: no PEM private key in the file ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert and --tls-key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server side of a handshake on `io`, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
) -> Result<tokio_rustls::server::TlsStream<IO>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err(format!("TLS handshake not done within {HANDSHAKE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &junk).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
        let e = server_config(&junk, &junk).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("no CERTIFICATE"), "{e}");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; PEM_BYTES_MAX as usize + 1]).unwrap();
        let e = server_config(&big, &junk).unwrap_err();
        assert!(e.contains("more than a PEM file"), "{e}");
    }
}
