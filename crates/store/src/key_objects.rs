//! Key image documents the server makes (issue 6) and the rejection notes that withdraw them.
//!
//! A key image marked in the viewer is a Key Object Selection Document (PS3.3 A.35.4) titled
//! (113000, DCM, "Of Interest"), made by the server (Manufacturer "Vesalius") for a user, who is
//! named in its observer context (TID 2010 includes TID 1002; TID 1003 Person Observer
//! Identifying Attributes: (121008, DCM, "Person Observer Name") and (128774, DCM, "Person
//! Observer's Login Name"), the latter holding the **creator**: the actor id under which the
//! storing site knows the user — the user's id here, `PEER/USER` for a peer's user).
//!
//! A key image is unmarked with an IHE IOCM rejection note (a KO titled (113001, DCM,
//! "Rejected for Quality Reasons"), PS3.3 C.17.6.2, CID 7011) that rejects the user's documents
//! referencing it; the archive hides rejected instances ([`crate::index`]). Rejection notes from
//! the organisation's own devices and users are honoured as they are (IOCM); an ingest made with
//! [`Rejections::KeyImagesOf`] (the key-image API, a peer writing for one of its users) may
//! reject only key image documents of that creator, and may not claim another creator.

use serde_json::Value;

/// SOP Class UID of the Key Object Selection Document (PS3.4 B.5).
pub const KEY_OBJECT_SELECTION: &str = "1.2.840.10008.5.1.4.1.1.88.59";
/// The Manufacturer (0008,0070) of the documents the server makes.
pub const MANUFACTURER: &str = "Vesalius";
/// (128774, DCM, "Person Observer's Login Name"): the creator of a key image document.
pub const LOGIN_NAME: (&str, &str, &str) = ("128774", "DCM", "Person Observer's Login Name");
/// The rejection codes of CID 7011 an archive honours (IOCM).
pub const REJECTION_CODES: [&str; 4] = ["113001", "113037", "113038", "113039"];

/// Which rejection notes an ingest may carry out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rejections {
    /// IOCM: a rejection note hides every instance it references (the organisation's own
    /// modalities, archives and users with the right to store).
    #[default]
    Honour,
    /// Only key image documents made by the server for this creator (`None`: for anyone, an
    /// administrator's unmark) may be rejected; a key image document stored with it must name
    /// that creator. Anything else is refused (`Forbidden`), nothing stored.
    KeyImagesOf(Option<String>),
    /// A rejection note is stored as a document but hides nothing: objects from a guest upload
    /// (into the quarantine inbox, and again when a user accepts it into the organisation) and
    /// a peer site's deliveries, whose senders have no right to withdraw anything the site
    /// holds.
    Ignore,
}

fn first<'a>(obj: &'a Value, tag: &str) -> Option<&'a Value> {
    obj.get(tag)?.get("Value")?.get(0)
}

