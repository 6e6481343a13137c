//! TLS to the databases: the receiver to PostgreSQL and to the MySQL mirror, the tailer to the
//! EMR's MySQL. With a CA file the connection is TLS only, and the server's certificate must
//! chain to that CA and name the host of the URL (PostgreSQL's `verify-full`, MySQL's
//! `VERIFY_IDENTITY`). Without one the link is plain, which configuration allows only to a
//! loopback host or a local socket unless explicitly opted in ([`is_local`]).

use std::path::Path;
use std::sync::Arc;

use mysql_async::{Opts, OptsBuilder, SslOpts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Whether a `mysql://` or `postgres://` URL's host is this machine (a loopback address,
/// `localhost`, or a socket path), where a plain connection never crosses a network.
pub fn is_local(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // `mysql:` and `postgres:` are not special schemes: their hosts stay text.
        Some(url::Host::Domain(d)) => match d.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => d == "localhost" || d.starts_with("%2F"),
        },
        None => true,
    }
}

/// Options for a MySQL server at `url`; with `ca_file`, TLS only, verified against that CA
/// and the URL's host name (no built-in roots: only the named CA is trusted).
pub fn mysql_opts(url: &str, ca_file: Option<&Path>) -> Result<Opts, String> {
    let opts = Opts::from_url(url).map_err(|e| format!("bad url: {e}"))?;
    Ok(match ca_file {
        None => opts,
        Some(ca) => {
            // Read now, so that a missing file is a clear error at start, not at connect.
            certificates(ca)?;
            // mysql_async would otherwise move a loopback connection to the server's unix
            // socket, where it does no TLS: keep the verified TCP link.
            OptsBuilder::from_opts(opts)
                .prefer_socket(false)
                .ssl_opts(
                    SslOpts::default()
                        .with_root_certs(vec![ca.to_owned().into()])
                        .with_disable_built_in_roots(true),
                )
                .into()
        }
    })
}

/// The certificates of a PEM file (at least one).
fn certificates(ca_file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: no CERTIFICATE in the file",
            ca_file.display()
        ));
    }
    Ok(certs)
}

/// A PostgreSQL TLS connector trusting only the CA of `ca_file` (the host name is verified by
/// rustls against the host tokio-postgres connects to).
pub fn pg_connector(ca_file: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        assert!(is_local("mysql://u:p@127.0.0.1:3306"));
        assert!(is_local("postgres://u:p@localhost/db"));
        assert!(is_local("postgres://u:p@[::1]:5432/db"));
        assert!(!is_local("postgres://u:p@db.example.org/db"));
        assert!(!is_local("mysql://u:p@10.0.0.5:3306"));
        assert!(!is_local("not a url"));
        assert!(is_local("postgres://emr:emr@127.0.0.1:25432/emr"));
        assert!(!is_local("postgres://emr:emr@192.168.1.9:25432/emr"));
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = mysql_opts("mysql://u:p@h:1", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(pg_connector(Path::new("/nonexistent/ca.pem")).is_err());
    }
}
