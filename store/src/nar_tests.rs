//! Exact bytes of tiny NARs, taken from `nix-store --dump` (Nix 2.8).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;

use super::*;

const FILE_HI: &str = "0d000000000000006e69782d617263686976652d3100000001000000000000002800000000000000040000000000000074797065000000000700000000000000726567756c6172000800000000000000636f6e74656e7473030000000000000068690a000000000001000000000000002900000000000000";
const EMPTY_EXECUTABLE: &str = "0d000000000000006e69782d617263686976652d3100000001000000000000002800000000000000040000000000000074797065000000000700000000000000726567756c6172000a0000000000000065786563757461626c6500000000000000000000000000000800000000000000636f6e74656e7473000000000000000001000000000000002900000000000000";
const SYMLINK_A: &str = "0d000000000000006e69782d617263686976652d310000000100000000000000280000000000000004000000000000007479706500000000070000000000000073796d6c696e6b00060000000000000074617267657400000100000000000000610000000000000001000000000000002900000000000000";
const EMPTY_DIR: &str = "0d000000000000006e69782d617263686976652d31000000010000000000000028000000000000000400000000000000747970650000000009000000000000006469726563746f72790000000000000001000000000000002900000000000000";
/// `{a: "x" executable, l -> a, sub: {e: ""}}`
const SMALL_DIR: &str = "0d000000000000006e69782d617263686976652d31000000010000000000000028000000000000000400000000000000747970650000000009000000000000006469726563746f7279000000000000000500000000000000656e7472790000000100000000000000280000000000000004000000000000006e616d65000000000100000000000000610000000000000004000000000000006e6f64650000000001000000000000002800000000000000040000000000000074797065000000000700000000000000726567756c6172000a0000000000000065786563757461626c6500000000000000000000000000000800000000000000636f6e74656e74730100000000000000780000000000000001000000000000002900000000000000010000000000000029000000000000000500000000000000656e7472790000000100000000000000280000000000000004000000000000006e616d650000000001000000000000006c0000000000000004000000000000006e6f6465000000000100000000000000280000000000000004000000000000007479706500000000070000000000000073796d6c696e6b00060000000000000074617267657400000100000000000000610000000000000001000000000000002900000000000000010000000000000029000000000000000500000000000000656e7472790000000100000000000000280000000000000004000000000000006e616d65000000000300000000000000737562000000000004000000000000006e6f646500000000010000000000000028000000000000000400000000000000747970650000000009000000000000006469726563746f7279000000000000000500000000000000656e7472790000000100000000000000280000000000000004000000000000006e616d65000000000100000000000000650000000000000004000000000000006e6f64650000000001000000000000002800000000000000040000000000000074797065000000000700000000000000726567756c6172000800000000000000636f6e74656e747300000000000000000100000000000000290000000000000001000000000000002900000000000000010000000000000029000000000000000100000000000000290000000000000001000000000000002900000000000000";

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn file(path: &str, size: u64, executable: bool) -> NarNode {
    NarNode::Regular {
        size,
        executable,
        path: PathBuf::from(path),
    }
}

fn symlink(target: &str) -> NarNode {
    NarNode::Symlink {
        target: target.into(),
    }
}

fn dir(entries: Vec<(&str, NarNode)>) -> NarNode {
    NarNode::Directory {
        entries: entries
            .into_iter()
            .map(|(name, node)| (name.as_bytes().to_vec(), node))
            .collect(),
    }
}

fn small_dir() -> NarNode {
    dir(vec![
        ("a", file("/x/a", 1, true)),
        ("l", symlink("a")),
        ("sub", dir(vec![("e", file("/x/sub/e", 0, false))])),
    ])
}

