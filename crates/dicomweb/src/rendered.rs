//! Rendered and thumbnail resources (PS3.18 10.4.1.1.3 rendered, 10.4.1.1.4 thumbnail).
//!
//! - `.../instances/{i}/rendered`, `.../instances/{i}/frames/{n}/rendered`: one frame (the
//!   first for an instance) with the Modality LUT and VOI window applied, as `image/jpeg`
//!   (default) or `image/png` by `Accept`.
//! - `.../thumbnail` at study, series, instance and frame level: the same rendering scaled to
//!   fit [`THUMBNAIL_SIZE`] unless `viewport` says otherwise; a study's or series' thumbnail is
//!   its middle instance.
//!
//! Query parameters (PS3.18 8.3.5.1): `window=center,width[,linear|linear-exact]`,
//! `viewport=width,height` (the largest size; the aspect ratio is kept), `quality=1..100`.
//! Cropping viewports and the sigmoid VOI function are not supported (400).
//!
//! Results are kept in a small in-memory LRU ([`RenderCache`]) keyed by the blob key (which ends
//! in the content hash, so a replaced instance never hits a stale entry) and the parameters.
//! Each node has its own cache: it is an optimisation only, never state others need.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use vesalius_codec::{ImageFormat, RenderOptions};
use vesalius_store::model::StoredInstance;
use vesalius_store::query::Scope;

use crate::caller::Ctx;
use crate::error::{DicomWebError, Result};
use crate::multipart::parse_accept;
use crate::wado::parse_frame_list;
use crate::{AppState, blob_io, check_uids};

/// Default bound of thumbnails, pixels (width and height).
pub const THUMBNAIL_SIZE: u32 = 256;

/// Bytes of rendered images each router keeps.
pub const CACHE_BYTES: usize = 64 << 20;

type Params = Query<Vec<(String, String)>>;

/// A least-recently-used cache of rendered images, bounded in bytes.
pub type RenderCache = vesalius_core::lru::Lru<Bytes>;

/// Rendering parameters from a query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RenderParams {
    pub window: Option<(f64, f64)>,
    pub viewport: Option<(u32, u32)>,
    pub quality: Option<u8>,
}

fn parse_render_params(params: &[(String, String)]) -> Result<RenderParams> {
    let mut p = RenderParams::default();
    let bad = |m: String| DicomWebError::bad_request(m);
    for (name, value) in params {
        let fields: Vec<&str> = value.split(',').map(str::trim).collect();
        match name.as_str() {
            "window" => {
                let nums: Option<Vec<f64>> =
                    fields.iter().take(2).map(|f| f.parse().ok()).collect();
                match (nums.as_deref(), fields.get(2).copied()) {
                    (Some(&[c, w]), None | Some("linear" | "linear-exact")) if w > 0.0 => {
                        p.window = Some((c, w));
                    }
                    (_, Some(f)) if !matches!(f, "linear" | "linear-exact") => {
                        return Err(bad(format!("the VOI function {f:?} is not supported")));
                    }
                    _ => {
                        return Err(bad(format!(
                            "window must be center,width[,function]: {value:?}"
                        )));
                    }
                }
            }
            "viewport" => {
                if fields.len() > 2 {
                    return Err(bad(
                        "cropping viewports (sx,sy,sw,sh) are not supported".into()
                    ));
                }
                let dims: Option<Vec<u32>> = fields
                    .iter()
                    .map(|f| f.parse::<u32>().ok().filter(|n| (1..=16384).contains(n)))
                    .collect();
                match dims.as_deref() {
                    Some(&[w, h]) => p.viewport = Some((w, h)),
                    _ => return Err(bad(format!("viewport must be width,height: {value:?}"))),
                }
            }
            "quality" => {
                p.quality = Some(
                    value
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(|| bad(format!("quality must be 1 to 100: {value:?}")))?,
                );
            }
            _ => {}
        }
    }
    Ok(p)
}

