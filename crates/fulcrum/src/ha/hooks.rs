//! `on_promote` / `on_demote`: commands run on role changes, for VIP mechanisms fulcrum does
//! not drive itself (BGP announcements, a cloud provider's API). They run in the background;
//! their exit status is logged, never waited for on the role-change path.

use std::process::Command;

/// What the hook learns through its environment.
#[derive(Debug)]
pub struct HookEnv<'a> {
    pub node: &'a str,
    pub role: &'a str,
    pub epoch: u64,
    pub reason: &'a str,
}

pub fn run(which: &'static str, command: &[String], env: &HookEnv<'_>) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let spawned = Command::new(program)
        .args(args)
        .env("FULCRUM_HA_NODE", env.node)
        .env("FULCRUM_HA_ROLE", env.role)
        .env("FULCRUM_HA_EPOCH", env.epoch.to_string())
        .env("FULCRUM_HA_REASON", env.reason)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(hook = which, program = %program, error = %e, "cannot run hook");
            return;
        }
    };
    let program = program.clone();
    let reaper = std::thread::Builder::new()
        .name("fulcrum-hook".into())
        .spawn(move || match child.wait() {
            Ok(status) if status.success() => {
                tracing::info!(hook = which, program = %program, "hook finished")
            }
            Ok(status) => {
                tracing::warn!(hook = which, program = %program, %status, "hook failed")
            }
            Err(e) => tracing::warn!(hook = which, program = %program, error = %e, "hook lost"),
        });
    if let Err(e) = reaper {
        tracing::warn!(hook = which, error = %e, "cannot watch hook");
    }
}
