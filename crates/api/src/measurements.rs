//! Saved measurements (issue 6): `POST /api/v1/studies/{study}/measurements` saves the
//! viewer's measurements of a study (lengths, angles, ellipse and rectangle ROIs on acquired
//! images) as a **Comprehensive SR** document (PS3.3 A.35.3, SOP class
//! 1.2.840.10008.5.1.4.1.1.88.33) following TID 1500 "Measurement Report" (PS3.16), in a new
//! series of the study, the way OHIF saves its measurements. The viewer reads the newest such
//! document of the study when it opens and draws what it holds; every save carries the whole
//! set (so a removed measurement stays removed), and any DICOM system reading TID 1500 finds
//! the values as coded numbers with UCUM units. With `?peer=NAME` the study is one held at that
//! peer and the report is stored there ([`crate::annotate`]).
//!
//! Body: `{"measurements": [{"instance": "<SOP Instance UID>", "frame": 1, "kind":
//! "length" | "angle" | "ellipse" | "rect", "points": [[x, y], ...], "length": mm, "angle":
//! degrees, "mean", "sd", "min", "max" (modality values), "area": mm², "unit": "HU" | ""}]}`
//! (0 to [`MAX_MEASUREMENTS`]; points in image coordinates: column, row, the top left corner of
//! the top left pixel at (0, 0), PS3.3 C.18.6.1.1; a length has 2 points, an angle 3 (first
//! arm's end, vertex, second arm's end), an ROI the 2 corners of its bounding box). Answer
//! `201 {"studyInstanceUID", "seriesInstanceUID", "sopInstanceUID", "measurements"}`.
//! Rights as key images (`annotate`, key_images.rs `writable_study`); audited `measurements`.
//!
//! The document: a CONTAINER (126000, DCM, "Imaging Measurement Report") with Content
//! Template DCMR 1500; Language of Content (121049, DCM) English; Observer Type (121005,
//! DCM) person and Person Observer Name (121008, DCM) (TID 1001/1002); Procedure Reported
//! (121058, DCM) (363679005, SCT, "Imaging"); an Image Library (111028, DCM) listing each
//! image measured; Imaging Measurements (126010, DCM) with one Measurement Group (125007,
//! DCM) per measurement: Tracking Identifier (112039, DCM) and Tracking Unique Identifier
//! (112040, DCM), then
//! - a length: NUM (410668003, SCT, "Length") in `mm`, INFERRED FROM an SCOORD POLYLINE of
//!   its 2 points;
//! - an angle: NUM (1483009, SCT, "Angle") in `deg`, INFERRED FROM an SCOORD POLYLINE of its
//!   3 points;
//! - an ROI (TID 1410 style): Image Region (111030, DCM) SCOORD ELLIPSE (major axis' ends,
//!   then minor axis', C.18.6.1.2) or POLYGON (closed: the first point repeated), then NUM Mean
//!   (373098007, SCT), Standard Deviation (386136009, SCT), Minimum (255605001, SCT), Maximum
//!   (56851009, SCT) in `[hnsf'U]` (CT) or `1`, and Area (42798000, SCT) in `mm2`;
//!
//! each SCOORD has a SELECTED FROM IMAGE child referencing the instance (and frame).
//!
//! **Measurements on reformats** (coronal, sagittal, axial planes computed from a series'
//! volume, and thick slabs: MIP, MinIP, average) are image-independent: `{"frameOfReference":
//! "<Frame of Reference UID>", "series": "<the volume's Series Instance UID>", "kind", "points":
//! [[x, y, z], ...], values..., "slab"?: {"projection": "max" | "min" | "mean", "thickness":
//! mm}}` with points in the patient coordinate system (mm, PS3.3 C.7.6.2.1.1): a length 2, an
//! angle 3, an ellipse 4 (major axis' ends, then minor axis', coplanar: C.18.9.1.2), a
//! rectangle its 4 corners in order. Their geometry is an **SCOORD3D** item (PS3.3 C.18.9:
//! Graphic Data as (x, y, z) triplets, Referenced Frame of Reference UID) in place of the
//! SCOORD, without an image reference; a rectangle is a closed POLYGON (first point
//! repeated). A slab measurement's group also carries how the plane was made: HAS CONCEPT MOD
//! Measurement Method (370129005, SCT) = Maximum intensity projection (113078, DCM), Minimum
//! intensity projection (113079, DCM) or Pixel by pixel mean (113049, DCM) (CID 7203), and
//! HAS ACQ CONTEXT NUM Slice Thickness (112225, DCM) in `mm`: the slab. Every reformat
//! measurement's group names the series (HAS ACQ CONTEXT UIDREF Source series for
//! segmentation, 121232 DCM), where the viewer shows it again. The Image Library and
//! the evidence list the series' instances. A document holding SCOORD3D items is a
//! **Comprehensive 3D SR** (PS3.3 A.35.13, 1.2.840.10008.5.1.4.1.1.88.34: SCOORD3D is not
//! allowed in a Comprehensive SR), with the Enhanced General Equipment module (C.7.5.2).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use vesalius_auth::Caller;

use crate::annotate::{AtPeer, Image, annotated_study};
use crate::key_images::{
    bad, code, evidence, new_uid, part10, put_patient_and_study, put_root_container, seq, text,
};
use crate::{ApiError, Services};

