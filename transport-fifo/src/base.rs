//! The base directory a transport makes its private directory in: created when
//! missing (mode 0700, with its missing parents), and every directory it creates is
//! checked to be a real directory of our own before it is used.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Makes sure `base` exists, creating it and its missing parents with mode 0700.
/// A directory this call created that turns out to be a symlink or another user's
/// (someone raced us to the name) is refused. Errors name the path.
pub(crate) fn ensure(base: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(base) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(base, &e)),
    }
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(with_path(base, &e)),
    }
    let meta = std::fs::symlink_metadata(base).map_err(|e| with_path(base, &e))?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: is a symbolic link, refused", base.display()),
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{}: is not a directory", base.display()),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: is owned by uid {}, not by this user ({me}), refused",
                base.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// `e`, with the path it concerns in front of its message.
pub(crate) fn with_path(path: &Path, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_directories_are_made_private_with_their_parents() {
        let root = std::env::temp_dir().join(format!("fifo-base-{}", std::process::id()));
        let deep = root.join("a/b");
        ensure(&deep).unwrap();
        for dir in [&root, &root.join("a"), &deep] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", dir.display());
        }
        ensure(&deep).unwrap();
        let file = root.join("file");
        std::fs::write(&file, b"").unwrap();
        let under_file = ensure(&file.join("x")).unwrap_err();
        assert!(
            under_file
                .to_string()
                .contains(&file.join("x").display().to_string()),
            "{under_file}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
