//! The base directory a transport makes its private directory in: created when
//! missing (mode 0700, with its missing parents), and every directory it creates is
//! checked to be a real directory of our own before it is used.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Makes sure `base` exists, creating it and its missing parents with mode 0700.
/// A directory this call created that turns out to be a symlink or another user's
/// (someone raced us to the name) is refused, and so is an existing one that
/// another user could move our directory out of ([`check_trusted`]). Errors
/// name the path.
pub(crate) fn ensure(base: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(base) {
        Ok(_) => return check_trusted(base),
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

/// Refuses a base in which another user could rename the transport's private
/// directory away and put one of their own in its place (workers are given
/// the FIFOs' full paths): the base and every directory above it must belong
/// to this user or to root, and none may be writable by others unless it is
/// sticky (as `/tmp` is: there only an entry's owner may move it).
pub(crate) fn check_trusted(base: &Path) -> io::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let real = std::fs::canonicalize(base).map_err(|e| with_path(base, &e))?;
    for dir in real.ancestors() {
        let meta = std::fs::metadata(dir).map_err(|e| with_path(dir, &e))?;
        let others_write = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        let why = if meta.uid() != me && meta.uid() != 0 {
            format!(
                "is owned by uid {}, not by this user ({me}) or root",
                meta.uid()
            )
        } else if others_write && !sticky {
            format!(
                "is writable by other users without the sticky bit (mode {:o})",
                meta.mode() & 0o7777
            )
        } else {
            continue;
        };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: {why}, so another user could replace the FIFO directory in it; refused",
                dir.display()
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

    #[test]
    fn a_base_others_may_write_to_is_refused_unless_it_is_sticky() {
        let root = std::env::temp_dir().join(format!("fifo-base-open-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let shared = root.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = ensure(&shared.join("pool")).unwrap_err();
        let sticky_then = {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
            ensure(&shared.join("pool"))
        };
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            refused
                .to_string()
                .contains("writable by other users without the sticky bit"),
            "{refused}"
        );
        sticky_then.expect("a sticky shared directory is fine, as /tmp is");
    }
}
