//! Our NAR encoder against the real Nix, on random trees: the bytes equal
//! `nix-store --dump`, the listing equals `nix nar ls --json -R`, and a
//! stream started at any offset equals the NAR's suffix.
//!
//! The trees come from a seeded RNG; the seed is printed, and `LARDER_SEED`
//! replays it. CI checks 200 random trees (and a few lone files and
//! symlinks); the long run of issue 15 sets `LARDER_NAR_TREES=10000`, made
//! and checked in batches of 500 so that the scratch space stays small
//! (command and result in `docs/reliability.md`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use larder_store::nar::NarPlan;
use larder_tests::nar_stream::collect;
use larder_tests::{TestStore, nix_command, run};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Random trees checked when `LARDER_NAR_TREES` is unset (CI).
const TREES: usize = 200;
/// Trees made, added to a fresh store and checked at a time.
const BATCH: usize = 500;
const SINGLE_FILES: usize = 8;
const SINGLE_SYMLINKS: usize = 4;

/// Names that are hard to get right: spaces, unicode, control characters,
/// leading dashes and dots, and names whose byte order differs from their
/// case-insensitive or locale order.
const ODD_NAMES: &[&str] = &[
    "a b",
    " lead",
    "trail ",
    "-rf",
    "--help",
    "new\nline",
    "tab\there",
    "ü",
    "u",
    "é",
    "e\u{301}",
    "日本語",
    "🎉",
    "B",
    "a",
    "A",
    "b",
    "Z",
    "_",
    "~",
    "ß",
    "ss",
    ".hidden",
    "...",
    "a.b",
    "a-b",
    "a_b",
    "\u{7f}",
    "1",
    "10",
    "9",
];

const SYMLINK_TARGETS: &[&str] = &[
    "a",
    "../a",
    "./x/../y",
    "/nix/store/00000000000000000000000000000000-absent",
    "/etc/passwd",
    "does/not/exist",
    "with space",
    "ü/日本語",
    "/",
    ".",
];

struct TreeMaker {
    rng: StdRng,
}

impl TreeMaker {
    fn name(&mut self) -> String {
        if self.rng.gen_bool(0.6) {
            ODD_NAMES[self.rng.gen_range(0..ODD_NAMES.len())].to_owned()
        } else {
            let len = self.rng.gen_range(1..12);
            (0..len)
                .map(|_| char::from(self.rng.gen_range(b' '..=b'~')))
                .map(|c| if c == '/' { '%' } else { c })
                .collect()
        }
    }

