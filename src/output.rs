//! Writing output files without losing data. Every file geonetc writes (formatted sources,
//! weights, checkpoints, metrics, inference outputs, plots) goes through [`write_atomically`]:
//!
//! - **Atomic**: the bytes go to a temporary file beside the target, are synced, and the
//!   temporary file is renamed over the target, so readers see the old or the new content.
//! - **Symlinks are written through**: the target is the file a symlink (chain) points to; the
//!   link itself stays a link.
//! - **The mode is kept**: a private `600` file stays `600`.
//! - **Only regular files are replaced**: devices, fifos, sockets, directories and anything
//!   under `/dev` are refused with one line.
//! - **Hard links are refused**: replacing a file that has other hard links would silently
//!   detach them (they would keep the old content), and writing in place would lose
//!   atomicity; so geonetc refuses and says so.
//! - **Temporary files are recognisable**: `.NAME.PID-N.geonetc.tmp`. A run killed with
//!   SIGKILL leaves one behind; the next write into that folder removes those whose process
//!   is gone (only this pattern, only dead writers).
//!
//! Also here: [`refuse_overwriting`] (no output may replace an input of the same command,
//! compared by canonical path and by device and inode) and [`DirLock`] (one training run per
//! output folder).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const TMP_SUFFIX: &str = ".geonetc.tmp";

/// The file that writing `path` would really change: symlinks followed (also dangling ones,
/// whose target is created), relative link targets taken from the link's folder.
pub fn resolve_target(path: &Path) -> Result<PathBuf, String> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)
                    .map_err(|e| format!("cannot follow the symlink {}: {e}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(format!("cannot write {}: too many levels of symlinks", path.display()))
}

fn under_dev(p: &Path) -> bool {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    };
    let abs = abs.parent().and_then(|d| d.canonicalize().ok()).unwrap_or(abs);
    let mut parts = abs.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir));
    parts.next().is_some_and(|c| c.as_os_str() == "dev")
}

