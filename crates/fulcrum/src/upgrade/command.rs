//! `fulcrum upgrade -c FILE`: starts the new binary as `BINARY run --upgrade -c FILE`, in a
//! process group of its own (so it outlives this command and the terminal), and waits for it
//! to say it is ready — or to exit, in which case the running fulcrum was never stopped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    /// The configuration file (the new process reads it; usually the running one's).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The new binary [default: this one]
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

pub fn run(args: &UpgradeArgs) -> Result<(), String> {
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot tell which binary this is (use --binary): {e}"))?,
    };
    let mut child = Command::new(&binary)
        .args(["run", "--upgrade", "-c"])
        .arg(&args.config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        // The new process writes one line, `ready PID`, once it serves; nothing else.
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line.starts_with("ready") {
        println!(
            "upgraded: fulcrum {} ({}) serves; the previous process finishes its connections \
             within runtime.shutdown_grace and exits",
            child.id(),
            binary.display()
        );
        return Ok(());
    }
    let status = child
        .wait()
        .map_or_else(|e| e.to_string(), |s| s.to_string());
    Err(format!(
        "the new process exited before it was ready ({status}; its errors are above); the \
         running fulcrum keeps serving"
    ))
}