fn text<'a>(obj: &'a Value, tag: &str) -> &'a str {
    first(obj, tag).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(obj: &'a Value, tag: &str) -> &'a [Value] {
    obj.get(tag)
        .and_then(|e| e.get("Value"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The (code value, scheme) of the first Concept Name Code Sequence item of `obj`.
fn concept(obj: &Value) -> (&str, &str) {
    match first(obj, "0040A043") {
        Some(c) => (text(c, "00080100"), text(c, "00080102")),
        None => ("", ""),
    }
}

/// Whether `json` (DICOM JSON) is a Key Object Selection Document.
pub fn is_key_object(json: &Value) -> bool {
    text(json, "00080016") == KEY_OBJECT_SELECTION
}

/// Whether `json` is an IOCM rejection note (a KO titled with a CID 7011 code).
pub fn is_rejection_note(json: &Value) -> bool {
    let (code, scheme) = concept(json);
    is_key_object(json) && scheme == "DCM" && REJECTION_CODES.contains(&code)
}

/// The creator named by a key image document the server made (DICOM JSON), `None` for any
/// other object (another title or maker, no creator).
pub fn key_image_creator(json: &Value) -> Option<String> {
    if !is_key_object(json)
        || concept(json) != ("113000", "DCM")
        || text(json, "00080070") != MANUFACTURER
    {
        return None;
    }
    items(json, "0040A730")
        .iter()
        .find(|i| {
            text(i, "0040A010") == "HAS OBS CONTEXT"
                && text(i, "0040A040") == "TEXT"
                && concept(i) == (LOGIN_NAME.0, LOGIN_NAME.1)
        })
        .map(|i| text(i, "0040A160").to_owned())
        .filter(|c| !c.is_empty())
}

/// The SOP Instance UIDs the IMAGE items of a key object document reference.
pub fn referenced_images(json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for item in items(json, "0040A730") {
        if text(item, "0040A040") != "IMAGE" {
            continue;
        }
        for r in items(item, "00081199") {
            let uid = text(r, "00081155");
            if !uid.is_empty() {
                out.push(uid.to_owned());
            }
        }
    }
    out
}

/// Why an object stored under [`Rejections::KeyImagesOf`]`(who)` is refused, `None` when it
/// may be stored: `json` is the object, `rejected` the current instances (DICOM JSON, `None`
/// for one not held in the study) its rejection note would reject.
pub fn refusal(
    json: &Value,
    who: Option<&str>,
    rejected: &[(String, Option<Value>)],
) -> Option<String> {
    if let (Some(who), Some(claimed)) = (who, key_image_creator(json))
        && claimed != who
    {
        return Some(format!(
            "a key image document for {claimed:?} may not be stored by {who:?}"
        ));
    }
    for (sop, doc) in rejected {
        let Some(doc) = doc else {
            return Some(format!("{sop} is not an instance of this study"));
        };
        match (key_image_creator(doc), who) {
            (None, _) => {
                return Some(format!(
                    "{sop} is not a key image document: only those may be rejected here"
                ));
            }
            (Some(c), Some(w)) if c != w => {
                return Some(format!("{sop} is a key image document of someone else"));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(value: &str) -> Value {
        json!({"00080100": {"vr": "SH", "Value": [value]}, "00080102": {"vr": "SH", "Value": ["DCM"]}})
    }

    /// A key image document (DICOM JSON) titled `title` by `creator`, flagging image "9.1".
    fn ko(title: &str, maker: &str, creator: &str) -> Value {
        json!({
            "00080016": {"vr": "UI", "Value": [KEY_OBJECT_SELECTION]},
            "00080070": {"vr": "LO", "Value": [maker]},
            "0040A043": {"vr": "SQ", "Value": [code(title)]},
            "0040A730": {"vr": "SQ", "Value": [
                {"0040A010": {"vr": "CS", "Value": ["HAS OBS CONTEXT"]},
                 "0040A040": {"vr": "CS", "Value": ["TEXT"]},
                 "0040A043": {"vr": "SQ", "Value": [code(LOGIN_NAME.0)]},
                 "0040A160": {"vr": "UT", "Value": [creator]}},
                {"0040A010": {"vr": "CS", "Value": ["CONTAINS"]},
                 "0040A040": {"vr": "CS", "Value": ["IMAGE"]},
                 "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9.1"]}}]}}
            ]},
        })
    }

    #[test]
    fn only_the_creators_key_image_documents_may_be_rejected() {
        let note = ko("113001", MANUFACTURER, "alice");
        assert!(is_rejection_note(&note));
        let alices = ko("113000", MANUFACTURER, "alice");
        let bobs = ko("113000", MANUFACTURER, "bob");
        let image = json!({"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}});
        let foreign = ko("113000", "OtherVendor", "alice");
        assert_eq!(key_image_creator(&alices).as_deref(), Some("alice"));
        assert_eq!(key_image_creator(&foreign), None, "made elsewhere");
        assert_eq!(
            key_image_creator(&note),
            None,
            "a note is no key image document"
        );
        assert_eq!(referenced_images(&alices), ["9.1"]);
        let one = |doc: &Value| vec![("1.1".to_owned(), Some(doc.clone()))];
        assert_eq!(refusal(&note, Some("alice"), &one(&alices)), None);
        for (doc, who) in [
            (&bobs, Some("alice")),
            (&image, Some("alice")),
            (&image, None),
            (&foreign, None),
            (&note, None),
        ] {
            assert!(refusal(&note, who, &one(doc)).is_some(), "{doc} by {who:?}");
        }
        // An administrator (any creator) withdraws Bob's; nobody rejects what is not held.
        assert_eq!(refusal(&note, None, &one(&bobs)), None);
        assert!(refusal(&note, None, &[("1.1".into(), None)]).is_some());
        // A key image document in another's name.
        assert!(refusal(&bobs, Some("alice"), &[]).is_some());
        assert_eq!(refusal(&bobs, None, &[]), None);
    }
}
