//! A bounded DICOM parser (PS3.5 Section 7, PS3.10 Section 7).
//!
//! It reads a Part 10 file (or a bare data set) from any [`Source`], keeps the attributes of the
//! header in memory and records *where* large binary values and Pixel Data lie instead of reading
//! them. Every declared length is checked before anything is allocated:
//!
//! - against the bytes that really remain (the source length, when known);
//! - against [`ParseLimits`]: the largest text value, the total bytes kept in memory, the nesting
//!   depth, the number of elements and fragments.
//!
//! So a hostile or damaged object yields an [`Error`] with the offset of the problem and bounded
//! memory, never a panic or a huge allocation. Values are kept in little endian byte order whatever
//! the transfer syntax (big endian values are swapped on read), so accessors have one code path.

use std::io::{self, Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag as DTag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::error::{Error, Result};
use crate::tag::{self, Tag};
use crate::uid::{self, Encoding};

/// Limits applied while parsing. Defaults suit any real clinical object.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Binary values (OB, OW, UN, ...) longer than this are left in place as [`Value::Bulk`].
    pub bulk_threshold: u32,
    /// The longest non-binary value accepted (text, numbers).
    pub max_value_length: u32,
    /// The total bytes of values kept in memory for one object.
    pub max_kept_bytes: u64,
    /// The deepest sequence nesting accepted.
    pub max_depth: u32,
    /// The most elements (all levels) accepted in one object.
    pub max_elements: u32,
    /// The most encapsulated Pixel Data fragments accepted.
    pub max_fragments: u32,
    /// The largest inflated size of a deflated data set.
    pub max_inflated_bytes: u64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            bulk_threshold: 1024,
            max_value_length: 16 << 20,
            max_kept_bytes: 64 << 20,
            max_depth: 32,
            max_elements: 500_000,
            max_fragments: 1 << 20,
            max_inflated_bytes: 4 << 30,
        }
    }
}

/// One data element with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The tag.
    pub tag: Tag,
    /// The value representation as written (explicit) or looked up (implicit).
    pub vr: VR,
    /// The value.
    pub value: Value,
}

/// The value of an element.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The raw value bytes (little endian), padding included.
    Bytes(Vec<u8>),
    /// The items of a sequence.
    Items(Vec<DataSet>),
    /// A large binary value left in the source: `offset` is its first byte in the source.
    Bulk {
        /// Offset of the first value byte.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// Encapsulated Pixel Data (PS3.5 A.4): the offset table and the fragments, left in place.
    Encapsulated {
        /// The Basic Offset Table (may be empty).
        offset_table: Vec<u32>,
        /// `(offset, length)` of each fragment's bytes.
        fragments: Vec<(u64, u32)>,
    },
}

/// An ordered list of elements (one level of a data set or one item).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSet {
    /// Elements in the order read (ascending tags in valid input).
    pub elements: Vec<Element>,
}

impl DataSet {
    /// The element with `tag` at this level.
    pub fn get(&self, tag: Tag) -> Option<&Element> {
        match self.elements.binary_search_by_key(&tag, |e| e.tag) {
            Ok(i) => Some(&self.elements[i]),
            // Tolerate input whose tags are out of order.
            Err(_) => self.elements.iter().find(|e| e.tag == tag),
        }
    }

