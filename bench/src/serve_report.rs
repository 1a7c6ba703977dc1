//! The server benchmark's report: targets (issues 3 and 4) computed from
//! the measurements, `bench/results/serve.md`, `serve.tsv` and the plot.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::memory::{CLIENTS, MemoryUse};
use crate::report;
use crate::results::{Bound, Results, Target, targets_markdown, targets_tsv};
use crate::signing::{
    SIGN_IN_PROCESS, SIGN_OVER_SOCKET, SIGNER_COLD, SIGNER_KEPT, SIGNER_NGINX, SIGNER_NONE,
    SIGNER_WARM,
};

const MIB: f64 = (1 << 20) as f64;
/// Memory ceilings while [`CLIENTS`] download a 1 GiB NAR (issue 13):
/// identity, zstd.
const RSS_LIMIT_MIB: [(&str, f64); 2] = [("identity", 64.0), ("zstd", 128.0)];

/// The identity scenarios whose server CPU is summed for the CPU target,
/// larder's pass with the nginx pass it is paired with.
const IDENTITY_SCENARIOS: [(&str, &str); 3] = [
    (
        "narinfo, 1 connection: larder, memo off",
        "narinfo, 1 connection: nginx",
    ),
    ("NAR, 1 conn: larder", "NAR, 1 conn: nginx"),
    ("NAR, 16 conn: larder", "NAR, 16 conn: nginx"),
];

/// What was served.
pub struct Closure {
    pub paths: usize,
    pub nar_bytes: u64,
    pub zstd_export_bytes: u64,
    pub big_nar_bytes: u64,
}

/// larder's time over nginx's for the same kind of pass (passes paired).
fn versus_nginx(results: &Results, name: &str, larder: &str, nginx: &str, limit: f64) -> Target {
    Target {
        name: name.to_owned(),
        measured: results.time_ratio(larder, nginx),
        bound: Bound::AtMost,
        limit,
        unit: "×",
        how: format!("time of `{larder}` / `{nginx}`, median of paired passes"),
        cpu: results.cpu_ratio(larder, nginx),
    }
}

/// Cold zstd throughput (NAR bytes per second) over the `zstd` CLI's.
fn versus_zstd_cli(
    results: &Results,
    closure: &Closure,
    all_nars: u64,
    (label, larder): (&str, &str),
) -> Target {
    let cli = "zstd -1 -T0 of the concatenated NARs";
    // Throughput ratio = (bytes ratio) / (time ratio), passes paired.
    let bytes = closure.nar_bytes as f64 / all_nars as f64;
    let measured = results.time_ratio(larder, cli).map(|t| bytes / t);
    Target {
        name: format!("cold zstd vs `zstd -1 -T0`, {label}"),
        measured,
        bound: Bound::AtLeast,
        limit: 0.8,
        unit: "×",
        how: format!("NAR MiB/s of `{larder}` / input MiB/s of `{cli}`, median of paired passes"),
        cpu: results.cpu_ratio(larder, cli).map(|c| bytes / c),
    }
}

/// The server CPU of larder over nginx's, summed over
/// [`IDENTITY_SCENARIOS`] (median CPU per pass of each).
fn identity_cpu(results: &Results) -> Target {
    let sum = |larder: bool| -> Option<f64> {
        IDENTITY_SCENARIOS
            .iter()
            .map(|(l, n)| results.cpu_per_pass(if larder { l } else { n }))
            .sum()
    };
    let measured = sum(true).zip(sum(false)).map(|(l, n)| l / n);
    Target {
        name: "server CPU over the identity scenarios".to_owned(),
        measured,
        bound: Bound::AtMost,
        limit: 1.5,
        unit: "×",
        how: "larder's CPU / nginx's, summed over narinfo (memo off) and NARs with 1 and 16 connections, median CPU per pass".to_owned(),
        cpu: measured,
    }
}

