//! Filesystems a fault test makes and removes: a size-limited tmpfs (a
//! full disk) and an ext4 image on a loop device that is shrunk under its
//! mounted filesystem (a disk whose reads fail with EIO). Both need root
//! (CI runs as root) and are unmounted on drop, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// A tmpfs of `size` mounted on a directory; unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (`mount -o size=…` syntax: `1m`) on `dir`.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        Tmpfs {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A directory's files moved onto an ext4 image on a loop device, mounted
/// over the directory: reads come from the device until [`FailingDisk::fail`]
/// cuts the device short, after which reads of data past the cut get EIO
/// (the kernel's "attempt to access beyond end of device"). Unmounted and
/// detached on drop.
pub struct FailingDisk {
    image: PathBuf,
    device: String,
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl FailingDisk {
    /// Put a copy of `dir`'s contents on a fresh ext4 image of `size_mib`
    /// and mount it over `dir`. The copy has the same names, contents and
    /// modes (so the same NAR).
    pub fn over(dir: &Path, size_mib: u64) -> FailingDisk {
        let scratch = tempfile::Builder::new()
            .prefix("larder-disk-")
            .tempdir()
            .unwrap();
        let image = scratch.path().join("disk.img");
        let staging = scratch.path().join("mnt");
        std::fs::create_dir(&staging).unwrap();
        run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mib}M"))
            .arg(&image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let device = String::from_utf8(
            run(Command::new("losetup").args(["-f", "--show"]).arg(&image)).stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        let disk = FailingDisk {
            image,
            device,
            mount_point: dir.to_owned(),
            _dir: scratch,
        };
        run(Command::new("mount").arg(&disk.device).arg(&staging));
        std::fs::remove_dir(staging.join("lost+found")).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.display()))
            .arg(&staging));
        run(Command::new("umount").arg(&staging));
        // Mounted afresh: nothing of the files is in the page cache.
        run(Command::new("mount").arg(&disk.device).arg(dir));
        disk
    }

    /// Cut the device to `size_mib`: data stored past it cannot be read.
    pub fn fail(&self, size_mib: u64) {
        run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mib}M"))
            .arg(&self.image));
        run(Command::new("losetup").arg("-c").arg(&self.device));
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