    /// Raw bytes of the value of `tag`, if present and not bulk.
    pub fn bytes(&self, tag: Tag) -> Option<&[u8]> {
        match &self.get(tag)?.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The value of `tag` as text with padding removed, read as ASCII/Latin-1 (for UIDs, codes,
    /// dates and numbers). Use [`crate::charset`] for person names and descriptions.
    pub fn str(&self, tag: Tag) -> Option<&str> {
        let b = self.bytes(tag)?;
        let s = std::str::from_utf8(b).ok()?;
        let s = s.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if s.is_empty() { None } else { Some(s) }
    }

    /// The value of `tag` decoded in the object's character set `cs` (person names,
    /// descriptions), padding removed; empty when absent.
    pub fn text(&self, cs: &crate::charset::CharacterSet, tag: Tag) -> String {
        match self.bytes(tag) {
            Some(b) => cs
                .decode(b)
                .text
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_owned(),
            None => String::new(),
        }
    }

    /// The first unsigned 16-bit value of `tag` (US).
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        let b = self.bytes(tag)?;
        Some(u16::from_le_bytes(b.get(..2)?.try_into().ok()?))
    }

    /// The first value of an integer string (IS) element.
    pub fn int(&self, tag: Tag) -> Option<i64> {
        self.str(tag)?.split('\\').next()?.trim().parse().ok()
    }

    /// The items of a sequence element.
    pub fn items(&self, tag: Tag) -> Option<&[DataSet]> {
        match &self.get(tag)?.value {
            Value::Items(i) => Some(i),
            _ => None,
        }
    }
}

/// Where the Pixel Data (or float pixel data) of an object lies in its source.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelDataLocation {
    /// The pixel data tag (7FE0,0010 / 0008 / 0009).
    pub tag: Tag,
    /// Native data: offset and length of the value; encapsulated: the fragments.
    pub value: Value,
}

/// A parsed object: file meta information, the data set header and where the pixels are.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    /// File meta information (group 0002); empty for a bare data set.
    pub meta: DataSet,
    /// The transfer syntax UID the data set is encoded with.
    pub transfer_syntax: String,
    /// The encoding of that transfer syntax.
    pub encoding: Encoding,
    /// Offset of the first data set byte in the source (after the meta group).
    pub dataset_offset: u64,
    /// The data set, Pixel Data left out (see `pixel_data`).
    pub dataset: DataSet,
    /// Where the top-level pixel data is, if any.
    pub pixel_data: Option<PixelDataLocation>,
}

/// A byte source the parser can read and skip.
pub trait Source: Read {
    /// Skips `n` bytes; errors if fewer remain.
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

/// A seekable source (a file): skips are seeks.
pub struct SeekSource<R>(pub R);

impl<R: Read> Read for SeekSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Seek> Source for SeekSource<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = i64::try_from(n).map_err(|_| io::Error::other("skip too large"))?;
        self.0.seek(SeekFrom::Current(n)).map(|_| ())
    }
}

/// A stream source (inflated data): skips read and discard.
pub struct StreamSource<R>(pub R);

impl<R: Read> Read for StreamSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for StreamSource<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Parses a Part 10 file of `len` bytes from a seekable reader. A source without the "DICM"
/// prefix is read as a bare data set in Implicit VR Little Endian (PS3.5 A.1), as old media hold.
pub fn parse_file<R: Read + Seek>(
    reader: R,
    len: u64,
    limits: &ParseLimits,
) -> Result<ParsedObject> {
    let mut src = SeekSource(reader);
    let mut head = [0u8; 132];
    let has_preamble = len >= 132 && {
        src.read_exact(&mut head)?;
        &head[128..132] == b"DICM"
    };
    if !has_preamble {
        src.0.seek(SeekFrom::Start(0))?;
        let encoding = uid::encoding_of(uid::IMPLICIT_VR_LE).expect("known syntax");
        let mut p = Parser::new(&mut src, 0, len, encoding, limits);
        let (dataset, pixel_data) = p.read_top_level()?;
        return Ok(ParsedObject {
            meta: DataSet::default(),
            transfer_syntax: uid::IMPLICIT_VR_LE.to_owned(),
            encoding,
            dataset_offset: 0,
            dataset,
            pixel_data,
        });
    }
    let (meta, dataset_offset) = read_meta(&mut src, len, limits)?;
    src.0.seek(SeekFrom::Start(dataset_offset))?;
    let ts = meta
        .str(tag::TRANSFER_SYNTAX_UID)
        .ok_or(Error::MissingAttribute("TransferSyntaxUID (0002,0010)"))?
        .to_owned();
    let encoding =
        uid::encoding_of(&ts).ok_or_else(|| Error::UnsupportedTransferSyntax(ts.clone()))?;
    let (dataset, pixel_data) = if encoding.deflated {
        // PS3.5 A.5: the data set after the meta group is a raw deflate stream.
        let budget = limits.max_inflated_bytes;
        let inflater = flate2::read::DeflateDecoder::new(io::BufReader::new(&mut src.0));
        let mut stream = StreamSource(inflater.take(budget));
        let mut p = Parser::new(&mut stream, 0, budget, encoding, limits);
        p.read_top_level()?
    } else {
        let mut p = Parser::new(&mut src, dataset_offset, len, encoding, limits);
        p.read_top_level()?
    };
    Ok(ParsedObject {
        meta,
        transfer_syntax: ts,
        encoding,
        dataset_offset,
        dataset,
        pixel_data,
    })
}

