//! A real OpenSSH server on a free loopback port, with its own host key and
//! a throwaway client key, as a "remote builder" on this machine: Nix
//! reaches it as `ssh-ng://root@127.0.0.1` with [`Sshd::nix_sshopts`] in
//! `NIX_SSHOPTS`. Killed on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{Running, wait_until};
use crate::run;

pub struct Sshd {
    process: Running,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Start `/usr/sbin/sshd -D` (as root, which the tests are) accepting
    /// only the throwaway key.
    pub fn start() -> Sshd {
        Sshd::start_with_env(&[])
    }

    /// As [`Sshd::start`], with `SetEnv NAME=VALUE` for every session: e.g.
    /// `NIX_CONF_DIR` to give the "cache host" side its own `nix.conf`.
    pub fn start_with_env(env: &[(&str, &str)]) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("larder-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        // Privilege separation needs this directory on Debian.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        for (key, kind) in [("host_key", "ed25519"), ("client_key", "ed25519")] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(d.join(key)));
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).expect("chmod");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n\
             LogLevel ERROR\n{set_env}",
            d = d.display(),
            set_env = env
                .iter()
                .map(|(k, v)| format!("SetEnv {k}={v}\n"))
                .collect::<String>()
        );
        fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-p")
            .arg(port.to_string());
        let mut sshd = Sshd {
            process: Running::spawn("sshd", &mut cmd),
            port,
            dir,
        };
        let probe = sshd.nix_sshopts();
        wait_until(&mut sshd.process, || {
            Command::new("ssh")
                .args(probe.split_whitespace())
                .args(["-o", "BatchMode=yes", "root@127.0.0.1", "true"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        sshd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The value for `NIX_SSHOPTS` (also ssh's own arguments).
    pub fn nix_sshopts(&self) -> String {
        format!(
            "-p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.client_key().display()
        )
    }

    /// `ssh-ng://root@127.0.0.1?remote-store=<root>` for a chroot store.
    pub fn ssh_ng_uri(&self, remote_store: &Path) -> String {
        format!(
            "ssh-ng://root@127.0.0.1?remote-store={}",
            remote_store.display()
        )
    }
}

pub use crate::process::free_port;
