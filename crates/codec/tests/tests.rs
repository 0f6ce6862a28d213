//! Integration tests of `vesalius-codec`: fixtures are written with dicom-object at test time and
//! compressed with DCMTK / GDCM command-line tools (a case is skipped with a note if a tool is
//! missing).

mod fixtures {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::file::ReadPreamble;
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

    /// What a fixture looks like.
    #[derive(Clone, Copy, Debug)]
    pub struct Spec {
        pub rows: u16,
        pub cols: u16,
        pub spp: u16,
        pub bits: u16,
        pub stored: u16,
        pub pi: &'static str,
        pub frames: u32,
        pub signed: bool,
    }

    pub const MONO16: Spec = Spec {
        rows: 64,
        cols: 64,
        spp: 1,
        bits: 16,
        stored: 12,
        pi: "MONOCHROME2",
        frames: 1,
        signed: false,
    };

    pub const RGB8: Spec = Spec {
        rows: 48,
        cols: 32,
        spp: 3,
        bits: 8,
        stored: 8,
        pi: "RGB",
        frames: 1,
        signed: false,
    };

    pub const MONO8_MULTI: Spec = Spec {
        rows: 16,
        cols: 24,
        spp: 1,
        bits: 8,
        stored: 8,
        pi: "MONOCHROME2",
        frames: 3,
        signed: false,
    };

    pub const SIGNED16: Spec = Spec {
        signed: true,
        ..MONO16
    };

    /// Deterministic pixel values, little endian, interleaved.
    pub fn pixels(s: &Spec) -> Vec<u8> {
        let mut out = Vec::new();
        for f in 0..s.frames as usize {
            for y in 0..s.rows as usize {
                for x in 0..s.cols as usize {
                    if s.bits == 16 {
                        let v = ((x * 37 + y * 113 + (x * y) % 17 * 5 + f * 1000) % 4096) as u16;
                        // signed: -2048..2047, sign-extended to 16 bits
                        let v = if s.signed {
                            (v as i16 - 2048) as u16
                        } else {
                            v
                        };
                        out.extend_from_slice(&v.to_le_bytes());
                    } else if s.spp == 3 {
                        out.extend_from_slice(&[
                            (x * 8 + f) as u8,
                            (y * 5) as u8,
                            ((x * y + 7 * f) % 256) as u8,
                        ]);
                    } else {
                        out.push(((x * 10 + y * 3 + f * 50) % 256) as u8);
                    }
                }
            }
        }
        out
    }

