//! What every report needs: the machine it ran on and medians.

use std::fs;

use crate::Error;

/// The median of a non-empty list (the upper one for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The load average (1, 5, 15 minutes) as `/proc/loadavg` says.
pub fn load_average() -> Result<String, Error> {
    let load = fs::read_to_string("/proc/loadavg")?;
    Ok(load.split(' ').take(3).collect::<Vec<_>>().join(" "))
}

/// Cores, CPU model and load, for the top of a report.
pub fn machine() -> Result<String, Error> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |l| l.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism()?;
    Ok(format!(
        "{cores} cores (nproc), {model}; load average {} when the report was written (the machine is shared: wall times are noisy; the benchmark's own load is in it)",
        load_average()?
    ))
}
