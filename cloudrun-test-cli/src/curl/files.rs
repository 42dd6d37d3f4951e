//! The files curl options name: where they really lead, and whether curl may use them.
//!
//! curl inherits two pipes of ours: the token's header and the response headers,
//! which curl itself writes, so reading that one never ends (and writing a body into
//! it forges the headers we read). Any spelling of a file name can reach them:
//! `/dev//fd/5`, `fd/5` from `/dev`, a symbolic link to `/dev/fd/5`. So a name is
//! resolved here as the kernel would resolve it for curl, link by link, and refused if
//! any step leads under `/dev` (other than `/dev/null`) or `/proc`, or if it is a
//! FIFO, socket or device. We resolve without opening: `/dev/fd/N` means curl's
//! descriptor N, not ours.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Whether curl reads the file or writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Header files (`-H @FILE`) larger than this are refused: their lines travel to
/// curl through a pipe, with the token's, and no request needs more.
pub const MAX_HEADER_FILE: u64 = 32 * 1024;

/// Symbolic links followed before giving up, as the kernel does (ELOOP).
const MAX_LINKS: u32 = 40;

/// Checks the file `name` that curl will open for `access`; the error is the problem.
/// `-`, standard input or output, is the caller's to recognise.
pub fn check(name: &str, access: Access) -> Result<(), String> {
    // Our standard streams are curl's: never one of our pipes to it.
    let standard = match access {
        Access::Read => ["/dev/null", "/dev/stdin"].as_slice(),
        Access::Write => ["/dev/null", "/dev/stdout", "/dev/stderr"].as_slice(),
    };
    if standard.contains(&name) {
        return Ok(());
    }
    if name.is_empty() {
        return Ok(()); // curl reports it
    }
    let start = std::env::current_dir()
        .map_err(|error| format!("the current folder cannot be found ({error})"))?
        .join(name);
    let resolved = match resolve(&start, 0) {
        Ok(resolved) => resolved,
        Err(Stop::Inside(inside)) => return Err(under_dev_or_proc(&inside)),
        Err(Stop::Problem(problem)) => return Err(problem),
    };
    if resolved == Path::new("/dev") {
        return Err(under_dev_or_proc(&resolved));
    }
    if resolved == Path::new("/dev/null") {
        return Ok(());
    }
    match fs::metadata(&resolved) {
        Ok(meta) if meta.is_file() || meta.is_dir() => Ok(()),
        Ok(meta) => Err(format!(
            "it is {}, not a regular file: curl could wait on it forever",
            kind(meta.file_type())
        )),
        // Not there yet: curl creates it (-o) or says it is missing.
        Err(_) => Ok(()),
    }
}

/// Why resolving stopped.
enum Stop {
    /// The path led here, under /dev or /proc (the rest appended as written).
    Inside(PathBuf),
    Problem(String),
}

/// `path` (absolute) with every symbolic link replaced by its target, component by
/// component; components that do not exist (yet) are kept as they are. Stops at the
/// first step under /dev (but /dev/null) or /proc: what lies there is curl's own.
fn resolve(path: &Path, links: u32) -> Result<PathBuf, Stop> {
    let mut done = PathBuf::from("/");
    let mut components = path.components();
    while let Some(component) = components.next() {
        match component {
            Component::RootDir => done = PathBuf::from("/"),
            Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                done.pop();
            }
            Component::Normal(part) => {
                let next = done.join(part);
                done = match fs::symlink_metadata(&next) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        if links >= MAX_LINKS {
                            return Err(Stop::Problem(
                                "it goes through too many symbolic links".into(),
                            ));
                        }
                        let target = fs::read_link(&next).map_err(|error| {
                            Stop::Problem(format!(
                                "its link {} cannot be read ({error})",
                                next.display()
                            ))
                        })?;
                        // An absolute target replaces `done`; a relative one extends it.
                        match resolve(&done.join(target), links + 1) {
                            Err(Stop::Inside(inside)) => {
                                return Err(Stop::Inside(inside.join(components.as_path())));
                            }
                            resolved => resolved?,
                        }
                    }
                    _ => next,
                };
                let to_device = done.starts_with("/dev")
                    && done != Path::new("/dev")
                    && done != Path::new("/dev/null");
                if done.starts_with("/proc") || to_device {
                    return Err(Stop::Inside(done.join(components.as_path())));
                }
            }
        }
    }
    Ok(done)
}