/// Every target of issues 3, 4 and 13 that this run measured.
pub fn targets(
    results: &Results,
    memory: &[MemoryUse],
    closure: &Closure,
    all_nars: u64,
) -> Vec<Target> {
    let mut targets = vec![
        versus_nginx(
            results,
            "narinfo, sequential",
            "narinfo, 1 connection: larder",
            "narinfo, 1 connection: nginx",
            1.1,
        ),
        versus_nginx(
            results,
            "narinfo, sequential, server's memo off",
            "narinfo, 1 connection: larder, memo off",
            "narinfo, 1 connection: nginx",
            1.1,
        ),
        versus_nginx(
            results,
            "NARs, 1 connection",
            "NAR, 1 conn: larder",
            "NAR, 1 conn: nginx",
            1.1,
        ),
        versus_nginx(
            results,
            "NARs, 16 connections",
            "NAR, 16 conn: larder",
            "NAR, 16 conn: nginx",
            1.1,
        ),
        identity_cpu(results),
    ];
    for (n, limit) in [(1, 1.5), (16, 1.2)] {
        targets.push(versus_nginx(
            results,
            &format!("zstd warm (.nar.zst), {n} conn"),
            &format!("zstd warm, .nar.zst, {n} conn: larder"),
            &format!("zstd, {n} conn: nginx (pre-compressed)"),
            limit,
        ));
        // Behind an nginx front (CPU: front and larder together).
        for how in ["proxied", "accel-redirect"] {
            targets.push(versus_nginx(
                results,
                &format!("zstd warm (.nar.zst), {n} conn, behind nginx, {how}"),
                &format!("zstd warm, .nar.zst, {n} conn: nginx → larder, {how}"),
                &format!("zstd, {n} conn: nginx (pre-compressed)"),
                limit,
            ));
        }
    }
    targets.push(versus_nginx(
        results,
        "zstd warm (Content-Encoding), 1 conn",
        "zstd warm, Content-Encoding, 1 conn: larder",
        "zstd, 1 conn: nginx (pre-compressed)",
        1.5,
    ));
    for pair in [
        (
            "Content-Encoding, 1 conn",
            "zstd cold, Content-Encoding, 1 conn: larder",
        ),
        (
            "Content-Encoding, 16 conn",
            "zstd cold, Content-Encoding, 16 conn: larder",
        ),
        (
            ".nar.zst filling the cache, 1 conn",
            "zstd cold, .nar.zst, 1 conn: larder",
        ),
    ] {
        targets.push(versus_zstd_cli(results, closure, all_nars, pair));
    }
    targets.push(versus_nginx(
        results,
        "narinfo through larder-signer, cache warm",
        SIGNER_WARM,
        SIGNER_NGINX,
        1.1,
    ));
    targets.push(versus_nginx(
        results,
        "narinfo through larder-signer, cache cold (fresh server, no cache dir)",
        SIGNER_COLD,
        SIGNER_NGINX,
        1.3,
    ));
    targets.push(versus_nginx(
        results,
        "narinfo through larder-signer, restarted (signatures kept)",
        SIGNER_KEPT,
        SIGNER_NGINX,
        1.3,
    ));
    for m in memory {
        targets.push(Target {
            name: format!(
                "peak RSS, {CLIENTS} clients × 1 NAR of {:.0} MiB, {}",
                closure.big_nar_bytes as f64 / MIB,
                m.encoding
            ),
            measured: Some(m.peak_rss_kib.max(m.hwm_kib) as f64 / 1024.0),
            bound: Bound::AtMost,
            limit: RSS_LIMIT_MIB
                .iter()
                .find(|(e, _)| *e == m.encoding)
                .map_or(64.0, |(_, l)| *l),
            unit: " MiB",
            how: "max of sampled VmRSS and final VmHWM".to_owned(),
            cpu: None,
        });
    }
    targets
}

fn memory_markdown(memory: &[MemoryUse]) -> String {
    let mut md = String::from(
        "| encoding | idle RSS | peak sampled RSS | VmHWM | window | received by all clients |\n|---|---|---|---|---|---|\n",
    );
    for m in memory {
        let _ = writeln!(
            md,
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1?} | {:.0} MiB ({:.0} MiB/s) |",
            m.encoding,
            m.idle_kib as f64 / 1024.0,
            m.peak_rss_kib as f64 / 1024.0,
            m.hwm_kib as f64 / 1024.0,
            m.window,
            m.received as f64 / MIB,
            m.received as f64 / MIB / m.window.as_secs_f64()
        );
    }
    md
}

