//! A secret PiCloud makes once and hands to the operator through a file only its owner can
//! read, rather than through a log that is shipped, kept and read by others.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A secret written next to its final name, made final with [`Self::keep`] once it is in
/// use, or removed with [`Self::discard`] when it turned out not to be needed. Written
/// before the secret is used, so a disk that refuses it stops the start instead of losing
/// the only copy.
#[derive(Debug)]
pub struct PendingSecretFile {
    pending: PathBuf,
    kept: PathBuf,
}

impl PendingSecretFile {
    /// Writes `secret` to `<path>.new`, mode 0600. An old file of that name is removed
    /// first, and the new one is created exclusively (`O_EXCL`, which never follows a
    /// symlink), so a link planted there cannot redirect the secret.
    pub fn write(path: &Path, secret: &str) -> std::io::Result<Self> {
        let mut pending = path.as_os_str().to_owned();
        pending.push(".new");
        let pending = PathBuf::from(pending);
        remove_if_present(&pending)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pending)?;
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok(Self {
            pending,
            kept: path.to_owned(),
        })
    }

    /// Gives the file its final name (replacing an older one) and returns that name.
    pub fn keep(self) -> std::io::Result<PathBuf> {
        std::fs::rename(&self.pending, &self.kept)?;
        Ok(self.kept)
    }

    /// Removes the file: the secret was not used.
    pub fn discard(self) -> std::io::Result<()> {
        remove_if_present(&self.pending)
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_kept_secret_is_readable_by_its_owner_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        std::fs::write(&path, "an older one").unwrap();
        let kept = PendingSecretFile::write(&path, "s3cret")
            .unwrap()
            .keep()
            .unwrap();
        assert_eq!(kept, path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("admin-password.new").exists());
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let path = dir.path().join("admin-password");
        std::os::unix::fs::symlink(&target, dir.path().join("admin-password.new")).unwrap();
        PendingSecretFile::write(&path, "s3cret")
            .unwrap()
            .keep()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
    }

    #[test]
    fn a_discarded_secret_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        PendingSecretFile::write(&path, "s3cret")
            .unwrap()
            .discard()
            .unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
