//! The normalised view of a text: what a reader (or a model) sees once invisible characters
//! are gone and lookalikes are read as the letters they imitate. Per character: zero-width and
//! bidi controls are dropped, Unicode tag characters become the ASCII they shadow, Cyrillic and
//! Greek lookalikes become Latin letters, and anything NFKC changes (fullwidth forms,
//! ligatures, mathematical letters, non-breaking spaces) becomes its NFKC form. Characters are
//! normalised one by one (no composition across characters) so every byte of the view maps
//! back to the character it came from.

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

/// NFKC maps `c` to something else. The accented Latin letters of European prose
/// (U+00C0–U+017F) are answered without the table walk, which costs far more per character.
fn nfkc_changes(c: char) -> bool {
    if ('\u{00C0}'..='\u{017F}').contains(&c) {
        return matches!(
            c,
            '\u{0132}' | '\u{0133}' | '\u{013F}' | '\u{0140}' | '\u{0149}' | '\u{017F}'
        );
    }
    is_nfkc_quick(std::iter::once(c)) == IsNormalized::No
}

/// The view would differ from the text. Cheap: ASCII text is answered by one SIMD-friendly
/// pass; otherwise only the non-ASCII characters are looked at.
pub fn needed(text: &str) -> bool {
    if text.is_ascii() {
        return false;
    }
    let b = text.as_bytes();
    let mut at = 0;
    while let Some(p) = next_non_ascii(b, at) {
        let Some(c) = text[p..].chars().next() else {
            break;
        };
        if invisible(c) || tag_ascii(c).is_some() || confusable(c).is_some() || nfkc_changes(c) {
            return true;
        }
        at = p + c.len_utf8();
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

/// The normalised view of `text`.
pub fn view(text: &str) -> Mapped {
    let mut out = Mapped::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if c.is_ascii() {
            out.push(c, i);
        } else if invisible(c) {
            // Dropped: its bytes fall inside the span of whatever match surrounds it.
        } else if let Some(a) = tag_ascii(c).or_else(|| confusable(c)) {
            out.push(a, i);
        } else if nfkc_changes(c) {
            for d in std::iter::once(c).nfkc() {
                out.push(confusable(d).unwrap_or(d), i);
            }
        } else {
            out.push(c, i);
        }
    }
    out.finish(text.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_plain_accents_need_nothing() {
        assert!(!needed("plain ascii text"));
        assert!(!needed("Les résultats du trimestre, Größe, naïve, Œuvre"));
        assert!(needed("ĳ") && needed("ſ"));
        // The fast path agrees with the table on the whole range.
        for c in '\u{00C0}'..='\u{017F}' {
            assert_eq!(
                nfkc_changes(c),
                is_nfkc_quick(std::iter::once(c)) == IsNormalized::No,
                "{c}"
            );
        }
        assert!(needed("AKIA\u{200B}IOSFODNN7EXAMPLE"));
        assert!(needed("ＡＫＩＡ"));
        assert!(needed("ignоre")); // Cyrillic о
        assert!(needed("\u{E0041}"));
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
