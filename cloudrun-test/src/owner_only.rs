//! Files and folders that only this user can have written: all the on-disk token cache
//! trusts. A file is opened without following a symbolic link and without waiting on a
//! FIFO, then checked (on the open file, so it cannot be swapped meanwhile) to be a
//! regular file of the effective user that nobody else may read or write. A folder must
//! be the user's own and closed to others.
//!
//! Unix (Linux and macOS alike): owner and mode bits, read from the open file or folder.
//! Windows has no mode bits, and reading an ACL takes the Win32 security API, which
//! this crate does not bind; there a folder is trusted only inside this user's profile
//! (see [`private_on_windows`]), files inherit its ACL, and links are not followed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Creates `dir` (and its missing parents) private to this user, and checks that it
/// may hold tokens: returns its canonical path (links resolved once, here, so that a
/// link swapped later changes nothing), or why not. A folder of ours that others may
/// only read is made private; one that others may write to (they could plant or swap
/// entries) or that is another user's is refused, and never changed.
pub(crate) fn prepare_folder(dir: &Path) -> Result<PathBuf, String> {
    create_private_dir(dir).map_err(|error| format!("cannot create it: {error}"))?;
    let dir = dir
        .canonicalize()
        .map_err(|error| format!("cannot resolve it: {error}"))?;
    let metadata = std::fs::metadata(&dir).map_err(|error| error.to_string())?;
    if !metadata.is_dir() {
        return Err("it is not a folder".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (owner, me) = (metadata.uid(), euid());
        if owner != me {
            return Err(format!(
                "it belongs to user {owner}, not to this user ({me}); cloudrun-test neither uses \
                 nor changes another user's folder"
            ));
        }
        let mode = metadata.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "other users may write to it (mode {mode:o}), so they could plant or replace \
                 tokens; fix: `chmod 700 {}`, or point CLOUDRUN_TEST_CACHE_DIR at a private folder",
                dir.display()
            ));
        }
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|error| format!("cannot make it private (0700): {error}"))?;
        }
    }
    #[cfg(windows)]
    private_on_windows(&dir)?;
    Ok(dir)
}

/// The Windows rule: `dir` (canonical, so links and junctions are resolved) must be
/// inside `%LOCALAPPDATA%` (the default cache lives there) or `%USERPROFILE%`. A
/// profile's default ACL grants access to its user, SYSTEM and the Administrators only,
/// and folders created in it inherit that. Anywhere else (`C:\Temp`, a share) nothing
/// here can tell who may read or plant files, so the folder is refused. Not caught: a
/// profile whose ACL was widened by hand.
#[cfg(windows)]
fn private_on_windows(dir: &Path) -> Result<(), String> {
    let inside_profile = ["LOCALAPPDATA", "USERPROFILE"]
        .into_iter()
        .filter_map(std::env::var_os)
        .filter(|root| !root.is_empty())
        .filter_map(|root| Path::new(&root).canonicalize().ok())
        .any(|root| dir.starts_with(root));
    if inside_profile {
        return Ok(());
    }
    Err(
        "it is outside your user profile (%LOCALAPPDATA%, %USERPROFILE%), so cloudrun-test cannot \
         tell whether other users may read or replace tokens there (it does not read ACLs); fix: \
         point CLOUDRUN_TEST_CACHE_DIR at a folder under %LOCALAPPDATA%, or unset it, or set \
         CLOUDRUN_TEST_DISK_CACHE=off"
            .into(),
    )
}

/// Opens an existing file for reading if it is a regular, private file of ours.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    checked(safe_options().read(true).open(path)?)
}

/// Opens for writing, creating it (mode 0600) if missing, without truncating: a lock
/// file. Refused unless it is a regular, private file of ours.
pub(crate) fn open_or_create(path: &Path) -> io::Result<File> {
    let mut options = safe_options();
    options.write(true).create(true).truncate(false);
    checked(options.open(path)?)
}

/// Creates a new file, mode 0600; fails if anything is at `path`, a link included.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    safe_options().write(true).create_new(true).open(path)
}