    /// Writes a native Explicit VR Little Endian fixture; returns its pixel bytes.
    pub fn write(path: &Path, s: &Spec, extra: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
        let px = pixels(s);
        let iuid = format!("2.25.{}", 1000 + u128::from(s.rows) * 7 + u128::from(s.spp));
        let mut obj = InMemDicomObject::new_empty();
        let put_str = |obj: &mut InMemDicomObject, tag, vr, v: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        let put_us = |obj: &mut InMemDicomObject, tag, v: u16| {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        };
        put_str(
            &mut obj,
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        );
        put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &iuid);
        put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1");
        put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, "2.25.2");
        put_str(&mut obj, tags::PATIENT_ID, VR::LO, "P1");
        put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "Test^Codec");
        put_str(&mut obj, tags::MODALITY, VR::CS, "OT");
        put_us(&mut obj, tags::SAMPLES_PER_PIXEL, s.spp);
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s.pi);
        if s.spp == 3 {
            put_us(&mut obj, tags::PLANAR_CONFIGURATION, 0);
        }
        if s.frames > 1 {
            put_str(
                &mut obj,
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                &s.frames.to_string(),
            );
        }
        put_us(&mut obj, tags::ROWS, s.rows);
        put_us(&mut obj, tags::COLUMNS, s.cols);
        put_us(&mut obj, tags::BITS_ALLOCATED, s.bits);
        put_us(&mut obj, tags::BITS_STORED, s.stored);
        put_us(&mut obj, tags::HIGH_BIT, s.stored - 1);
        put_us(&mut obj, tags::PIXEL_REPRESENTATION, u16::from(s.signed));
        extra(&mut obj);
        let value = if s.bits == 16 {
            let words: Vec<u16> = px
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into()))
        } else {
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(px.clone()))
        };
        obj.put(value);
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap();
        file.write_to_file(path).unwrap();
        px
    }

    /// Runs a tool; `false` (with a note) when it is not installed.
    pub fn tool(bin: &str, args: &[&Path], opts: &[&str]) -> bool {
        let path = PathBuf::from(bin);
        if !path.exists() {
            eprintln!("NOTE: {bin} is not installed; skipping this case");
            return false;
        }
        let out = Command::new(&path)
            .args(opts)
            .args(args)
            .output()
            .expect("run tool");
        assert!(
            out.status.success(),
            "{bin} {opts:?} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    pub fn parse(bytes: &[u8]) -> DefaultDicomObject {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(bytes)
            .expect("valid Part 10 output")
    }

    pub fn pixel_bytes(obj: &DefaultDicomObject) -> Vec<u8> {
        obj.element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .into_owned()
    }

    pub fn str_of(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    }

    /// The compressed variants of a native fixture that DCMTK/GDCM can make.
    pub struct Variant {
        pub name: &'static str,
        pub ts: &'static str,
        pub bin: &'static str,
        pub opts: &'static [&'static str],
    }

    pub const LOSSLESS: &[Variant] = &[
        Variant {
            name: "rle",
            ts: uids::RLE_LOSSLESS,
            bin: "/usr/bin/dcmcrle",
            opts: &[],
        },
        Variant {
            name: "jpeg-lossless-sv1",
            ts: uids::JPEG_LOSSLESS_SV1,
            bin: "/usr/bin/dcmcjpeg",
            opts: &["+e1"],
        },
        Variant {
            name: "jpeg-lossless-p14",
            ts: uids::JPEG_LOSSLESS,
            bin: "/usr/bin/dcmcjpeg",
            opts: &["+el"],
        },
        Variant {
            name: "jpeg-ls",
            ts: uids::JPEGLS_LOSSLESS,
            bin: "/usr/bin/dcmcjpls",
            opts: &[],
        },
        Variant {
            name: "jpeg-ls-ilv-none",
            ts: uids::JPEGLS_LOSSLESS,
            bin: "/usr/bin/dcmcjpls",
            opts: &["+in"],
        },
        Variant {
            name: "jpeg-ls-ilv-sample",
            ts: uids::JPEGLS_LOSSLESS,
            bin: "/usr/bin/dcmcjpls",
            opts: &["+is"],
        },
        Variant {
            name: "gdcm-jpeg-ls",
            ts: uids::JPEGLS_LOSSLESS,
            bin: "/usr/bin/gdcmconv",
            opts: &["--jpegls", "--quiet"],
        },
        Variant {
            name: "gdcm-rle",
            ts: uids::RLE_LOSSLESS,
            bin: "/usr/bin/gdcmconv",
            opts: &["--rle", "--quiet"],
        },
        Variant {
            name: "j2k",
            ts: uids::JPEG2000_LOSSLESS,
            bin: "/usr/bin/gdcmconv",
            opts: &["--j2k", "--quiet"],
        },
        Variant {
            name: "implicit",
            ts: uids::IMPLICIT_VR_LITTLE_ENDIAN,
            bin: "/usr/bin/dcmconv",
            opts: &["+ti"],
        },
        Variant {
            name: "big-endian",
            ts: vesalius_core::uid::EXPLICIT_VR_BE,
            bin: "/usr/bin/dcmconv",
            opts: &["+tb"],
        },
        Variant {
            name: "deflated",
            ts: uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            bin: "/usr/bin/dcmconv",
            opts: &["+td"],
        },
    ];

    /// Makes `variant` of `src` in `dir`; `None` when the tool is missing.
    pub fn make(dir: &Path, src: &Path, v: &Variant) -> Option<PathBuf> {
        let out = dir.join(format!(
            "{}-{}.dcm",
            src.file_stem().unwrap().to_string_lossy(),
            v.name
        ));
        if !tool(v.bin, &[src, &out], v.opts) {
            return None;
        }
        let obj = parse(&std::fs::read(&out).unwrap());
        assert_eq!(
            obj.meta().transfer_syntax(),
            v.ts,
            "{} made by {}",
            v.name,
            v.bin
        );
        Some(out)
    }
}

