//! Helpers for tests of NAR streams.

use larder_store::dump::{DumpError, NarStream};

/// All the bytes of `stream`, or its first error.
pub async fn collect(mut stream: NarStream) -> Result<Vec<u8>, DumpError> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
