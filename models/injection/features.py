"""Feature hashing shared by training and the agent (agent/src/analysis/learned/hashing.rs).

The Rust side must produce the same bucket ids bit for bit; golden vectors written by
train.py are checked by a Rust unit test. Everything works on UTF-8 bytes:

* normalise: ASCII letters lowercased, every run of ASCII whitespace one space, other bytes
  kept as they are;
* chunks of at most CHUNK normalised bytes, cut after the last space of the final
  CUT_SLACK bytes when there is one (a long text scores as its worst chunk);
* character 4-grams of bytes: the last 4 bytes packed big-endian into an integer, tagged
  with 4 in bits 40.., multiplied by K and shifted to BITS bits;
* word unigrams and bigrams: words are maximal runs of [a-z0-9] and bytes >= 0x80, hashed
  with 64-bit FNV-1a; unigram bucket = ((h ^ TAG_WORD) * K) >> (64 - BITS), bigram bucket =
  ((rotl(prev, 17) ^ h ^ TAG_BIGRAM) * K) >> (64 - BITS).

A chunk's features are its distinct buckets, each 1/sqrt(number of distinct buckets).
"""

# 2^14 buckets and one n-gram length: the table (16 KiB) stays in the CPU's first-level cache and
# a byte yields about 1.3 features instead of 3.4. Against 2^18 buckets of 3/4/5-grams: the same
# test precision and recall, over-defence 14/686 against 11/686 (EVAL.md), half the agent's
# cost per KB.
BITS = 14
NGRAMS = (4,)
CHUNK = 4096
CUT_SLACK = 256
K = 0x9E3779B97F4A7C15
TAG_WORD = 0x5741_0000_0000_0001
TAG_BIGRAM = 0x5742_0000_0000_0002
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
M64 = (1 << 64) - 1
SHIFT = 64 - BITS
WS = b" \t\n\r\x0b\x0c"


def normalise(text: str) -> bytes:
    out = bytearray()
    space = False
    for b in text.encode("utf-8", "surrogatepass"):
        if b in WS:
            if not space:
                out.append(0x20)
            space = True
            continue
        space = False
        out.append(b + 32 if 65 <= b <= 90 else b)
    return bytes(out)


def chunks(norm: bytes):
    start = 0
    n = len(norm)
    while start < n:
        end = min(start + CHUNK, n)
        if end < n:
            cut = norm.rfind(b" ", end - CUT_SLACK, end)
            if cut > start:
                end = cut + 1
        yield norm[start:end]
        start = end


def _is_word(b: int) -> bool:
    return 97 <= b <= 122 or 48 <= b <= 57 or b >= 0x80


def buckets(chunk: bytes) -> list:
    """Bucket ids of one normalised chunk, in emission order (as the Rust extractor)."""
    out = []
    window = 0
    for i, b in enumerate(chunk):
        window = ((window << 8) | b) & M64
        for n in NGRAMS:
            if i + 1 >= n:
                gram = (window & ((1 << (8 * n)) - 1)) | (n << 40)
                out.append(((gram * K) & M64) >> SHIFT)
    prev = None
    h = None
    for b in chunk + b" ":
        if _is_word(b):
            if h is None:
                h = FNV_OFFSET
            h = ((h ^ b) * FNV_PRIME) & M64
            continue
        if h is None:
            continue
        out.append((((h ^ TAG_WORD) * K) & M64) >> SHIFT)
        if prev is not None:
            rot = ((prev << 17) | (prev >> 47)) & M64
            out.append((((rot ^ h ^ TAG_BIGRAM) * K) & M64) >> SHIFT)
        prev = h
        h = None
    return out
