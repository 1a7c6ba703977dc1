use larder_tests::{TestStore, shell_derivation};

#[test]
fn chroot_store_builds_a_derivation() {
    let store = TestStore::new();
    let out = store.build_expr(&shell_derivation("smoke", "echo hi > $out"));
    assert_eq!(out.len(), 1);
    let content = std::fs::read_to_string(store.real_path(&out[0])).unwrap();
    assert_eq!(content, "hi\n");
}
