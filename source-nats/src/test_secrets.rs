//! Throwaway secrets for a test server (feature `test-server`): a CA, a
//! server and a client certificate signed by it (rcgen), and nkey users.
//! Made at test time in the server's own directory and removed with it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// What a [`NatsServer`](crate::test_server::NatsServer) demands of clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Security {
    /// Nothing: plain TCP, no authentication.
    #[default]
    Plain,
    /// TLS with a certificate signed by a throwaway CA (for `127.0.0.1` and
    /// `localhost`); with `verify`, clients must present a certificate signed
    /// by that CA too.
    Tls {
        /// Require client certificates (mutual TLS).
        verify: bool,
    },
    /// One nkey user; a client proves it holds the user's seed.
    Nkey,
}

/// The client side of a secured server's secrets: what a test hands the
/// daemon (`queue_tls_*`, `queue_credentials`), and wrong ones for failures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// The CA that signed the server's certificate (`queue_tls_ca`).
    pub ca: Option<PathBuf>,
    /// A CA that signed nothing the server shows: trusting only it fails.
    pub other_ca: Option<PathBuf>,
    /// A client certificate signed by `ca` (`queue_tls_cert`).
    pub cert: Option<PathBuf>,
    /// Its key (`queue_tls_key`).
    pub key: Option<PathBuf>,
    /// The nkey seed of the server's user (`queue_credentials`).
    pub seed: Option<PathBuf>,
    /// The seed of a user the server does not know.
    pub wrong_seed: Option<PathBuf>,
}

fn write(path: &Path, text: &str) -> PathBuf {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path.to_owned()
}

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("cannot make a key: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new())
        .unwrap_or_else(|e| panic!("bad CA parameters: {e}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cannot sign the CA: {e}"));
    (cert, key)
}

fn leaf(
    ca: &(Certificate, KeyPair),
    purpose: ExtendedKeyUsagePurpose,
    names: &[&str],
) -> (String, String) {
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("cannot make a key: {e}"));
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("bad certificate parameters: {e}"));
    params.extended_key_usages = vec![purpose];
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    let cert = params
        .signed_by(&key, &ca.0, &ca.1)
        .unwrap_or_else(|e| panic!("cannot sign a certificate: {e}"));
    (cert.pem(), key.serialize_pem())
}

/// The server's configuration lines for `security`, its secrets written in
/// `dir`; returns them and the client's files.
pub(crate) fn make(security: Security, dir: &Path) -> (String, ClientFiles) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let mut files = ClientFiles::default();
    let conf = match security {
        Security::Plain => String::new(),
        Security::Tls { verify } => {
            let authority = ca("cortex-pool test CA");
            let (server_cert, server_key) = leaf(
                &authority,
                ExtendedKeyUsagePurpose::ServerAuth,
                &["localhost", "127.0.0.1"],
            );
            let (client_cert, client_key) =
                leaf(&authority, ExtendedKeyUsagePurpose::ClientAuth, &["client"]);
            let ca_file = write(&dir.join("ca.pem"), &authority.0.pem());
            let cert = write(&dir.join("server-cert.pem"), &server_cert);
            let key = write(&dir.join("server-key.pem"), &server_key);
            files.cert = Some(write(&dir.join("client-cert.pem"), &client_cert));
            files.key = Some(write(&dir.join("client-key.pem"), &client_key));
            files.other_ca = Some(write(
                &dir.join("other-ca.pem"),
                &ca("an unrelated CA").0.pem(),
            ));
            files.ca = Some(ca_file.clone());
            format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n}}\n",
                cert.display().to_string(),
                key.display().to_string(),
                ca_file.display().to_string(),
            )
        }
        Security::Nkey => {
            let user = nkeys::KeyPair::new_user();
            let other = nkeys::KeyPair::new_user();
            let seed = |k: &nkeys::KeyPair| {
                k.seed()
                    .unwrap_or_else(|e| panic!("cannot encode an nkey seed: {e}"))
            };
            files.seed = Some(write(&dir.join("user.nk"), &seed(&user)));
            files.wrong_seed = Some(write(&dir.join("other.nk"), &seed(&other)));
            format!(
                "authorization {{\n  users: [ {{ nkey: {:?} }} ]\n}}\n",
                user.public_key()
            )
        }
    };
    (conf, files)
}
