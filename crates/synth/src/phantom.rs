//! An analytic head phantom: nested ellipsoids for scalp, skull and brain, plus deep grey nuclei,
//! ventricles and calcifications, rendered in any axial plane with anti-aliased edges.
//!
//! Coordinates are DICOM patient coordinates (LPS) in millimetres: +x towards the patient's
//! left, +y posterior, +z superior, with the head centre at the origin (shifted a few mm per
//! patient). An axial image with orientation `1\0\0\0\1\0` therefore shows anterior at the top
//! and the patient's right on the image's left, as radiologists expect.
//!
//! The renderer is noise free; [`crate::ct`] and [`crate::mr`] add modality-specific noise.

use crate::hash;

/// Intensity of each tissue class in the output units of one modality (HU for CT).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contrast {
    pub air: f32,
    pub scalp: f32,
    pub bone_table: f32,
    pub bone_diploe: f32,
    pub csf: f32,
    pub grey: f32,
    pub white: f32,
    pub deep_grey: f32,
    pub calcification: f32,
    pub falx: f32,
}

/// Per-patient size, position and cortical folding of the head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anatomy {
    /// Isotropic size factor, 0.94–1.06.
    pub scale: f32,
    /// Head centre in the axial plane (mm).
    pub cx: f32,
    /// Head centre in the axial plane (mm).
    pub cy: f32,
    phases: [f32; 4],
}

/// Skin ellipsoid semi-axes (mm) before scaling: left-right, anterior-posterior, superior-inferior.
const HEAD_SEMI_AXES: [f32; 3] = [74.0, 94.0, 108.0];

/// Inward offsets (mm) from the skin of the nested shells and the tissue that fills each one.
/// Scalp 5 mm, outer table 2 mm, diploë 3 mm, inner table 1.5 mm, subarachnoid CSF 1.5 mm,
/// cortex ~3.5 mm; the last two boundaries are folded (see `fold`).
const SHELLS: [(f32, Tissue, f32); 7] = [
    (0.0, Tissue::Scalp, 0.0),
    (5.0, Tissue::BoneTable, 0.0),
    (7.0, Tissue::BoneDiploe, 0.0),
    (10.0, Tissue::BoneTable, 0.0),
    (11.5, Tissue::Csf, 0.0),
    (13.0, Tissue::Grey, 1.0),
    (16.5, Tissue::White, 2.2),
];

/// Internal structures: centre and semi-axes (mm, relative to the head centre, before scaling),
/// painted in this order over the brain.
const STRUCTURES: [([f32; 3], [f32; 3], Tissue); 14] = [
    // Thalami.
    ([-9.0, 10.0, 4.0], [8.0, 13.0, 10.0], Tissue::DeepGrey),
    ([9.0, 10.0, 4.0], [8.0, 13.0, 10.0], Tissue::DeepGrey),
    // Lentiform nuclei.
    ([-22.0, -2.0, 4.0], [6.0, 15.0, 11.0], Tissue::DeepGrey),
    ([22.0, -2.0, 4.0], [6.0, 15.0, 11.0], Tissue::DeepGrey),
    // Caudate heads.
    ([-12.0, -18.0, 14.0], [5.0, 8.0, 10.0], Tissue::DeepGrey),
    ([12.0, -18.0, 14.0], [5.0, 8.0, 10.0], Tissue::DeepGrey),
    // Lateral ventricles, separated by a ~4 mm septum pellucidum.
    ([-8.0, -3.0, 18.0], [5.5, 24.0, 13.0], Tissue::Csf),
    ([8.0, -3.0, 18.0], [5.5, 24.0, 13.0], Tissue::Csf),
    // Third and fourth ventricles.
    ([0.0, 6.0, 2.0], [2.0, 12.0, 9.0], Tissue::Csf),
    ([0.0, 30.0, -40.0], [4.0, 4.0, 6.0], Tissue::Csf),
    // Choroid plexus and pineal calcifications.
    ([-10.0, 14.0, 18.0], [2.5, 2.5, 2.5], Tissue::Calcification),
    ([10.0, 14.0, 18.0], [2.5, 2.5, 2.5], Tissue::Calcification),
    ([0.0, 22.0, 6.0], [2.5, 2.5, 2.5], Tissue::Calcification),
    // Cerebellar vermis region reads as grey matter.
    ([0.0, 40.0, -45.0], [10.0, 12.0, 12.0], Tissue::DeepGrey),
];

#[derive(Debug, Clone, Copy)]
enum Tissue {
    Scalp,
    BoneTable,
    BoneDiploe,
    Csf,
    Grey,
    White,
    DeepGrey,
    Calcification,
}

impl Contrast {
    fn of(&self, t: Tissue) -> f32 {
        match t {
            Tissue::Scalp => self.scalp,
            Tissue::BoneTable => self.bone_table,
            Tissue::BoneDiploe => self.bone_diploe,
            Tissue::Csf => self.csf,
            Tissue::Grey => self.grey,
            Tissue::White => self.white,
            Tissue::DeepGrey => self.deep_grey,
            Tissue::Calcification => self.calcification,
        }
    }
}

