//! The normalised view of a text: what a reader (or a model) sees once invisible characters
//! are gone and lookalikes are read as the letters they imitate. Per character: zero-width and
//! bidi controls are dropped, Unicode tag characters become the ASCII they shadow, Cyrillic and
//! Greek lookalikes become Latin letters, and anything NFKC changes (fullwidth forms,
//! ligatures, mathematical letters, non-breaking spaces) becomes its NFKC form. Characters are
//! normalised one by one (no composition across characters) so every byte of the view maps
//! back to the character it came from.

use std::sync::LazyLock;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use super::Mapped;

/// Characters that render as nothing (or only steer layout) and so can hide inside a token:
/// soft hyphen, combining grapheme joiner, Arabic letter mark, Hangul fillers, Khmer inherent
/// vowels, Mongolian free variation selectors and vowel separator, zero-width spaces/joiners,
/// directional marks, embeddings, overrides and isolates, word joiner and invisible operators,
/// variation selectors, the BOM / zero-width no-break space.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E001F}'
            | '\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// A Unicode tag character (U+E0020–U+E007E) shadows one printable ASCII character; text
/// written in them is invisible on screen but read by models ("ASCII smuggling").
fn tag_ascii(c: char) -> Option<char> {
    let u = u32::from(c);
    (0xE0020..=0xE007E)
        .contains(&u)
        .then(|| char::from_u32(u - 0xE0000))
        .flatten()
}

/// Cyrillic and Greek letters that look like Latin ones (a compact subset of Unicode's
/// confusables: the letters that pass for ASCII in common fonts).
fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' => 'a',
        'е' => 'e',
        'о' | 'ο' => 'o',
        'р' => 'p',
        'с' | 'ϲ' => 'c',
        'у' => 'y',
        'х' => 'x',
        'ѕ' => 's',
        'і' | 'ı' | 'ι' => 'i',
        'ј' => 'j',
        'ԁ' => 'd',
        'һ' => 'h',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'ӏ' => 'l',
        'ɡ' => 'g',
        'ν' => 'v',
        'κ' => 'k',
        'А' | 'Α' => 'A',
        'В' | 'Β' => 'B',
        'Е' | 'Ε' => 'E',
        'К' | 'Κ' => 'K',
        'М' | 'Μ' => 'M',
        'Н' | 'Η' => 'H',
        'О' | 'Ο' => 'O',
        'Р' | 'Ρ' => 'P',
        'С' | 'Ϲ' => 'C',
        'Т' | 'Τ' => 'T',
        'У' | 'Υ' => 'Y',
        'Х' | 'Χ' => 'X',
        'Ѕ' => 'S',
        'І' | 'Ι' => 'I',
        'Ј' => 'J',
        'Ԛ' => 'Q',
        'Ԝ' => 'W',
        'Ζ' => 'Z',
        'Ν' => 'N',
        _ => return None,
    })
}

/// NFKC maps `c` to something else (a walk of Unicode's tables: [`changes`] answers the
/// Basic Multilingual Plane from [`BMP`] instead).
fn nfkc_changes(c: char) -> bool {
    is_nfkc_quick(std::iter::once(c)) == IsNormalized::No
}

/// The view changes `c`: it is dropped, read as another letter, or NFKC maps it.
fn changes_slowly(c: char) -> bool {
    invisible(c) || tag_ascii(c).is_some() || confusable(c).is_some() || nfkc_changes(c)
}

/// [`changes_slowly`] of every character of the Basic Multilingual Plane, a bit each (8 KiB),
/// built by [`prepare`] or on first use. The table walks cost about 20 ns per character:
/// 7 ns per byte of Japanese text, where nearly every character is non-ASCII and none
/// changes; a bit costs a load.
static BMP: LazyLock<Box<[u64]>> = LazyLock::new(|| {
    let mut bits = vec![0u64; 0x1_0000 / 64].into_boxed_slice();
    for c in (0..0x1_0000).filter_map(char::from_u32) {
        if changes_slowly(c) {
            let u = c as usize;
            bits[u / 64] |= 1 << (u % 64);
        }
    }
    bits
});

/// Builds [`BMP`] now (about a millisecond), so that no scan a client waits for pays for it.
pub fn prepare() {
    LazyLock::force(&BMP);
}

/// Whether the view changes `c`, from `bits` ([`BMP`]) below U+10000.
fn changes(bits: &[u64], c: char) -> bool {
    let u = c as usize;
    match bits.get(u / 64) {
        Some(word) => word >> (u % 64) & 1 == 1,
        None => changes_slowly(c),
    }
}

/// The view would differ from the text. Cheap: ASCII text is answered by one SIMD-friendly
/// pass; otherwise only the non-ASCII characters are looked at, a run of them (a word of
/// Cyrillic, a sentence of Japanese) read straight through, without going back to the skim.
pub fn needed(text: &str) -> bool {
    if text.is_ascii() {
        return false;
    }
    let (b, bits) = (text.as_bytes(), &**BMP);
    let mut at = 0;
    while let Some(p) = next_non_ascii(b, at) {
        at = p;
        for c in text[p..].chars().take_while(|c| !c.is_ascii()) {
            if changes(bits, c) {
                return true;
            }
            at += c.len_utf8();
        }
    }
    false
}

