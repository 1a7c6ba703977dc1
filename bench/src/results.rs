//! Timed passes by name, their medians, and targets checked against them,
//! as Markdown (the report) and TSV (the plot's input).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::load::Pass;
use crate::report::median;

const MIB: f64 = (1 << 20) as f64;

/// Every pass of every measurement, in the order they were first recorded.
#[derive(Default)]
pub struct Results {
    order: Vec<String>,
    passes: BTreeMap<String, Vec<Pass>>,
}

impl Results {
    pub fn record(&mut self, name: &str, pass: Pass) {
        println!(
            "{name}: {:.3?}, {:.1} MiB",
            pass.elapsed,
            pass.bytes as f64 / MIB
        );
        if !self.passes.contains_key(name) {
            self.order.push(name.to_owned());
        }
        self.passes.entry(name.to_owned()).or_default().push(pass);
    }

    /// The median time of a measurement, in seconds.
    pub fn seconds(&self, name: &str) -> Option<f64> {
        let passes = self.passes.get(name)?;
        Some(median(
            passes.iter().map(|p| p.elapsed.as_secs_f64()).collect(),
        ))
    }

    /// `a`'s time over `b`'s: the median of the ratios of passes taken
    /// side by side (the i-th of each), which cancels most of a shared
    /// machine's drifting load; the ratio of medians when they do not pair.
    pub fn time_ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (pa, pb) = (self.passes.get(a)?, self.passes.get(b)?);
        if pa.len() != pb.len() {
            return Some(self.seconds(a)? / self.seconds(b)?);
        }
        let ratios = pa
            .iter()
            .zip(pb)
            .map(|(x, y)| x.elapsed.as_secs_f64() / y.elapsed.as_secs_f64())
            .collect();
        Some(median(ratios))
    }

    /// The CPU time a measurement's passes used in all, per pass, in
    /// seconds (where it was measured).
    pub fn cpu_per_pass(&self, name: &str) -> Option<f64> {
        let passes = self.passes.get(name)?;
        let total: f64 = passes
            .iter()
            .map(|p| p.cpu.map(|c| c.as_secs_f64()))
            .sum::<Option<f64>>()?;
        Some(total / passes.len() as f64)
    }

    /// `a`'s CPU time per pass over `b`'s: less sensitive than wall time
    /// to the machine's other load.
    pub fn cpu_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.cpu_per_pass(a)? / self.cpu_per_pass(b)?)
    }

    /// Every measurement: its passes, median and bytes.
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "| measurement | passes | median | body bytes | server CPU per pass |\n|---|---|---|---|---|\n",
        );
        for name in &self.order {
            let passes = &self.passes[name];
            let times: Vec<String> = passes
                .iter()
                .map(|p| format!("{:.3?}", p.elapsed))
                .collect();
            let _ = writeln!(
                md,
                "| {name} | {} | {:.3} s | {:.1} MiB | {} |",
                times.join(", "),
                self.seconds(name).unwrap_or(f64::NAN),
                passes[0].bytes as f64 / MIB,
                self.cpu_per_pass(name)
                    .map_or("–".to_owned(), |c| format!("{c:.3} s"))
            );
        }
        md
    }
}

/// Whether a target is a ceiling or a floor.
#[derive(Clone, Copy)]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// A number measured against the number it should beat.
pub struct Target {
    pub name: String,
    pub measured: Option<f64>,
    pub bound: Bound,
    pub limit: f64,
    /// `×` for ratios, `MiB` for memory.
    pub unit: &'static str,
    /// How the number is made.
    pub how: String,
    /// The same comparison in server CPU time, where measured.
    pub cpu: Option<f64>,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(match self.bound {
            Bound::AtMost => m <= self.limit,
            Bound::AtLeast => m >= self.limit,
        })
    }

    fn bound_text(&self) -> String {
        let op = match self.bound {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
        };
        format!("{op} {}{}", self.limit, self.unit)
    }
}

/// The targets as a Markdown table.
pub fn targets_markdown(targets: &[Target]) -> String {
    let mut md = String::from(
        "| target | measured | bound | met | same in CPU time | how |\n|---|---|---|---|---|---|\n",
    );
    for t in targets {
        let measured = t
            .measured
            .map_or("not measured".to_owned(), |m| format!("{m:.2}{}", t.unit));
        let met = match t.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            md,
            "| {} | {measured} | {} | {met} | {} | {} |",
            t.name,
            t.bound_text(),
            t.cpu
                .map_or("–".to_owned(), |c| format!("{c:.2}{}", t.unit)),
            t.how
        );
    }
    md
}

/// The targets as tab-separated values: name, measured, limit, bound,
/// unit, CPU-time ratio.
pub fn targets_tsv(targets: &[Target]) -> String {
    let mut tsv = String::from("name\tmeasured\tlimit\tbound\tunit\tcpu\n");
    for t in targets {
        let Some(m) = t.measured else { continue };
        let bound = match t.bound {
            Bound::AtMost => "at-most",
            Bound::AtLeast => "at-least",
        };
        let cpu = t.cpu.map_or(String::new(), |c| format!("{c:.4}"));
        let _ = writeln!(
            tsv,
            "{}\t{m:.4}\t{}\t{bound}\t{}\t{cpu}",
            t.name, t.limit, t.unit
        );
    }
    tsv
}