/// An axial image plane to render.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plane {
    /// Height of the plane (mm, patient z).
    pub z: f32,
    /// Image rows.
    pub rows: u16,
    /// Image columns.
    pub cols: u16,
    /// Square pixel size (mm).
    pub spacing: f32,
}

impl Plane {
    /// Patient x of the centre of column `c` (the image is centred on x = 0).
    pub fn x(&self, c: usize) -> f32 {
        (c as f32 - f32::from(self.cols) / 2.0 + 0.5) * self.spacing
    }

    /// Patient y of the centre of row `r`.
    pub fn y(&self, r: usize) -> f32 {
        (r as f32 - f32::from(self.rows) / 2.0 + 0.5) * self.spacing
    }
}

/// Cross-section of an ellipsoid: an axis-aligned ellipse.
#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f32,
    cy: f32,
    a: f32,
    b: f32,
    ia2: f32,
    ib2: f32,
}

impl Ellipse {
    /// Cross-section at height `z` of the ellipsoid with centre `c` and semi-axes `r`.
    fn section(c: [f32; 3], r: [f32; 3], z: f32) -> Option<Self> {
        let t = (z - c[2]) / r[2];
        let k = 1.0 - t * t;
        if k <= 0.0 || r[0] <= 0.0 || r[1] <= 0.0 {
            return None;
        }
        let k = k.sqrt();
        let (a, b) = (r[0] * k, r[1] * k);
        Some(Self {
            cx: c[0],
            cy: c[1],
            a,
            b,
            ia2: 1.0 / (a * a),
            ib2: 1.0 / (b * b),
        })
    }

    /// Approximate signed distance (mm, negative inside): the implicit function divided by its
    /// gradient norm, exact on the boundary and good within a few pixels of it.
    fn distance(&self, x: f32, y: f32) -> f32 {
        let dx = x - self.cx;
        let dy = y - self.cy;
        let (px, py) = (dx * self.ia2, dy * self.ib2);
        let f = dx * px + dy * py - 1.0;
        let g = 2.0 * (px * px + py * py).sqrt();
        if g < 1e-6 { -self.a.min(self.b) } else { f / g }
    }

    fn near(&self, x: f32, y: f32, margin: f32) -> bool {
        (x - self.cx).abs() <= self.a + margin && (y - self.cy).abs() <= self.b + margin
    }
}

/// Fraction of a pixel of size `w` covered by the inside of a boundary at signed distance `d`.
fn coverage(d: f32, w: f32) -> f32 {
    (0.5 - d / w).clamp(0.0, 1.0)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

impl Anatomy {
    /// The anatomy of the patient whose generator seed is `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let unit = |label: &str| (hash::mix(seed, label) >> 40) as f32 / (1u64 << 24) as f32;
        Self {
            scale: 0.94 + 0.12 * unit("anatomy/scale"),
            cx: -4.0 + 8.0 * unit("anatomy/cx"),
            cy: -4.0 + 8.0 * unit("anatomy/cy"),
            phases: [
                unit("anatomy/p0") * std::f32::consts::TAU,
                unit("anatomy/p1") * std::f32::consts::TAU,
                unit("anatomy/p2") * std::f32::consts::TAU,
                unit("anatomy/p3") * std::f32::consts::TAU,
            ],
        }
    }

    /// Skin semi-axes after scaling.
    pub fn semi_axes(&self) -> [f32; 3] {
        HEAD_SEMI_AXES.map(|r| r * self.scale)
    }

    /// Ellipse of the shell `offset` mm inside the skin, at height `z`.
    fn shell(&self, offset: f32, z: f32) -> Option<Ellipse> {
        let r = self.semi_axes().map(|r| r - offset);
        Ellipse::section([self.cx, self.cy, 0.0], r, z)
    }
}

/// Separable tables for the cortical folding pattern of one plane: a product of sines plus one
/// oblique sine, giving gyri roughly 7 mm wide whose pattern drifts from slice to slice.
struct Fold {
    x1: Vec<f32>,
    y1: Vec<f32>,
    sx: Vec<f32>,
    cx: Vec<f32>,
    sy: Vec<f32>,
    cy: Vec<f32>,
}

impl Fold {
    fn new(anat: &Anatomy, plane: &Plane) -> Self {
        let p = anat.phases;
        let z = plane.z;
        let xs = (0..usize::from(plane.cols)).map(|c| plane.x(c) - anat.cx);
        let ys = (0..usize::from(plane.rows)).map(|r| plane.y(r) - anat.cy);
        Self {
            x1: xs
                .clone()
                .map(|x| (0.45 * x + p[0] + 0.21 * z).sin())
                .collect(),
            y1: ys
                .clone()
                .map(|y| (0.38 * y + p[1] - 0.17 * z).sin())
                .collect(),
            sx: xs.clone().map(|x| (0.29 * x + p[2]).sin()).collect(),
            cx: xs.map(|x| (0.29 * x + p[2]).cos()).collect(),
            sy: ys
                .clone()
                .map(|y| (0.33 * y + p[3] + 0.13 * z).sin())
                .collect(),
            cy: ys.map(|y| (0.33 * y + p[3] + 0.13 * z).cos()).collect(),
        }
    }

