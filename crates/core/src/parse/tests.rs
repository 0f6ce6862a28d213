use super::*;
use std::io::Cursor;

/// A tiny explicit VR little endian writer for building test inputs.
struct W(Vec<u8>);

impl W {
    fn part10(ts: &str) -> W {
        let mut w = W(vec![0u8; 128]);
        w.0.extend_from_slice(b"DICM");
        let mut ts = ts.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        w.short(0x0002_0010, b"UI", &ts);
        w
    }
    fn tag(&mut self, t: Tag) {
        self.0.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
        self.0
            .extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
    }
    fn short(&mut self, t: Tag, vr: &[u8; 2], v: &[u8]) -> &mut Self {
        self.tag(t);
        self.0.extend_from_slice(vr);
        self.0.extend_from_slice(&(v.len() as u16).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    fn long(&mut self, t: Tag, vr: &[u8; 2], len: u32) -> &mut Self {
        self.tag(t);
        self.0.extend_from_slice(vr);
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&len.to_le_bytes());
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn item(&mut self, t: Tag, len: u32) -> &mut Self {
        self.tag(t);
        self.0.extend_from_slice(&len.to_le_bytes());
        self
    }
}

fn parse(b: &[u8]) -> Result<ParsedObject> {
    parse_file(Cursor::new(b), b.len() as u64, &ParseLimits::default())
}

#[test]
fn native_file_with_sequence() {
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    w.short(tag::SOP_INSTANCE_UID, b"UI", b"1.2.3.4\0")
        .long(0x0008_1115, b"SQ", UNDEFINED)
        .item(tag::ITEM, UNDEFINED)
        .short(0x0008_1150, b"UI", b"1.2\0")
        .item(tag::ITEM_DELIMITATION, 0)
        .item(tag::SEQUENCE_DELIMITATION, 0)
        .short(tag::ROWS, b"US", &2u16.to_le_bytes())
        .long(tag::PIXEL_DATA, b"OW", 8)
        .raw(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let p = parse(&w.0).unwrap();
    assert_eq!(p.transfer_syntax, uid::EXPLICIT_VR_LE);
    assert_eq!(p.dataset.str(tag::SOP_INSTANCE_UID), Some("1.2.3.4"));
    assert_eq!(p.dataset.u16(tag::ROWS), Some(2));
    let items = p.dataset.items(0x0008_1115).unwrap();
    assert_eq!(items[0].str(0x0008_1150), Some("1.2"));
    let px = p.pixel_data.unwrap();
    assert_eq!(
        px.value,
        Value::Bulk {
            offset: (w.0.len() - 8) as u64,
            length: 8
        }
    );
}

#[test]
fn encapsulated_fragments_are_located() {
    let mut w = W::part10(uid::RLE_LOSSLESS);
    w.long(tag::PIXEL_DATA, b"OB", UNDEFINED)
        .item(tag::ITEM, 4)
        .raw(&0u32.to_le_bytes())
        .item(tag::ITEM, 6)
        .raw(&[9; 6])
        .item(tag::SEQUENCE_DELIMITATION, 0);
    let p = parse(&w.0).unwrap();
    match p.pixel_data.unwrap().value {
        Value::Encapsulated {
            offset_table,
            fragments,
        } => {
            assert_eq!(offset_table, vec![0]);
            assert_eq!(fragments.len(), 1);
            assert_eq!(fragments[0].1, 6);
            let off = fragments[0].0 as usize;
            assert_eq!(&w.0[off..off + 6], &[9; 6]);
        }
        v => panic!("unexpected {v:?}"),
    }
}

#[test]
fn absurd_length_is_refused_before_allocation() {
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    w.long(0x0008_2111, b"UT", 0xFFFF_FFF0).raw(b"abc");
    let e = parse(&w.0).unwrap_err();
    assert!(matches!(e, Error::LengthExceeded { .. }), "{e}");
    assert_eq!(e.kind(), crate::ErrorKind::InvalidDicom);
}

#[test]
fn truncated_inputs_error_at_every_cut() {
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    w.short(tag::SOP_INSTANCE_UID, b"UI", b"1.2.3.4\0")
        .long(0x0008_1115, b"SQ", UNDEFINED)
        .item(tag::ITEM, UNDEFINED)
        .short(0x0008_1150, b"UI", b"1.2\0")
        .item(tag::ITEM_DELIMITATION, 0)
        .item(tag::SEQUENCE_DELIMITATION, 0)
        .long(tag::PIXEL_DATA, b"OW", 8)
        .raw(&[0; 8]);
    let full = w.0.clone();
    assert!(parse(&full).is_ok());
    for cut in 133..full.len() {
        // Cuts at element boundaries are complete data sets; every other cut must fail cleanly.
        let _ = parse(&full[..cut]);
    }
    assert!(parse(&full[..full.len() - 1]).is_err());
}

#[test]
fn deep_nesting_is_bounded() {
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    for _ in 0..100 {
        w.long(0x0008_1115, b"SQ", UNDEFINED)
            .item(tag::ITEM, UNDEFINED);
    }
    let e = parse(&w.0).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
}

#[test]
fn implicit_vr_uses_dictionary() {
    let mut b = Vec::new();
    for (t, v) in [(tag::PATIENT_ID, &b"ID1 "[..]), (tag::ROWS, &[4u8, 0][..])] {
        b.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
        b.extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(v);
    }
    let p = parse(&b).unwrap();
    assert_eq!(p.transfer_syntax, uid::IMPLICIT_VR_LE);
    assert_eq!(p.dataset.get(tag::ROWS).unwrap().vr, VR::US);
    assert_eq!(p.dataset.str(tag::PATIENT_ID), Some("ID1"));
}

#[test]
fn deflated_dataset() {
    use flate2::write::DeflateEncoder;
    use std::io::Write;
    let mut w = W::part10(uid::DEFLATED_EXPLICIT_VR_LE);
    let mut body = W(Vec::new());
    body.short(tag::PATIENT_ID, b"LO", b"DEFL");
    let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&body.0).unwrap();
    w.raw(&enc.finish().unwrap());
    let p = parse(&w.0).unwrap();
    assert_eq!(p.dataset.str(tag::PATIENT_ID), Some("DEFL"));
}

#[test]
fn mutated_inputs_never_panic() {
    // A valid object with a sequence, an item, a bulk value and encapsulated pixel data.
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    w.short(tag::SOP_INSTANCE_UID, b"UI", b"1.2.3.4\0")
        .long(0x0008_1115, b"SQ", UNDEFINED)
        .item(tag::ITEM, UNDEFINED)
        .short(0x0008_1150, b"UI", b"1.2\0")
        .item(tag::ITEM_DELIMITATION, 0)
        .item(tag::SEQUENCE_DELIMITATION, 0)
        .long(0x0009_1010, b"OB", 2048)
        .raw(&[7; 2048])
        .long(tag::PIXEL_DATA, b"OB", UNDEFINED)
        .item(tag::ITEM, 0)
        .item(tag::ITEM, 6)
        .raw(&[9; 6])
        .item(tag::SEQUENCE_DELIMITATION, 0);
    let base = w.0;
    let limits = ParseLimits {
        max_kept_bytes: 1 << 20,
        max_value_length: 1 << 20,
        ..Default::default()
    };
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut parsed_ok = 0;
    for _ in 0..5000 {
        let mut b = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        if next() % 4 == 0 {
            let cut = (next() as usize) % b.len();
            b.truncate(cut);
        }
        if parse_file(Cursor::new(&b), b.len() as u64, &limits).is_ok() {
            parsed_ok += 1;
        }
        for ts in [
            uid::IMPLICIT_VR_LE,
            uid::EXPLICIT_VR_BE,
            uid::DEFLATED_EXPLICIT_VR_LE,
        ] {
            let mut src = SeekSource(Cursor::new(&b));
            let _ = parse_dataset(&mut src, 0, b.len() as u64, ts, &limits);
        }
    }
    // Some mutations hit padding and still parse: the loop really exercised the parser.
    assert!(parsed_ok > 0);
}

#[test]
fn un_of_undefined_length_is_read_as_implicit_vr() {
    // PS3.5 6.2.2: an explicit VR file with a UN sequence whose items are implicit VR.
    let mut w = W::part10(uid::EXPLICIT_VR_LE);
    w.long(0x0009_1001, b"UN", UNDEFINED)
        .item(tag::ITEM, UNDEFINED);
    // (0008,1150) UI implicit: tag, 4-byte length, value
    w.tag(0x0008_1150);
    w.raw(&4u32.to_le_bytes()).raw(b"1.2\0");
    w.item(tag::ITEM_DELIMITATION, 0)
        .item(tag::SEQUENCE_DELIMITATION, 0);
    w.short(tag::PATIENT_ID, b"LO", b"AFTER ");
    let p = parse(&w.0).unwrap();
    assert_eq!(
        p.dataset.items(0x0009_1001).unwrap()[0].str(0x0008_1150),
        Some("1.2")
    );
    assert_eq!(p.dataset.str(tag::PATIENT_ID), Some("AFTER"));
}
