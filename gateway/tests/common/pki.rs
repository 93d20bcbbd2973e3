//! Test certificates made at test time with `rcgen`: a CA, server and client certificates it signs (valid now,
//! expired, or for the wrong names), and the files laid out as a Kubernetes secret volume is (`tls.crt` and
//! `tls.key` are symlinks through `..data`, which a rotation swaps in one rename), so a reload never sees half of
//! a rotation. Shared with the load tester's TLS test (`loadtest/tests/tls.rs` includes this file).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority writing its files under `dir`.
pub struct Ca {
    path: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Ca {
    /// A new CA named `name`; its certificate is `<dir>/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.join(format!("{name}.crt")), issuer.pem()).expect("write CA");
        Self { path: dir.join(format!("{name}.crt")), issuer }
    }

    /// The CA's certificate file.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// A certificate for `names` (DNS names or IP addresses), valid from `from_days` to `to_days` around now.
    pub fn issue(&self, names: &[&str], usage: Usage, from_days: i64, to_days: i64) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("p");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let at = |days: i64| {
            let t = if days >= 0 {
                SystemTime::now() + DAY * days as u32
            } else {
                SystemTime::now() - DAY * (-days) as u32
            };
            rcgen::date_time_ymd(1970, 1, 1) + t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970")
        };
        params.not_before = at(from_days);
        params.not_after = at(to_days);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Issued { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A server certificate for 127.0.0.1 and localhost, valid for a day either side of now.
    pub fn server(&self) -> Issued {
        self.issue(&["127.0.0.1", "localhost"], Usage::Server, -1, 1)
    }
}

/// A secret volume: `<dir>/tls.crt` and `<dir>/tls.key`, replaced together by [`Volume::install`].
pub struct Volume {
    pub dir: PathBuf,
    generation: std::cell::Cell<u32>,
}

impl Volume {
    pub fn new(dir: &Path, issued: &Issued) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let v = Self { dir: dir.to_path_buf(), generation: std::cell::Cell::new(0) };
        v.install(issued);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("symlink");
        }
        v
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Writes a new generation and swaps `..data` to it in one rename, as the kubelet does.
    pub fn install(&self, issued: &Issued) {
        let g = self.generation.get() + 1;
        self.generation.set(g);
        let gen_dir = self.dir.join(format!("..gen{g}"));
        std::fs::create_dir_all(&gen_dir).expect("mkdir");
        std::fs::write(gen_dir.join("tls.crt"), &issued.cert).expect("write");
        std::fs::write(gen_dir.join("tls.key"), &issued.key).expect("write");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..gen{g}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap");
    }
}

/// Writes a certificate and key as plain files `<dir>/<name>.crt` and `<dir>/<name>.key`.
pub fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, &issued.cert).expect("write");
    std::fs::write(&k, &issued.key).expect("write");
    (c, k)
}
