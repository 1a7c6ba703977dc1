//! Our NAR encoder against the real Nix, on random trees: the bytes equal
//! `nix-store --dump`, the listing equals `nix nar ls --json -R`, and a
//! stream started at any offset equals the NAR's suffix.
//!
//! The trees come from a seeded RNG; the seed is printed, and `LARDER_SEED`
//! replays it. CI checks 200 random trees (and a few lone files and
//! symlinks), each against `nix-store --dump` and `nix nar ls`.
//!
//! The long run of issue 15 sets `LARDER_NAR_TREES=10000`: trees made and
//! checked in batches of 500 (little scratch space), each batch's NARs
//! taken from one `nix-store --export` (the same `dumpPath` as
//! `nix-store --dump`, without a process per path, which on a loaded
//! machine took 2 s a tree), compared with `write_to`, `stream(0)` and a
//! random range. Command and result in `docs/reliability.md`.

use std::collections::HashSet;
use std::fs;
use std::io::{BufReader, Read};
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
    if std::env::var_os("LARDER_NAR_TREES").is_some() {
        check_exported(&store, &store_paths, seed, runtime);
        return store_paths.len();
    }
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

/// One NAR string (length, bytes, zero padding) read from `r`, appended
/// to `out`; returns its bytes.
fn nar_string(r: &mut impl Read, out: &mut Vec<u8>) -> Vec<u8> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).unwrap();
    out.extend_from_slice(&len);
    let n = u64::from_le_bytes(len) as usize;
    let start = out.len();
    out.resize(start + n.div_ceil(8) * 8, 0);
    r.read_exact(&mut out[start..]).unwrap();
    out[start..start + n].to_vec()
}

/// One whole NAR read from `r`, its end found from its structure.
fn read_nar(r: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    assert_eq!(nar_string(r, &mut out), b"nix-archive-1");
    let mut depth = 0;
    loop {
        match &nar_string(r, &mut out)[..] {
            b"(" => depth += 1,
            b")" => {
                depth -= 1;
                if depth == 0 {
                    return out;
                }
            }
            b"type" | b"contents" | b"target" | b"name" | b"executable" => {
                nar_string(r, &mut out);
            }
            _ => {} // `entry`, `node`
        }
    }
}

fn read_u64(r: &mut impl Read) -> u64 {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Checks every path of `paths` against its NAR in one `nix-store
/// --export` of them all (Nix's export format: per path `1`, the NAR,
/// magic, path, references, deriver, `0`; then `0`).
fn check_exported(
    store: &TestStore,
    paths: &[String],
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) {
    let mut child = store
        .nix("nix-store")
        .arg("--export")
        .args(paths)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    while read_u64(&mut r) == 1 {
        let nar = read_nar(&mut r);
        assert_eq!(read_u64(&mut r), 0x4558_494e, "export magic");
        let path = String::from_utf8(nar_string(&mut r, &mut Vec::new())).unwrap();
        for _ in 0..read_u64(&mut r) {
            nar_string(&mut r, &mut Vec::new());
        }
        nar_string(&mut r, &mut Vec::new());
        assert_eq!(read_u64(&mut r), 0, "no legacy signature");
        let real = store.real_path(&path);
        let plan = NarPlan::walk(&real).unwrap();
        assert_eq!(plan.nar_size(), nar.len() as u64, "{real:?}");
        let mut written = Vec::new();
        plan.write_to(&mut written).unwrap();
        assert!(
            written == nar,
            "write_to differs from Nix's NAR for {real:?}"
        );
        let streamed = runtime.block_on(collect(plan.stream(0).unwrap())).unwrap();
        assert!(
            streamed == nar,
            "stream(0) differs from Nix's NAR for {real:?}"
        );
        let start = rng.gen_range(0..=nar.len());
        let end = rng.gen_range(start..=nar.len());
        let range = plan.stream_range(start as u64, end as u64).unwrap();
        let range = runtime.block_on(collect(range)).unwrap();
        assert!(
            range == nar[start..end],
            "stream_range({start}, {end}) of {real:?}"
        );
        seen.insert(path);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(seen.len(), paths.len(), "every path exported once");
}