/// `image/jpeg` (default) or `image/png`, from `Accept` and the `accept` query parameter.
pub(crate) fn negotiate_image(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<ImageFormat> {
    let mut entries = parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    for (_, v) in params.iter().filter(|(k, _)| k == "accept") {
        entries.extend(parse_accept(Some(v)));
    }
    if entries.is_empty() {
        return Ok(ImageFormat::Jpeg);
    }
    for e in &entries {
        if e.covers("image/jpeg") {
            return Ok(ImageFormat::Jpeg);
        }
        if e.covers("image/png") {
            return Ok(ImageFormat::Png);
        }
    }
    Err(DicomWebError::not_acceptable(
        "rendered images are available as image/jpeg or image/png",
    ))
}

/// Renders one frame of an instance, through the cache.
pub(crate) async fn render(
    st: &AppState,
    inst: &StoredInstance,
    frame: u32,
    p: &RenderParams,
    format: ImageFormat,
    thumbnail: bool,
) -> Result<Response> {
    let opts = RenderOptions {
        frame,
        window: p.window,
        viewport: p
            .viewport
            .or(thumbnail.then_some((THUMBNAIL_SIZE, THUMBNAIL_SIZE))),
        format,
        quality: p.quality.unwrap_or(if thumbnail { 75 } else { 90 }),
    };
    let key = format!(
        "{}|{}|{:?}|{:?}|{:?}|{}",
        inst.blob_key, opts.frame, opts.window, opts.viewport, opts.format, opts.quality
    );
    let content_type = match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Png => "image/png",
    };
    let image = match st.cache.get(&key) {
        Some(b) => b,
        None => {
            let f = blob_io::local_file(st.ingestor.blobs(), &inst.blob_key).await?;
            let out = tokio::task::spawn_blocking(move || vesalius_codec::render(f.path(), &opts))
                .await??;
            let b = Bytes::from(out);
            st.cache.put(key, b.clone());
            b
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], image).into_response())
}

/// Renders frame `frame` of the instance in `scope` (404 beyond its frames).
async fn render_scoped(
    st: &AppState,
    scope: Scope,
    frame: u32,
    headers: &HeaderMap,
    params: &[(String, String)],
    thumbnail: bool,
) -> Result<Response> {
    let p = parse_render_params(params)?;
    let format = negotiate_image(headers, params)?;
    let (inst, index) = st
        .ingestor
        .index()
        .frames(&scope)
        .await?
        .ok_or_else(|| DicomWebError::not_found("no such instance"))?;
    if !index.frames.is_empty() && frame as usize > index.frames.len() {
        return Err(DicomWebError::not_found(format!(
            "frame {frame} of an instance with {} frame(s)",
            index.frames.len()
        )));
    }
    render(st, &inst, frame, &p, format, thumbnail).await
}

fn one_frame(list: &str) -> Result<u32> {
    match parse_frame_list(list)?.as_slice() {
        [n] => Ok(*n),
        _ => Err(DicomWebError::bad_request(
            "rendered frames are served one frame at a time",
        )),
    }
}