/// The first non-ASCII byte at or after `from`, skimming 32-byte blocks branch-free.
fn next_non_ascii(b: &[u8], from: usize) -> Option<usize> {
    let rest = b.get(from..)?;
    let mut skipped = 0;
    for block in rest.chunks_exact(32) {
        if block.iter().fold(0u8, |a, &c| a | c) >= 0x80 {
            break;
        }
        skipped += 32;
    }
    rest[skipped..]
        .iter()
        .position(|&c| c >= 0x80)
        .map(|p| from + skipped + p)
}

/// The normalised view of `text`. The characters it keeps as they are are copied a run at a
/// time (in a Chinese or Russian text, nearly all of them).
pub fn view(text: &str) -> Mapped {
    let mut out = Mapped::with_capacity(text.len());
    let bits = &**BMP;
    // The start of the run of unchanged characters not yet copied.
    let mut run = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii() || !changes(bits, c) {
            continue;
        }
        out.push_unchanged(&text[run..i], run);
        run = i + c.len_utf8();
        push_changed(&mut out, c, i);
    }
    out.push_unchanged(&text[run..], run);
    out.finish(text.len());
    out
}

/// Appends what the view makes of `c` (at `at` in the original), a character it changes.
fn push_changed(out: &mut Mapped, c: char, at: usize) {
    if invisible(c) {
        // Dropped: its bytes fall inside the span of whatever match surrounds it.
    } else if let Some(a) = tag_ascii(c).or_else(|| confusable(c)) {
        out.push(a, at);
    } else {
        for d in std::iter::once(c).nfkc() {
            out.push(confusable(d).unwrap_or(d), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_plain_accents_need_nothing() {
        assert!(!needed("plain ascii text"));
        assert!(!needed("Les résultats du trimestre, Größe, naïve, Œuvre"));
        assert!(needed("ĳ") && needed("ſ"));
        assert!(!needed(
            "四半期報告書によると、売上高は12%増加し、営業費用は横ばいでした。"
        ));
        assert!(needed("売上高は１２％増加")); // fullwidth digits and percent sign
        assert!(needed("AKIA\u{200B}IOSFODNN7EXAMPLE"));
        assert!(needed("ＡＫＩＡ"));
        assert!(needed("ignоre")); // Cyrillic о
        assert!(needed("\u{E0041}"));
    }

    #[test]
    fn the_table_answers_as_the_predicates_do() {
        for c in (0..0x1_0000).filter_map(char::from_u32) {
            assert_eq!(changes(&BMP, c), changes_slowly(c), "U+{:04X}", c as u32);
        }
        // Past the table: the predicates themselves.
        let past = |c| changes(&BMP, c);
        assert!(past('\u{E0041}') && past('\u{1D400}') && !past('\u{1F600}'));
    }

    /// The view a character at a time, asking the predicates instead of the table, and for
    /// each of its bytes (and its end) the start of the character it came from.
    fn reference(text: &str) -> (String, Vec<u32>) {
        let mut out = Mapped::with_capacity(text.len());
        let mut sources = Vec::new();
        for (i, c) in text.char_indices() {
            let before = out.text.len();
            if changes_slowly(c) {
                push_changed(&mut out, c, i);
            } else {
                out.push(c, i);
            }
            sources.extend(std::iter::repeat_n(i as u32, out.text.len() - before));
        }
        sources.push(text.len() as u32);
        (out.text, sources)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn runs_copied_whole_give_the_reference_view(
            // ẛ (U+1E9B) becomes ṡ of the same length (a stretch goes on past it), ㍘ (U+3358)
            // two characters of other lengths.
            text in "[a-z 1.éßЖоа売上，、。\u{200B}\u{FF21}\u{FB01}\u{E0041}\u{1F600}\u{1E9B}\u{3358}]{0,60}",
        ) {
            let (got, (want, sources)) = (view(&text), reference(&text));
            proptest::prop_assert_eq!(&got.text, &want);
            let got_sources: Vec<u32> = (0..=got.text.len()).map(|i| got.source(i)).collect();
            proptest::prop_assert_eq!(got_sources, sources.clone());
            proptest::prop_assert_eq!(needed(&text), want != text);
            // Spans map as the per-byte map the pieces replaced mapped them (up to 16 bytes
            // long from every start; one past the end).
            let len = want.len();
            proptest::prop_assert_eq!(got.original(len + 1..len + 3), sources[len] as usize..sources[len] as usize);
            for s in 0..=len {
                for e in s..=len.min(s + 16) {
                    let start = sources[s] as usize;
                    let end = if e == s {
                        start
                    } else {
                        let last = sources[e - 1];
                        sources[e..].iter().find(|&&m| m > last).map_or(sources[len], |&m| m)
                            as usize
                    };
                    proptest::prop_assert_eq!(got.original(s..e), start..end, "{}..{}", s, e);
                }
            }
        }
    }

    #[test]
    fn view_folds_and_maps_back() {
        let text = "key ＡＫＩＡ\u{200D}IOSFODNN7EXAMPLE ok";
        let v = view(text);
        assert_eq!(v.text, "key AKIAIOSFODNN7EXAMPLE ok");
        let at = v.text.find("AKIA").unwrap();
        let span = v.original(at..at + 20);
        assert_eq!(&text[..span.start], "key ");
        assert_eq!(&text[span.end..], " ok");
        assert_eq!(view("\u{E0069}\u{E0067}").text, "ig");
        assert_eq!(view("ﬁle").text, "file");
        // A match ending inside a ligature still maps to the whole ligature.
        let v = view("ﬁ");
        assert_eq!(v.original(0..1), 0..3);
    }
}
