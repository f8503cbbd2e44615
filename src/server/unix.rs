//! Unix socket listeners: created with their final permissions, never taking over a file
//! that is not a stale socket, and removed at exit only while they are still ours.
//!
//! `bind(2)` creates the socket file with the process umask, so binding at the final path
//! and changing the mode afterwards would leave a moment in which the socket is open to
//! more users than `listen.socket_mode` allows. Instead the socket is bound inside a
//! fresh private directory beside the final path (mode 0700, a random name, so a
//! leftover from an earlier run cannot collide), given its mode there, and then linked
//! into place. Linking fails when the final path exists, so a file that appeared there in
//! the meantime is reported instead of being replaced.
//!
//! A socket file left behind by a process that died refuses connections; only such a
//! file is removed before binding. One that still accepts connections, one that cannot be
//! checked, and anything that is not a socket are left alone and reported.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Attempts at finding an unused name for the private staging directory.
const STAGING_ATTEMPTS: usize = 8;

/// A bound unix socket and the path it was placed at.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, to recognise it at removal.
    identity: (u64, u64),
}

impl UnixSocket {
    /// Binds a socket at `path` with permissions `mode`, replacing a stale socket file.
    pub(super) async fn bind(path: &Path, mode: u32) -> io::Result<Self> {
        let parent = existing_parent(path)?;
        remove_stale_socket(path).await?;

        let staging = Staging::create(parent)?;
        let listener = UnixListener::bind(&staging.socket)?;
        fs::set_permissions(&staging.socket, Permissions::from_mode(mode))?;
        place(&staging.socket, path)?;
        drop(staging);

        let metadata = fs::symlink_metadata(path)?;
        Ok(UnixSocket {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// Accepts one connection.
    pub(super) async fn accept(&self) -> io::Result<UnixStream> {
        let (stream, _) = self.listener.accept().await?;
        Ok(stream)
    }
}

impl Drop for UnixSocket {
    /// Removes the socket file, unless something else has been put at its path since.
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The directory the socket goes in, which must exist: the proxy does not create
/// directories on an operator's behalf.
fn existing_parent(path: &Path) -> io::Result<&Path> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(metadata) if metadata.is_dir() => Ok(parent),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", parent.display()),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the directory {} does not exist; create it or choose another path",
                parent.display()
            ),
        )),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("cannot use the directory {}: {err}", parent.display()),
        )),
    }
}

/// Removes a socket file that no process answers on. A live socket, one that cannot be
/// checked, and any other kind of file are reported.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another path",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use by a running process; stop it or choose another path",
                path.display()
            ),
        )),
        // Refused: no process listens any more, so the file is a leftover.
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(listen.path = %path.display(), "replacing a stale socket file");
            match fs::remove_file(path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        // Permission denied, a full backlog...: a process may well be behind it.
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!(
                "{} exists and cannot be checked ({err}); remove it if no process uses it",
                path.display()
            ),
        )),
    }
}

/// A private directory to create the socket in, removed with whatever is left in it.
struct Staging {
    dir: PathBuf,
    socket: PathBuf,
}

impl Staging {
    fn create(parent: &Path) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..STAGING_ATTEMPTS {
            let name = format!(
                ".pcce-proxy-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            );
            let dir = parent.join(name);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join("socket");
                    return Ok(Staging { dir, socket });
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!(
                            "cannot create a private directory in {}: {err}",
                            parent.display()
                        ),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Puts the staged socket at `path` without replacing anything that is there.
///
/// A hard link does that atomically. On a file system without hard links the socket is
/// renamed into place instead, which would replace a file created at `path` since the
/// stale-socket check: a narrow window, on unusual file systems only.
fn place(staged: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(staged, path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} appeared while the socket was being created; remove it or choose \
                 another path",
                path.display()
            ),
        )),
        Err(_) => fs::rename(staged, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_gets_its_mode_and_the_staging_directory_goes_away() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.sock");

        let socket = UnixSocket::bind(&path, 0o640).await.expect("binds");

        let metadata = fs::symlink_metadata(&path).expect("socket file");
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
        let entries: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(entries, ["proxy.sock"]);
        drop(socket);
        assert!(!path.exists(), "the socket file is removed at exit");
    }

    #[tokio::test]
    async fn a_leftover_staging_directory_does_not_collide() {
        let dir = tempfile::tempdir().expect("temp dir");
        let leftover = dir
            .path()
            .join(format!(".pcce-proxy-{}", std::process::id()));
        fs::create_dir(&leftover).expect("leftover");

        let path = dir.path().join("proxy.sock");
        let _socket = UnixSocket::bind(&path, 0o600).await.expect("binds");
        assert!(
            leftover.exists(),
            "a directory the proxy did not make is left alone"
        );
    }

    #[tokio::test]
    async fn a_socket_replaced_by_another_file_is_not_removed_at_exit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.sock");
        let socket = UnixSocket::bind(&path, 0o600).await.expect("binds");

        fs::remove_file(&path).expect("remove");
        fs::write(&path, "someone else's").expect("write");
        drop(socket);
        assert_eq!(fs::read_to_string(&path).expect("kept"), "someone else's");
    }

    #[tokio::test]
    async fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing").join("proxy.sock");
        let err = UnixSocket::bind(&path, 0o600).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn placing_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let staged = dir.path().join("staged");
        let path = dir.path().join("final");
        fs::write(&staged, "new").expect("write");
        fs::write(&path, "old").expect("write");
        let err = place(&staged, &path).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).expect("kept"), "old");
    }
}
