//! Golden images: each frame rendered into a back buffer and compared pixel for pixel with a PNG
//! under tests/golden/. `UPDATE_GOLDEN=1 cargo test -p clump-screen` rewrites them; a missing one
//! fails. A mismatch names the bounding box of the differing pixels and the regions it touches,
//! and writes the frame drawn to the target directory for a look.

mod common;

use clump_screen::{layout, render, BackBuffer, Layout, PixelFormat, View};
use embedded_graphics::geometry::Point;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn encode(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let mut w = enc.write_header().expect("png header");
    w.write_image_data(rgb).expect("png data");
    w.finish().expect("png finish");
    out
}

fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("png info");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Rgb, "goldens are 8-bit RGB");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn draw(view: &View, width: u32, height: u32, stride: usize, format: PixelFormat) -> BackBuffer {
    let mut b = BackBuffer::new(width, height, stride, format).expect("back buffer");
    render(view, &mut b).expect("render");
    b
}

/// Compares `b` with the golden `name`; `regions` names where differences fall.
fn check(name: &str, b: &BackBuffer, regions: Option<&Layout>) {
    let (w, h) = (b.width(), b.height());
    let rgb = b.to_rgb();
    let path = golden_dir().join(format!("{name}.png"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("golden dir");
        std::fs::write(&path, encode(w, h, &rgb)).expect("write golden");
        return;
    }
    let Ok(bytes) = std::fs::read(&path) else {
        panic!(
            "golden image {} is missing: run UPDATE_GOLDEN=1 cargo test -p clump-screen and look at it",
            path.display()
        );
    };
    let (gw, gh, golden) = decode(&bytes);
    let actual_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-actual/{name}.png"));
    let keep_actual = || {
        if let Some(dir) = actual_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&actual_path, encode(w, h, &rgb));
    };
    if (gw, gh) != (w, h) {
        keep_actual();
        panic!("{name}: golden is {gw}x{gh}, frame is {w}x{h}");
    }
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    let mut count = 0usize;
    // Regions of the first differing pixels, in the order met (a whole-screen change is named by
    // its first rows, which is enough to start looking).
    let mut names: Vec<String> = Vec::new();
    for (i, (a, g)) in rgb.chunks_exact(3).zip(golden.chunks_exact(3)).enumerate() {
        if a != g {
            count += 1;
            let (x, y) = (
                u32::try_from(i).expect("index") % w,
                u32::try_from(i).expect("index") / w,
            );
            bbox = Some(match bbox {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
            if let Some(l) = regions.filter(|_| count <= 10_000) {
                let r = l.region_at(Point::new(x as i32, y as i32));
                if !names.contains(&r) {
                    names.push(r);
                }
            }
        }
    }
    if let Some((x0, y0, x1, y1)) = bbox {
        keep_actual();
        panic!(
            "{name}: {count} pixels differ within x {x0}..={x1}, y {y0}..={y1} ({}); frame drawn: {}",
            if names.is_empty() {
                "boot screen".to_owned()
            } else {
                names.join(", ")
            },
            actual_path.display()
        );
    }
}

const SCREENS: [(u32, u32); 3] = [(640, 480), (1024, 768), (1920, 1080)];
const COUNTS: [u32; 5] = [1, 4, 16, 64, 200];

#[test]
fn cluster_screens_match_their_goldens() {
    for (w, h) in SCREENS {
        for n in COUNTS {
            let b = draw(
                &common::cluster_view(n),
                w,
                h,
                w as usize * 4,
                PixelFormat::xrgb8888(),
            );
            check(
                &format!("cluster-{n}-{w}x{h}"),
                &b,
                Some(&layout(w, h, n as usize)),
            );
        }
    }
}

#[test]
fn every_pixel_format_matches_its_golden() {
    let (w, h, n) = (1024, 768, 16);
    let view = common::cluster_view(n);
    let reference = draw(&view, w, h, w as usize * 4, PixelFormat::xrgb8888()).to_rgb();
    let l = layout(w, h, n as usize);
    // 24 bpp with a stride of an odd number of bytes, as no row of pixels divides.
    let odd = w as usize * 3 + 13;
    let reference565 = draw(&view, w, h, w as usize * 2, PixelFormat::rgb565()).to_rgb();
    // 16, 24 and 32 bpp, each in both orders (xrgb8888 is the cluster goldens' own format).
    for (name, format, stride) in [
        ("rgb565", PixelFormat::rgb565(), w as usize * 2),
        ("bgr565", PixelFormat::bgr565(), w as usize * 2),
        ("rgb888", PixelFormat::rgb888(), w as usize * 3),
        ("bgr888", PixelFormat::bgr888(), w as usize * 3),
        ("xbgr8888", PixelFormat::xbgr8888(), w as usize * 4),
        ("bgr888-stride3085", PixelFormat::bgr888(), odd),
    ] {
        let b = draw(&view, w, h, stride, format);
        check(&format!("format-{name}-{n}-{w}x{h}"), &b, Some(&l));
        let row = w as usize * format.bytes_per_pixel();
        for (y, line) in b.bytes().chunks_exact(stride).enumerate() {
            assert!(
                line[row..].iter().all(|&v| v == 0),
                "{name}: padding of row {y} drawn on"
            );
        }
        if format.bits_per_pixel() == 16 {
            assert!(
                b.to_rgb() == reference565,
                "{name}: a 5-6-5 format draws what rgb565 draws"
            );
        } else {
            assert!(
                b.to_rgb() == reference,
                "{name}: an 8-bit format draws what xrgb8888 draws"
            );
        }
    }
}

#[test]
fn boot_screens_match_their_goldens() {
    for (w, h) in SCREENS {
        let b = draw(
            &common::boot_view(),
            w,
            h,
            w as usize * 4,
            PixelFormat::xrgb8888(),
        );
        check(&format!("boot-{w}x{h}"), &b, None);
    }
}

#[test]
fn before_the_map_arrives_matches_its_golden() {
    let mut view = common::cluster_view(4);
    view.map = None;
    view.stats = None;
    view.events.clear();
    view.notice = Some("No cluster key: this node joins nothing".into());
    let b = draw(&view, 1024, 768, 1024 * 4, PixelFormat::xrgb8888());
    check("waiting-1024x768", &b, Some(&layout(1024, 768, 0)));
}

#[test]
fn goldens_stay_small() {
    let total: u64 = std::fs::read_dir(golden_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert!(total < 2 * 1024 * 1024, "goldens take {total} bytes");
}