/// SOP Class UID of the Comprehensive SR.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// SOP Class UID of the Comprehensive 3D SR (SCOORD3D allowed).
pub const COMPREHENSIVE_3D_SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
/// Most measurements one document holds.
pub const MAX_MEASUREMENTS: usize = 500;
/// Series Number of the new series.
const SERIES_NUMBER: i32 = 9002;
/// Series Description the viewer looks for.
pub const SERIES_DESCRIPTION: &str = "Measurements";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMeasurements {
    measurements: Vec<Measurement>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct Measurement {
    /// The image measured (image coordinates), or none for a reformat's measurement.
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    frame: Option<u32>,
    /// A reformat's measurement: the Frame of Reference of its patient coordinates.
    #[serde(default, rename = "frameOfReference")]
    frame_of_reference: Option<String>,
    /// A reformat's measurement: the series whose volume was reformatted.
    #[serde(default)]
    series: Option<String>,
    kind: String,
    points: Vec<Vec<f64>>,
    #[serde(default)]
    length: Option<f64>,
    #[serde(default)]
    angle: Option<f64>,
    #[serde(default)]
    mean: Option<f64>,
    #[serde(default)]
    sd: Option<f64>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    unit: Option<String>,
    /// A thick slab's projection and thickness (reformats only).
    #[serde(default)]
    slab: Option<Slab>,
}

/// The thick slab a reformat's measurement was made on.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct Slab {
    /// `max` (MIP), `min` (MinIP) or `mean` (average).
    projection: String,
    /// mm.
    thickness: f64,
}

impl Measurement {
    /// Checks the shape of one measurement (index `i` in the request).
    fn check(&self, i: usize) -> Result<(), ApiError> {
        let need = |v: Option<f64>, what: &str| match v {
            Some(x) if x.is_finite() => Ok(()),
            _ => Err(bad(format!(
                "measurements[{i}]: {what} missing or not a number"
            ))),
        };
        let points = match self.kind.as_str() {
            "length" => {
                need(self.length, "length")?;
                2
            }
            "angle" => {
                need(self.angle, "angle")?;
                if !(0.0..=180.0).contains(&self.angle.unwrap_or(-1.0)) {
                    return Err(bad(format!("measurements[{i}]: angle outside 0..180")));
                }
                3
            }
            "ellipse" | "rect" => {
                for (v, w) in [
                    (self.mean, "mean"),
                    (self.sd, "sd"),
                    (self.min, "min"),
                    (self.max, "max"),
                    (self.area, "area"),
                ] {
                    need(v, w)?;
                }
                2
            }
            k => {
                return Err(bad(format!(
                    "measurements[{i}]: kind {k:?} is not length, angle, ellipse or rect"
                )));
            }
        };
        // A reformat's ROI is given by its whole outline (4 points), an image's by 2 corners.
        let (points, dims, what) = match (&self.instance, &self.frame_of_reference) {
            (Some(_), None) if self.series.is_none() && self.slab.is_none() => {
                (points, 2, "image coordinates")
            }
            (None, Some(_)) if self.series.is_some() && self.frame.is_none() => (
                if matches!(self.kind.as_str(), "ellipse" | "rect") {
                    4
                } else {
                    points
                },
                3,
                "patient coordinates",
            ),
            _ => {
                return Err(bad(format!(
                    "measurements[{i}]: either an instance (and frame), or a frameOfReference \
                     and series (and slab)"
                )));
            }
        };
        if self.points.len() != points
            || self.points.iter().any(|p| p.len() != dims)
            || self
                .points
                .iter()
                .flatten()
                .any(|x| !x.is_finite() || x.abs() > 1e6)
        {
            return Err(bad(format!(
                "measurements[{i}]: a {} has {points} points ({what})",
                self.kind
            )));
        }
        if self.frame == Some(0) {
            return Err(bad(format!(
                "measurements[{i}]: frames are numbered from 1"
            )));
        }
        if !matches!(self.unit.as_deref(), None | Some("") | Some("HU")) {
            return Err(bad(format!("measurements[{i}]: unit is \"HU\" or \"\"")));
        }
        if let Some(slab) = &self.slab
            && !(matches!(slab.projection.as_str(), "max" | "min" | "mean")
                && slab.thickness.is_finite()
                && slab.thickness > 0.0
                && slab.thickness <= 1e4)
        {
            return Err(bad(format!(
                "measurements[{i}]: slab is {{\"projection\": \"max\" | \"min\" | \"mean\", \"thickness\": mm}}"
            )));
        }
        for uid in [&self.instance, &self.frame_of_reference, &self.series]
            .into_iter()
            .flatten()
        {
            crate::links::check_uid(uid)?;
        }
        Ok(())
    }
}

/// `POST /api/v1/studies/{study}/measurements`.
pub(crate) async fn create(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    Query(at): Query<AtPeer>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    crate::links::check_uid(&study)?;
    let req: NewMeasurements = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not a measurements request: {e}")))?;
    if req.measurements.len() > MAX_MEASUREMENTS {
        return Err(bad(format!(
            "measurements: at most {MAX_MEASUREMENTS}, {} given",
            req.measurements.len()
        )));
    }
    for (i, m) in req.measurements.iter().enumerate() {
        m.check(i)?;
    }
    let target = annotated_study(
        &sv,
        &c,
        &study,
        at.peer.as_deref(),
        "measurements",
        json!({ "measurements": req.measurements.len() }),
    )
    .await?;
    let image_ref = |i: &Image| ImageRef {
        series_uid: i.series_uid.clone(),
        sop_class_uid: i.sop_class_uid.clone(),
        sop_uid: i.sop_uid.clone(),
    };
    let mut sources = Vec::with_capacity(req.measurements.len());
    for m in &req.measurements {
        if let Some(instance) = &m.instance {
            let image = target.images(std::iter::once(instance.as_str()))?[0];
            sources.push(Source::Image(image_ref(image)));
            continue;
        }
        // A reformat's: the series is the study's, and of that Frame of Reference.
        let (series, fr) = (
            m.series.as_deref().unwrap_or_default(),
            m.frame_of_reference.as_deref().unwrap_or_default(),
        );
        let mut images: Vec<ImageRef> = Vec::new();
        for image in target.images.values().filter(|x| x.series_uid == series) {
            if image.frame_of_reference()? != fr {
                return Err(bad(format!(
                    "series {series} is not of Frame of Reference {fr}"
                )));
            }
            images.push(image_ref(image));
        }
        if images.is_empty() {
            return Err(bad(format!("{series} is not a series of study {study}")));
        }
        images.sort_by(|a, b| a.sop_uid.cmp(&b.sop_uid));
        sources.push(Source::Volume {
            frame_of_reference: fr.to_owned(),
            series_uid: series.to_owned(),
            images,
        });
    }
    let series_uid = new_uid();
    let sop_uid = new_uid();
    let report = Report {
        study_uid: &study,
        series_uid: &series_uid,
        sop_uid: &sop_uid,
        source: &target.source,
        observer: &c.principal.actor.name,
        items: req.measurements.iter().zip(sources.iter()).collect(),
        now: now_micros(),
    };
    let bytes = report.encode()?;
    target
        .save(
            &sv,
            &c,
            &sop_uid,
            bytes,
            "measurements",
            json!({ "series": series_uid, "sop": sop_uid, "measurements": req.measurements.len() }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "studyInstanceUID": study,
            "seriesInstanceUID": series_uid,
            "sopInstanceUID": sop_uid,
            "measurements": req.measurements.len(),
        })),
    )
        .into_response())
}

