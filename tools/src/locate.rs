//! Finding the libraries `vvram` starts programs with: libvvram.so and the demo's fake
//! driver.
//!
//! A library is taken from its environment variable when that is set; else from beside
//! the `vvram` binary (a `cargo build`: `target/debug/`, or its `deps/`), from `../lib`
//! (an install prefix), or from the `vvram` Python package of the wheel that installed
//! the binary. A wheel puts the binary in `PREFIX/bin` and the package in
//! `PREFIX/lib*/python3.*/{site,dist}-packages/vvram/` (virtual environments, conda, user
//! and system installs alike); only a package whose `vvram-VERSION.dist-info` matches
//! this binary's version is taken, so a CLI never starts a shim of another release.

use std::path::{Path, PathBuf};

/// A library `vvram` looks for.
pub struct Library {
    /// Its file name.
    pub file: &'static str,
    /// The environment variable that names it instead of the search.
    pub variable: &'static str,
}

/// The shim, preloaded by `vvram run` and `vvram demo`.
pub const SHIM: Library = Library { file: "libvvram.so", variable: "VVRAM_LIB" };

/// The fake CUDA driver (soname `libcuda.so.1`) that `vvram demo` uses without a GPU.
pub const FAKE_DRIVER: Library = Library { file: "libfakecuda.so", variable: "VVRAM_FAKECUDA" };

/// The version the wheel's `.dist-info` folder carries: the crate version, which is
/// written the same in Cargo and in Python packaging as long as it is plain `X.Y.Z`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Finds `library`: its variable, else the first of [`candidates`] that exists.
pub fn find(library: &Library) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(library.variable) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("{}={} does not exist", library.variable, path.display())) };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the vvram binary: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    candidates(dir, library.file).into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "cannot find {} for {} (beside it, in ../lib, or in the vvram Python package installed with it): \
             build it with `cargo build`, install it with `pip install vvram`, or set {}",
            library.file,
            exe.display(),
            library.variable
        )
    })
}

/// Where `file` may be for a `vvram` binary in `dir`, best first.
pub fn candidates(dir: &Path, file: &str) -> Vec<PathBuf> {
    let mut found = vec![dir.join(file), dir.join("deps").join(file), dir.join("../lib").join(file)];
    found.extend(wheel_packages(dir).into_iter().map(|package| package.join(file)));
    found
}

/// The `vvram` package folders of this version's wheel under the prefix above `dir`.
fn wheel_packages(dir: &Path) -> Vec<PathBuf> {
    let dist_info = format!("vvram-{VERSION}.dist-info");
    let mut packages = Vec::new();
    let Some(prefix) = dir.parent() else { return packages };
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        let mut pythons: Vec<PathBuf> =
            entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("python3")).map(|e| e.path()).collect();
        pythons.sort();
        for python in pythons {
            for site in ["site-packages", "dist-packages"] {
                let site = python.join(site);
                if site.join(&dist_info).is_dir() {
                    packages.push(site.join("vvram"));
                }
            }
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch install prefix with a `bin/`, removed when dropped.
    struct Prefix(PathBuf);

    impl Drop for Prefix {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn prefix(name: &str) -> Prefix {
        let root = std::env::temp_dir().join(format!("vvram-locate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        Prefix(root)
    }

    fn install(root: &Path, site: &str, version: &str) -> PathBuf {
        let site = root.join(site);
        std::fs::create_dir_all(site.join(format!("vvram-{version}.dist-info"))).unwrap();
        std::fs::create_dir_all(site.join("vvram")).unwrap();
        std::fs::write(site.join("vvram/libvvram.so"), b"").unwrap();
        site.join("vvram/libvvram.so")
    }

    fn found(root: &Path) -> Vec<PathBuf> {
        candidates(&root.join("bin"), "libvvram.so").into_iter().filter(|p| p.is_file()).collect()
    }

    #[test]
    fn a_wheel_in_a_virtual_environment_is_found_from_its_bin() {
        let scratch = prefix("venv");
        let root = &scratch.0;
        let library = install(root, "lib/python3.11/site-packages", VERSION);
        assert_eq!(found(root), vec![library]);
    }

    #[test]
    fn system_layouts_dist_packages_and_lib64_are_searched() {
        let scratch = prefix("system");
        let root = &scratch.0;
        let debian = install(root, "lib/python3.11/dist-packages", VERSION);
        let fedora = install(root, "lib64/python3.12/site-packages", VERSION);
        assert_eq!(found(root), vec![debian, fedora]);
    }

    #[test]
    fn a_package_of_another_version_is_not_taken() {
        let scratch = prefix("other");
        let root = &scratch.0;
        install(root, "lib/python3.10/site-packages", "0.0.0-other");
        assert!(found(root).is_empty());
    }

    #[test]
    fn a_library_beside_the_binary_comes_before_the_wheel() {
        let scratch = prefix("beside");
        let root = &scratch.0;
        install(root, "lib/python3.11/site-packages", VERSION);
        std::fs::write(root.join("bin/libvvram.so"), b"").unwrap();
        assert_eq!(found(root)[0], root.join("bin/libvvram.so"));
    }

    #[test]
    fn the_crate_version_reads_the_same_in_python_packaging() {
        assert!(VERSION.split('.').count() == 3 && VERSION.split('.').all(|n| n.parse::<u32>().is_ok()), "{VERSION}: the wheel's dist-info would be named differently; teach wheel_packages the PEP 440 spelling");
    }
}