    /// Folding displacement in [-1.5, 1.5] at pixel (r, c).
    fn at(&self, r: usize, c: usize) -> f32 {
        // sin(u + v) = sin u cos v + cos u sin v keeps the oblique term separable.
        self.x1[c] * self.y1[r] + 0.5 * (self.sx[c] * self.cy[r] + self.cx[c] * self.sy[r])
    }
}

/// Renders the phantom in `plane` with tissue intensities `k`, row-major.
pub(crate) fn render(anat: &Anatomy, plane: &Plane, k: &Contrast) -> Vec<f32> {
    let (rows, cols) = (usize::from(plane.rows), usize::from(plane.cols));
    let w = plane.spacing;
    let z = plane.z;
    let shells: Vec<(Ellipse, f32, f32)> = SHELLS
        .iter()
        .map_while(|&(t, tissue, fold)| anat.shell(t, z).map(|e| (e, k.of(tissue), fold)))
        .collect();
    let structures: Vec<(Ellipse, f32)> = STRUCTURES
        .iter()
        .filter_map(|&(c, r, tissue)| {
            let s = anat.scale;
            let c = [anat.cx + c[0] * s, anat.cy + c[1] * s, c[2] * s];
            Ellipse::section(c, r.map(|v| v * s), z).map(|e| (e, k.of(tissue)))
        })
        .collect();
    let fold = Fold::new(anat, plane);
    // Interhemispheric fissure with the falx: above the ventricles everywhere, lower down only
    // in front of and behind the deep nuclei.
    let fissure_z = 0.0;
    let deep_half_length = 35.0 * anat.scale;

    let mut out = vec![k.air; rows * cols];
    for r in 0..rows {
        let y = plane.y(r);
        for c in 0..cols {
            let x = plane.x(c);
            let mut v = k.air;
            let mut depth = 0;
            for (i, (e, value, amp)) in shells.iter().enumerate() {
                if !e.near(x, y, 2.0 * w + amp) {
                    break;
                }
                let mut d = e.distance(x, y);
                if *amp > 0.0 {
                    d += amp * fold.at(r, c);
                }
                let cov = coverage(d, w);
                if cov == 0.0 {
                    break;
                }
                v = lerp(v, *value, cov);
                depth = i + 1;
            }
            // Inside the cortex (the grey matter shell was reached).
            if depth >= 6 {
                if z > fissure_z && (z > 40.0 || (y - anat.cy).abs() > deep_half_length) {
                    let dx = (x - anat.cx).abs();
                    v = lerp(v, k.csf, coverage(dx - 1.2, w));
                    v = lerp(v, k.falx, coverage(dx - 0.4, w));
                }
                for (e, value) in &structures {
                    if e.near(x, y, w) {
                        v = lerp(v, *value, coverage(e.distance(x, y), w));
                    }
                }
            }
            out[r * cols + c] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Contrast = crate::ct::CT_CONTRAST;

    fn sample(anat: &Anatomy, z: f32, x: f32, y: f32) -> f32 {
        // A 512 x 512 plane; find the pixel nearest (x, y).
        let plane = Plane {
            z,
            rows: 512,
            cols: 512,
            spacing: 250.0 / 512.0,
        };
        let img = render(anat, &plane, &K);
        let c = (x / plane.spacing + 256.0 - 0.5).round() as usize;
        let r = (y / plane.spacing + 256.0 - 0.5).round() as usize;
        img[r * 512 + c]
    }

    #[test]
    fn tissues_where_expected() {
        let a = Anatomy::from_seed(11);
        let [ax, ..] = a.semi_axes();
        assert_eq!(sample(&a, 0.0, 120.0, 120.0), K.air);
        assert!((sample(&a, 0.0, a.cx + ax - 2.5, a.cy) - K.scalp).abs() < 1.0);
        assert!(sample(&a, 0.0, a.cx + ax - 6.0, a.cy) > 1400.0);
        assert!((sample(&a, 0.0, a.cx + ax - 8.5, a.cy) - K.bone_diploe).abs() < 1.0);
        assert!((sample(&a, 0.0, a.cx + 38.0 * a.scale, a.cy) - K.white).abs() < 1.0);
        let v = sample(
            &a,
            18.0 * a.scale,
            a.cx + 8.0 * a.scale,
            a.cy - 3.0 * a.scale,
        );
        assert!((v - K.csf).abs() < 1.0, "{v}");
    }

    #[test]
    fn shape_shrinks_towards_vertex() {
        let a = Anatomy::from_seed(5);
        let plane = |z| Plane {
            z,
            rows: 128,
            cols: 128,
            spacing: 2.0,
        };
        let area = |z| {
            render(&a, &plane(z), &K)
                .iter()
                .filter(|&&v| v > -500.0)
                .count()
        };
        assert!(area(0.0) > area(60.0));
        assert!(area(60.0) > area(95.0));
        assert_eq!(area(130.0), 0);
    }
}