    fn file(&mut self, path: &Path) {
        let size = match self.rng.gen_range(0..100) {
            0..10 => 0,
            10..14 => self.rng.gen_range(1 << 20..3 << 20),
            14..40 => self.rng.gen_range(1..16),
            _ => self.rng.gen_range(1..20_000),
        };
        let mut contents = vec![0u8; size];
        self.rng.fill_bytes(&mut contents);
        fs::write(path, contents).unwrap();
        let mode = if self.rng.gen_bool(0.3) { 0o755 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn symlink(&mut self, path: &Path) {
        let target = SYMLINK_TARGETS[self.rng.gen_range(0..SYMLINK_TARGETS.len())];
        symlink(target, path).unwrap();
    }

    fn directory(&mut self, path: &Path, depth: u32) {
        fs::create_dir(path).unwrap();
        let entries = if depth > 3 {
            0
        } else {
            self.rng.gen_range(0..7)
        };
        for _ in 0..entries {
            let child = path.join(self.name());
            if fs::symlink_metadata(&child).is_ok() {
                continue;
            }
            match self.rng.gen_range(0..10) {
                0..5 => self.file(&child),
                5..7 => self.symlink(&child),
                _ => self.directory(&child, depth + 1),
            }
        }
    }
}

fn seed() -> u64 {
    let seed = std::env::var("LARDER_SEED")
        .map(|s| s.parse().expect("LARDER_SEED is a u64"))
        .unwrap_or_else(|_| rand::random());
    println!("nar_property seed: {seed} (replay with LARDER_SEED={seed})");
    seed
}

/// How many random trees to check: `LARDER_NAR_TREES`, or [`TREES`].
fn tree_count() -> usize {
    std::env::var("LARDER_NAR_TREES")
        .map(|s| s.parse().expect("LARDER_NAR_TREES is a count"))
        .unwrap_or(TREES)
}

/// Makes `trees` random roots under `dir` (and the lone files and
/// symlinks); returns their paths.
fn make_roots(dir: &Path, maker: &mut TreeMaker, trees: usize) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for i in 0..trees {
        let root = dir.join(format!("tree{i}"));
        maker.directory(&root, 0);
        roots.push(root);
    }
    for i in 0..SINGLE_FILES {
        let root = dir.join(format!("file{i}"));
        maker.file(&root);
        roots.push(root);
    }
    for i in 0..SINGLE_SYMLINKS {
        let root = dir.join(format!("symlink{i}"));
        maker.symlink(&root);
        roots.push(root);
    }
    roots
}

/// Checks one store path against `nix-store --dump` and `nix nar ls`.
fn check(real: &Path, scratch: &Path, rng: &mut StdRng, runtime: &tokio::runtime::Runtime) {
    let nar = run(nix_command("nix-store").arg("--dump").arg(real)).stdout;
    let plan = NarPlan::walk(real).unwrap();
    assert_eq!(plan.nar_size(), nar.len() as u64, "{real:?}");

    let mut written = Vec::new();
    plan.write_to(&mut written).unwrap();
    assert!(
        written == nar,
        "write_to differs from nix-store --dump for {real:?}"
    );

    let streamed = runtime.block_on(collect(plan.stream(0).unwrap())).unwrap();
    assert!(
        streamed == nar,
        "stream(0) differs from nix-store --dump for {real:?}"
    );

    for _ in 0..3 {
        let start = rng.gen_range(0..=nar.len());
        let end = rng.gen_range(start..=nar.len());
        let suffix = runtime.block_on(collect(plan.stream(start as u64).unwrap()));
        assert!(
            suffix.unwrap() == nar[start..],
            "stream({start}) of {real:?}"
        );
        let range = plan.stream_range(start as u64, end as u64).unwrap();
        let range = runtime.block_on(collect(range)).unwrap();
        assert!(
            range == nar[start..end],
            "stream_range({start}, {end}) of {real:?}"
        );
    }

    let nar_file = scratch
        .join(real.file_name().unwrap())
        .with_extension("nar");
    fs::write(&nar_file, &nar).unwrap();
    let out = run(nix_command("nix")
        .args(["nar", "ls", "--json", "-R"])
        .arg(&nar_file)
        .arg("/"));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.listing(), listing, "{real:?}");
    // And byte for byte, as `.ls` is sent: Nix's key order and escapes.
    let printed = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
    assert!(plan.listing_json() == printed, "{real:?}");
    fs::remove_file(nar_file).unwrap();
}

#[test]
fn random_trees_match_nix() {
    let seed = seed();
    let total = tree_count();
    let mut maker = TreeMaker {
        rng: StdRng::seed_from_u64(seed),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let (mut done, mut checked, mut batch) = (0, 0, 0u64);
    while done < total {
        let trees = BATCH.min(total - done);
        checked += check_batch(&mut maker, trees, seed ^ (batch << 8), &runtime);
        done += trees;
        batch += 1;
    }
    println!("nar_property: {done} random trees, {checked} store paths equal to nix-store --dump");
}

/// Makes `trees` random trees, adds them to a fresh store and checks each
/// (two checkers: the machine's Nix processes dominate the time); returns
/// how many store paths were checked.
fn check_batch(
    maker: &mut TreeMaker,
    trees: usize,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> usize {
    let work = tempfile::tempdir().unwrap();
    let roots = make_roots(work.path(), maker, trees);
    let store = TestStore::new();
    let store_paths = store.add(&roots);
    assert_eq!(store_paths.len(), roots.len());
    let (left, right) = store_paths.split_at(store_paths.len() / 2);
    std::thread::scope(|scope| {
        for (half, paths) in [left, right].into_iter().enumerate() {
            let (store, work) = (&store, work.path());
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ half as u64);
                for path in paths {
                    check(&store.real_path(path), work, &mut rng, runtime);
                }
            });
        }
    });
    store_paths.len()
}
