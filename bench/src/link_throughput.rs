//! Bytes per second through a `clump-link` stream (Noise NNpsk0, ChaCha20-Poly1305) against
//! plain TCP, both on loopback in the same run: what the cipher and framing cost a migration's
//! image transfer on this machine.
//!
//! `cargo run --release -p clump-bench --bin link-throughput -- --mib 512`

use anyhow::{Context, Result};
use clap::Parser;
use clump_link::{Link, MAX_MESSAGE};
use clump_seal::ClusterKey;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 512)]
    mib: usize,
}

fn plain(total: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut got = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![0x5au8; MAX_MESSAGE];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = buf.len().min(total - sent);
        s.write_all(&buf[..n])?;
        sent += n;
    }
    drop(s);
    let got = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    anyhow::ensure!(got == total, "plain TCP lost bytes");
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn sealed(total: usize) -> Result<f64> {
    let key = ClusterKey::from_bytes([7; 32]);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_key = key.clone();
    let reader = std::thread::spawn(move || -> Result<usize> {
        let (s, _) = listener.accept()?;
        let link = Link::accept(s, &server_key, Duration::from_secs(5))?;
        let (_, mut rx) = link.split();
        let mut got = 0;
        loop {
            match rx.recv() {
                Ok(m) => got += m.len(),
                Err(clump_link::LinkError::Closed) => return Ok(got),
                Err(e) => return Err(e.into()),
            }
        }
    });
    let link = Link::connect(addr, &key, Duration::from_secs(5)).context("handshake")?;
    let (mut tx, _rx) = link.split();
    let buf = vec![0x5au8; MAX_MESSAGE];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = buf.len().min(total - sent);
        tx.send(&buf[..n])?;
        sent += n;
    }
    tx.shutdown();
    let got = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    anyhow::ensure!(got == total, "the stream lost bytes");
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let total = args.mib << 20;
    let mib = |b: f64| b / f64::from(1u32 << 20);
    // Alternate, so both see the same machine.
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        p.push(plain(total)?);
        s.push(sealed(total)?);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "loopback, {} MiB, best of 3: plain TCP {:.0} MiB/s, clump-link {:.0} MiB/s ({:.1}x slower)",
        args.mib,
        mib(best(&p)),
        mib(best(&s)),
        best(&p) / best(&s)
    );
    Ok(())
}
