//! Encoders for the Specific Character Sets used by the charset-variety studies (PS3.5 §6.1).
//!
//! Only what the synthetic names need is supported; every encoder returns `None` for a
//! character outside its repertoire instead of guessing.

/// A value of (0008,0005) Specific Character Set and its encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    /// `ISO_IR 100`: ISO 8859-1 (Latin alphabet No. 1).
    Latin1,
    /// `ISO_IR 144`: ISO 8859-5 (Latin/Cyrillic).
    Cyrillic,
    /// `ISO_IR 192`: UTF-8.
    Utf8,
    /// `\ISO 2022 IR 87`: ASCII by default, JIS X 0208 after `ESC $ B` (PS3.5 H.3.1).
    Iso2022Japanese,
}

impl Charset {
    /// The (0008,0005) value. The Japanese form starts with an empty value, meaning the
    /// default repertoire is the initial G0 set, exactly as in PS3.5 Example H.3.1.
    pub fn term(self) -> &'static str {
        match self {
            Self::Latin1 => "ISO_IR 100",
            Self::Cyrillic => "ISO_IR 144",
            Self::Utf8 => "ISO_IR 192",
            Self::Iso2022Japanese => "\\ISO 2022 IR 87",
        }
    }

    /// Encodes `s`, or `None` if a character is not in the repertoire.
    pub fn encode(self, s: &str) -> Option<Vec<u8>> {
        match self {
            Self::Latin1 => s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect(),
            Self::Cyrillic => s.chars().map(iso_8859_5).collect(),
            Self::Utf8 => Some(s.as_bytes().to_vec()),
            Self::Iso2022Japanese => iso_2022_jp(s),
        }
    }
}

/// ISO 8859-5: ASCII, then Ё..Џ at 0xA1.., А..я at 0xB0..0xEF, ё..џ at 0xF1.. (no soft hyphen
/// at 0xAD, `№` at 0xF0 and `§` at 0xFD are left out).
fn iso_8859_5(c: char) -> Option<u8> {
    let u = u32::from(c);
    let b = match u {
        0x00..=0x7F => u,
        0x0401..=0x040C | 0x040E..=0x044F => u - 0x0401 + 0xA1,
        0x0451..=0x045C | 0x045E..=0x045F => u - 0x0451 + 0xF1,
        _ => return None,
    };
    u8::try_from(b).ok()
}

/// JIS X 0208 code points (row and cell plus 0x20, as sent after `ESC $ B`) of the characters
/// used by the synthetic Japanese names; PS3.5 H.3.1 encodes the same name.
const JIS_X_0208: [(char, [u8; 2]); 10] = [
    ('山', [0x3B, 0x33]),
    ('田', [0x45, 0x44]),
    ('太', [0x42, 0x40]),
    ('郎', [0x4F, 0x3A]),
    ('や', [0x24, 0x64]),
    ('ま', [0x24, 0x5E]),
    ('だ', [0x24, 0x40]),
    ('た', [0x24, 0x3F]),
    ('ろ', [0x24, 0x6D]),
    ('う', [0x24, 0x26]),
];

const ESC_JIS_X_0208: &[u8] = b"\x1b$B";
const ESC_ASCII: &[u8] = b"\x1b(B";

/// ISO 2022 with G0 switching between ASCII and JIS X 0208. Delimiters `^` and `=` are ASCII,
/// so the encoder always returns to ASCII before them and at the end of the value (PS3.5
/// 6.1.2.5.3).
fn iso_2022_jp(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut in_jis = false;
    for c in s.chars() {
        if c.is_ascii() {
            if in_jis {
                out.extend_from_slice(ESC_ASCII);
                in_jis = false;
            }
            out.push(c as u8);
        } else {
            let (_, code) = JIS_X_0208.iter().find(|(k, _)| *k == c)?;
            if !in_jis {
                out.extend_from_slice(ESC_JIS_X_0208);
                in_jis = true;
            }
            out.extend_from_slice(code);
        }
    }
    if in_jis {
        out.extend_from_slice(ESC_ASCII);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_matches_ps3_5_example_h_3_1() {
        let bytes = Charset::Iso2022Japanese
            .encode("Yamada^Tarou=山田^太郎=やまだ^たろう")
            .unwrap();
        let expected: &[u8] = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\
\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(bytes, expected);
        let (decoded, _, bad) = encoding_rs::ISO_2022_JP.decode(&bytes);
        assert!(!bad);
        assert_eq!(decoded, "Yamada^Tarou=山田^太郎=やまだ^たろう");
    }

    #[test]
    fn single_byte_sets_agree_with_encoding_rs() {
        let cyr = "Иванов^Пётр^Сергеевич";
        let bytes = Charset::Cyrillic.encode(cyr).unwrap();
        assert_eq!(bytes.len(), cyr.chars().count());
        let (decoded, _, bad) = encoding_rs::ISO_8859_5.decode(&bytes);
        assert!(!bad);
        assert_eq!(decoded, cyr);

        let latin = "Müller^Jürgen";
        let bytes = Charset::Latin1.encode(latin).unwrap();
        assert_eq!(bytes, b"M\xfcller^J\xfcrgen");
        // WHATWG's "ISO-8859-1" is windows-1252, identical for these letters.
        assert_eq!(encoding_rs::WINDOWS_1252.decode(&bytes).0, latin);
    }

    #[test]
    fn unsupported_characters_are_rejected() {
        assert_eq!(Charset::Latin1.encode("Ж"), None);
        assert_eq!(Charset::Cyrillic.encode("ü"), None);
        assert_eq!(Charset::Iso2022Japanese.encode("東"), None);
    }
}
