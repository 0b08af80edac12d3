//! `cargo run -p vvram-cuda --example cuda_check -- ptx DIR` writes every PTX text of the
//! repository to `DIR/NAME.ptx`; `... -- layout` prints the C program that compares
//! vvram-cuda's constants and struct layouts with `cuda.h`. Used by scripts/cuda-check.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ptx", dir] => {
            for (name, text) in vvram_cuda::kernels::ALL {
                let path = std::path::Path::new(dir).join(format!("{name}.ptx"));
                if let Err(e) = std::fs::write(&path, text.trim_end_matches('\0')) {
                    eprintln!("cuda_check: cannot write {}: {e}", path.display());
                    std::process::exit(1);
                }
                println!("{}", path.display());
            }
        }
        ["layout"] => print!("{}", vvram_cuda::layout::c_checker()),
        _ => {
            eprintln!("usage: cuda_check ptx DIR | cuda_check layout");
            std::process::exit(2);
        }
    }
}