/// Checks that `path` may be written (or created): resolves symlinks and refuses non-regular
/// targets, files with other hard links, and paths under `/dev`; the folder must exist. Returns
/// the resolved target. Commands call this before any work, so a bad output location fails at
/// once rather than after hours of training.
pub fn check_target(path: &Path) -> Result<PathBuf, String> {
    let target = resolve_target(path)?;
    let shown = if target == path {
        path.display().to_string()
    } else {
        format!("{} (→ {})", path.display(), target.display())
    };
    if under_dev(&target) {
        return Err(format!("refusing to write {shown}: it is under /dev, not a regular file"));
    }
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => return Err(format!("cannot write {shown}: it is a directory")),
        Ok(m) if !m.is_file() => {
            return Err(format!("refusing to write {shown}: not a regular file (a device, fifo or socket)"));
        }
        Ok(m) => {
            let links = hard_links(&m);
            if links > 1 {
                return Err(format!(
                    "refusing to write {shown}: it has {} other hard link{}, which replacing it would detach (remove them or write elsewhere)",
                    links - 1,
                    if links == 2 { "" } else { "s" }
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(&target);
            if !dir.is_dir() {
                return Err(format!("cannot write {shown}: the folder {} does not exist", dir.display()));
            }
        }
        Err(e) => return Err(format!("cannot write {shown}: {e}")),
    }
    // Replacing a file creates a temporary one beside it and renames it: the folder itself
    // must be writable, whether or not the file exists.
    let dir = parent_dir(&target);
    if !folder_is_writable(dir) {
        return Err(format!("cannot write {shown}: the folder {} is not writable", dir.display()));
    }
    Ok(target)
}

#[cfg(unix)]
fn folder_is_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: access() only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn folder_is_writable(_: &Path) -> bool {
    true
}

#[cfg(unix)]
fn hard_links(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

#[cfg(not(unix))]
fn hard_links(_: &std::fs::Metadata) -> u64 {
    1
}

fn parent_dir(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes a file so that readers see the old or the new content, never a partial one (see the
/// module documentation for symlinks, modes, hard links and non-regular files).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut out = AtomicFile::create(path)?;
    out.file().write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    out.commit()
}

/// An output file written progressively (streaming inference writes a window at a time): a
/// temporary file beside the target, renamed over it by [`commit`](Self::commit). Dropped
/// without a commit (an error, or a Ctrl-C the caller turned into an error), the temporary
/// file is removed, so nothing partial ever appears under the final name.
pub struct AtomicFile {
    path: PathBuf,
    target: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
    permissions: Option<std::fs::Permissions>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let target = check_target(path)?;
        let dir = parent_dir(&target);
        remove_stale_temp_files(dir);
        let name =
            target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}{TMP_SUFFIX}", std::process::id()));
        let permissions = std::fs::metadata(&target).ok().map(|m| m.permissions());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(AtomicFile { path: path.to_path_buf(), target, tmp, file, permissions })
    }

    /// The temporary file, open for reading and writing (positioned writes are fine).
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Syncs the temporary file and renames it over the target.
    pub fn commit(mut self) -> Result<(), String> {
        let permissions = self.permissions.take();
        let finish = || -> std::io::Result<()> {
            if let Some(p) = permissions {
                self.file.set_permissions(p)?;
            }
            self.file.sync_all()?;
            std::fs::rename(&self.tmp, &self.target)?;
            // The rename itself survives a crash only once the folder is synced.
            if let Ok(d) = std::fs::File::open(parent_dir(&self.target)) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        let result = finish().map_err(|e| format!("cannot write {}: {e}", self.path.display()));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        // Renamed (or removed): nothing left for `drop` to clean up.
        self.tmp = PathBuf::new();
        result
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The process id in a temporary file name of ours, if `name` is one.
fn temp_file_pid(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(TMP_SUFFIX)?;
    let (_, tag) = stem.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(unix)]
fn process_is_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_is_gone(_: u32) -> bool {
    false
}

/// Removes temporary files of ours in `dir` whose writer process no longer exists (left by a
/// run killed mid-write). Other files, and those of live processes, are left alone.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temp_file_pid(&name.to_string_lossy()) else { continue };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != std::process::id() && process_is_gone(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `a` and `b` name the same file: by canonical path, or by device and inode (hard
/// links). A path that does not exist yet is the same as nothing.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ca), Ok(cb)) = (a.canonicalize(), b.canonicalize()) else { return false };
    if ca == cb {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(&ca), std::fs::metadata(&cb)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    false
}

/// Refuses when an output of a command would replace one of its inputs. `outputs` and
/// `inputs` are (what it is, path) pairs, e.g. `("--output", p)` and `("the input", q)`.
pub fn refuse_overwriting(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<(), String> {
    for (what_out, out) in outputs {
        for (what_in, input) in inputs {
            if same_file(out, input) {
                return Err(format!(
                    "{what_out} {} is {what_in} ({}): refusing to overwrite an input; choose another name",
                    out.display(),
                    input.display()
                ));
            }
        }
    }
    // Two outputs of one command on the same file: the second would replace the first.
    for (i, (what_a, a)) in outputs.iter().enumerate() {
        for (what_b, b) in &outputs[i + 1..] {
            if same_file(a, b) || a == b {
                return Err(format!("{what_a} and {what_b} both name {}; choose two names", a.display()));
            }
        }
    }
    Ok(())
}

/// An exclusive lock on an output folder (`.geonetc.lock` in it, holding the owner's pid),
/// released when dropped or when the process dies: a second run into the same folder fails at
/// once instead of silently replacing the first one's files.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, String> {
        let path = dir.join(".geonetc.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        if !try_lock(&file) {
            let mut other = String::new();
            let _ = std::io::Read::read_to_string(&mut file, &mut other);
            let other = other.trim();
            let who = if other.is_empty() {
                "another run".to_string()
            } else {
                format!("another run (pid {other})")
            };
            return Err(format!(
                "{} is in use by {who}; wait for it to finish or choose another --out",
                dir.display()
            ));
        }
        let _ = file.set_len(0);
        let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        let _ = file.flush();
        Ok(DirLock { _file: file })
    }
}

#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; the lock is released when the file is closed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        assert_eq!(temp_file_pid(".model.safetensors.1234-0.geonetc.tmp"), Some(1234));
        assert_eq!(temp_file_pid(".a.b.c.77-12.geonetc.tmp"), Some(77));
        assert_eq!(temp_file_pid("model.safetensors.1234-0.geonetc.tmp"), None);
        assert_eq!(temp_file_pid(".model.safetensors.tmp1234"), None);
        assert_eq!(temp_file_pid(".x.1234.geonetc.tmp"), None);
        assert_eq!(temp_file_pid(".x.abc-1.geonetc.tmp"), None);
    }

    #[test]
    fn dev_paths_are_recognised() {
        assert!(under_dev(Path::new("/dev/null")));
        assert!(under_dev(Path::new("/dev/shm/x")));
        assert!(!under_dev(Path::new("/tmp/devices")));
    }
}