/// `GET .../instances/{sop}/rendered`.
pub(crate) async fn instance_rendered(
    st: Ctx,
    Path((study, series, sop)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    render_scoped(&st, scope, 1, &headers, &params, false).await
}

/// `GET .../instances/{sop}/thumbnail`.
pub(crate) async fn instance_thumbnail(
    st: Ctx,
    Path((study, series, sop)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    render_scoped(&st, scope, 1, &headers, &params, true).await
}

/// `GET .../instances/{sop}/frames/{n}/rendered`.
pub(crate) async fn frame_rendered(
    st: Ctx,
    Path((study, series, sop, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let frame = one_frame(&frames)?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    render_scoped(&st, scope, frame, &headers, &params, false).await
}

/// `GET .../instances/{sop}/frames/{n}/thumbnail`.
pub(crate) async fn frame_thumbnail(
    st: Ctx,
    Path((study, series, sop, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let frame = one_frame(&frames)?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    render_scoped(&st, scope, frame, &headers, &params, true).await
}

/// `GET /studies/{study}/series/{series}/thumbnail`: the middle instance.
pub(crate) async fn series_thumbnail(
    st: Ctx,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study, &series])?;
    middle_thumbnail(
        &st,
        st.scope(&study, Some(&series), None),
        &headers,
        &params,
    )
    .await
}

/// `GET /studies/{study}/thumbnail`: the middle instance of the study.
pub(crate) async fn study_thumbnail(
    st: Ctx,
    Path(study): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    check_uids(&[&study])?;
    middle_thumbnail(&st, st.scope(&study, None, None), &headers, &params).await
}

async fn middle_thumbnail(
    st: &AppState,
    scope: Scope,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Response> {
    let p = parse_render_params(params)?;
    let format = negotiate_image(headers, params)?;
    let instances = st.ingestor.index().instances(&scope).await?;
    let Some(inst) = representative(&instances) else {
        return Err(DicomWebError::not_found("nothing to show a thumbnail of"));
    };
    let mut response = render(st, inst, 1, &p, format, true).await?;
    // Which instance the image shows (RFC 9110 8.7), so that a viewer can place it: the web
    // app draws a study's thumbnail as its first image before it has read the metadata.
    let location = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        inst.study_uid, inst.series_uid, inst.sop_instance_uid
    );
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(response)
}

/// SOP classes without pixels to show (PS3.4 Annex B: structured reports and key object
/// selection `…88.*`, presentation states `…11.*`, segmentation/registration `…66.*`,
/// encapsulated documents `…104.*`, raw data `…66`).
fn is_image_class(sop_class: &str) -> bool {
    const NOT_IMAGES: &[&str] = &[
        "1.2.840.10008.5.1.4.1.1.88.",
        "1.2.840.10008.5.1.4.1.1.11.",
        "1.2.840.10008.5.1.4.1.1.66",
        "1.2.840.10008.5.1.4.1.1.104.",
    ];
    !NOT_IMAGES.iter().any(|p| sop_class.starts_with(p))
}

/// The representative image of instances ordered by series (PS3.18 10.4.1.1.4 leaves the
/// choice to the origin server): the middle instance of the series with the most images, as
/// the web viewer opens a study (the first such series on a tie); of all instances when none is
/// an image.
fn representative(instances: &[StoredInstance]) -> Option<&StoredInstance> {
    let images: Vec<&StoredInstance> = instances
        .iter()
        .filter(|i| is_image_class(&i.sop_class_uid))
        .collect();
    if images.is_empty() {
        return instances.get(instances.len() / 2);
    }
    let mut best: &[&StoredInstance] = &[];
    let mut start = 0;
    for end in 1..=images.len() {
        if end == images.len() || images[end].series_uid != images[start].series_uid {
            if end - start > best.len() {
                best = &images[start..end];
            }
            start = end;
        }
    }
    best.get(best.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn inst(series: &str, sop_class: &str, n: i64) -> StoredInstance {
        StoredInstance {
            org: "o".into(),
            study_uid: "1".into(),
            series_uid: series.into(),
            sop_class_uid: sop_class.into(),
            sop_instance_uid: format!("{series}.{n}"),
            transfer_syntax: String::new(),
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
            number: Some(n),
        }
    }

    #[test]
    fn the_representative_image_is_the_middle_of_the_largest_image_series() {
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        const KO: &str = "1.2.840.10008.5.1.4.1.1.88.59";
        let mut list: Vec<StoredInstance> = (1..=3).map(|n| inst("1.1", CT, n)).collect();
        list.extend((1..=5).map(|n| inst("1.2", CT, n)));
        list.extend((1..=9).map(|n| inst("1.3", KO, n)));
        let r = representative(&list).unwrap();
        assert_eq!(r.sop_instance_uid, "1.2.3");
        let kos: Vec<StoredInstance> = (1..=3).map(|n| inst("1.3", KO, n)).collect();
        assert_eq!(representative(&kos).unwrap().sop_instance_uid, "1.3.2");
        assert!(representative(&[]).is_none());
    }

    #[test]
    fn render_parameters() {
        let r = parse_render_params(&p(&[
            ("window", "40,400,linear"),
            ("viewport", "64,32"),
            ("quality", "80"),
            ("annotation", "patient"),
        ]))
        .unwrap();
        assert_eq!(r.window, Some((40.0, 400.0)));
        assert_eq!(r.viewport, Some((64, 32)));
        assert_eq!(r.quality, Some(80));
        for bad in [
            p(&[("window", "40")]),
            p(&[("window", "40,0")]),
            p(&[("window", "40,400,sigmoid")]),
            p(&[("viewport", "64,32,0,0,10,10")]),
            p(&[("viewport", "0,32")]),
            p(&[("quality", "0")]),
        ] {
            assert!(parse_render_params(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate_image(&h, &[]).unwrap(), ImageFormat::Jpeg);
        h.insert(header::ACCEPT, "image/png".parse().unwrap());
        assert_eq!(negotiate_image(&h, &[]).unwrap(), ImageFormat::Png);
        h.insert(header::ACCEPT, "image/gif".parse().unwrap());
        assert!(negotiate_image(&h, &[]).is_err());
        assert_eq!(
            negotiate_image(&h, &p(&[("accept", "image/png")])).unwrap(),
            ImageFormat::Png
        );
    }
}
