//! A unix socket path before a server binds it: a socket a crash left
//! behind is removed, a live one or anything that is not a socket is
//! refused, so a wrong `unix:PATH` never deletes a file or takes another
//! server's place.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Make `path` free for a new socket: nothing there is fine; a socket
/// nobody answers on (connect refused) is removed (returns true); a live
/// socket, a file of another kind, or a socket whose state cannot be told
/// is an error saying what to do.
pub fn remove_stale(path: &Path) -> std::io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::other(
            "exists and is not a socket; remove it or listen elsewhere",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::other(
            "another process is listening on this socket; stop it or listen elsewhere",
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map(|()| true)
        }
        Err(e) => Err(std::io::Error::other(format!(
            "cannot tell whether the socket is in use ({e}); remove it if it is stale"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dead_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(!remove_stale(&path).unwrap(), "nothing there");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = remove_stale(&path).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        drop(live);
        assert!(remove_stale(&path).unwrap(), "stale");
        assert!(!path.exists());
        std::fs::write(&path, "precious").unwrap();
        let err = remove_stale(&path).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
