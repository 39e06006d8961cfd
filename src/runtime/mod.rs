//! Training and inference around a backend: data sources, optimizers, the training loop,
//! checkpoints and metrics.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod infer;
pub mod optim;
pub mod train;

use std::io::Write;
use std::path::Path;

/// Writes a file so that readers see the old or the new content, never a partial one: a
/// temporary file in the same directory, synced, then renamed over the target.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
