//! A throwaway CA and a server certificate for `localhost`, written to files
//! as tracegate's config expects them.

use std::path::{Path, PathBuf};

pub struct TestPki {
    pub ca_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub fn make(dir: &Path) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = TestPki {
        ca_file: dir.join("ca.pem"),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
    };
    std::fs::write(&pki.ca_file, ca.pem()).unwrap();
    std::fs::write(&pki.cert_file, &pki.cert_pem).unwrap();
    std::fs::write(&pki.key_file, &pki.key_pem).unwrap();
    pki
}