mod transcode {
    use dicom_dictionary_std::tags;
    use vesalius_codec::{CodecError, can_transcode, decode_frame, transcode_file};
    use vesalius_core::uid;

    use crate::fixtures::*;

    fn check_native(out: &[u8], ts: &str, spec: &Spec, original: &[u8], what: &str) {
        let obj = parse(out);
        assert_eq!(obj.meta().transfer_syntax(), ts, "{what}");
        assert_eq!(pixel_bytes(&obj), original, "{what}: pixel data differs");
        assert_eq!(
            str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref(),
            Some(spec.pi),
            "{what}"
        );
        assert!(
            obj.get(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH)
                .is_none()
        );
        if spec.spp == 3 {
            assert_eq!(
                obj.get(tags::PLANAR_CONFIGURATION)
                    .unwrap()
                    .to_int::<u16>()
                    .unwrap(),
                0
            );
        }
        // all other attributes are kept
        assert_eq!(
            str_of(&obj, tags::PATIENT_NAME).as_deref(),
            Some("Test^Codec")
        );
        assert_eq!(
            str_of(&obj, tags::STUDY_INSTANCE_UID).as_deref(),
            Some("2.25.1")
        );
    }

    #[test]
    fn every_lossless_syntax_decodes_to_the_original_pixels() {
        let dir = tempfile::tempdir().unwrap();
        for (name, spec) in [
            ("mono16", MONO16),
            ("signed16", SIGNED16),
            ("rgb8", RGB8),
            ("multi8", MONO8_MULTI),
        ] {
            let src = dir.path().join(format!("{name}.dcm"));
            let original = write(&src, &spec, |_| {});
            for v in LOSSLESS {
                let Some(file) = make(dir.path(), &src, v) else {
                    continue;
                };
                let what = format!("{name} from {}", v.name);
                assert!(can_transcode(v.ts, uid::EXPLICIT_VR_LE), "{what}");
                for to in [uid::EXPLICIT_VR_LE, uid::IMPLICIT_VR_LE] {
                    let out =
                        transcode_file(&file, to).unwrap_or_else(|e| panic!("{what} to {to}: {e}"));
                    check_native(&out, to, &spec, &original, &what);
                }
                // decode_frame gives the original samples of every frame
                let frame_len = original.len() / spec.frames as usize;
                for f in 1..=spec.frames {
                    let d = decode_frame(&file, f).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!((d.rows, d.columns), (spec.rows, spec.cols), "{what}");
                    assert_eq!(d.samples_per_pixel, spec.spp, "{what}");
                    assert_eq!(d.bits_allocated, spec.bits, "{what}");
                    assert_eq!(d.photometric, spec.pi, "{what}");
                    let want = &original[(f as usize - 1) * frame_len..f as usize * frame_len];
                    assert!(d.data == want, "{what}: frame {f} differs");
                }
                let err = decode_frame(&file, spec.frames + 1).unwrap_err();
                assert!(matches!(err, CodecError::Invalid(_)), "{err}");
            }
        }
    }

