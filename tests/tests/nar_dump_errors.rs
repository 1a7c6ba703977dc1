//! A NAR dump that cannot be faithful fails with a typed error: files that
//! change size or vanish, file types a NAR cannot hold, offsets past the end.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use larder_store::dump::{CHUNK_SIZE, DumpError};
use larder_store::nar::NarPlan;
use larder_tests::nar_stream::collect;

const MIB: u64 = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap()
}

/// A directory holding one file `big` of `size` bytes.
fn dir_with_file(size: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    fs::write(&file, vec![7u8; size as usize]).unwrap();
    (dir, file)
}

fn assert_size_changed(err: DumpError, file: &Path, expected: u64, actual: u64) {
    match err {
        DumpError::SizeChanged {
            path,
            expected: e,
            actual: a,
        } => assert_eq!((path.as_path(), e, a), (file, expected, actual)),
        other => panic!("expected SizeChanged, got {other:?}"),
    }
}

#[test]
fn a_file_that_shrinks_during_a_stream_is_an_error() {
    let (dir, file) = dir_with_file(32 * MIB);
    let plan = NarPlan::walk(dir.path()).unwrap();
    runtime().block_on(async {
        let mut stream = plan.stream(0).unwrap();
        let first = stream.next_chunk().await.unwrap().unwrap();
        // The reader is at most a few chunks ahead: far from the end.
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(MIB)
            .unwrap();
        let mut received = first.len() as u64;
        let err = loop {
            match stream
                .next_chunk()
                .await
                .expect("an error, not a clean end")
            {
                Ok(chunk) => received += chunk.len() as u64,
                Err(e) => break e,
            }
        };
        assert!(received < plan.nar_size());
        assert_size_changed(err, &file, 32 * MIB, MIB);
        assert!(
            stream.next_chunk().await.is_none(),
            "nothing after the error"
        );
    });
}

/// A writer that appends to `file` on its first write: the reader has read
/// the first chunk and will find the file longer than the walk saw.
struct GrowOnFirstWrite<'a> {
    file: &'a Path,
    grown: bool,
}

impl Write for GrowOnFirstWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.grown {
            let mut f = OpenOptions::new().append(true).open(self.file)?;
            f.write_all(b"more")?;
            self.grown = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_file_that_grows_during_a_dump_is_an_error() {
    let size = 4 * CHUNK_SIZE as u64;
    let (dir, file) = dir_with_file(size);
    let plan = NarPlan::walk(dir.path()).unwrap();
    let mut out = GrowOnFirstWrite {
        file: &file,
        grown: false,
    };
    let err = plan.write_to(&mut out).unwrap_err();
    assert!(out.grown);
    assert_size_changed(err, &file, size, size + 4);
}

#[test]
fn a_file_that_grows_after_the_walk_is_an_error_even_when_tiny() {
    let (dir, file) = dir_with_file(3);
    let plan = NarPlan::walk(dir.path()).unwrap();
    fs::write(&file, b"four").unwrap();
    let err = plan.write_to(&mut io::sink()).unwrap_err();
    assert_size_changed(err, &file, 3, 4);
}

#[test]
fn a_file_that_vanishes_is_an_error() {
    let (dir, file) = dir_with_file(10);
    let plan = NarPlan::walk(dir.path()).unwrap();
    fs::remove_file(&file).unwrap();
    let err = runtime()
        .block_on(collect(plan.stream(0).unwrap()))
        .unwrap_err();
    match err {
        DumpError::Io { path, source } => {
            assert_eq!(path, file);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn sockets_and_fifos_cannot_go_into_a_nar() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fifo = tempfile::tempdir().unwrap();
    let fifo_path = fifo.path().join("fifo");
    larder_tests::run(std::process::Command::new("mkfifo").arg(&fifo_path));
    for (root, bad) in [(dir.path(), &socket), (fifo.path(), &fifo_path)] {
        match NarPlan::walk(root).unwrap_err() {
            DumpError::UnsupportedFileType { path } => assert_eq!(&path, bad),
            other => panic!("expected UnsupportedFileType, got {other:?}"),
        }
    }
}

#[test]
fn offsets_past_the_end_are_refused_and_the_end_gives_an_empty_stream() {
    let (dir, _file) = dir_with_file(10);
    let plan = NarPlan::walk(dir.path()).unwrap();
    let size = plan.nar_size();
    assert!(matches!(
        plan.stream(size + 1),
        Err(DumpError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        plan.stream_range(5, 4),
        Err(DumpError::OffsetOutOfRange { .. })
    ));
    let rest = runtime().block_on(collect(plan.stream(size).unwrap()));
    assert_eq!(rest.unwrap(), b"");
}

#[test]
fn dropping_a_stream_closes_its_file() {
    let (dir, file) = dir_with_file(64 * MIB);
    let plan = NarPlan::walk(dir.path()).unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let mut stream = plan.stream(0).unwrap();
        stream.next_chunk().await.unwrap().unwrap();
        assert!(file_is_open(&file), "the reader holds the file mid-stream");
    });
    // The reader notices the dropped stream at its next send; wait for it
    // (bounded), then see the file closed.
    for _ in 0..500 {
        if !file_is_open(&file) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the reader kept {file:?} open after the stream was dropped");
}

fn file_is_open(file: &Path) -> bool {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target == file)
}

#[tokio::test]
async fn walk_async_sees_what_walk_sees() {
    let (dir, _file) = dir_with_file(10);
    let plan = NarPlan::walk_async(dir.path().to_owned()).await.unwrap();
    assert_eq!(plan.listing(), NarPlan::walk(dir.path()).unwrap().listing());
    let missing = dir.path().join("missing");
    assert!(matches!(
        NarPlan::walk_async(missing).await,
        Err(DumpError::Io { .. })
    ));
}
