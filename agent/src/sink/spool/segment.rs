//! The active segment's file as the writer's buffer sees it: a file that can be told to
//! discard what it is handed, so a cut drains the buffered bytes of given-up rows to nowhere
//! (a buffer flushed or dropped later would otherwise write them after the cut).

use std::fs::File;
use std::io::{self, BufWriter, Write};

/// The writer's buffer capacity: rows are gathered into writes of up to this many bytes (a
/// longer row goes to the file on its own).
const BUFFER: usize = 256 << 10;

/// The segment file under the writer's buffer.
#[derive(Debug)]
pub(super) struct SegmentFile {
    file: File,
    discarding: bool,
}

impl SegmentFile {
    /// `file` behind a fresh buffer.
    pub(super) fn buffered(file: File) -> BufWriter<Self> {
        BufWriter::with_capacity(
            BUFFER,
            Self {
                file,
                discarding: false,
            },
        )
    }

    /// The file, for what goes around the buffer (`fsync`, `set_len`).
    pub(super) fn file(&self) -> &File {
        &self.file
    }
}

/// Throws away every byte `buf` still holds, writing none of them.
pub(super) fn discard_buffered(buf: &mut BufWriter<SegmentFile>) {
    buf.get_mut().discarding = true;
    // Nothing can fail while discarding: the buffer only hands its bytes over.
    let drained = buf.flush();
    buf.get_mut().discarding = false;
    debug_assert!(drained.is_ok() && buf.buffer().is_empty());
}

impl Write for SegmentFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.discarding {
            return Ok(bytes.len());
        }
        self.file.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.discarding {
            return Ok(());
        }
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn discarded_bytes_never_reach_the_file_and_later_ones_do() {
        let mut f = tempfile::tempfile().unwrap();
        let mut buf = SegmentFile::buffered(f.try_clone().unwrap());
        buf.write_all(b"kept ").unwrap();
        buf.flush().unwrap();
        buf.write_all(b"given up").unwrap();
        discard_buffered(&mut buf);
        buf.write_all(b"after").unwrap();
        drop(buf);
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, "kept after");
    }
}