/// The cost of isolating the key, per fingerprint and per narinfo.
fn signer_markdown(results: &Results, paths: usize) -> String {
    let per_path = |name: &str| results.seconds(name).map(|s| s * 1e6 / paths as f64);
    let mut md = String::from("\n## Signer: the cost of isolation\n\n| | µs each |\n|---|---|\n");
    let rows = [
        (
            "one ed25519 signature in-process (`SecretKey::sign`)",
            SIGN_IN_PROCESS,
        ),
        (
            "one signature from larder-signer over its socket (frame, store DB check, sign)",
            SIGN_OVER_SOCKET,
        ),
        ("narinfo, larder without signer", SIGNER_NONE),
        (
            "narinfo through larder-signer, signature cache cold",
            SIGNER_COLD,
        ),
        (
            "narinfo through larder-signer, restarted, signatures kept in the cache dir",
            SIGNER_KEPT,
        ),
        (
            "narinfo through larder-signer, signature cache warm",
            SIGNER_WARM,
        ),
        ("narinfo, nginx static", SIGNER_NGINX),
    ];
    for (label, name) in rows {
        let value = per_path(name).map_or(
            "not measured (no `--signer-socket` in this larder-server)".to_owned(),
            |us| format!("{us:.1}"),
        );
        let _ = writeln!(md, "| {label} | {value} |");
    }
    md
}

/// The inputs of [`write`] beyond the measurements.
pub struct RunInfo<'a> {
    pub closure: &'a Closure,
    pub all_nars: u64,
    pub load_before: &'a str,
    pub load_after: &'a str,
    pub elapsed: Duration,
    pub notes: &'a str,
}

/// Writes `serve.md`, `serve.tsv` and (with python3 + matplotlib)
/// `serve.png` under `dir`.
pub fn write(
    dir: &Path,
    results: &Results,
    memory: &[MemoryUse],
    run: &RunInfo,
) -> Result<(), Error> {
    let targets = targets(results, memory, run.closure, run.all_nars);
    let mut md = String::from("# larder-server against nginx\n\n");
    writeln!(
        md,
        "Machine: {}; load average {} at the start, {} at the end (the machine is shared: wall times are noisy, the CPU-time ratios much less so). One full run took {:.0?}.\n",
        report::machine()?,
        run.load_before,
        run.load_after,
        run.elapsed
    )?;
    writeln!(
        md,
        "Closure: {} store paths, {:.0} MiB of NAR (the `nar_dump` closure; real files); the `nix copy --to file://…?compression=zstd` export holds {:.0} MiB of .nar.zst. Clients: the bench crate's own keep-alive HTTP/1.1 client (`bench/src/http.rs`), the same for both servers; bodies counted and discarded, never decompressed. Warm one pass of everything first; every measurement repeated, median reported.\n",
        run.closure.paths,
        run.closure.nar_bytes as f64 / MIB,
        run.closure.zstd_export_bytes as f64 / MIB
    )?;
    md.push_str("## Targets\n\n");
    md.push_str(&targets_markdown(&targets));
    md.push_str("\n![ratios against targets](serve.png)\n\n## Every measurement\n\n");
    md.push_str(&results.markdown());
    writeln!(
        md,
        "\n## Memory: {CLIENTS} clients downloading one NAR of {:.0} MiB at once\n",
        run.closure.big_nar_bytes as f64 / MIB
    )?;
    md.push_str(&memory_markdown(memory));
    md.push_str(&signer_markdown(results, run.closure.paths));
    md.push_str(&stalled_markdown(dir));
    md.push_str(run.notes);
    print!("{md}");
    fs::create_dir_all(dir)?;
    fs::write(dir.join("serve.md"), md)?;
    fs::write(dir.join("serve.tsv"), targets_tsv(&targets))?;
    plot(dir)
}

/// Issue 9's stalled-readers scenario, as `stalled` last wrote it
/// (`bench/results/stalled.md`; run it right after `serve`).
fn stalled_markdown(dir: &Path) -> String {
    match fs::read_to_string(dir.join("stalled.md")) {
        Ok(text) => {
            let body = text
                .lines()
                .skip_while(|l| l.starts_with("# "))
                .collect::<Vec<_>>()
                .join("\n");
            format!(
                "\n## Stalled readers (issue 9; `target/release/stalled`, [stalled.md](stalled.md))\n{body}\n"
            )
        }
        Err(_) => {
            "\n## Stalled readers\n\nNot measured: run `target/release/stalled` after `serve`.\n"
                .to_owned()
        }
    }
}

/// `bench/plot_serve.py` on `serve.tsv`; a missing matplotlib is a warning.
fn plot(dir: &Path) -> Result<(), Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("plot_serve.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(dir.join("serve.tsv"))
        .arg(dir.join("serve.png"))
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        other => {
            eprintln!("warning: no plot ({other:?}); pip install matplotlib");
            Ok(())
        }
    }
}
