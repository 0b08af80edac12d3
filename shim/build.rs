fn main() {
    // A soname lets Python find the preloaded copy with ctypes.CDLL("libvvram.so", RTLD_NOLOAD).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvvram.so");
}
