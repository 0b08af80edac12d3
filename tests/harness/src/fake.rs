//! Running test programs on the fake driver (for the integration tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the cargo build's cdylibs and binaries for a test executable
/// (`target/<profile>`), found from the running test.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// A directory with `libcuda.so.1` pointing at the fake driver, for `LD_LIBRARY_PATH`.
pub fn fake_driver_dir() -> PathBuf {
    let build = build_dir();
    let library = [build.join("deps/libfakecuda.so"), build.join("libfakecuda.so")]
        .into_iter()
        .find(|p| p.exists())
        .expect("the fake driver (libfakecuda.so) is built: cargo builds it as a dev-dependency");
    let dir = build.join("fakecuda-lib");
    std::fs::create_dir_all(&dir).expect("create fakecuda-lib");
    let link = dir.join("libcuda.so.1");
    if std::fs::read_link(&link).ok().as_deref() != Some(library.as_path()) {
        // Tests run in parallel: build the link aside and rename it into place atomically.
        let staging = dir.join(format!("libcuda.so.1.{}.{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&library, &staging).expect("symlink libcuda.so.1");
        std::fs::rename(&staging, &link).expect("rename libcuda.so.1 into place");
    }
    dir
}

/// The built `libvvram.so`.
pub fn shim_library() -> PathBuf {
    let build = build_dir();
    [build.join("deps/libvvram.so"), build.join("libvvram.so")]
        .into_iter()
        .find(|p| p.exists())
        .expect("libvvram.so is built: cargo builds it as a dev-dependency")
}

/// A command for `program` that loads the fake driver as `libcuda.so.1`.
pub fn on_fake_driver(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env("LD_LIBRARY_PATH", fake_driver_dir());
    for var in ["FAKECUDA_DEVICES", "FAKECUDA_PEERS", "FAKECUDA_HOST", "FAKECUDA_KERNEL_US", "FAKECUDA_FAIL", "FAKECUDA_GRANULARITY", "FAKECUDA_HOST_GRANULARITY", "FAKECUDA_HOST_NUMA", "FAKECUDA_HOST_VMM", "FAKECUDA_HOST_ACCESS", "FAKECUDA_PIN_GBPS", "FAKECUDA_PROC_INTERNAL", "FAKECUDA_CTX_MS", "LD_PRELOAD", "VVRAM_POLICY", "VVRAM_ALLOC"] {
        command.env_remove(var);
    }
    command
}

/// Runs `program` with `args` under libvvram.so on the fake driver (GPUs of 256 MiB), with
/// `policy` written to `<build dir>/<dir>/<name>.toml` as `VVRAM_POLICY` and `env` added.
pub fn run_under_shim(program: &Path, dir: &str, name: &str, policy: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = build_dir().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, policy).unwrap();
    let mut command = on_fake_driver(program);
    command.env("LD_PRELOAD", shim_library()).env("FAKECUDA_DEVICES", "256MiB").env("VVRAM_POLICY", &path).env_remove("VVRAM_LOG");
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

/// Asserts that a run succeeded; returns its stdout and the last statistics it printed
/// (a `stats: JSON` line; null when there is none).
pub fn succeeded_with_stats(output: &Output) -> (String, serde_json::Value) {
    assert!(output.status.success(), "{}", describe(output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stats = stdout.lines().filter_map(|l| l.strip_prefix("stats: ")).next_back().map(|l| serde_json::from_str(l).unwrap()).unwrap_or_default();
    (stdout, stats)
}

/// Output as text, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A library opened with local scope (`RTLD_NOW | RTLD_LOCAL`), so that its exports do not
/// interpose this process: how the benches hold the fake driver and libvvram.so side by
/// side. It stays loaded for the life of the process.
pub struct LocalLibrary(*mut std::ffi::c_void);

/// Opens `path` as a [`LocalLibrary`]. Panics when it cannot be opened.
pub fn open_local(path: &Path) -> LocalLibrary {
    let path = std::ffi::CString::new(path.to_str().expect("a UTF-8 path")).expect("a path without NUL");
    // SAFETY: plain dlopen of a path.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {path:?}");
    LocalLibrary(handle)
}

impl LocalLibrary {
    /// The exported symbol `name` as the function pointer type `T` (one of
    /// `vvram_cuda::pfn`). Panics when the library does not export it.
    pub fn symbol<T>(&self, name: &str) -> T {
        let name = std::ffi::CString::new(name).expect("a name without NUL");
        // SAFETY: dlsym on a handle that stays open, with a C string.
        let address = unsafe { libc::dlsym(self.0, name.as_ptr()) };
        assert!(!address.is_null(), "{name:?}");
        // SAFETY: the caller names the pointer type of that symbol.
        unsafe { std::mem::transmute_copy(&address) }
    }
}
