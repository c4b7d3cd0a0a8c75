//! PII detectors: emails, phone numbers, payment cards (Luhn), IBANs (mod-97 checksum) and US
//! social security numbers (area/group/serial rules).

use super::finding::{Severity, mask_email, mask_tail};
use super::patterns::{Spec, TableDetector, Trigger};
use super::triggers::{MIN_RUN_DIGITS, Target};

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn checksum plus a known card-network prefix and length.
pub fn is_payment_card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix2 = d[0] * 10 + d[1];
    let network = d[0] == 4
        || (51..=55).contains(&prefix2)
        || (22..=27).contains(&prefix2)
        || prefix2 == 34
        || prefix2 == 37
        || d[0] == 6
        || prefix2 == 35
        || prefix2 == 36
        || prefix2 == 30;
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    network && sum.is_multiple_of(10)
}

/// ISO 13616 IBAN check: length 15–34 and mod-97 remainder 1.
pub fn is_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// US SSN validity rules (no 000/666/9xx area, no 00 group, no 0000 serial).
pub fn is_ssn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    area != 0 && area != 666 && area < 900 && (d[3], d[4]) != (0, 0) && d[5..] != [0, 0, 0, 0]
}

fn mask4(s: &str) -> String {
    mask_tail(s, 4)
}

fn mask2(s: &str) -> String {
    mask_tail(s, 2)
}

pub(crate) const SPECS: &[Spec] = &[
    Spec {
        kind: "pii.payment_card",
        severity: Severity::High,
        confidence: 0.9,
        pattern: r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
        group: 0,
        validate: Some(is_payment_card),
        mask: mask4,
        trigger: Trigger::Digits(13),
    },
    Spec {
        kind: "pii.iban",
        severity: Severity::Medium,
        confidence: 0.9,
        pattern: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        group: 0,
        validate: Some(is_iban),
        mask: mask4,
        trigger: Trigger::IbanHead,
    },
    Spec {
        kind: "pii.us_ssn",
        severity: Severity::High,
        confidence: 0.8,
        pattern: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        group: 0,
        validate: Some(is_ssn),
        mask: mask4,
        trigger: Trigger::Digits(MIN_RUN_DIGITS),
    },
    Spec {
        kind: "pii.email",
        severity: Severity::Low,
        confidence: 0.9,
        pattern: r"\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}\b",
        group: 0,
        validate: None,
        mask: mask_email,
        // The local part is 1 to 64 bytes.
        trigger: Trigger::Inner(&["@"], 64),
    },
    Spec {
        kind: "pii.phone",
        severity: Severity::Low,
        confidence: 0.6,
        pattern: r"(?:\+[1-9][0-9]{0,2}[ .\-]?)?(?:\([0-9]{3}\)|\b[0-9]{3})[ .\-][0-9]{3}[ .\-][0-9]{4}\b|\+[1-9][0-9]{9,14}\b",
        group: 0,
        validate: None,
        mask: mask2,
        trigger: Trigger::Digits(10),
    },
];

/// The PII detector.
pub fn detector() -> TableDetector {
    TableDetector::new(SPECS, Target::Pii)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Location;

    fn found(text: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        detector().scan(text, Location::Request, &mut out);
        out.into_iter().map(|f| (f.kind, f.excerpt)).collect()
    }

    #[test]
    fn positives() {
        assert_eq!(
            found("card 4111 1111 1111 1111 exp"),
            vec![("pii.payment_card", "**** **** **** 1111".into())]
        );
        assert_eq!(found("pay to GB82 WEST 1234 5698 7654 32")[0].0, "pii.iban");
        assert_eq!(found("DE89370400440532013000")[0].0, "pii.iban");
        assert_eq!(
            found("ssn 123-45-6789."),
            vec![("pii.us_ssn", "***-**-6789".into())]
        );
        assert_eq!(
            found("mail jane.doe@example.com now"),
            vec![("pii.email", "j***@example.com".into())]
        );
        assert_eq!(found("call (415) 555-0132 today")[0].0, "pii.phone");
        assert_eq!(found("call +14155550132")[0].0, "pii.phone");
    }

    #[test]
    fn negatives() {
        for t in [
            "card 4111 1111 1111 1112",    // Luhn-invalid
            "order 1234567890123",         // no network prefix / Luhn
            "GB82 WEST 1234 5698 7654 33", // bad IBAN checksum
            "ssn 000-12-3456 666-12-3456 912-34-5678",
            "version 1.2.3 at 2024-01-15",
            "0000 0000 0000 0000",
        ] {
            assert!(found(t).is_empty(), "{t}: {:?}", found(t));
        }
    }

    #[test]
    fn checksums() {
        assert!(is_payment_card("5555555555554444"));
        assert!(is_payment_card("378282246310005"));
        assert!(!is_payment_card("5555555555554445"));
        assert!(is_iban("FR1420041010050500013M02606"));
        assert!(!is_iban("FR1420041010050500013M02607"));
        assert!(is_ssn("123-45-6789") && !is_ssn("123-00-6789"));
    }
}