/// The NAR's bytes, with file contents looked up in `files`.
fn render(plan: &NarPlan, files: &HashMap<&Path, &[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in plan.segments() {
        assert_eq!(segment.nar_offset, out.len() as u64);
        match segment.data {
            SegmentData::Literal(bytes) => out.extend_from_slice(bytes),
            SegmentData::Contents { path, size } => {
                let contents = files[path];
                assert_eq!(contents.len() as u64, size);
                out.extend_from_slice(contents);
            }
        }
    }
    assert_eq!(out.len() as u64, plan.nar_size());
    out
}

#[test]
fn tiny_trees_encode_as_nix_does() {
    let files: HashMap<&Path, &[u8]> = [
        (Path::new("/x/hi"), &b"hi\n"[..]),
        (Path::new("/x/e"), b""),
        (Path::new("/x/a"), b"x"),
        (Path::new("/x/sub/e"), b""),
    ]
    .into();
    let cases = [
        (file("/x/hi", 3, false), FILE_HI),
        (file("/x/e", 0, true), EMPTY_EXECUTABLE),
        (symlink("a"), SYMLINK_A),
        (dir(vec![]), EMPTY_DIR),
        (small_dir(), SMALL_DIR),
    ];
    for (tree, expected) in cases {
        let plan = NarPlan::new(tree.clone()).unwrap();
        assert_eq!(render(&plan, &files), unhex(expected), "{tree:?}");
    }
}

#[test]
fn listing_matches_nix_nar_ls() {
    // Printed by `nix nar ls --json -R dir.nar /` for SMALL_DIR.
    let expected = json!({"type":"directory","entries":{
        "a":{"type":"regular","size":1,"executable":true,"narOffset":264},
        "l":{"type":"symlink","target":"a"},
        "sub":{"type":"directory","entries":{"e":{"type":"regular","size":0,"narOffset":784}}}}});
    assert_eq!(NarPlan::new(small_dir()).unwrap().listing(), expected);
    // The same listing as bytes, in Nix's key order.
    let bytes = NarPlan::new(small_dir()).unwrap().listing_json();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"type":"directory","entries":{"a":{"type":"regular","size":1,"executable":true,"narOffset":264},"l":{"type":"symlink","target":"a"},"sub":{"type":"directory","entries":{"e":{"type":"regular","size":0,"narOffset":784}}}}}"#
    );
}

#[test]
fn listing_json_keeps_names_as_bytes() {
    let link = |target: &[u8]| NarNode::Symlink {
        target: target.to_vec(),
    };
    let tree = NarNode::Directory {
        entries: vec![
            (b"a\xfe".to_vec(), link(b"t\xff\"\\\x01\x08\n")),
            (b"a\xff".to_vec(), link(b"x")),
        ],
    };
    let bytes = NarPlan::new(tree).unwrap().listing_json();
    let mut expected = b"{\"type\":\"directory\",\"entries\":{\"a\xfe\":".to_vec();
    expected.extend_from_slice(
        b"{\"type\":\"symlink\",\"target\":\"t\xff\\\"\\\\\\u0001\\u0008\\n\"},",
    );
    expected.extend_from_slice(b"\"a\xff\":{\"type\":\"symlink\",\"target\":\"x\"}}}");
    assert_eq!(bytes, expected);
}

#[test]
fn locate_finds_the_segment_of_every_offset() {
    let plan = NarPlan::new(small_dir()).unwrap();
    // Literal up to a's contents, a's contents (1 byte at 264), literal up to
    // e's contents, e's empty contents (at 784), the tail literal.
    assert_eq!(plan.locate(0), Some((0, 0)));
    assert_eq!(plan.locate(263), Some((0, 263)));
    assert_eq!(plan.locate(264), Some((1, 0)));
    assert_eq!(plan.locate(265), Some((2, 0)));
    // The empty file's segment holds no byte: 784 is in the tail literal.
    assert_eq!(plan.locate(784), Some((4, 0)));
    assert_eq!(plan.locate(plan.nar_size() - 1), Some((4, 79)));
    assert_eq!(plan.locate(plan.nar_size()), None);
}

#[test]
fn refuses_bad_names_and_unsorted_entries() {
    for (name, reason) in [
        ("", BadName::Empty),
        (".", BadName::Dots),
        ("..", BadName::Dots),
        ("a/b", BadName::Slash),
        ("a\0b", BadName::Nul),
    ] {
        let err = NarPlan::new(dir(vec![("d", dir(vec![(name, symlink("x"))]))])).unwrap_err();
        assert_eq!(
            err,
            NarError::BadName {
                path: format!("/d/{name}"),
                reason
            }
        );
    }
    for names in [["b", "a"], ["a", "a"], ["a", "B"]] {
        let entries = names.iter().map(|n| (*n, symlink("x"))).collect();
        let err = NarPlan::new(dir(entries)).unwrap_err();
        assert!(matches!(err, NarError::Unsorted { .. }), "{names:?}");
    }
}

proptest! {
    #[test]
    fn every_offset_is_located_in_a_segment_that_holds_it(
        sizes in proptest::collection::vec(0u64..40, 0..6),
        probe in 0u64..2000,
    ) {
        let entries = sizes.iter().enumerate()
            .map(|(i, &size)| (format!("f{i}").into_bytes(), file("/f", size, i % 2 == 0)))
            .collect();
        let plan = NarPlan::new(NarNode::Directory { entries }).unwrap();
        let offset = probe % (plan.nar_size() + 1);
        match plan.locate(offset) {
            None => prop_assert_eq!(offset, plan.nar_size()),
            Some((index, within)) => {
                let segment = plan.segment(index).unwrap();
                prop_assert_eq!(segment.nar_offset + within, offset);
                prop_assert!(within < segment.len());
            }
        }
    }
}