fn under_dev_or_proc(path: &Path) -> String {
    format!(
        "it leads to {}: under /dev and /proc, curl's open files include cloudrun-test's \
         own pipes (the token's header; the response headers, which reading never ends)",
        path.display()
    )
}

fn kind(file_type: fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "neither a file nor a folder"
    }
}

/// The text of a header file (`-H @FILE`), `-` being standard input: checked like
/// any file curl reads, a regular file, at most [`MAX_HEADER_FILE`] bytes.
pub fn read_header_file(name: &str) -> Result<Vec<u8>, String> {
    let limit = MAX_HEADER_FILE + 1;
    let mut text = Vec::new();
    if name == "-" || name == "/dev/stdin" {
        io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut text)
            .map_err(|error| format!("standard input cannot be read ({error})"))?;
    } else if name != "/dev/null" {
        check(name, Access::Read)?;
        // Not blocking: if a FIFO took the file's place since the check, opening it
        // must not wait for a writer.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(name)
            .map_err(|error| format!("it cannot be read ({error})"))?;
        let meta = file
            .metadata()
            .map_err(|error| format!("it cannot be read ({error})"))?;
        if !meta.is_file() {
            return Err(format!(
                "it is {}, not a regular file",
                kind(meta.file_type())
            ));
        }
        file.take(limit)
            .read_to_end(&mut text)
            .map_err(|error| format!("it cannot be read ({error})"))?;
    }
    if text.len() as u64 > MAX_HEADER_FILE {
        return Err(format!(
            "it holds more than {} KiB of headers",
            MAX_HEADER_FILE / 1024
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_descriptor_or_process_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/fd/5", &link).unwrap();
        let chain = dir.path().join("chain");
        std::os::unix::fs::symlink(&link, &chain).unwrap();
        let to_dev = dir.path().join("dev");
        std::os::unix::fs::symlink("/dev", &to_dev).unwrap();
        for name in [
            "/dev/fd/5".to_string(),
            "/dev//fd/5".into(),
            "/dev/./fd/9".into(),
            "/proc/self/fd/5".into(),
            "/tmp/../dev/fd/5".into(),
            "/dev/stdout".into(), // a read of our stdout pipe's other end
            "/dev/tty".into(),
            "/dev".into(),
            link.display().to_string(),
            chain.display().to_string(),
            format!("{}/fd/5", to_dev.display()),
            format!("{}/new-file", to_dev.display()),
        ] {
            let error = check(&name, Access::Read).expect_err(&name);
            assert!(
                error.contains("/dev") || error.contains("/proc"),
                "{name}: {error}"
            );
        }
        assert!(check("/dev/stdin", Access::Write).is_err());
    }

    #[test]
    fn regular_files_folders_missing_files_and_the_standard_streams_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.json");
        std::fs::write(&file, "{}").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for (name, access) in [
            (file.display().to_string(), Access::Read),
            (link.display().to_string(), Access::Read),
            (dir.path().display().to_string(), Access::Read),
            (
                dir.path().join("new/out.txt").display().to_string(),
                Access::Write,
            ),
            ("/dev/null".into(), Access::Read),
            ("/dev/null".into(), Access::Write),
            ("/dev/stdin".into(), Access::Read),
            ("/dev/stdout".into(), Access::Write),
            ("/dev/stderr".into(), Access::Write),
            ("/devices/x".into(), Access::Write),
        ] {
            assert_eq!(check(&name, access), Ok(()), "{name}");
        }
    }

    #[test]
    fn fifos_and_sockets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = check(&fifo.display().to_string(), Access::Read).unwrap_err();
        assert!(error.contains("FIFO"), "{error}");
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let error = check(&socket.display().to_string(), Access::Write).unwrap_err();
        assert!(error.contains("socket"), "{error}");
        assert!(read_header_file(&fifo.display().to_string()).is_err());
    }

    #[test]
    fn header_files_are_read_within_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, "A: b\n").unwrap();
        assert_eq!(
            read_header_file(&small.display().to_string()).unwrap(),
            b"A: b\n"
        );
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'a'; MAX_HEADER_FILE as usize + 1]).unwrap();
        let error = read_header_file(&large.display().to_string()).unwrap_err();
        assert!(error.contains("32 KiB"), "{error}");
        assert!(read_header_file(&dir.path().join("none").display().to_string()).is_err());
        assert_eq!(read_header_file("/dev/null").unwrap(), b"");
    }
}
