//! How to reach the database: the connection string as libpq reads it, with
//! its TLS settings done by rustls.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and
//! no `sslrootcert`; managed databases ask for `verify-full`. So `sslmode` and
//! `sslrootcert` are taken out of the string here and carried out as libpq
//! does:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server offers it | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | signed by a root of `sslrootcert`, and names the host |
//!
//! `sslrootcert` is a PEM file of root certificates, or `system` for the
//! operating system's; without it the verifying modes read
//! `~/.postgresql/root.crt`, as libpq does. A connection attempt gives up
//! after 10 s unless `connect_timeout` says otherwise.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::Error;

/// How long a connection attempt may take when the string does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection settings and the TLS connector every connection uses.
#[derive(Clone)]
pub struct Connect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: say only where it goes.
        f.debug_struct("Connect")
            .field("hosts", &self.config.get_hosts())
            .field("ssl_mode", &self.config.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

/// The libpq `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Connect {
    /// Reads a `postgres://` URL or a libpq `key=value` string.
    pub fn parse(url: &str) -> Result<Connect, Error> {
        let bad = |reason: String| Error::Unavailable(format!("bad PostgreSQL URL: {reason}"));
        let (rest, taken) = take_tls_settings(url);
        let mut mode = Mode::Prefer;
        let mut root: Option<String> = None;
        for (key, value) in taken {
            match key.as_str() {
                "sslmode" => {
                    mode = match value.as_str() {
                        "disable" => Mode::Disable,
                        "allow" | "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        other => return Err(bad(format!("unknown sslmode {other:?}"))),
                    }
                }
                _ => root = Some(value),
            }
        }
        if mode == Mode::Require && root.is_some() {
            mode = Mode::VerifyCa;
        }
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad(e.to_string()))?;
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            Mode::Disable | Mode::Prefer | Mode::Require => Arc::new(Unverified(provider.clone())),
            Mode::VerifyCa | Mode::VerifyFull => {
                let roots = Arc::new(roots(root.as_deref())?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| bad(format!("cannot use sslrootcert: {e}")))?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("no TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Connect {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a key/value
/// string; the rest of the string, and what was taken, decoded.
fn take_tls_settings(url: &str) -> (String, Vec<(String, String)>) {
    const TAKEN: [&str; 2] = ["sslmode", "sslrootcert"];
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), taken);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if TAKEN.contains(&key) {
                let value = url::form_urlencoded::parse(format!("v={value}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                taken.push((key.to_owned(), value));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    // key = value pairs; a value may be 'quoted', with \' and \\ inside.
    let mut rest = String::new();
    let mut chars = url.char_indices().peekable();
    while let Some(&(start, _)) = chars.peek() {
        let (pair_start, mut key, mut value) = (start, String::new(), String::new());
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_some() {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next_if(|(_, c)| *c == '\'').is_some() {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(url.len(), |&(i, _)| i);
        if TAKEN.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            rest.push_str(&url[pair_start..end]);
        }
        if end == pair_start {
            break;
        }
    }
    (rest, taken)
}

/// The roots a verifying mode trusts.
fn roots(root: Option<&str>) -> Result<RootCertStore, Error> {
    let unusable = |reason: String| Error::Unavailable(format!("sslrootcert: {reason}"));
    let mut store = RootCertStore::empty();
    if root == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(unusable("no system root certificates found".into()));
        }
        return Ok(store);
    }
    let path = match root {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::home_dir()
            .map(|home| home.join(".postgresql/root.crt"))
            .ok_or_else(|| unusable("not given, and no home directory to look in".into()))?,
    };
    let pem = std::fs::read(&path).map_err(|e| {
        unusable(format!(
            "cannot read {} ({e}); give sslrootcert=FILE or sslrootcert=system",
            path.display()
        ))
    })?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unusable(format!("{}: {e}", path.display())))?;
        store
            .add(cert)
            .map_err(|e| unusable(format!("{}: {e}", path.display())))?;
    }
    if store.is_empty() {
        return Err(unusable(format!("no certificate in {}", path.display())));
    }
    Ok(store)
}

/// `prefer` and `require`: the channel is encrypted, the certificate not checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
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

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str) -> (String, Vec<(String, String)>) {
        take_tls_settings(url)
    }

    #[test]
    fn tls_settings_come_out_of_urls() {
        let (rest, got) = taken(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(
            got,
            [
                ("sslmode".into(), "verify-full".into()),
                ("sslrootcert".into(), "/etc/ca.pem".into())
            ]
        );
        let (rest, got) = taken("postgresql://db/x?sslmode=require");
        assert_eq!(rest, "postgresql://db/x");
        assert_eq!(got, [("sslmode".into(), "require".into())]);
        assert_eq!(taken("postgres://db/x").0, "postgres://db/x");
    }

    #[test]
    fn tls_settings_come_out_of_key_value_strings() {
        let (rest, got) = taken(
            "host=db sslmode = verify-ca password='a b\\'c' sslrootcert='/tmp/my ca.pem' user=u",
        );
        assert_eq!(rest, "host=db password='a b\\'c' user=u");
        assert_eq!(
            got,
            [
                ("sslmode".into(), "verify-ca".into()),
                ("sslrootcert".into(), "/tmp/my ca.pem".into())
            ]
        );
        tokio_postgres::Config::from_str(&rest).unwrap();
    }

    #[test]
    fn modes_are_read_as_libpq_reads_them() {
        let connect = Connect::parse("host=db user=u").unwrap();
        assert_eq!(connect.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(connect.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let connect = Connect::parse("postgres://u@db/x?sslmode=require").unwrap();
        assert_eq!(connect.config.get_ssl_mode(), SslMode::Require);
        let connect = Connect::parse("host=db sslmode=disable connect_timeout=3").unwrap();
        assert_eq!(connect.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(
            connect.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert!(Connect::parse("host=db sslmode=sometimes").is_err());
        let missing = Connect::parse("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }
}
