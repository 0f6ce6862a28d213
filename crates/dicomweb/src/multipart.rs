//! Media types, `Accept` negotiation and `multipart/related` response bodies (PS3.18 8.7, RFC 2387).
//!
//! - [`MediaType`] parses a `Content-Type` or one `Accept` entry with its parameters (`type`,
//!   `transfer-syntax`, `boundary`, `q`), unquoting values.
//! - [`parse_accept`] splits an `Accept` header into entries ordered by quality (PS3.18 8.7.2:
//!   the order of equal-quality entries is the client's preference).
//! - [`Multipart`] writes the framing of a `multipart/related` body: a part header before each
//!   part's bytes and the closing delimiter. The bytes themselves are streamed by the callers
//!   straight from the blob store, so no response is ever assembled in memory.

use bytes::Bytes;

/// A parsed media type: lower-case `type/subtype` and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaType {
    /// `type/subtype`, lower case.
    pub essence: String,
    /// Parameters in order, names lower case, values unquoted.
    pub params: Vec<(String, String)>,
    /// Quality (`q` parameter), 1.0 when absent.
    pub q: f32,
}

impl MediaType {
    /// Parses `type/subtype; name=value; name="quoted value"`.
    pub fn parse(s: &str) -> Option<MediaType> {
        let mut parts = split_outside_quotes(s, ';').into_iter();
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (t, st) = essence.split_once('/')?;
        if t.is_empty() || st.is_empty() || essence.contains(char::is_whitespace) {
            return None;
        }
        let mut params = Vec::new();
        let mut q = 1.0;
        for p in parts {
            let Some((name, value)) = p.split_once('=') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = unquote(value.trim());
            if name == "q" {
                q = value.parse().unwrap_or(1.0);
            } else {
                params.push((name, value));
            }
        }
        Some(MediaType { essence, params, q })
    }

    /// The value of a parameter (names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `type` parameter of a multipart type, lower case.
    pub fn related_type(&self) -> Option<String> {
        self.param("type").map(|t| t.trim().to_ascii_lowercase())
    }

    /// The `transfer-syntax` parameter, if any.
    pub fn transfer_syntax(&self) -> Option<&str> {
        self.param("transfer-syntax").map(str::trim)
    }

    /// True for `*/*`.
    pub fn is_any(&self) -> bool {
        self.essence == "*/*"
    }

    /// Whether this (possibly wildcard) media range covers the concrete type `essence`.
    pub fn covers(&self, essence: &str) -> bool {
        if self.is_any() || self.essence == essence {
            return true;
        }
        match self.essence.strip_suffix("/*") {
            Some(t) => essence.split('/').next() == Some(t),
            None => false,
        }
    }
}

/// Splits on `sep` outside double-quoted strings.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\""),
        None => v.to_owned(),
    }
}

/// The entries of an `Accept` header, best first; entries with `q=0` are dropped. `None` or an
/// empty header gives an empty list (the caller's default applies).
pub fn parse_accept(header: Option<&str>) -> Vec<MediaType> {
    let Some(h) = header else {
        return Vec::new();
    };
    let mut v: Vec<MediaType> = split_outside_quotes(h, ',')
        .into_iter()
        .filter_map(|e| MediaType::parse(e.trim()))
        .filter(|m| m.q > 0.0)
        .collect();
    // Stable: equal qualities keep the client's order.
    v.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// The framing of one `multipart/related` body.
#[derive(Debug, Clone)]
pub struct Multipart {
    boundary: String,
    related_type: String,
}

impl Multipart {
    /// A body whose root type (the `type` parameter) is `related_type`, with a fresh boundary.
    pub fn new(related_type: &str) -> Self {
        Multipart {
            boundary: format!("vesalius-{}", uuid::Uuid::new_v4().simple()),
            related_type: related_type.to_owned(),
        }
    }

    /// The boundary.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The `Content-Type` of the whole response.
    pub fn content_type(&self) -> String {
        format!(
            "multipart/related; type=\"{}\"; boundary={}",
            self.related_type, self.boundary
        )
    }

    /// The delimiter and headers that open a part of type `content_type`. Every part after the
    /// first starts with the CRLF that ends the previous part's bytes (RFC 2046 5.1.1).
    pub fn part_header(&self, first: bool, content_type: &str, location: Option<&str>) -> Bytes {
        let mut s = String::with_capacity(128);
        if !first {
            s.push_str("\r\n");
        }
        s.push_str("--");
        s.push_str(&self.boundary);
        s.push_str("\r\nContent-Type: ");
        s.push_str(content_type);
        if let Some(l) = location {
            s.push_str("\r\nContent-Location: ");
            s.push_str(l);
        }
        s.push_str("\r\n\r\n");
        Bytes::from(s)
    }

    /// The closing delimiter; `empty` when no part was written.
    pub fn closing(&self, empty: bool) -> Bytes {
        let lead = if empty { "" } else { "\r\n" };
        Bytes::from(format!("{lead}--{}--\r\n", self.boundary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_accept() {
        let m = MediaType::parse(
            r#"Multipart/Related; type="application/dicom"; transfer-syntax=*; boundary="a;b""#,
        )
        .unwrap();
        assert_eq!(m.essence, "multipart/related");
        assert_eq!(m.related_type().as_deref(), Some("application/dicom"));
        assert_eq!(m.transfer_syntax(), Some("*"));
        assert_eq!(m.param("BOUNDARY"), Some("a;b"));
        let a = parse_accept(Some(
            r#"image/png;q=0.5, multipart/related; type="image/jpeg", image/*;q=0, */*;q=0.1"#,
        ));
        let e: Vec<&str> = a.iter().map(|m| m.essence.as_str()).collect();
        assert_eq!(e, ["multipart/related", "image/png", "*/*"]);
        assert!(MediaType::parse("image/*").unwrap().covers("image/png"));
        assert!(
            !MediaType::parse("image/*")
                .unwrap()
                .covers("application/dicom")
        );
        assert!(MediaType::parse("nonsense").is_none());
        assert!(parse_accept(None).is_empty());
    }

    #[test]
    fn multipart_framing() {
        let m = Multipart::new("application/dicom");
        let b = m.boundary().to_owned();
        let mut body = Vec::new();
        body.extend_from_slice(&m.part_header(true, "application/dicom", None));
        body.extend_from_slice(b"ONE");
        body.extend_from_slice(&m.part_header(false, "application/dicom", None));
        body.extend_from_slice(b"TWO");
        body.extend_from_slice(&m.closing(false));
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            format!(
                "--{b}\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--{b}\r\n\
                 Content-Type: application/dicom\r\n\r\nTWO\r\n--{b}--\r\n"
            )
        );
        assert!(m.content_type().contains("type=\"application/dicom\""));
    }
}