/// The instance a measurement was made on.
pub(crate) struct ImageRef {
    series_uid: String,
    sop_class_uid: String,
    sop_uid: String,
}

/// What a measurement was made on: an image, or a reformat of a series' volume (patient
/// coordinates in a Frame of Reference; the images of the series).
pub(crate) enum Source {
    Image(ImageRef),
    Volume {
        frame_of_reference: String,
        series_uid: String,
        images: Vec<ImageRef>,
    },
}

impl Source {
    fn images(&self) -> &[ImageRef] {
        match self {
            Source::Image(r) => std::slice::from_ref(r),
            Source::Volume { images, .. } => images,
        }
    }
}

/// The document to encode.
struct Report<'a> {
    study_uid: &'a str,
    series_uid: &'a str,
    sop_uid: &'a str,
    /// DICOM JSON of an instance of the study (patient and study attributes).
    source: &'a Json_,
    observer: &'a str,
    items: Vec<(&'a Measurement, &'a Source)>,
    /// Content date (`YYYYMMDD`) and time (`HHMMSS.FFFFFF`), UTC: the viewer takes the newest.
    now: (String, String),
}

/// Today's date and time (UTC) as DA and TM with microseconds.
fn now_micros() -> (String, String) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = vesalius_deid::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    (
        format!("{y:04}{m:02}{day:02}"),
        format!(
            "{:02}{:02}{:02}.{:06}",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            d.subsec_micros()
        ),
    )
}

/// A decimal string (DS, at most 16 characters).
fn ds(x: f64) -> String {
    for places in (0..=6).rev() {
        let s = format!("{x:.places$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.3e}")
}

fn item(relationship: &str, value_type: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, value_type),
    ])
}

fn named(relationship: &str, value_type: &str, concept: InMemDicomObject) -> InMemDicomObject {
    let mut o = item(relationship, value_type);
    o.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]));
    o
}

fn code_item(
    relationship: &str,
    concept: InMemDicomObject,
    value: InMemDicomObject,
) -> InMemDicomObject {
    let mut o = named(relationship, "CODE", concept);
    o.put(seq(tags::CONCEPT_CODE_SEQUENCE, vec![value]));
    o
}

fn container(
    relationship: &str,
    concept: InMemDicomObject,
    content: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut o = named(relationship, "CONTAINER", concept);
    o.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    o.put(seq(tags::CONTENT_SEQUENCE, content));
    o
}

fn sop_ref(r: &ImageRef, frame: Option<u32>) -> InMemDicomObject {
    let mut o = InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_uid),
    ]);
    if let Some(f) = frame {
        o.put(DataElement::new(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            PrimitiveValue::from(f.to_string()),
        ));
    }
    o
}

/// What SCOORD and SCOORD3D items share: the value type (with a concept name, or none), the
/// Graphic Data (0070,0022) and the Graphic Type (0070,0023).
fn coordinates(
    relationship: &str,
    value_type: &str,
    concept: Option<InMemDicomObject>,
    graphic_type: &str,
    data: Vec<f32>,
) -> InMemDicomObject {
    let mut o = match concept {
        Some(c) => named(relationship, value_type, c),
        None => item(relationship, value_type),
    };
    o.put(DataElement::new(
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32(data.into()),
    ));
    o.put(text(tags::GRAPHIC_TYPE, VR::CS, graphic_type));
    o
}

/// An SCOORD item (PS3.3 C.18.6) with its SELECTED FROM IMAGE child.
fn scoord(
    relationship: &str,
    concept: Option<InMemDicomObject>,
    graphic_type: &str,
    points: &[[f64; 2]],
    image: &ImageRef,
    frame: Option<u32>,
) -> InMemDicomObject {
    let data = points.iter().flatten().map(|&x| x as f32).collect();
    let mut o = coordinates(relationship, "SCOORD", concept, graphic_type, data);
    let mut img = item("SELECTED FROM", "IMAGE");
    img.put(seq(
        tags::REFERENCED_SOP_SEQUENCE,
        vec![sop_ref(image, frame)],
    ));
    o.put(seq(tags::CONTENT_SEQUENCE, vec![img]));
    o
}