/// Parses a bare data set (as a C-STORE carries it) encoded with `transfer_syntax`.
pub fn parse_dataset<S: Source>(
    src: &mut S,
    start: u64,
    len: u64,
    transfer_syntax: &str,
    limits: &ParseLimits,
) -> Result<(DataSet, Option<PixelDataLocation>)> {
    let encoding = uid::encoding_of(transfer_syntax)
        .ok_or_else(|| Error::UnsupportedTransferSyntax(transfer_syntax.to_owned()))?;
    if encoding.deflated {
        let inflater = flate2::read::DeflateDecoder::new(io::BufReader::new(src));
        let mut stream = StreamSource(inflater.take(limits.max_inflated_bytes));
        return Parser::new(&mut stream, 0, limits.max_inflated_bytes, encoding, limits)
            .read_top_level();
    }
    Parser::new(src, start, start + len, encoding, limits).read_top_level()
}

/// Reads the File Meta Information (PS3.10 7.1): always explicit VR little endian.
fn read_meta<S: Source>(src: &mut S, len: u64, limits: &ParseLimits) -> Result<(DataSet, u64)> {
    let encoding = uid::encoding_of(uid::EXPLICIT_VR_LE).expect("known syntax");
    let mut p = Parser::new(src, 132, len, encoding, limits);
    let mut meta = DataSet::default();
    while p.pos < len {
        match p.next_meta_header()? {
            Ok(header) => {
                let el = p.read_element_after_header(header, 0)?;
                meta.elements.push(el);
            }
            Err(dataset_offset) => return Ok((meta, dataset_offset)),
        }
    }
    Ok((meta, p.pos))
}

/// The header of one element as read.
#[derive(Debug, Clone, Copy)]
struct Header {
    tag: Tag,
    vr: VR,
    /// `None` for undefined length (0xFFFFFFFF).
    length: Option<u32>,
    /// Offset of the first byte of the header.
    offset: u64,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

struct Parser<'a, S> {
    src: &'a mut S,
    pos: u64,
    end: u64,
    enc: Encoding,
    limits: &'a ParseLimits,
    kept: u64,
    elements: u32,
}

