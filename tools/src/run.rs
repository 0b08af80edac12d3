//! `vvram run`: start a command under libvvram.so with a checked policy.

use crate::load::{PolicySource, load_policy};
use crate::locate;
use clap::Args;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Run COMMAND under libvvram.so with a policy, after checking it.
///
/// The command replaces vvram (exec): its exit code and signals are its own.
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram run --policy examples/policies/flux-dev-24gb.toml -- python main.py\n  vvram run --alloc \"cuda:0,20gb;cpu,*\" -- python my_script.py\n\nComfyUI: versions with Dynamic VRAM (comfy-aimdo; `python main.py --help` lists --disable-dynamic-vram) need\n--disable-dynamic-vram after main.py, or two memory managers fight; older versions exit 2 on that flag.\nThe vvram ComfyUI nodes log the exact command for the ComfyUI they are installed in.\n\nExit codes: the command's own; 2 invalid policy; 1 libvvram.so not found; 127 the command cannot be run.\nlibvvram.so is taken from VVRAM_LIB, else beside the vvram binary (or ../lib), else from the
vvram Python package that `pip install vvram` installed with this binary.")]
pub struct RunArgs {
    /// Policy file (TOML).
    #[arg(long, conflicts_with = "alloc", required_unless_present = "alloc")]
    policy: Option<String>,
    /// A DisTorch2 allocation string for compute device 0, e.g. "cuda:0,20gb;cpu,*".
    #[arg(long)]
    alloc: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `vvram run`.
pub fn run(args: &RunArgs) -> ExitCode {
    let source = match &args.policy {
        Some(path) => PolicySource::File(path),
        None => PolicySource::Allocation(args.alloc.as_deref().unwrap_or_default()),
    };
    if let Err(error) = load_policy(&source) {
        eprintln!("{error}");
        eprintln!("vvram run: refusing to start with an invalid policy");
        return ExitCode::from(2);
    }
    let library = match locate::find(&locate::SHIM) {
        Ok(library) => library,
        Err(message) => {
            eprintln!("vvram run: {message}");
            return ExitCode::from(1);
        }
    };
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(existing) if !existing.is_empty() => format!("{} {existing}", library.display()),
        _ => library.display().to_string(),
    };
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]).env("LD_PRELOAD", preload);
    match source {
        PolicySource::File(path) => {
            let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
            command.env("VVRAM_POLICY", absolute).env_remove("VVRAM_ALLOC");
        }
        PolicySource::Allocation(alloc) => {
            command.env("VVRAM_ALLOC", alloc).env_remove("VVRAM_POLICY");
        }
    }
    let error = command.exec();
    eprintln!("vvram run: cannot run {}: {error}", args.command[0]);
    ExitCode::from(127)
}