/// Open options that never follow a link in the last component, never block on a FIFO
/// (or a device), and create files readable by this user only.
fn safe_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    // O_NOFOLLOW fails with ELOOP on a link, and O_NONBLOCK makes opening a FIFO return
    // at once (or fail, for writing without a reader), on Linux and macOS alike; on a
    // regular file O_NONBLOCK changes nothing. `checked` then refuses what is not a
    // regular file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    // FILE_FLAG_OPEN_REPARSE_POINT opens a symbolic link or junction itself instead of
    // its target; `checked` then refuses it (not a regular file). Files take the
    // folder's ACL. Named pipes live outside the file system on Windows.
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    }
    options
}

/// `file` if it is a regular file of ours that nobody else may read or write.
fn checked(file: File) -> io::Result<File> {
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (owner, me) = (metadata.uid(), euid());
        if owner != me {
            return Err(io::Error::other(format!(
                "it belongs to user {owner}, not to this user ({me})"
            )));
        }
        let mode = metadata.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::other(format!(
                "other users may read or write it (mode {mode:o})"
            )));
        }
    }
    Ok(file)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The effective user: the one files are created for.
#[cfg(unix)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    #[test]
    fn folders_inside_the_profile_are_used_and_others_refused() {
        let profile = PathBuf::from(std::env::var_os("LOCALAPPDATA").unwrap());
        let inside = profile.join(format!("cloudrun-test-owner-only-{}", std::process::id()));
        let prepared = prepare_folder(&inside.join("a")).unwrap();
        assert!(prepared.ends_with("a"), "{}", prepared.display());
        let mut created = create_new(&prepared.join("entry")).unwrap();
        io::Write::write_all(&mut created, b"x").unwrap();
        drop(created);
        assert!(open(&prepared.join("entry")).is_ok());
        assert!(create_new(&prepared.join("entry")).is_err());
        assert!(open(&prepared).is_err(), "a folder is not an entry");
        std::fs::remove_dir_all(&inside).unwrap();

        // The root of the system drive: outside every profile.
        let drive = std::env::var_os("SystemDrive").unwrap_or_else(|| "C:".into());
        let outside = PathBuf::from(drive)
            .join("\\")
            .join(format!("cloudrun-test-outside-{}", std::process::id()));
        let problem = prepare_folder(&outside).unwrap_err();
        let _ = std::fs::remove_dir_all(&outside);
        assert!(problem.contains("outside your user profile"), "{problem}");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_created_private_tightened_or_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare_folder(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Ours, readable by others: made private.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_folder(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Writable by others: refused, and left as it is.
        for open in [0o777, 0o770, 0o702] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open)).unwrap();
            let problem = prepare_folder(&dir).unwrap_err();
            assert!(problem.contains("may write"), "{problem}");
            assert_eq!(mode(&dir), open);
        }
        // A file where the folder should be.
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare_folder(&file).is_err());
    }

    #[test]
    fn only_regular_private_files_of_ours_open() {
        let root = tempfile::tempdir().unwrap();
        let path = |name: &str| root.path().join(name);
        let mut created = create_new(&path("entry")).unwrap();
        io::Write::write_all(&mut created, b"x").unwrap();
        assert_eq!(mode(&path("entry")), 0o600);
        assert!(open(&path("entry")).is_ok());
        assert!(create_new(&path("entry")).is_err());

        // A link to a private file of ours is still not followed.
        symlink(path("entry"), path("link")).unwrap();
        assert!(open(&path("link")).is_err());
        assert!(open_or_create(&path("link")).is_err());
        assert!(create_new(&path("link")).is_err());

        // A file others may read.
        std::fs::write(path("shared"), "x").unwrap();
        std::fs::set_permissions(path("shared"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = open(&path("shared")).unwrap_err().to_string();
        assert!(error.contains("mode 644"), "{error}");

        // A FIFO: refused at once, for reading and for writing.
        let fifo = path("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(open(&fifo).is_err());
        assert!(open_or_create(&fifo).is_err());

        // A folder.
        std::fs::create_dir(path("dir")).unwrap();
        assert!(open(&path("dir")).is_err());
    }
}