    #[test]
    fn same_syntax_returns_the_bytes_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.dcm");
        write(&src, &MONO16, |_| {});
        let out = transcode_file(&src, uid::EXPLICIT_VR_LE).unwrap();
        assert_eq!(out, std::fs::read(&src).unwrap());
        if let Some(rle) = make(dir.path(), &src, &LOSSLESS[0]) {
            let out = transcode_file(&rle, uid::RLE_LOSSLESS).unwrap();
            assert_eq!(out, std::fs::read(&rle).unwrap());
        }
    }

    #[test]
    fn jpeg_ls_output_round_trips_and_dcmtk_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        for (name, spec) in [
            ("mono16", MONO16),
            ("signed16", SIGNED16),
            ("rgb8", RGB8),
            ("multi8", MONO8_MULTI),
        ] {
            let src = dir.path().join(format!("{name}.dcm"));
            let original = write(&src, &spec, |_| {});
            let jls = transcode_file(&src, uid::JPEG_LS_LOSSLESS).unwrap();
            let obj = parse(&jls);
            assert_eq!(obj.meta().transfer_syntax(), uid::JPEG_LS_LOSSLESS);
            let frames = str_of(&obj, tags::NUMBER_OF_FRAMES);
            let want = (spec.frames > 1).then(|| spec.frames.to_string());
            assert_eq!(frames, want, "{name}: Number of Frames");
            assert_eq!(
                str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref(),
                Some(spec.pi)
            );
            let jls_path = dir.path().join(format!("{name}-ours.jls.dcm"));
            std::fs::write(&jls_path, &jls).unwrap();
            // back through our decoder
            let back = transcode_file(&jls_path, uid::EXPLICIT_VR_LE).unwrap();
            check_native(&back, uid::EXPLICIT_VR_LE, &spec, &original, name);
            // and through DCMTK's
            let dcmtk = dir.path().join(format!("{name}-dcmtk.dcm"));
            if tool("/usr/bin/dcmdjpls", &[&jls_path, &dcmtk], &[]) {
                let obj = parse(&std::fs::read(&dcmtk).unwrap());
                // bits above High Bit are "don't care": DCMTK leaves them clear
                let stored = |b: Vec<u8>| -> Vec<u8> {
                    if spec.bits != 16 {
                        return b;
                    }
                    let mask = (1u16 << spec.stored) - 1;
                    b.chunks_exact(2)
                        .flat_map(|c| (u16::from_le_bytes([c[0], c[1]]) & mask).to_le_bytes())
                        .collect()
                };
                assert!(
                    stored(pixel_bytes(&obj)) == stored(original.clone()),
                    "{name}: DCMTK decodes other pixels"
                );
            }
        }
    }

    #[test]
    fn uncompressed_and_deflated_targets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mono16.dcm");
        let original = write(&src, &MONO16, |_| {});
        for ts in [
            uid::IMPLICIT_VR_LE,
            uid::EXPLICIT_VR_BE,
            uid::DEFLATED_EXPLICIT_VR_LE,
            "1.2.840.10008.1.2.1.98",
        ] {
            let out = transcode_file(&src, ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
            let mid = dir.path().join("mid.dcm");
            std::fs::write(&mid, &out).unwrap();
            assert_eq!(parse(&out).meta().transfer_syntax(), ts);
            let back = transcode_file(&mid, uid::EXPLICIT_VR_LE).unwrap();
            check_native(&back, uid::EXPLICIT_VR_LE, &MONO16, &original, ts);
            // DCMTK can read what we wrote (it has no Encapsulated Uncompressed support)
            if ts == "1.2.840.10008.1.2.1.98" {
                continue;
            }
            let dump = std::process::Command::new("/usr/bin/dcmconv")
                .arg(&mid)
                .arg(dir.path().join("dcmtk.dcm"))
                .status();
            if let Ok(status) = dump {
                assert!(status.success(), "dcmconv cannot read our {ts} output");
            }
        }
    }

    #[test]
    fn jpeg_baseline_narrows_and_keeps_modality_values() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ct.dcm");
        write(&src, &MONO16, |obj| {
            use dicom_core::{DataElement, PrimitiveValue, VR};
            obj.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::DS,
                PrimitiveValue::from("1"),
            ));
            obj.put(DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                PrimitiveValue::from("-1024"),
            ));
        });
        let out = transcode_file(&src, uid::JPEG_BASELINE).unwrap();
        let obj = parse(&out);
        assert_eq!(obj.meta().transfer_syntax(), uid::JPEG_BASELINE);
        assert_eq!(
            str_of(&obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref(),
            Some("01")
        );
        assert_eq!(
            obj.get(tags::BITS_ALLOCATED)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            8
        );
        let slope: f64 = obj.get(tags::RESCALE_SLOPE).unwrap().to_float64().unwrap();
        assert_eq!(slope, 16.0);
        let path = dir.path().join("ct-jpeg.dcm");
        std::fs::write(&path, &out).unwrap();
        let d = decode_frame(&path, 1).unwrap();
        assert_eq!((d.rows, d.columns, d.bits_allocated), (64, 64, 8));
        // the narrowed value times 16 is within JPEG error of the original
        let original = pixels(&MONO16);
        let mut worst = 0i32;
        for (i, &v) in d.data.iter().enumerate() {
            let o = i32::from(u16::from_le_bytes([original[2 * i], original[2 * i + 1]]));
            worst = worst.max((i32::from(v) * 16 - o).abs());
        }
        assert!(worst < 16 * 40, "narrowed values too far off: {worst}");
        let dcmtk = dir.path().join("ct-dcmtk.dcm");
        tool("/usr/bin/dcmdjpeg", &[&path, &dcmtk], &[]);

        // colour too; RGB becomes YBR_FULL_422 and decodes back to RGB
        let rgb = dir.path().join("rgb.dcm");
        write(&rgb, &RGB8, |_| {});
        let out = transcode_file(&rgb, uid::JPEG_BASELINE).unwrap();
        let obj = parse(&out);
        assert_eq!(
            str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref(),
            Some("YBR_FULL_422")
        );
        let path = dir.path().join("rgb-jpeg.dcm");
        std::fs::write(&path, &out).unwrap();
        let d = decode_frame(&path, 1).unwrap();
        assert_eq!(d.photometric, "RGB");
        assert_eq!(d.data.len(), 48 * 32 * 3);
    }

    #[test]
    fn planar_and_ybr_native_colour() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let dir = tempfile::tempdir().unwrap();
        let original = pixels(&RGB8);
        // the same samples stored colour-by-plane
        let n = original.len() / 3;
        let mut planar = vec![0u8; original.len()];
        for p in 0..n {
            for c in 0..3 {
                planar[c * n + p] = original[p * 3 + c];
            }
        }
        let src = dir.path().join("planar.dcm");
        write(&src, &RGB8, |_| {});
        {
            let mut obj = dicom_object::open_file(&src).unwrap();
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(1u16),
            ));
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::from(planar),
            ));
            obj.write_to_file(&src).unwrap();
        }
        let d = decode_frame(&src, 1).unwrap();
        assert_eq!(d.data, original);
        for to in [uid::JPEG_LS_LOSSLESS, uid::IMPLICIT_VR_LE] {
            let out = transcode_file(&src, to).unwrap();
            let p = dir.path().join("out.dcm");
            std::fs::write(&p, out).unwrap();
            assert_eq!(decode_frame(&p, 1).unwrap().data, original, "{to}");
        }

        // YBR_FULL stays YBR_FULL through a lossless codec, and becomes RGB through JPEG
        let ybr = dir.path().join("ybr.dcm");
        let spec = Spec {
            pi: "YBR_FULL",
            ..RGB8
        };
        let samples = write(&ybr, &spec, |_| {});
        let out = transcode_file(&ybr, uid::JPEG_LS_LOSSLESS).unwrap();
        assert_eq!(
            str_of(&parse(&out), tags::PHOTOMETRIC_INTERPRETATION).as_deref(),
            Some("YBR_FULL")
        );
        let p = dir.path().join("ybr-jls.dcm");
        std::fs::write(&p, out).unwrap();
        let d = decode_frame(&p, 1).unwrap();
        assert_eq!((d.photometric.as_str(), &d.data), ("YBR_FULL", &samples));
        let out = transcode_file(&ybr, uid::JPEG_BASELINE).unwrap();
        let p = dir.path().join("ybr-jpeg.dcm");
        std::fs::write(&p, out).unwrap();
        let d = decode_frame(&p, 1).unwrap();
        assert_eq!(d.photometric, "RGB");
    }

    #[test]
    fn lossy_jpeg_from_dcmtk_decodes_except_12_bit() {
        let dir = tempfile::tempdir().unwrap();
        for (name, spec, opts) in [
            ("rgb8", RGB8, &["+eb"][..]),
            ("multi8", MONO8_MULTI, &["+eb"][..]),
            ("mono12", MONO16, &["+ee"][..]),
        ] {
            let src = dir.path().join(format!("{name}.dcm"));
            let original = write(&src, &spec, |_| {});
            let jpg = dir.path().join(format!("{name}-jpeg.dcm"));
            if !tool("/usr/bin/dcmcjpeg", &[&src, &jpg], opts) {
                return;
            }
            // the reference is DCMTK's decoding of the same JPEG stream
            let reference = dir.path().join(format!("{name}-dcmtk.dcm"));
            let original = if tool("/usr/bin/dcmdjpeg", &[&jpg, &reference], &["+cp"]) {
                pixel_bytes(&parse(&std::fs::read(&reference).unwrap()))
            } else {
                original
            };
            let frame_len = original.len() / spec.frames as usize;
            for f in 1..=spec.frames {
                let d = match decode_frame(&jpg, f) {
                    Ok(d) => d,
                    // known limitation: jpeg-decoder has no 12-bit DCT support
                    Err(CodecError::Unsupported(e)) if spec.bits == 16 => {
                        assert!(e.contains("SamplePrecision(12)"), "{e}");
                        continue;
                    }
                    Err(e) => panic!("{name}: {e}"),
                };
                assert_eq!(d.photometric, if spec.spp == 3 { "RGB" } else { spec.pi });
                let want = &original[(f as usize - 1) * frame_len..f as usize * frame_len];
                let bps = usize::from(spec.bits / 8);
                let errors: Vec<i32> = d
                    .data
                    .chunks_exact(bps)
                    .zip(want.chunks_exact(bps))
                    .map(|(a, b)| {
                        let v =
                            |c: &[u8]| i32::from(c[0]) | c.get(1).map_or(0, |h| i32::from(*h) << 8);
                        (v(a) - v(b)).abs()
                    })
                    .collect();
                // decoders differ in IDCT and chroma upsampling, not in colour space or layout
                let mean = f64::from(errors.iter().sum::<i32>()) / errors.len() as f64;
                let limit = if spec.bits == 16 { 8.0 } else { 2.0 };
                assert!(mean <= limit, "{name} frame {f}: mean error {mean}");
            }
        }
    }

    #[test]
    fn refusals_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.dcm");
        write(&src, &MONO16, |_| {});
        for to in [
            uid::RLE_LOSSLESS,
            uid::JPEG_2000_LOSSLESS,
            uid::JPEG_LOSSLESS_SV1,
            "1.2.3",
        ] {
            assert!(!can_transcode(uid::EXPLICIT_VR_LE, to));
            let err = transcode_file(&src, to).unwrap_err();
            assert!(matches!(err, CodecError::Unsupported(_)), "{to}: {err}");
            assert_eq!(err.kind(), vesalius_core::ErrorKind::NotAcceptable);
        }
        // the syntax is encodable, this object is not: signed samples to JPEG baseline
        let signed = dir.path().join("signed.dcm");
        write(&signed, &SIGNED16, |_| {});
        assert!(can_transcode(uid::EXPLICIT_VR_LE, uid::JPEG_BASELINE));
        let err = transcode_file(&signed, uid::JPEG_BASELINE).unwrap_err();
        assert!(matches!(err, CodecError::Unsupported(_)), "{err}");
    }
}