/// An SCOORD3D item (PS3.3 C.18.9): (x, y, z) triplets in the patient coordinate system of
/// `frame_of_reference`, referencing no image.
fn scoord3d(
    relationship: &str,
    concept: Option<InMemDicomObject>,
    graphic_type: &str,
    points: &[Vec<f64>],
    frame_of_reference: &str,
) -> InMemDicomObject {
    let data = points.iter().flatten().map(|&x| x as f32).collect();
    let mut o = coordinates(relationship, "SCOORD3D", concept, graphic_type, data);
    o.put(text(
        tags::REFERENCED_FRAME_OF_REFERENCE_UID,
        VR::UI,
        frame_of_reference,
    ));
    o
}

/// The geometry item of a measurement: an SCOORD on its image, or an SCOORD3D in patient
/// space.
fn geometry_item(
    relationship: &str,
    concept: Option<InMemDicomObject>,
    m: &Measurement,
    source: &Source,
) -> InMemDicomObject {
    match source {
        Source::Image(image) => {
            let (kind, pts) = graphic(m);
            scoord(relationship, concept, kind, &pts, image, m.frame)
        }
        Source::Volume {
            frame_of_reference, ..
        } => {
            let (kind, pts) = graphic3d(m);
            scoord3d(relationship, concept, kind, &pts, frame_of_reference)
        }
    }
}

/// The points of a reformat measurement's SCOORD3D: as given (a polyline; an ellipse's axes'
/// ends, C.18.9.1.2), a rectangle's corners closed into a POLYGON.
fn graphic3d(m: &Measurement) -> (&'static str, Vec<Vec<f64>>) {
    match m.kind.as_str() {
        "ellipse" => ("ELLIPSE", m.points.clone()),
        "rect" => {
            let mut pts = m.points.clone();
            pts.push(m.points[0].clone());
            ("POLYGON", pts)
        }
        _ => ("POLYLINE", m.points.clone()),
    }
}

/// A NUM item: concept, value, UCUM unit (PS3.3 C.18.1).
fn num(concept: InMemDicomObject, value: f64, unit: (&str, &str)) -> InMemDicomObject {
    let mut o = named("CONTAINS", "NUM", concept);
    o.put(seq(
        tags::MEASURED_VALUE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            seq(
                tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                vec![code(unit.0, "UCUM", unit.1)],
            ),
            DataElement::new(tags::NUMERIC_VALUE, VR::DS, PrimitiveValue::from(ds(value))),
        ])],
    ));
    o
}

/// The points of a measurement's SCOORD: polyline points as given; an ellipse as the ends of
/// its major then minor axis (C.18.6.1.2); a rectangle as a closed polygon.
fn graphic(m: &Measurement) -> (&'static str, Vec<[f64; 2]>) {
    let p2 = |p: &Vec<f64>| [p[0], p[1]];
    match m.kind.as_str() {
        "ellipse" | "rect" => {
            let [a, b] = [p2(&m.points[0]), p2(&m.points[1])];
            let (x0, x1) = (a[0].min(b[0]), a[0].max(b[0]));
            let (y0, y1) = (a[1].min(b[1]), a[1].max(b[1]));
            if m.kind == "rect" {
                return (
                    "POLYGON",
                    vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]],
                );
            }
            let (xc, yc) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
            let horizontal = [[x0, yc], [x1, yc]];
            let vertical = [[xc, y0], [xc, y1]];
            let pts = if x1 - x0 >= y1 - y0 {
                [horizontal, vertical].concat()
            } else {
                [vertical, horizontal].concat()
            };
            ("ELLIPSE", pts)
        }
        _ => ("POLYLINE", m.points.iter().map(p2).collect()),
    }
}

