//! Reading a TLS ClientHello without losing bytes.
//!
//! The first bytes of a redirected connection are read into a buffer until a complete
//! ClientHello handshake message has arrived (it may span several TLS records), then parsed
//! for the server name (SNI) and the offered ALPN protocols. Every byte read is kept, so the
//! caller can replay them to a TLS server or to the original destination.
//!
//! The parser works on untrusted input: it only indexes through bounds-checked readers, and
//! every outcome that is not a well-formed ClientHello is a [`Sniff::NotHello`] value.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension numbers.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What the first bytes of a ClientHello say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The server name (lowercase), if the client sent SNI with a host name.
    pub sni: Option<String>,
    /// Offered ALPN protocols, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// Why bytes are not a usable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotHello {
    /// The first record is not a TLS handshake record.
    NotTls,
    /// A TLS handshake that does not parse as a ClientHello.
    Malformed,
    /// The connection closed before a complete ClientHello.
    Truncated,
    /// No complete ClientHello within the size bound.
    TooLarge,
    /// No complete ClientHello within the time bound.
    Timeout,
}

impl NotHello {
    /// Short stable name, for metric labels and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotTls => "not_tls",
            Self::Malformed => "malformed_client_hello",
            Self::Truncated => "truncated_client_hello",
            Self::TooLarge => "client_hello_too_large",
            Self::Timeout => "client_hello_timeout",
        }
    }
}

/// Outcome of parsing a buffer prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// A complete ClientHello.
    Hello(ClientHelloInfo),
    /// More bytes are needed.
    NeedMore,
    /// Not a ClientHello.
    NotHello(NotHello),
}

/// What [`read_client_hello`] saw, with every byte it read.
#[derive(Debug)]
pub struct Sniffed {
    /// All bytes read from the stream, to be replayed.
    pub buffered: Vec<u8>,
    /// The parsed ClientHello, or why there is none.
    pub hello: Result<ClientHelloInfo, NotHello>,
}

/// Reads from `stream` until a ClientHello is complete, at most `max_bytes` bytes and for at
/// most `timeout`. I/O errors are returned as such; the buffered bytes are then lost with the
/// connection anyway.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
    timeout: Duration,
) -> std::io::Result<Sniffed> {
    let mut buffered = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut chunk = [0u8; 4096];
        // Never read past the bound: bytes beyond it are not ours to hold.
        let room = max_bytes
            .saturating_sub(buffered.len())
            .clamp(1, chunk.len());
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await;
        let hello = match read {
            Err(_) => Err(NotHello::Timeout),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => Err(NotHello::Truncated),
            Ok(Ok(n)) => {
                buffered.extend_from_slice(&chunk[..n]);
                match parse(&buffered) {
                    Sniff::Hello(info) => Ok(info),
                    Sniff::NotHello(why) => Err(why),
                    Sniff::NeedMore if buffered.len() >= max_bytes => Err(NotHello::TooLarge),
                    Sniff::NeedMore => continue,
                }
            }
        };
        return Ok(Sniffed { buffered, hello });
    }
}

/// Parses the ClientHello at the start of `buf` (TLS records, possibly several).
pub fn parse(buf: &[u8]) -> Sniff {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return need_more_or_check(rest);
        }
        let (content_type, major) = (rest[0], rest[1]);
        if content_type != HANDSHAKE || major != 3 {
            return Sniff::NotHello(NotHello::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // A plaintext record holds at most 2^14 bytes; an empty handshake record is invalid.
        if len == 0 || len > 16_384 {
            return Sniff::NotHello(NotHello::Malformed);
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Sniff::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != CLIENT_HELLO {
            return Sniff::NotHello(NotHello::Malformed);
        }
        let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
        if let Some(body) = handshake.get(4..4 + body_len) {
            return match parse_hello_body(body) {
                Some(info) => Sniff::Hello(info),
                None => Sniff::NotHello(NotHello::Malformed),
            };
        }
    }
}

/// A short prefix: not TLS if its first byte already says so.
fn need_more_or_check(prefix: &[u8]) -> Sniff {
    match prefix.first() {
        Some(&b) if b != HANDSHAKE => Sniff::NotHello(NotHello::NotTls),
        _ => match prefix.get(1) {
            Some(&major) if major != 3 => Sniff::NotHello(NotHello::NotTls),
            _ => Sniff::NeedMore,
        },
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a `width`-byte length prefix.
    fn vec(&mut self, width: usize) -> Option<Reader<'a>> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len).map(Reader)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_hello_body(body: &[u8]) -> Option<ClientHelloInfo> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    let mut info = ClientHelloInfo::default();
    if r.is_empty() {
        return Some(info); // no extensions at all (ancient clients)
    }
    let mut exts = r.vec(2)?;
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let mut data = exts.vec(2)?;
        match ty {
            EXT_SERVER_NAME => info.sni = parse_sni(&mut data).ok()?,
            EXT_ALPN => info.alpn = parse_alpn(&mut data)?,
            _ => {}
        }
    }
    Some(info)
}

/// The host name of a server_name extension (`Ok(None)`: no host name entry).
fn parse_sni(data: &mut Reader<'_>) -> Result<Option<String>, ()> {
    let mut list = data.vec(2).ok_or(())?;
    while !list.is_empty() {
        let name_type = list.u8().ok_or(())?;
        let name = list.vec(2).ok_or(())?.0;
        // Type 0 is host_name; a name that is not printable ASCII is treated as unusable.
        if name_type == 0 {
            let valid = !name.is_empty()
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(());
            }
            let name = std::str::from_utf8(name).map_err(|_| ())?;
            return Ok(Some(name.trim_end_matches('.').to_ascii_lowercase()));
        }
    }
    Ok(None)
}

fn parse_alpn(data: &mut Reader<'_>) -> Option<Vec<Vec<u8>>> {
    let mut list = data.vec(2)?;
    let mut out = Vec::new();
    while !list.is_empty() {
        let proto = list.vec(1)?.0;
        if proto.is_empty() {
            return None;
        }
        out.push(proto.to_vec());
    }
    Some(out)
}

#[cfg(test)]
#[path = "sniff_tests.rs"]
mod tests;