mod render {
    use vesalius_codec::{ImageFormat, RenderOptions, render};
    use vesalius_core::uid;

    use crate::fixtures::*;

    fn decode(bytes: &[u8]) -> image::DynamicImage {
        image::load_from_memory(bytes).expect("a decodable image")
    }

    #[test]
    fn jpeg_and_png_with_viewport() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mono16.dcm");
        write(&src, &MONO16, |_| {});
        let jpeg = render(&src, &RenderOptions::default()).unwrap();
        assert_eq!(jpeg[..3], [0xFF, 0xD8, 0xFF]);
        let img = decode(&jpeg);
        assert_eq!((img.width(), img.height()), (64, 64));

        let png = render(
            &src,
            &RenderOptions {
                format: ImageFormat::Png,
                viewport: Some((32, 16)),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(png[..8], [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        let img = decode(&png);
        assert_eq!((img.width(), img.height()), (16, 16));

        // min/max by default: full range used
        let png = render(
            &src,
            &RenderOptions {
                format: ImageFormat::Png,
                ..Default::default()
            },
        )
        .unwrap();
        let grey = decode(&png).to_luma8();
        assert_eq!(grey.pixels().map(|p| p.0[0]).min(), Some(0));
        assert_eq!(grey.pixels().map(|p| p.0[0]).max(), Some(255));
    }

    #[test]
    fn window_is_applied_and_monochrome1_inverted() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mono16.dcm");
        write(&src, &MONO16, |_| {});
        let opts = |window| RenderOptions {
            format: ImageFormat::Png,
            window: Some(window),
            ..Default::default()
        };
        let all = |bytes: &[u8], v: u8| decode(bytes).to_luma8().pixels().all(|p| p.0[0] == v);
        // every value is above the window: white
        assert!(all(&render(&src, &opts((-10_000.0, 10.0))).unwrap(), 255));
        // every value is below: black
        assert!(all(&render(&src, &opts((100_000.0, 10.0))).unwrap(), 0));

        // the object's own window and rescale are used when none is asked for
        let src2 = dir.path().join("windowed.dcm");
        write(&src2, &MONO16, |obj| {
            use dicom_core::{DataElement, PrimitiveValue, VR};
            use dicom_dictionary_std::tags;
            obj.put(DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                PrimitiveValue::from("5000"),
            ));
            obj.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::DS,
                PrimitiveValue::from("1"),
            ));
            obj.put(DataElement::new(
                tags::WINDOW_CENTER,
                VR::DS,
                PrimitiveValue::from("100"),
            ));
            obj.put(DataElement::new(
                tags::WINDOW_WIDTH,
                VR::DS,
                PrimitiveValue::from("50"),
            ));
        });
        let png = render(
            &src2,
            &RenderOptions {
                format: ImageFormat::Png,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            all(&png, 255),
            "rescaled values are all above the object's window"
        );

        // MONOCHROME1: the saturating window gives black
        let m1 = dir.path().join("m1.dcm");
        let spec = Spec {
            pi: "MONOCHROME1",
            ..MONO16
        };
        write(&m1, &spec, |_| {});
        assert!(all(&render(&m1, &opts((-10_000.0, 10.0))).unwrap(), 0));
    }

