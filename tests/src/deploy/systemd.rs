//! `systemd-analyze verify` on copies of the plain unit files, and a
//! reader for unit files' `Key=value` lines.

use std::path::Path;
use std::process::Command;

use super::require_tool;

/// Verify `units` (file names in `dir`, with drop-in directories beside
/// them). Passing means exit status 0 *and* nothing on stderr: systemd
/// only warns about unknown keys and bad values, and still exits 0.
pub fn verify(dir: &Path, units: &[&str]) -> Result<(), String> {
    require_tool("systemd-analyze", "systemd");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| format!("./{u}")))
        .current_dir(dir)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {units:?}: {}\n{stderr}",
            out.status
        ))
    }
}

/// Every `Key=value` line of a unit file or drop-in, in order (comments,
/// blank lines and `[Section]` headers left out).
pub fn entries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The values of `key` in a unit file, in order.
pub fn values(path: &Path, key: &str) -> Vec<String> {
    entries(path)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// `systemd-analyze security --offline`: `Ok` with the overall exposure
/// line when it is at most `threshold` tenths (systemd's 0–100 scale, so
/// 6 means "exposure level 0.6"), `Err` with the whole table otherwise.
pub fn security(dir: &Path, unit: &str, threshold: u32) -> Result<String, String> {
    require_tool("systemd-analyze", "systemd");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={threshold}"))
        .arg(format!("./{unit}"))
        .current_dir(dir)
        .output()
        .expect("run systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_owned();
    if out.status.success() && !overall.is_empty() {
        Ok(overall)
    } else {
        Err(format!(
            "{unit}: exposure above {threshold}/100 ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
