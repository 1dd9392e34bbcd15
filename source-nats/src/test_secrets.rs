//! Throwaway secrets for a test server (feature `test-server`): a CA, a
//! server and a client certificate signed by it (rcgen), nkey users, and an
//! operator, account and user JWTs for `.creds` files.
//! Made at test time in the server's own directory and removed with it.

use std::path::{Path, PathBuf};

use serde_json::json;

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
    /// Decentralized JWT auth: an operator, an account with JetStream, and a
    /// user whose `.creds` file (JWT + seed) the client presents.
    Creds,
    /// Two nkey users: an admin who may do anything (its seed in
    /// [`ClientFiles::admin_seed`]), and the client's user (`seed`), who may
    /// use what the admin made but create no stream
    /// (`$JS.API.STREAM.CREATE.>`), write no attempts bucket
    /// (`$KV.cortex-attempts.>`), submit no task of the low band
    /// (`cortex.tasks.low`), publish no dead letter (`cortex.tasks.dead`),
    /// store no result for the task `sealed` (`$KV.cortex-results.sealed`)
    /// ack no message of the low band's consumer
    /// (`$JS.ACK.CORTEX_TASKS.cortex-pool-low.>`) and read no result of the
    /// task `hidden`
    /// (`$JS.API.DIRECT.GET.KV_cortex-results.$KV.cortex-results.hidden`).
    Restricted,
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
    /// The user's `.creds` file (`queue_credentials`).
    pub creds: Option<PathBuf>,
    /// A `.creds` file for a user of an account the server does not know.
    pub wrong_creds: Option<PathBuf>,
    /// The nkey seed of a user who may do anything, beside a restricted
    /// `seed` ([`Security::Restricted`]).
    pub admin_seed: Option<PathBuf>,
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
            files.seed = Some(write(&dir.join("user.nk"), &nkey_seed(&user)));
            files.wrong_seed = Some(write(&dir.join("other.nk"), &nkey_seed(&other)));
            format!(
                "authorization {{\n  users: [ {{ nkey: {:?} }} ]\n}}\n",
                user.public_key()
            )
        }
        Security::Restricted => {
            let admin = nkeys::KeyPair::new_user();
            let user = nkeys::KeyPair::new_user();
            files.admin_seed = Some(write(&dir.join("admin.nk"), &nkey_seed(&admin)));
            files.seed = Some(write(&dir.join("user.nk"), &nkey_seed(&user)));
            format!(
                "authorization {{\n  users: [\n    {{ nkey: {:?} }}\n    {{ nkey: {:?}, \
                 permissions: {{ publish: {{ deny: [\"$JS.API.STREAM.CREATE.>\", \
                 \"$KV.cortex-attempts.>\", \"cortex.tasks.low\", \"cortex.tasks.dead\", \
                 \"$KV.cortex-results.sealed\", \"$JS.ACK.CORTEX_TASKS.cortex-pool-low.>\", \
                 \"$JS.API.DIRECT.GET.KV_cortex-results.$KV.cortex-results.hidden\"] \
                 }} }} }}\n  ]\n}}\n",
                admin.public_key(),
                user.public_key()
            )
        }
        Security::Creds => {
            let operator = nkeys::KeyPair::new_operator();
            let account = nkeys::KeyPair::new_account();
            let user = nkeys::KeyPair::new_user();
            let stranger = nkeys::KeyPair::new_account();
            let other_user = nkeys::KeyPair::new_user();
            // JetStream needs a system account in operator mode.
            let system = nkeys::KeyPair::new_account();
            let operator_jwt = jwt(
                &operator,
                &operator,
                json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
            );
            let system_jwt = jwt(&operator, &system, json!({"type": "account", "version": 2}));
            let account_jwt = jwt(
                &operator,
                &account,
                json!({
                    "type": "account",
                    "version": 2,
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1,
                        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                        "mem_storage": -1, "disk_storage": -1, "streams": -1,
                        "consumer": -1
                    }
                }),
            );
            files.creds = Some(write(&dir.join("user.creds"), &creds(&account, &user)));
            files.wrong_creds = Some(write(
                &dir.join("stranger.creds"),
                &creds(&stranger, &other_user),
            ));
            format!(
                "operator: {operator_jwt:?}\nsystem_account: {}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {}: {system_jwt:?}\n  {}: {account_jwt:?}\n}}\n",
                system.public_key(),
                system.public_key(),
                account.public_key()
            )
        }
    };
    (conf, files)
}

/// The seed of the nkey `key`, as a seed file holds it.
fn nkey_seed(key: &nkeys::KeyPair) -> String {
    key.seed()
        .unwrap_or_else(|e| panic!("cannot encode an nkey seed: {e}"))
}

/// A NATS JWT for `subject`, signed by `issuer` (ed25519-nkey, base64url).
fn jwt(issuer: &nkeys::KeyPair, subject: &nkeys::KeyPair, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = B64.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let claims = B64.encode(
        json!({
            "jti": format!("{}{now}", subject.public_key()),
            "iat": now,
            "iss": issuer.public_key(),
            "name": "cortex-pool test",
            "sub": subject.public_key(),
            "nats": nats,
        })
        .to_string(),
    );
    let signed = format!("{header}.{claims}");
    let signature = issuer
        .sign(signed.as_bytes())
        .unwrap_or_else(|e| panic!("cannot sign a JWT: {e}"));
    format!("{signed}.{}", B64.encode(signature))
}

/// A user `.creds` file: the user's JWT (issued by `account`) and its seed.
fn creds(account: &nkeys::KeyPair, user: &nkeys::KeyPair) -> String {
    let token = jwt(
        account,
        user,
        json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let seed = nkey_seed(user);
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}