    #[test]
    fn compressed_and_colour_objects_render() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("rgb8.dcm");
        let original = write(&src, &RGB8, |_| {});
        let png_opts = RenderOptions {
            format: ImageFormat::Png,
            ..Default::default()
        };
        let rgb = decode(&render(&src, &png_opts).unwrap()).to_rgb8();
        assert_eq!((rgb.width(), rgb.height()), (32, 48));
        assert_eq!(rgb.as_raw(), &original);
        for v in LOSSLESS.iter().filter(|v| v.ts != uid::EXPLICIT_VR_BE) {
            if let Some(file) = make(dir.path(), &src, v) {
                let rgb = decode(&render(&file, &png_opts).unwrap()).to_rgb8();
                assert!(
                    rgb.as_raw() == &original,
                    "{} renders other colours",
                    v.name
                );
            }
        }
        let mono = dir.path().join("mono16.dcm");
        write(&mono, &MONO16, |_| {});
        if let Some(j2k) = make(
            dir.path(),
            &mono,
            LOSSLESS.iter().find(|v| v.name == "j2k").unwrap(),
        ) {
            let jpeg = render(&j2k, &RenderOptions::default()).unwrap();
            assert_eq!(decode(&jpeg).width(), 64);
        }
        // frame selection in a multi-frame object
        let multi = dir.path().join("multi.dcm");
        let px = write(&multi, &MONO8_MULTI, |_| {});
        let frame_len = px.len() / 3;
        for frame in 1..=3u32 {
            let out = render(
                &multi,
                &RenderOptions {
                    frame,
                    format: ImageFormat::Png,
                    window: Some((127.5, 256.0)),
                    ..Default::default()
                },
            )
            .unwrap();
            let grey = decode(&out).to_luma8();
            let want = &px[(frame as usize - 1) * frame_len..frame as usize * frame_len];
            // LINEAR window 127.5/256 maps 0..255 onto 0..255 within rounding
            for (g, w) in grey.as_raw().iter().zip(want) {
                assert!((i32::from(*g) - i32::from(*w)).abs() <= 1, "frame {frame}");
            }
        }
    }
}

