//! WADO-URI: `GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..` (PS3.18 9).
//!
//! Parameters (PS3.18 9.1.2): `contentType` (a comma-separated preference list;
//! `application/dicom`, `image/jpeg` — the default — or `image/png`), `transferSyntax` (for
//! `application/dicom`; default: as stored, a departure from the standard's Explicit VR Little
//! Endian that keeps the bytes exactly as received), `frameNumber`, `rows`, `columns`,
//! `windowCenter` + `windowWidth`, `imageQuality`. `anonymize`, `region`, `annotation` and
//! `presentationUID` are not supported (400), so a client never gets less than it asked for
//! without knowing.

use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::Response;
use vesalius_codec::ImageFormat;

use crate::caller::Ctx;
use crate::error::{DicomWebError, Result};
use crate::multipart::MediaType;
use crate::rendered::{RenderParams, render};
use crate::{check_uids, wado};

/// `GET /wado`.
pub(crate) async fn wado(
    st: Ctx,
    _headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let required = |name: &str| {
        get(name)
            .ok_or_else(|| DicomWebError::bad_request(format!("the {name} parameter is missing")))
    };
    if required("requestType")? != "WADO" {
        return Err(DicomWebError::bad_request("requestType must be WADO"));
    }
    for unsupported in ["anonymize", "region", "annotation", "presentationUID"] {
        if get(unsupported).is_some() {
            return Err(DicomWebError::bad_request(format!(
                "the {unsupported} parameter is not supported"
            )));
        }
    }
    let (study, series, sop) = (
        required("studyUID")?,
        required("seriesUID")?,
        required("objectUID")?,
    );
    check_uids(&[study, series, sop])?;
    let scope = st.scope(study, Some(series), Some(sop));
    let (inst, index) = st
        .ingestor
        .index()
        .frames(&scope)
        .await?
        .ok_or_else(|| DicomWebError::not_found(format!("instance {sop}")))?;
    match content_type(get("contentType"))? {
        None => {
            let wanted = get("transferSyntax").unwrap_or("*").to_owned();
            let target = wado::choose_syntax(&inst.transfer_syntax, std::slice::from_ref(&wanted))
                .ok_or_else(|| {
                    DicomWebError::not_acceptable(format!(
                        "instance {sop} is stored in {} and cannot be converted to {wanted}",
                        inst.transfer_syntax
                    ))
                })?;
            let body = wado::instance_body(st.ingestor.blobs().clone(), inst, target);
            Ok(wado::response("application/dicom", body))
        }
        Some(format) => {
            let number = |name: &str| -> Result<Option<f64>> {
                get(name)
                    .map(|v| {
                        v.parse::<f64>().map_err(|_| {
                            DicomWebError::bad_request(format!("{name} must be a number: {v:?}"))
                        })
                    })
                    .transpose()
            };
            let frame = number("frameNumber")?.unwrap_or(1.0);
            if frame < 1.0 || frame.fract() != 0.0 {
                return Err(DicomWebError::bad_request("frameNumber must be 1 or more"));
            }
            let frame = frame as u32;
            if !index.frames.is_empty() && frame as usize > index.frames.len() {
                return Err(DicomWebError::not_found(format!(
                    "frame {frame} of instance {sop}"
                )));
            }
            let dim = |v: Option<f64>| v.map(|v| v.clamp(1.0, 16384.0) as u32);
            let (rows, columns) = (dim(number("rows")?), dim(number("columns")?));
            let viewport = (rows.is_some() || columns.is_some())
                .then(|| (columns.unwrap_or(16384), rows.unwrap_or(16384)));
            let window = match (number("windowCenter")?, number("windowWidth")?) {
                (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
                (None, None) => None,
                _ => {
                    return Err(DicomWebError::bad_request(
                        "windowCenter and windowWidth go together, with a positive width",
                    ));
                }
            };
            let quality = number("imageQuality")?
                .map(|q| {
                    if (1.0..=100.0).contains(&q) {
                        Ok(q as u8)
                    } else {
                        Err(DicomWebError::bad_request("imageQuality must be 1 to 100"))
                    }
                })
                .transpose()?;
            let p = RenderParams {
                window,
                viewport,
                quality,
            };
            render(&st, &inst, frame, &p, format, false).await
        }
    }
}

/// The first supported entry of `contentType`: `None` for `application/dicom`, else the image
/// format. Absent: `image/jpeg`, the default for image objects (PS3.18 9.1.2).
fn content_type(list: Option<&str>) -> Result<Option<ImageFormat>> {
    let Some(list) = list else {
        return Ok(Some(ImageFormat::Jpeg));
    };
    for entry in list.split(',') {
        let Some(m) = MediaType::parse(entry.trim()) else {
            continue;
        };
        match m.essence.as_str() {
            "application/dicom" => return Ok(None),
            "image/jpeg" | "image/*" | "*/*" => return Ok(Some(ImageFormat::Jpeg)),
            "image/png" => return Ok(Some(ImageFormat::Png)),
            _ => {}
        }
    }
    Err(DicomWebError::not_acceptable(
        "contentType must be application/dicom, image/jpeg or image/png",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(None).unwrap(), Some(ImageFormat::Jpeg));
        assert_eq!(content_type(Some("application/dicom")).unwrap(), None);
        assert_eq!(
            content_type(Some("image/gif, image/png")).unwrap(),
            Some(ImageFormat::Png)
        );
        assert!(content_type(Some("text/html")).is_err());
    }
}
