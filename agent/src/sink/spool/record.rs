//! Record framing: `[len u32 LE][crc32c u32 LE][written_at_us u64 LE][payload]`.
//!
//! The CRC covers the timestamp and the payload, so a torn or bit-flipped
//! record is recognised on the next open instead of being shipped.

use std::io::{self, Read};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Largest payload accepted; anything larger in a file is corruption.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], written_at_us: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&header(payload, written_at_us));
    out.extend_from_slice(payload);
}

/// The bytes that go before `payload` in its record: a writer that already buffers writes
/// them and the payload one after the other, instead of first copying both into one frame.
pub fn header(payload: &[u8], written_at_us: u64) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload.len()).expect("payload bounded by MAX_PAYLOAD");
    let ts = written_at_us.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&ts), payload);
    let mut out = [0; HEADER_LEN];
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out[8..16].copy_from_slice(&ts);
    out
}

/// Framed size of a payload of `len` bytes.
pub fn framed_len(len: usize) -> u64 {
    (HEADER_LEN + len) as u64
}

/// What the next bytes of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole, valid record; its payload is in the caller's buffer.
    Record {
        /// When it was written (µs since epoch).
        written_at_us: u64,
    },
    /// Clean end of the file.
    End,
    /// A partial or corrupt record starts here.
    Torn(&'static str),
}

/// Reads the next record into `payload`.
pub fn read_next(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Next> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < HEADER_LEN {
        return Ok(Next::Torn("partial header"));
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let ts: [u8; 8] = header[8..16].try_into().expect("8 bytes");
    if len > MAX_PAYLOAD {
        return Ok(Next::Torn("length out of range"));
    }
    payload.clear();
    payload.resize(len, 0);
    if read_full(r, payload)? < len {
        return Ok(Next::Torn("partial payload"));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&ts), payload) != crc {
        return Ok(Next::Torn("checksum mismatch"));
    }
    Ok(Next::Record {
        written_at_us: u64::from_le_bytes(ts),
    })
}

/// Like `read_exact`, but reports how much was read at end of file.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_every_tear_is_detected() {
        let mut file = Vec::new();
        frame(b"hello", 7, &mut file);
        let mut buf = Vec::new();
        let mut r = &file[..];
        assert_eq!(
            read_next(&mut r, &mut buf).unwrap(),
            Next::Record { written_at_us: 7 }
        );
        assert_eq!(buf, b"hello");
        assert_eq!(read_next(&mut r, &mut buf).unwrap(), Next::End);
        for cut in 1..file.len() {
            let mut r = &file[..cut];
            assert!(
                matches!(read_next(&mut r, &mut buf).unwrap(), Next::Torn(_)),
                "cut {cut}"
            );
        }
        let mut flipped = file.clone();
        flipped[HEADER_LEN + 1] ^= 1;
        assert_eq!(
            read_next(&mut &flipped[..], &mut buf).unwrap(),
            Next::Torn("checksum mismatch")
        );
    }
}
