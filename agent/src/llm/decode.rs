//! Content decoding for analysis only (the forwarded bytes are never touched), bounded against
//! decompression bombs by an output size and an expansion ratio.

use std::borrow::Cow;
use std::io::{self, Read};

/// `bytes` as text, invalid sequences replaced by U+FFFD. The same result as
/// `String::from_utf8_lossy`, which walks every byte through its chunk iterator even when
/// the input is valid; bodies nearly always are, and a SIMD validator (32 bytes an
/// instruction where the CPU has AVX2) checks them several times faster than the standard
/// library's word-at-a-time one (2% of a full exchange's analysis was that check).
pub fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Bounds on decoded output.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Maximum decoded bytes.
    pub max_output: usize,
    /// Maximum decoded/encoded ratio (checked once the output passes 1 MiB, so small bodies of
    /// highly compressible JSON are never refused).
    pub max_ratio: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_output: 16 << 20,
            max_ratio: 200,
        }
    }
}

/// Decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("{0} content codings stacked (at most {MAX_CODINGS})")]
    TooManyCodings(usize),
    #[error("decoded body exceeds {0} bytes (decompression bound)")]
    TooLarge(usize),
    #[error("decoded body expands more than {0}x (decompression bomb bound)")]
    Ratio(usize),
    #[error("corrupt {encoding} body: {source}")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Most codings undone for one body. Real servers send one; each layer of a stack is its own
/// decompression bomb budget, so a longer stack is refused rather than unwound.
pub const MAX_CODINGS: usize = 2;

/// Decodes `body` per a `Content-Encoding` value (`gzip`, `x-gzip`, `br`, `zstd`, `deflate`,
/// `identity`, or a comma list applied in order). Returns the input itself, not a copy, when not
/// encoded.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limits: DecodeLimits,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let mut data = Cow::Borrowed(body);
    let Some(encoding) = encoding else {
        return Ok(data);
    };
    let codings = || {
        encoding
            .rsplit(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
    };
    let n = codings().count();
    if n > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings(n));
    }
    // Codings are listed in the order they were applied; undo them in reverse.
    for coding in codings() {
        data = Cow::Owned(decode_one(&coding.to_ascii_lowercase(), &data, limits)?);
    }
    Ok(data)
}

fn decode_one(coding: &str, input: &[u8], limits: DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    let (name, reader): (&'static str, Box<dyn Read + '_>) = match coding {
        "identity" => return Ok(input.to_vec()),
        "gzip" | "x-gzip" => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(input))),
        "deflate" => {
            // RFC 9110 deflate is zlib-wrapped; some servers send raw deflate anyway.
            if input.first().is_some_and(|b| b & 0x0f == 8) {
                ("deflate", Box::new(flate2::read::ZlibDecoder::new(input)))
            } else {
                (
                    "deflate",
                    Box::new(flate2::read::DeflateDecoder::new(input)),
                )
            }
        }
        "br" => ("br", Box::new(brotli::Decompressor::new(input, 4096))),
        "zstd" => {
            let d = ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| {
                DecodeError::Corrupt {
                    encoding: "zstd",
                    source: io::Error::other(e.to_string()),
                }
            })?;
            ("zstd", Box::new(d))
        }
        other => return Err(DecodeError::Unsupported(other.to_owned())),
    };
    read_bounded(name, reader, input.len(), limits)
}

fn read_bounded(
    name: &'static str,
    mut r: impl Read,
    input_len: usize,
    limits: DecodeLimits,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|source| DecodeError::Corrupt {
            encoding: name,
            source,
        })?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limits.max_output {
            return Err(DecodeError::TooLarge(limits.max_output));
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > (1 << 20) && out.len() / input_len.max(1) > limits.max_ratio {
            return Err(DecodeError::Ratio(limits.max_ratio));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const TEXT: &[u8] =
        b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let lim = DecodeLimits::default();
        assert_eq!(decode_body(Some("gzip"), &gzip(TEXT), lim).unwrap(), TEXT);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(TEXT).unwrap();
        assert_eq!(
            decode_body(Some("deflate"), &z.finish().unwrap(), lim).unwrap(),
            TEXT
        );
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(TEXT)
            .unwrap();
        assert_eq!(decode_body(Some("br"), &br, lim).unwrap(), TEXT);
        let zs =
            ruzstd::encoding::compress_to_vec(TEXT, ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(decode_body(Some("zstd"), &zs, lim).unwrap(), TEXT);
        assert_eq!(decode_body(None, TEXT, lim).unwrap(), TEXT);
        assert_eq!(decode_body(Some("identity"), TEXT, lim).unwrap(), TEXT);
    }

    #[test]
    fn two_stacked_codings_are_undone_and_a_third_is_refused() {
        let lim = DecodeLimits::default();
        let twice = gzip(&gzip(TEXT));
        assert_eq!(decode_body(Some("gzip, gzip"), &twice, lim).unwrap(), TEXT);
        // identity is no layer.
        assert_eq!(
            decode_body(Some("gzip, identity, gzip"), &twice, lim).unwrap(),
            TEXT
        );
        let thrice = gzip(&twice);
        assert!(matches!(
            decode_body(Some("gzip,gzip,gzip"), &thrice, lim),
            Err(DecodeError::TooManyCodings(3))
        ));
    }

    #[test]
    fn bomb_is_refused() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        let small = DecodeLimits {
            max_output: 1 << 20,
            max_ratio: 1000,
        };
        assert!(matches!(
            decode_body(Some("gzip"), &bomb, small),
            Err(DecodeError::TooLarge(_))
        ));
        let ratio = DecodeLimits {
            max_output: 64 << 20,
            max_ratio: 100,
        };
        assert!(matches!(
            decode_body(Some("gzip"), &bomb, ratio),
            Err(DecodeError::Ratio(_))
        ));
    }

    #[test]
    fn corrupt_and_unsupported() {
        let lim = DecodeLimits::default();
        assert!(matches!(
            decode_body(Some("gzip"), b"not gzip", lim),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_body(Some("compress"), TEXT, lim),
            Err(DecodeError::Unsupported(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The same text as the standard library's lossy conversion, borrowed when the bytes
        /// are valid: any bytes, and valid text in several scripts longer than a vector.
        #[test]
        fn lossy_text_is_the_standard_one(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            text in "[a-z \u{e9}\u{3042}\u{1f600}\u{430}]{0,80}",
        ) {
            proptest::prop_assert_eq!(utf8_lossy(&bytes), String::from_utf8_lossy(&bytes));
            let got = utf8_lossy(text.as_bytes());
            proptest::prop_assert!(matches!(got, Cow::Borrowed(_)));
            proptest::prop_assert_eq!(got, text.as_str());
            // A valid text cut inside a character, and a stray byte after it.
            let mut cut = text.as_bytes().to_vec();
            cut.extend_from_slice(&[0xE3, 0x81]);
            proptest::prop_assert_eq!(utf8_lossy(&cut), String::from_utf8_lossy(&cut));
        }
    }
}