impl<'a, S: Source> Parser<'a, S> {
    fn new(src: &'a mut S, pos: u64, end: u64, enc: Encoding, limits: &'a ParseLimits) -> Self {
        Parser {
            src,
            pos,
            end,
            enc,
            limits,
            kept: 0,
            elements: 0,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        self.src.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Truncated {
                    offset: self.pos,
                    what,
                }
            } else {
                Error::Io(e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &'static str) -> Result<()> {
        if self.pos + n > self.end {
            return Err(Error::Truncated {
                offset: self.pos,
                what,
            });
        }
        self.src.skip(n).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Truncated {
                    offset: self.pos,
                    what,
                }
            } else {
                Error::Io(e)
            }
        })?;
        self.pos += n;
        Ok(())
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.enc.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.enc.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Reads the next meta element header; `None` (and the offset of that tag) when the next tag
    /// is not in group 0002, i.e. the data set starts there.
    fn next_meta_header(&mut self) -> Result<std::result::Result<Header, u64>> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, "meta element tag")?;
        let start = self.pos - 4;
        let group = u16::from_le_bytes([b[0], b[1]]);
        if group != 0x0002 {
            return Ok(Err(start));
        }
        let t = tag::tag(group, u16::from_le_bytes([b[2], b[3]]));
        Ok(Ok(self.read_header_rest(t, start)?))
    }

    /// Reads a tag; `None` at the end of the source.
    fn read_tag(&mut self) -> Result<Option<Tag>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let mut b = [0u8; 4];
        match self.read_exact(&mut b, "tag") {
            Ok(()) => {}
            // A stream source (deflate) does not know its end: EOF at a tag boundary is the end.
            Err(Error::Truncated { .. }) if !self.end_known() => return Ok(None),
            Err(e) => return Err(e),
        }
        let g = self.u16([b[0], b[1]]);
        let e = self.u16([b[2], b[3]]);
        Ok(Some(tag::tag(g, e)))
    }

    fn end_known(&self) -> bool {
        !self.enc.deflated
    }

    fn read_header_rest(&mut self, tag: Tag, offset: u64) -> Result<Header> {
        // PS3.5 7.5: items and delimiters carry no VR in any transfer syntax.
        if tag::group(tag) == 0xFFFE {
            let mut l = [0u8; 4];
            self.read_exact(&mut l, "item length")?;
            let length = self.u32(l);
            return Ok(Header {
                tag,
                vr: VR::UN,
                length: (length != UNDEFINED).then_some(length),
                offset,
            });
        }
        let explicit = self.enc.explicit_vr || tag::group(tag) == 0x0002;
        let (vr, length) = if explicit {
            let mut v = [0u8; 2];
            self.read_exact(&mut v, "VR")?;
            let vr = VR::from_binary(v).ok_or_else(|| Error::Malformed {
                offset: self.pos - 2,
                reason: format!(
                    "element {} has an invalid VR {:02X}{:02X}",
                    tag::display(tag),
                    v[0],
                    v[1]
                ),
            })?;
            let long = has_long_length(vr);
            if long {
                let mut b = [0u8; 6];
                self.read_exact(&mut b, "element length")?;
                (vr, self.u32([b[2], b[3], b[4], b[5]]))
            } else {
                let mut b = [0u8; 2];
                self.read_exact(&mut b, "element length")?;
                (vr, u32::from(self.u16(b)))
            }
        } else {
            let mut b = [0u8; 4];
            self.read_exact(&mut b, "element length")?;
            (implicit_vr(tag), self.u32(b))
        };
        Ok(Header {
            tag,
            vr,
            length: (length != UNDEFINED).then_some(length),
            offset,
        })
    }

    fn read_top_level(&mut self) -> Result<(DataSet, Option<PixelDataLocation>)> {
        let mut ds = DataSet::default();
        let mut pixel = None;
        while let Some(t) = self.read_tag()? {
            let offset = self.pos - 4;
            // Trailing padding (FFFC,FFFC) ends the useful data (PS3.10 7.2).
            let h = self.read_header_rest(t, offset)?;
            if t == 0xFFFC_FFFC {
                break;
            }
            if tag::group(t) == 0xFFFE {
                return Err(Error::Malformed {
                    offset,
                    reason: format!("unexpected {} at top level", tag::display(t)),
                });
            }
            let is_pixels = matches!(
                t,
                tag::PIXEL_DATA | tag::FLOAT_PIXEL_DATA | tag::DOUBLE_FLOAT_PIXEL_DATA
            );
            if is_pixels {
                let value = self.read_pixel_value(h)?;
                pixel = Some(PixelDataLocation { tag: t, value });
                continue;
            }
            let el = self.read_element_after_header(h, 0)?;
            ds.elements.push(el);
        }
        Ok((ds, pixel))
    }

    fn check_length(&self, h: &Header, length: u64) -> Result<()> {
        if self.end_known() && self.pos + length > self.end {
            return Err(Error::LengthExceeded {
                tag: tag::display(h.tag),
                offset: h.offset,
                length,
                limit: "the end of the data",
            });
        }
        Ok(())
    }

    fn read_pixel_value(&mut self, h: Header) -> Result<Value> {
        match h.length {
            Some(len) => {
                let len = u64::from(len);
                self.check_length(&h, len)?;
                let offset = self.pos;
                self.skip(len, "pixel data")?;
                Ok(Value::Bulk {
                    offset,
                    length: len,
                })
            }
            None => {
                // PS3.5 A.4: an offset table item, then one item per fragment, then a delimiter.
                let mut offset_table = Vec::new();
                let mut fragments = Vec::new();
                let mut first = true;
                loop {
                    let Some(t) = self.read_tag()? else {
                        return Err(Error::Truncated {
                            offset: self.pos,
                            what: "encapsulated pixel data",
                        });
                    };
                    let ih = self.read_header_rest(t, self.pos - 4)?;
                    match t {
                        tag::SEQUENCE_DELIMITATION => break,
                        tag::ITEM => {}
                        _ => {
                            return Err(Error::Malformed {
                                offset: ih.offset,
                                reason: format!(
                                    "{} inside encapsulated pixel data",
                                    tag::display(t)
                                ),
                            });
                        }
                    }
                    let len = ih.length.ok_or_else(|| Error::Malformed {
                        offset: ih.offset,
                        reason: "fragment of undefined length".into(),
                    })?;
                    self.check_length(&ih, u64::from(len))?;
                    if first {
                        first = false;
                        if len % 4 != 0 || len > self.limits.max_fragments.saturating_mul(4) {
                            return Err(Error::Malformed {
                                offset: ih.offset,
                                reason: format!("basic offset table of length {len}"),
                            });
                        }
                        let mut b = vec![0u8; len as usize];
                        self.read_exact(&mut b, "basic offset table")?;
                        offset_table = b
                            .chunks_exact(4)
                            .map(|c| self.u32([c[0], c[1], c[2], c[3]]))
                            .collect();
                        continue;
                    }
                    if fragments.len() as u32 >= self.limits.max_fragments {
                        return Err(Error::TooLarge(format!(
                            "more than {} pixel data fragments",
                            self.limits.max_fragments
                        )));
                    }
                    fragments.push((self.pos, len));
                    self.skip(u64::from(len), "pixel data fragment")?;
                }
                Ok(Value::Encapsulated {
                    offset_table,
                    fragments,
                })
            }
        }
    }

    fn read_element_after_header(&mut self, h: Header, depth: u32) -> Result<Element> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(Error::TooLarge(format!(
                "more than {} elements",
                self.limits.max_elements
            )));
        }
        let is_sequence = h.vr == VR::SQ || (h.vr == VR::UN && h.length.is_none());
        if is_sequence {
            if depth >= self.limits.max_depth {
                return Err(Error::TooLarge(format!(
                    "sequences nested deeper than {}",
                    self.limits.max_depth
                )));
            }
            // PS3.5 6.2.2: the items of a UN element of undefined length are encoded in
            // Implicit VR Little Endian whatever the transfer syntax.
            let saved = self.enc;
            if h.vr == VR::UN {
                self.enc.explicit_vr = false;
                self.enc.big_endian = false;
            }
            let items = self.read_items(&h, depth + 1);
            self.enc = saved;
            let items = items?;
            return Ok(Element {
                tag: h.tag,
                vr: VR::SQ,
                value: Value::Items(items),
            });
        }
        let Some(len) = h.length else {
            if h.tag == tag::PIXEL_DATA {
                // Encapsulated pixel data inside an item (icon images): leave it in place.
                let value = self.read_pixel_value(h)?;
                return Ok(Element {
                    tag: h.tag,
                    vr: h.vr,
                    value,
                });
            }
            return Err(Error::Malformed {
                offset: h.offset,
                reason: format!(
                    "{} has undefined length but is not a sequence",
                    tag::display(h.tag)
                ),
            });
        };
        let len64 = u64::from(len);
        self.check_length(&h, len64)?;
        if is_binary(h.vr) && len > self.limits.bulk_threshold {
            let offset = self.pos;
            self.skip(len64, "bulk data")?;
            return Ok(Element {
                tag: h.tag,
                vr: h.vr,
                value: Value::Bulk {
                    offset,
                    length: len64,
                },
            });
        }
        if len > self.limits.max_value_length {
            return Err(Error::LengthExceeded {
                tag: tag::display(h.tag),
                offset: h.offset,
                length: len64,
                limit: "limit max_value_length",
            });
        }
        self.kept += len64;
        if self.kept > self.limits.max_kept_bytes {
            return Err(Error::TooLarge(format!(
                "header larger than {} bytes",
                self.limits.max_kept_bytes
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf, "element value")?;
        if self.enc.big_endian {
            swap_to_le(h.vr, &mut buf);
        }
        Ok(Element {
            tag: h.tag,
            vr: h.vr,
            value: Value::Bytes(buf),
        })
    }

    fn read_items(&mut self, h: &Header, depth: u32) -> Result<Vec<DataSet>> {
        let end = match h.length {
            Some(l) => {
                self.check_length(h, u64::from(l))?;
                Some(self.pos + u64::from(l))
            }
            None => None,
        };
        let mut items = Vec::new();
        loop {
            if let Some(end) = end
                && self.pos >= end
            {
                break;
            }
            let Some(t) = self.read_tag()? else {
                return Err(Error::Truncated {
                    offset: self.pos,
                    what: "sequence",
                });
            };
            let ih = self.read_header_rest(t, self.pos - 4)?;
            match t {
                tag::SEQUENCE_DELIMITATION if end.is_none() => break,
                tag::ITEM => {
                    self.elements += 1;
                    items.push(self.read_item(&ih, depth)?);
                }
                _ => {
                    return Err(Error::Malformed {
                        offset: ih.offset,
                        reason: format!(
                            "{} where an item of {} was expected",
                            tag::display(t),
                            tag::display(h.tag)
                        ),
                    });
                }
            }
        }
        Ok(items)
    }

    fn read_item(&mut self, ih: &Header, depth: u32) -> Result<DataSet> {
        let end = match ih.length {
            Some(l) => {
                self.check_length(ih, u64::from(l))?;
                Some(self.pos + u64::from(l))
            }
            None => None,
        };
        let mut ds = DataSet::default();
        loop {
            if let Some(end) = end
                && self.pos >= end
            {
                if self.pos > end {
                    return Err(Error::Malformed {
                        offset: self.pos,
                        reason: "item content overruns its declared length".into(),
                    });
                }
                break;
            }
            let Some(t) = self.read_tag()? else {
                return Err(Error::Truncated {
                    offset: self.pos,
                    what: "item",
                });
            };
            let h = self.read_header_rest(t, self.pos - 4)?;
            if t == tag::ITEM_DELIMITATION && end.is_none() {
                break;
            }
            if tag::group(t) == 0xFFFE {
                return Err(Error::Malformed {
                    offset: h.offset,
                    reason: format!("unexpected {} inside an item", tag::display(t)),
                });
            }
            ds.elements.push(self.read_element_after_header(h, depth)?);
        }
        Ok(ds)
    }
}

/// The VR of a tag in an implicit VR data set, from the standard dictionary (PS3.6).
pub fn implicit_vr(t: Tag) -> VR {
    if tag::is_group_length(t) {
        return VR::UL;
    }
    let dtag = DTag(tag::group(t), (t & 0xFFFF) as u16);
    match StandardDataDictionary.by_tag(dtag) {
        // Ambiguous VRs (US or SS, OB or OW) take their first reading.
        Some(entry) => entry.vr().relaxed(),
        None => VR::UN,
    }
}

/// VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length (PS3.5 Table 7.1-1).
pub fn has_long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

/// Binary VRs whose large values are left in place.
pub fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    )
}

/// Swaps a big endian value to little endian according to its VR's element width.
fn swap_to_le(vr: VR, buf: &mut [u8]) {
    let width = match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OF | VR::OL => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        VR::AT => 2,
        _ => return,
    };
    for c in buf.chunks_exact_mut(width) {
        c.reverse();
    }
}

#[cfg(test)]
mod tests;