impl Report<'_> {
    fn group(&self, n: usize, m: &Measurement, source: &Source) -> InMemDicomObject {
        let mut content = Vec::new();
        let mut id = named(
            "HAS OBS CONTEXT",
            "TEXT",
            code("112039", "DCM", "Tracking Identifier"),
        );
        id.put(text(
            tags::TEXT_VALUE,
            VR::UT,
            &format!("vesalius-{}-{}", m.kind, n + 1),
        ));
        content.push(id);
        let mut uid = named(
            "HAS OBS CONTEXT",
            "UIDREF",
            code("112040", "DCM", "Tracking Unique Identifier"),
        );
        uid.put(text(tags::UID, VR::UI, &new_uid()));
        content.push(uid);
        if let Source::Volume { series_uid, .. } = source {
            // The series whose volume was reformatted (the viewer shows the measurement there).
            let mut series = named(
                "HAS ACQ CONTEXT",
                "UIDREF",
                code("121232", "DCM", "Source series for segmentation"),
            );
            series.put(text(tags::UID, VR::UI, series_uid));
            content.push(series);
        }
        if let Some(slab) = &m.slab {
            // How the plane measured was made (CID 7203 Image Derivation) and its thickness.
            let method = match slab.projection.as_str() {
                "max" => code("113078", "DCM", "Maximum intensity projection"),
                "min" => code("113079", "DCM", "Minimum intensity projection"),
                _ => code("113049", "DCM", "Pixel by pixel mean"),
            };
            content.push(code_item(
                "HAS CONCEPT MOD",
                code("370129005", "SCT", "Measurement Method"),
                method,
            ));
            let mut thickness = num(
                code("112225", "DCM", "Slice Thickness"),
                slab.thickness,
                ("mm", "millimeter"),
            );
            thickness.put(text(tags::RELATIONSHIP_TYPE, VR::CS, "HAS ACQ CONTEXT"));
            content.push(thickness);
        }
        match m.kind.as_str() {
            "length" | "angle" => {
                let (concept, value, unit) = if m.kind == "length" {
                    (
                        code("410668003", "SCT", "Length"),
                        m.length.unwrap_or_default(),
                        ("mm", "millimeter"),
                    )
                } else {
                    (
                        code("1483009", "SCT", "Angle"),
                        m.angle.unwrap_or_default(),
                        ("deg", "degree"),
                    )
                };
                let mut v = num(concept, value, unit);
                v.put(seq(
                    tags::CONTENT_SEQUENCE,
                    vec![geometry_item("INFERRED FROM", None, m, source)],
                ));
                content.push(v);
            }
            _ => {
                content.push(geometry_item(
                    "CONTAINS",
                    Some(code("111030", "DCM", "Image Region")),
                    m,
                    source,
                ));
                let unit = if m.unit.as_deref() == Some("HU") {
                    ("[hnsf'U]", "Hounsfield unit")
                } else {
                    ("1", "no units")
                };
                for (concept, value) in [
                    (code("373098007", "SCT", "Mean"), m.mean),
                    (code("386136009", "SCT", "Standard Deviation"), m.sd),
                    (code("255605001", "SCT", "Minimum"), m.min),
                    (code("56851009", "SCT", "Maximum"), m.max),
                ] {
                    content.push(num(concept, value.unwrap_or_default(), unit));
                }
                content.push(num(
                    code("42798000", "SCT", "Area"),
                    m.area.unwrap_or_default(),
                    ("mm2", "square millimeter"),
                ));
            }
        }
        container(
            "CONTAINS",
            code("125007", "DCM", "Measurement Group"),
            content,
        )
    }

    /// The data set (PS3.3 A.35.3: Patient, General Study, SR Document Series, General
    /// Equipment, SR Document General, SR Document Content, SOP Common).
    /// Comprehensive 3D SR when a measurement is in patient coordinates (SCOORD3D), else
    /// Comprehensive SR.
    fn sop_class(&self) -> &'static str {
        if self
            .items
            .iter()
            .any(|(_, s)| matches!(s, Source::Volume { .. }))
        {
            COMPREHENSIVE_3D_SR
        } else {
            COMPREHENSIVE_SR
        }
    }

    fn dataset(&self) -> InMemDicomObject {
        let mut ds = InMemDicomObject::new_empty();
        ds.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
        ds.put(text(tags::SOP_CLASS_UID, VR::UI, self.sop_class()));
        ds.put(text(tags::SOP_INSTANCE_UID, VR::UI, self.sop_uid));
        put_patient_and_study(&mut ds, self.source, self.study_uid);
        // SR Document Series (PS3.3 C.17.1).
        ds.put(text(tags::MODALITY, VR::CS, "SR"));
        ds.put(text(tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid));
        ds.put(DataElement::new(
            tags::SERIES_NUMBER,
            VR::IS,
            PrimitiveValue::from(SERIES_NUMBER.to_string()),
        ));
        ds.put(text(tags::SERIES_DESCRIPTION, VR::LO, SERIES_DESCRIPTION));
        ds.put(seq(
            tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
            vec![],
        ));
        // General Equipment; the Enhanced General Equipment module (PS3.3 C.7.5.2) of the
        // Comprehensive 3D SR asks for the model, serial number and software version too.
        ds.put(text(tags::MANUFACTURER, VR::LO, "Vesalius"));
        if self.sop_class() == COMPREHENSIVE_3D_SR {
            ds.put(text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Vesalius"));
            ds.put(text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "1"));
            ds.put(text(
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                env!("CARGO_PKG_VERSION"),
            ));
        }
        // SR Document General (PS3.3 C.17.2).
        ds.put(DataElement::new(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from("1"),
        ));
        ds.put(text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"));
        ds.put(text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"));
        ds.put(text(tags::CONTENT_DATE, VR::DA, &self.now.0));
        ds.put(text(tags::CONTENT_TIME, VR::TM, &self.now.1));
        ds.put(seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]));
        let mut by_series: BTreeMap<&str, BTreeMap<&str, &ImageRef>> = BTreeMap::new();
        for r in self.items.iter().flat_map(|(_, s)| s.images()) {
            by_series
                .entry(&r.series_uid)
                .or_default()
                .insert(&r.sop_uid, r);
        }
        if !by_series.is_empty() {
            ds.put(evidence(
                self.study_uid,
                by_series.iter().map(|(series, refs)| {
                    (*series, refs.values().map(|r| sop_ref(r, None)).collect())
                }),
            ));
        }
        // SR Document Content (PS3.3 C.17.3), TID 1500.
        put_root_container(
            &mut ds,
            code("126000", "DCM", "Imaging Measurement Report"),
            "1500",
        );
        let mut content = vec![
            code_item(
                "HAS CONCEPT MOD",
                code("121049", "DCM", "Language of Content Item and Descendants"),
                code("en", "RFC5646", "English"),
            ),
            code_item(
                "HAS OBS CONTEXT",
                code("121005", "DCM", "Observer Type"),
                code("121006", "DCM", "Person"),
            ),
        ];
        let mut observer = named(
            "HAS OBS CONTEXT",
            "PNAME",
            code("121008", "DCM", "Person Observer Name"),
        );
        observer.put(text(tags::PERSON_NAME, VR::PN, self.observer));
        content.push(observer);
        content.push(code_item(
            "HAS CONCEPT MOD",
            code("121058", "DCM", "Procedure reported"),
            code("363679005", "SCT", "Imaging"),
        ));
        // Image Library (TID 1600): each image measured, once.
        let mut seen = std::collections::BTreeSet::new();
        let images = self
            .items
            .iter()
            .flat_map(|(m, s)| s.images().iter().map(move |r| (m.frame, r)))
            .filter(|(frame, r)| seen.insert((r.sop_uid.clone(), *frame)))
            .map(|(frame, r)| {
                let mut img = item("CONTAINS", "IMAGE");
                img.put(seq(tags::REFERENCED_SOP_SEQUENCE, vec![sop_ref(r, frame)]));
                img
            })
            .collect();
        content.push(container(
            "CONTAINS",
            code("111028", "DCM", "Image Library"),
            vec![container(
                "CONTAINS",
                code("126200", "DCM", "Image Library Group"),
                images,
            )],
        ));
        content.push(container(
            "CONTAINS",
            code("126010", "DCM", "Imaging Measurements"),
            self.items
                .iter()
                .enumerate()
                .map(|(n, (m, r))| self.group(n, m, r))
                .collect(),
        ));
        ds.put(seq(tags::CONTENT_SEQUENCE, content));
        ds
    }

    /// The Part 10 bytes (Explicit VR Little Endian).
    fn encode(&self) -> Result<Vec<u8>, ApiError> {
        part10(self.dataset(), self.sop_class(), self.sop_uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::Tag;

    /// The Part 10 document of `ms`, all made on `src`, read back.
    fn encoded(
        source: &Json_,
        ms: &[Measurement],
        src: &Source,
    ) -> dicom_object::FileDicomObject<InMemDicomObject> {
        let report = Report {
            study_uid: "1.2.3",
            series_uid: "1.2.3.4",
            sop_uid: "1.2.3.4.5",
            source,
            observer: "alice",
            items: ms.iter().map(|x| (x, src)).collect(),
            now: ("20261207".into(), "120000.123456".into()),
        };
        vesalius_deid::coerce::read_object(&report.encode().unwrap()).unwrap()
    }

    fn image() -> ImageRef {
        ImageRef {
            series_uid: "1.2.3.9".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_uid: "1.2.3.9.7".into(),
        }
    }

    fn m(v: Json_) -> Measurement {
        serde_json::from_value(v).unwrap()
    }

    fn items(obj: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
        obj.element(tag).unwrap().items().unwrap().to_vec()
    }

    fn s(obj: &InMemDicomObject, tag: Tag) -> String {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_owned()
    }

    /// The (value, scheme) of an item's concept name.
    fn concept(obj: &InMemDicomObject) -> (String, String) {
        let c = &items(obj, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
        (s(c, tags::CODE_VALUE), s(c, tags::CODING_SCHEME_DESIGNATOR))
    }

    fn find(list: &[InMemDicomObject], code: &str) -> InMemDicomObject {
        list.iter()
            .find(|i| i.element(tags::CONCEPT_NAME_CODE_SEQUENCE).is_ok() && concept(i).0 == code)
            .unwrap_or_else(|| panic!("no item {code}"))
            .clone()
    }

    /// A NUM's value and UCUM unit.
    fn value(num: &InMemDicomObject) -> (f64, String) {
        let mv = &items(num, tags::MEASURED_VALUE_SEQUENCE)[0];
        let unit = &items(mv, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)[0];
        assert_eq!(s(unit, tags::CODING_SCHEME_DESIGNATOR), "UCUM");
        (
            s(mv, tags::NUMERIC_VALUE).parse().unwrap(),
            s(unit, tags::CODE_VALUE),
        )
    }

    /// The graphic type, points and referenced SOP Instance UID of an SCOORD.
    fn geometry(sc: &InMemDicomObject) -> (String, Vec<f32>, String) {
        assert_eq!(s(sc, tags::VALUE_TYPE), "SCOORD");
        let pts = sc
            .element(tags::GRAPHIC_DATA)
            .unwrap()
            .to_multi_float32()
            .unwrap();
        let img = &items(sc, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(s(img, tags::RELATIONSHIP_TYPE), "SELECTED FROM");
        assert_eq!(s(img, tags::VALUE_TYPE), "IMAGE");
        let r = &items(img, tags::REFERENCED_SOP_SEQUENCE)[0];
        (
            s(sc, tags::GRAPHIC_TYPE),
            pts,
            s(r, tags::REFERENCED_SOP_INSTANCE_UID),
        )
    }

    #[test]
    fn the_report_is_a_tid_1500_comprehensive_sr() {
        let source = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Zoë"}]},
            "00100020": {"vr": "LO", "Value": ["MRN7"]},
        });
        let img = Source::Image(image());
        let ms = [
            m(
                json!({"instance": "1.2.3.9.7", "kind": "length", "points": [[10.5, 20.5], [110.5, 20.5]], "length": 48.828125}),
            ),
            m(
                json!({"instance": "1.2.3.9.7", "kind": "angle", "points": [[300, 300], [200, 300], [200, 200]], "angle": 90.0}),
            ),
            m(
                json!({"instance": "1.2.3.9.7", "kind": "ellipse", "points": [[40, 50], [100, 70]],
                "mean": 37.25, "sd": 4.5, "min": 20, "max": 51, "area": 123.4, "unit": "HU"}),
            ),
            m(
                json!({"instance": "1.2.3.9.7", "frame": 1, "kind": "rect", "points": [[60, 80], [40, 50]],
                "mean": -1000, "sd": 0, "min": -1000, "max": -1000, "area": 7.5, "unit": ""}),
            ),
        ];
        let obj = encoded(&source, &ms, &img);
        assert_eq!(s(&obj, tags::SOP_CLASS_UID), COMPREHENSIVE_SR);
        assert_eq!(s(&obj, tags::MODALITY), "SR");
        assert_eq!(s(&obj, tags::SERIES_DESCRIPTION), "Measurements");
        assert_eq!(s(&obj, tags::PATIENT_NAME), "Müller^Zoë");
        assert_eq!(s(&obj, tags::COMPLETION_FLAG), "COMPLETE");
        assert_eq!(s(&obj, tags::VERIFICATION_FLAG), "UNVERIFIED");
        assert_eq!(s(&obj, tags::CONTENT_TIME), "120000.123456");
        // Type 2 attributes present.
        assert_eq!(s(&obj, tags::ACCESSION_NUMBER), "");
        assert!(obj.element(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE).is_ok());
        assert_eq!(concept(&obj), ("126000".into(), "DCM".into()));
        let template = &items(&obj, tags::CONTENT_TEMPLATE_SEQUENCE)[0];
        assert_eq!(s(template, tags::TEMPLATE_IDENTIFIER), "1500");
        assert_eq!(s(template, tags::MAPPING_RESOURCE), "DCMR");
        let root = items(&obj, tags::CONTENT_SEQUENCE);
        let observer = find(&root, "121008");
        assert_eq!(s(&observer, tags::PERSON_NAME), "alice");
        assert_eq!(s(&find(&root, "121058"), tags::VALUE_TYPE), "CODE");
        // The image library lists the image once per frame given.
        let library = find(&root, "111028");
        let group = &items(&library, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(items(group, tags::CONTENT_SEQUENCE).len(), 2);
        let groups = items(&find(&root, "126010"), tags::CONTENT_SEQUENCE);
        assert_eq!(groups.len(), 4);
        assert!(groups.iter().all(|g| concept(g).0 == "125007"));
        // Length: 410668003 SCT in mm, from a 2-point polyline on the image.
        let g = items(&groups[0], tags::CONTENT_SEQUENCE);
        assert_eq!(
            s(&find(&g, "112039"), tags::TEXT_VALUE),
            "vesalius-length-1"
        );
        assert!(s(&find(&g, "112040"), tags::UID).starts_with("2.25."));
        let len = find(&g, "410668003");
        assert_eq!(concept(&len).1, "SCT");
        assert_eq!(value(&len), (48.828125, "mm".into()));
        let sc = &items(&len, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(s(sc, tags::RELATIONSHIP_TYPE), "INFERRED FROM");
        assert_eq!(
            geometry(sc),
            (
                "POLYLINE".into(),
                vec![10.5, 20.5, 110.5, 20.5],
                "1.2.3.9.7".into()
            )
        );
        // Angle in degrees, from a 3-point polyline (end, vertex, end).
        let g = items(&groups[1], tags::CONTENT_SEQUENCE);
        let ang = find(&g, "1483009");
        assert_eq!(value(&ang), (90.0, "deg".into()));
        let (kind, pts, _) = geometry(&items(&ang, tags::CONTENT_SEQUENCE)[0]);
        assert_eq!((kind.as_str(), pts.len()), ("POLYLINE", 6));
        // Ellipse ROI: region, mean/SD/min/max in HU, area in mm².
        let g = items(&groups[2], tags::CONTENT_SEQUENCE);
        let (kind, pts, uid) = geometry(&find(&g, "111030"));
        assert_eq!(kind, "ELLIPSE");
        assert_eq!(pts, vec![40.0, 60.0, 100.0, 60.0, 70.0, 50.0, 70.0, 70.0]);
        assert_eq!(uid, "1.2.3.9.7");
        assert_eq!(value(&find(&g, "373098007")), (37.25, "[hnsf'U]".into()));
        assert_eq!(value(&find(&g, "386136009")), (4.5, "[hnsf'U]".into()));
        assert_eq!(value(&find(&g, "255605001")).0, 20.0);
        assert_eq!(value(&find(&g, "56851009")).0, 51.0);
        assert_eq!(value(&find(&g, "42798000")), (123.4, "mm2".into()));
        // Rectangle: a closed polygon, no HU without a CT unit, the frame referenced.
        let g = items(&groups[3], tags::CONTENT_SEQUENCE);
        let region = find(&g, "111030");
        let (kind, pts, _) = geometry(&region);
        assert_eq!(kind, "POLYGON");
        assert_eq!(
            pts,
            vec![40.0, 50.0, 60.0, 50.0, 60.0, 80.0, 40.0, 80.0, 40.0, 50.0]
        );
        let img = &items(&region, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(
            s(
                &items(img, tags::REFERENCED_SOP_SEQUENCE)[0],
                tags::REFERENCED_FRAME_NUMBER
            ),
            "1"
        );
        assert_eq!(value(&find(&g, "373098007")), (-1000.0, "1".into()));
        // The evidence names the image once.
        let ev = &items(&obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)[0];
        let series = &items(ev, tags::REFERENCED_SERIES_SEQUENCE)[0];
        assert_eq!(items(series, tags::REFERENCED_SOP_SEQUENCE).len(), 1);
    }

    #[test]
    fn a_reformat_measurement_is_an_scoord3d_in_a_comprehensive_3d_sr() {
        let source = json!({"00100020": {"vr": "LO", "Value": ["MRN7"]}});
        let vol = Source::Volume {
            frame_of_reference: "1.2.3.77".into(),
            series_uid: "1.2.3.9".into(),
            images: vec![image(), {
                let mut i = image();
                i.sop_uid = "1.2.3.9.8".into();
                i
            }],
        };
        let ms = [
            m(
                json!({"frameOfReference": "1.2.3.77", "series": "1.2.3.9", "kind": "length",
                "points": [[-10.5, 20.25, 30], [15.5, 20.25, -12]], "length": 49.3}),
            ),
            m(
                json!({"frameOfReference": "1.2.3.77", "series": "1.2.3.9", "kind": "rect",
                "points": [[0, 5, 0], [10, 5, 0], [10, 5, -8], [0, 5, -8]],
                "mean": 40, "sd": 2, "min": 35, "max": 47, "area": 80, "unit": "HU",
                "slab": {"projection": "max", "thickness": 10}}),
            ),
        ];
        let obj = encoded(&source, &ms, &vol);
        assert_eq!(s(&obj, tags::SOP_CLASS_UID), COMPREHENSIVE_3D_SR);
        assert_eq!(s(&obj, tags::SOFTWARE_VERSIONS), env!("CARGO_PKG_VERSION"));
        let root = items(&obj, tags::CONTENT_SEQUENCE);
        // The library and the evidence list the series' images (once each).
        let library = find(&root, "111028");
        let group = &items(&library, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(items(group, tags::CONTENT_SEQUENCE).len(), 2);
        let ev = &items(&obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)[0];
        let series = &items(ev, tags::REFERENCED_SERIES_SEQUENCE)[0];
        assert_eq!(items(series, tags::REFERENCED_SOP_SEQUENCE).len(), 2);
        let groups = items(&find(&root, "126010"), tags::CONTENT_SEQUENCE);
        // The length: INFERRED FROM an SCOORD3D POLYLINE in the Frame of Reference, no image.
        let g = items(&groups[0], tags::CONTENT_SEQUENCE);
        let len = find(&g, "410668003");
        assert_eq!(value(&len), (49.3, "mm".into()));
        let sc = &items(&len, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(s(sc, tags::VALUE_TYPE), "SCOORD3D");
        assert_eq!(s(sc, tags::GRAPHIC_TYPE), "POLYLINE");
        assert_eq!(s(sc, tags::REFERENCED_FRAME_OF_REFERENCE_UID), "1.2.3.77");
        assert_eq!(
            sc.element(tags::GRAPHIC_DATA)
                .unwrap()
                .to_multi_float32()
                .unwrap(),
            vec![-10.5, 20.25, 30.0, 15.5, 20.25, -12.0]
        );
        assert!(sc.element(tags::CONTENT_SEQUENCE).is_err());
        assert_eq!(s(&find(&g, "121232"), tags::UID), "1.2.3.9");
        // The slab ROI: a closed POLYGON, its projection and thickness.
        let g = items(&groups[1], tags::CONTENT_SEQUENCE);
        let region = find(&g, "111030");
        assert_eq!(s(&region, tags::VALUE_TYPE), "SCOORD3D");
        assert_eq!(s(&region, tags::GRAPHIC_TYPE), "POLYGON");
        assert_eq!(
            region
                .element(tags::GRAPHIC_DATA)
                .unwrap()
                .to_multi_float32()
                .unwrap()
                .len(),
            15
        );
        let method = find(&g, "370129005");
        assert_eq!(s(&method, tags::RELATIONSHIP_TYPE), "HAS CONCEPT MOD");
        let c = &items(&method, tags::CONCEPT_CODE_SEQUENCE)[0];
        assert_eq!(s(c, tags::CODE_VALUE), "113078");
        let thick = find(&g, "112225");
        assert_eq!(s(&thick, tags::RELATIONSHIP_TYPE), "HAS ACQ CONTEXT");
        assert_eq!(value(&thick), (10.0, "mm".into()));
        assert_eq!(value(&find(&g, "373098007")), (40.0, "[hnsf'U]".into()));
    }

    #[test]
    fn measurements_are_checked() {
        let ok = |v: Json_| m(v).check(0);
        assert!(ok(json!({"instance": "1.2.3", "kind": "length", "points": [[0, 0], [1, 1]], "length": 1.4})).is_ok());
        assert!(ok(json!({"frameOfReference": "1.2", "series": "1.3", "kind": "ellipse", "points": [[0, 0, 0], [2, 0, 0], [1, 0, 1], [1, 0, -1]],
            "mean": 1, "sd": 0, "min": 1, "max": 1, "area": 1, "slab": {"projection": "mean", "thickness": 5}})).is_ok());
        for bad in [
            json!({"instance": "1.2.3", "kind": "length", "points": [[0, 0]], "length": 1.4}),
            json!({"instance": "1.2.3", "kind": "length", "points": [[0, 0], [1, 1]]}),
            json!({"instance": "1.2.3", "kind": "angle", "points": [[0, 0], [1, 1], [2, 2]], "angle": 190}),
            json!({"instance": "1.2.3", "kind": "ellipse", "points": [[0, 0], [1, 1]], "mean": 1}),
            json!({"instance": "1.2.3", "kind": "spline", "points": [[0, 0], [1, 1]]}),
            json!({"instance": "x y", "kind": "length", "points": [[0, 0], [1, 1]], "length": 1}),
            json!({"instance": "1.2.3", "frame": 0, "kind": "length", "points": [[0, 0], [1, 1]], "length": 1}),
            json!({"instance": "1.2.3", "kind": "rect", "points": [[0, 0], [1, 1]], "mean": 1, "sd": 0, "min": 1, "max": 1, "area": 1, "unit": "mSv"}),
            // Reformats: 3D points, a series, never with an instance; slabs checked.
            json!({"frameOfReference": "1.2", "series": "1.3", "kind": "length", "points": [[0, 0], [1, 1]], "length": 1}),
            json!({"frameOfReference": "1.2", "kind": "length", "points": [[0, 0, 0], [1, 1, 1]], "length": 1}),
            json!({"instance": "1.2.3", "frameOfReference": "1.2", "series": "1.3", "kind": "length", "points": [[0, 0, 0], [1, 1, 1]], "length": 1}),
            json!({"frameOfReference": "1.2", "series": "1.3", "kind": "rect", "points": [[0, 0, 0], [1, 1, 1]], "mean": 1, "sd": 0, "min": 1, "max": 1, "area": 1}),
            json!({"frameOfReference": "1.2", "series": "1.3", "kind": "length", "points": [[0, 0, 0], [1, 1, 1]], "length": 1, "slab": {"projection": "sum", "thickness": 5}}),
            json!({"frameOfReference": "1.2", "series": "1.3", "kind": "length", "points": [[0, 0, 0], [1, 1, 1]], "length": 1, "slab": {"projection": "max", "thickness": 0}}),
            json!({"instance": "1.2.3", "kind": "length", "points": [[0, 0], [1, 1]], "length": 1, "slab": {"projection": "max", "thickness": 5}}),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(ds(48.828125), "48.828125");
        assert_eq!(ds(-1000.0), "-1000");
        assert!(ds(1.0 / 3.0).len() <= 16);
    }
}