mod errors {
    use std::io::Write;

    use vesalius_codec::{CodecError, RenderOptions, decode_frame, render, transcode_file};
    use vesalius_core::{ErrorKind, uid};

    use crate::fixtures::*;

    #[test]
    fn missing_file_is_io() {
        let err = decode_frame(std::path::Path::new("/nonexistent/x.dcm"), 1).unwrap_err();
        assert!(matches!(err, CodecError::Io(_)));
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[test]
    fn garbage_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.dcm");
        std::fs::write(&p, b"hello, this is not DICOM at all").unwrap();
        for err in [
            decode_frame(&p, 1).unwrap_err(),
            render(&p, &RenderOptions::default()).unwrap_err(),
            transcode_file(&p, uid::IMPLICIT_VR_LE).unwrap_err(),
        ] {
            assert!(matches!(err, CodecError::Invalid(_)), "{err}");
            assert_eq!(err.kind(), ErrorKind::InvalidDicom);
        }
    }

    #[test]
    fn frame_zero_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.dcm");
        write(&p, &MONO16, |_| {});
        assert!(matches!(decode_frame(&p, 0), Err(CodecError::Invalid(_))));
        let opts = RenderOptions {
            frame: 2,
            ..Default::default()
        };
        assert!(matches!(render(&p, &opts), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn huge_declared_length_is_rejected_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.dcm");
        write(&p, &MONO16, |_| {});
        let mut bytes = std::fs::read(&p).unwrap();
        // append an element declaring 4 GB after the pixel data
        let mut f = Vec::new();
        f.write_all(&[0xF0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0])
            .unwrap();
        f.write_all(&0xFFFF_FFF0u32.to_le_bytes()).unwrap();
        f.write_all(&[0; 16]).unwrap();
        bytes.extend_from_slice(&f);
        std::fs::write(&p, &bytes).unwrap();
        for err in [
            decode_frame(&p, 1).unwrap_err(),
            transcode_file(&p, uid::IMPLICIT_VR_LE).unwrap_err(),
        ] {
            assert!(matches!(err, CodecError::Invalid(_)), "{err}");
            assert!(err.to_string().contains("declares"), "{err}");
        }

        // the same inside a deflated data set
        let p3 = dir.path().join("c.dcm");
        write(&p3, &MONO16, |_| {});
        let deflated = transcode_file(&p3, uid::DEFLATED_EXPLICIT_VR_LE).unwrap();
        let meta_len = u32::from_le_bytes(deflated[140..144].try_into().unwrap()) as usize;
        let start = 144 + meta_len;
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::DeflateDecoder::new(&deflated[start..]),
            &mut body,
        )
        .unwrap();
        body.extend_from_slice(&f);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&body).unwrap();
        let mut hostile = deflated[..start].to_vec();
        hostile.extend_from_slice(&enc.finish().unwrap());
        std::fs::write(&p3, &hostile).unwrap();
        let err = decode_frame(&p3, 1).unwrap_err();
        assert!(matches!(err, CodecError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("declares"), "{err}");

        // truncated pixel data
        let p2 = dir.path().join("b.dcm");
        write(&p2, &MONO16, |_| {});
        let bytes = std::fs::read(&p2).unwrap();
        std::fs::write(&p2, &bytes[..bytes.len() - 100]).unwrap();
        assert!(matches!(decode_frame(&p2, 1), Err(CodecError::Invalid(_))));
    }
}
