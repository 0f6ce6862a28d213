//! Specific Character Set (0008,0005) decoding (PS3.3 C.12.1.1.2, PS3.5 Section 6.1).
//!
//! Single-byte sets (ISO_IR 100–148, 166, 13), UTF-8 (ISO_IR 192), GB18030/GBK, and the ISO 2022
//! code extensions used for Japanese (IR 87 JIS X 0208, IR 13 katakana) and Korean (IR 149
//! KS X 1001) are decoded to Rust strings. Escape sequences switch the active set inside a value,
//! and each PN component group or text value restarts with the default set (PS3.5 6.1.2.5.3).
//! Sets we cannot decode (JIS X 0212, IR 159; Chinese IR 58 in ISO 2022 form) are reported with
//! [`Decoded::lossy`] set, so callers can flag the value instead of silently corrupting it.

use encoding_rs::Encoding;

/// The text of a value and whether some bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded text (undecodable bytes become U+FFFD).
    pub text: String,
    /// True when a byte sequence or a declared character set was not understood.
    pub lossy: bool,
}

/// A parsed Specific Character Set value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharacterSet {
    terms: Vec<String>,
}

impl CharacterSet {
    /// Parses the raw value of (0008,0005); an absent value means the default repertoire.
    pub fn from_value(raw: Option<&[u8]>) -> Self {
        let terms = raw
            .map(|b| {
                String::from_utf8_lossy(b)
                    .split('\\')
                    .map(|t| t.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        CharacterSet { terms }
    }

    /// True when the data set uses the default repertoire or UTF-8 (no decoding work needed).
    pub fn is_utf8_compatible(&self) -> bool {
        self.terms
            .iter()
            .all(|t| t.is_empty() || t == "ISO_IR 192" || t == "ISO_IR 6")
    }

    /// True when values may contain ISO 2022 escape sequences.
    fn uses_iso2022(&self) -> bool {
        self.terms.iter().any(|t| t.starts_with("ISO 2022"))
    }

    /// Decodes a text value (PN, LO, SH, ST, LT, UT, UC) of a data set using this set.
    pub fn decode(&self, bytes: &[u8]) -> Decoded {
        if bytes.is_ascii() && !bytes.contains(&0x1B) {
            return Decoded {
                text: String::from_utf8_lossy(bytes).into_owned(),
                lossy: false,
            };
        }
        if self.uses_iso2022() {
            return self.decode_iso2022(bytes);
        }
        let first = self.terms.first().map(String::as_str).unwrap_or("");
        match single_encoding(first) {
            Some(enc) => {
                let (text, _, had_errors) = enc.decode(bytes);
                Decoded {
                    text: text.into_owned(),
                    lossy: had_errors,
                }
            }
            None => {
                // Unknown or missing declaration with non-ASCII bytes: try UTF-8, then Latin-1.
                match std::str::from_utf8(bytes) {
                    Ok(s) => Decoded {
                        text: s.to_owned(),
                        lossy: !first.is_empty(),
                    },
                    Err(_) => {
                        let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
                        Decoded {
                            text: text.into_owned(),
                            lossy: true,
                        }
                    }
                }
            }
        }
    }

    /// ISO 2022 decoding: split the value at escape sequences and decode each run with the set
    /// the sequence designates (PS3.3 C.12.1.1.2 Table C.12-3/C.12-4).
    fn decode_iso2022(&self, bytes: &[u8]) -> Decoded {
        let mut out = String::with_capacity(bytes.len());
        let mut lossy = false;
        // G0 starts as ASCII; G1 as the first term's set (e.g. ISO 2022 IR 100 -> Latin-1).
        let initial_g1 = self
            .terms
            .first()
            .and_then(|t| g1_for_term(t))
            .unwrap_or(G1::None);
        let mut g0 = G0::Ascii;
        let mut g1 = initial_g1;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == 0x1B {
                let (consumed, change) = parse_escape(&bytes[i..]);
                match change {
                    Some(Designation::G0(s)) => g0 = s,
                    Some(Designation::G1(s)) => g1 = s,
                    None => lossy = true,
                }
                i += consumed.max(1);
                continue;
            }
            // Delimiters reset to the initial state (PS3.5 6.1.2.5.3).
            if matches!(b, b'^' | b'=' | b'\\' | b'\r' | b'\n' | b'\t' | 0x0C) {
                g0 = G0::Ascii;
                g1 = initial_g1;
                out.push(b as char);
                i += 1;
                continue;
            }
            if b < 0x80 {
                match g0 {
                    G0::Ascii => {
                        out.push(b as char);
                        i += 1;
                    }
                    G0::Jisx0208 => {
                        // Two 7-bit bytes per character; decode via EUC-JP by setting high bits.
                        let Some(&b2) = bytes.get(i + 1) else {
                            lossy = true;
                            break;
                        };
                        let pair = [b | 0x80, b2 | 0x80];
                        let (t, _, e) = encoding_rs::EUC_JP.decode(&pair);
                        lossy |= e;
                        out.push_str(&t);
                        i += 2;
                    }
                    G0::Unsupported => {
                        out.push('\u{FFFD}');
                        lossy = true;
                        i += 1;
                    }
                }
                continue;
            }
            // High half: the G1 set.
            match g1 {
                G1::Single(enc) => {
                    let (t, _, e) = enc.decode(&bytes[i..i + 1]);
                    lossy |= e;
                    out.push_str(&t);
                    i += 1;
                }
                G1::Katakana => {
                    // JIS X 0201 katakana 0xA1..0xDF are the half-width forms U+FF61..U+FF9F.
                    if (0xA1..=0xDF).contains(&b) {
                        out.push(
                            char::from_u32(0xFF61 + u32::from(b - 0xA1)).unwrap_or('\u{FFFD}'),
                        );
                    } else {
                        out.push('\u{FFFD}');
                        lossy = true;
                    }
                    i += 1;
                }
                G1::Ksx1001 => {
                    let Some(&b2) = bytes.get(i + 1) else {
                        lossy = true;
                        break;
                    };
                    let pair = [b, b2];
                    let (t, _, e) = encoding_rs::EUC_KR.decode(&pair);
                    lossy |= e;
                    out.push_str(&t);
                    i += 2;
                }
                G1::None => {
                    out.push('\u{FFFD}');
                    lossy = true;
                    i += 1;
                }
            }
        }
        Decoded { text: out, lossy }
    }
}

#[derive(Debug, Clone, Copy)]
enum G0 {
    Ascii,
    Jisx0208,
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
enum G1 {
    None,
    Single(&'static Encoding),
    Katakana,
    Ksx1001,
}

enum Designation {
    G0(G0),
    G1(G1),
}

/// The encoding of a single-byte or multi-byte defined term without code extensions.
fn single_encoding(term: &str) -> Option<&'static Encoding> {
    let term = term
        .strip_prefix("ISO 2022 ")
        .map_or(term.to_owned(), |t| format!("ISO_{t}"));
    Some(match term.replace(' ', "_").as_str() {
        "ISO_IR_192" => encoding_rs::UTF_8,
        // ISO-8859-1 is decoded as windows-1252, which agrees on every printable ISO-8859-1 byte.
        "ISO_IR_100" => encoding_rs::WINDOWS_1252,
        "ISO_IR_101" => encoding_rs::ISO_8859_2,
        "ISO_IR_109" => encoding_rs::ISO_8859_3,
        "ISO_IR_110" => encoding_rs::ISO_8859_4,
        "ISO_IR_144" => encoding_rs::ISO_8859_5,
        "ISO_IR_127" => encoding_rs::ISO_8859_6,
        "ISO_IR_126" => encoding_rs::ISO_8859_7,
        "ISO_IR_138" => encoding_rs::ISO_8859_8,
        "ISO_IR_148" => encoding_rs::WINDOWS_1254,
        "ISO_IR_203" => encoding_rs::ISO_8859_15,
        "ISO_IR_166" => encoding_rs::WINDOWS_874,
        "ISO_IR_13" => encoding_rs::SHIFT_JIS,
        "GB18030" => encoding_rs::GB18030,
        "GBK" => encoding_rs::GBK,
        _ => return None,
    })
}

/// The G1 set an ISO 2022 term designates initially.
fn g1_for_term(term: &str) -> Option<G1> {
    match term {
        "ISO 2022 IR 13" => Some(G1::Katakana),
        "ISO 2022 IR 149" => Some(G1::Ksx1001),
        "ISO 2022 IR 6" | "ISO 2022 IR 87" | "ISO 2022 IR 159" => None,
        t => single_encoding(t).map(G1::Single),
    }
}

/// Parses an escape sequence at the start of `b`: bytes consumed and the designation made.
fn parse_escape(b: &[u8]) -> (usize, Option<Designation>) {
    let seq = |s: &[u8]| b.starts_with(s);
    // PS3.3 Table C.12-4 (code extension escape sequences).
    let table: &[(&[u8], Designation)] = &[
        (b"\x1b(B", Designation::G0(G0::Ascii)),
        (b"\x1b(J", Designation::G0(G0::Ascii)), // JIS X 0201 Romaji: ASCII for our purposes
        (b"\x1b$B", Designation::G0(G0::Jisx0208)),
        (b"\x1b$(D", Designation::G0(G0::Unsupported)), // JIS X 0212
        (b"\x1b)I", Designation::G1(G1::Katakana)),
        (b"\x1b$)C", Designation::G1(G1::Ksx1001)),
        (
            b"\x1b-A",
            Designation::G1(G1::Single(encoding_rs::WINDOWS_1252)),
        ),
        (
            b"\x1b-B",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_2)),
        ),
        (
            b"\x1b-C",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_3)),
        ),
        (
            b"\x1b-D",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_4)),
        ),
        (
            b"\x1b-L",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_5)),
        ),
        (
            b"\x1b-G",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_6)),
        ),
        (
            b"\x1b-F",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_7)),
        ),
        (
            b"\x1b-H",
            Designation::G1(G1::Single(encoding_rs::ISO_8859_8)),
        ),
        (
            b"\x1b-M",
            Designation::G1(G1::Single(encoding_rs::WINDOWS_1254)),
        ),
        (
            b"\x1b-T",
            Designation::G1(G1::Single(encoding_rs::WINDOWS_874)),
        ),
    ];
    for (s, d) in table {
        if seq(s) {
            let d = match d {
                Designation::G0(g) => Designation::G0(*g),
                Designation::G1(g) => Designation::G1(*g),
            };
            return (s.len(), Some(d));
        }
    }
    // Unknown: skip ESC and the intermediate bytes up to the final byte (0x40..0x7E).
    let len = b
        .iter()
        .skip(1)
        .position(|&c| (0x40..=0x7E).contains(&c))
        .map_or(b.len(), |p| p + 2);
    (len, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(v: &str) -> CharacterSet {
        CharacterSet::from_value(Some(v.as_bytes()))
    }

    #[test]
    fn latin1_and_cyrillic() {
        let d = cs("ISO_IR 100").decode(b"M\xfcller^J\xfcrgen");
        assert_eq!(d.text, "Müller^Jürgen");
        assert!(!d.lossy);
        // "Люкceмбypг" style: ISO-8859-5 bytes for "Иван".
        let d = cs("ISO_IR 144").decode(b"\xb8\xd2\xd0\xdd");
        assert_eq!(d.text, "Иван");
    }

    #[test]
    fn utf8() {
        let d = cs("ISO_IR 192").decode("Γιάννης^Παπαδόπουλος".as_bytes());
        assert_eq!(d.text, "Γιάννης^Παπαδόπουλος");
    }

    #[test]
    fn japanese_iso2022_ir87() {
        // PS3.5 H.3.1 example: Yamada^Tarou=山田^太郎=やまだ^たろう
        let raw: &[u8] =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        let d = cs("\\ISO 2022 IR 87").decode(raw);
        assert_eq!(d.text, "Yamada^Tarou=山田^太郎=やまだ^たろう");
        assert!(!d.lossy);
    }

    #[test]
    fn korean_iso2022_ir149() {
        // PS3.5 I.2 example: Hong^Gildong=洪^吉洞=홍^길동
        let raw: &[u8] = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        let d = cs("\\ISO 2022 IR 149").decode(raw);
        assert_eq!(d.text, "Hong^Gildong=洪^吉洞=홍^길동");
    }

    #[test]
    fn unsupported_is_flagged() {
        let d = cs("\\ISO 2022 IR 159").decode(b"a\x1b$(D\x30\x21\x1b(B");
        assert!(d.lossy);
    }
}
