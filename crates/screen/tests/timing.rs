//! How long a frame takes: `cargo test -p clump-screen --release --test timing -- --ignored --nocapture`.

mod common;

use clump_screen::{render, BackBuffer, PixelFormat};
use std::time::Instant;

#[test]
#[ignore = "a measurement, not a check: run it with --release"]
fn frame_times() {
    for (w, h, n) in [
        (1024, 768, 64),
        (1920, 1080, 64),
        (1920, 1080, 200),
        (3840, 2160, 200),
    ] {
        let mut view = common::cluster_view(n);
        let mut b = BackBuffer::packed(w, h, PixelFormat::xrgb8888()).expect("buffer");
        let mut front = vec![0u8; b.frame_len()];
        let rounds = 20u32;
        let (mut draw, mut flush, mut bytes) = (0f64, 0f64, 0usize);
        for i in 0..rounds {
            // One node's load changes each frame, as on a live screen.
            if let Some(node) = view.map.as_mut().and_then(|m| m.nodes.first_mut()) {
                node.load = Some(i * 50);
            }
            let t = Instant::now();
            render(&view, &mut b).expect("render");
            draw += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let copied = b.flush_changed(&mut front).bytes;
            // The first flush copies the whole frame; the rest show what a change costs.
            if i > 0 {
                flush += t.elapsed().as_secs_f64();
                bytes += copied;
            }
        }
        let r = f64::from(rounds);
        println!(
            "{w}x{h} {n} nodes: render {:.2} ms, flush_changed {:.2} ms ({} KiB a frame after the first)",
            draw / r * 1e3,
            flush / (r - 1.0) * 1e3,
            bytes / (rounds as usize - 1) / 1024
        );
    }
}
