//! Starting `sandstorm` child processes of this binary, as `sandstorm dev` and the benches do,
//! through the one mechanism of `sandstorm-launch`: each child's logs in `LOGS/NAME.log`.

use std::path::Path;

pub use sandstorm_launch::{Joining, Process, admin_token, connect_loopback, scheduler_args};

/// Starts this binary with `args` as the child `name`, its logs in `logs/NAME.log` (and `env`
/// added to its environment), and waits for its `listening on ADDR` line and then for a line
/// containing each of `then`.
pub fn start(
    name: &str,
    logs: &Path,
    args: &[String],
    env: &[(&str, String)],
    then: &[&str],
) -> anyhow::Result<Process> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("finding the sandstorm binary")?;
    let mut launch = sandstorm_launch::Launch::new(exe, name)
        .args(args)
        .log_file(logs.join(format!("{}.log", name.replace(' ', "-"))))
        .ready_after(then);
    for (key, value) in env {
        launch = launch.env(key, value.clone());
    }
    launch.start()
}
