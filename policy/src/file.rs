//! Reading a policy file: the crate's only I/O. A policy path may name anything
//! (`/dev/zero`, a FIFO no one writes, a huge file); only a regular file of at most
//! [`MAX_POLICY_BYTES`] is read, and opening never blocks.

use crate::parse::MAX_POLICY_BYTES;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// The text of the policy file at `path`, or a message naming the path and the problem.
pub fn read_policy_file(path: &str) -> Result<String, String> {
    let cannot = |why: String| format!("{path}: cannot read the policy: {why}");
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| cannot(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| cannot(e.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    if metadata.len() > MAX_POLICY_BYTES as u64 {
        return Err(cannot(format!("{} bytes long; a policy may be at most {MAX_POLICY_BYTES} bytes", metadata.len())));
    }
    let mut text = String::new();
    file.take(MAX_POLICY_BYTES as u64 + 1).read_to_string(&mut text).map_err(|e| cannot(e.to_string()))?;
    if text.len() > MAX_POLICY_BYTES {
        return Err(cannot(format!("it grew past {MAX_POLICY_BYTES} bytes while being read")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_directories_and_huge_files_are_refused_at_once() {
        assert!(read_policy_file("/dev/zero").unwrap_err().contains("not a regular file"));
        assert!(read_policy_file("/").unwrap_err().contains("not a regular file"));
        let dir = std::env::temp_dir().join(format!("vvram-policy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: creating a FIFO at a path of ours.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(read_policy_file(fifo.to_str().unwrap()).unwrap_err().contains("not a regular file"));
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_POLICY_BYTES + 1]).unwrap();
        assert!(read_policy_file(big.to_str().unwrap()).unwrap_err().contains("at most 1048576 bytes"));
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "version = 1\n").unwrap();
        assert_eq!(read_policy_file(ok.to_str().unwrap()).unwrap(), "version = 1\n");
        assert!(read_policy_file(dir.join("missing").to_str().unwrap()).unwrap_err().contains("missing: cannot read the policy"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
