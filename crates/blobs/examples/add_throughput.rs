//! Add throughput from a file, against `blake3` hashing the same file in the same run; export
//! and import throughput of verified ranges between two stores; and the peak memory of adding
//! a long stream through `add_reader`. With `BREAKDOWN=1` it also times the parts of an add
//! (the outboard alone, a copy alone, a copy with fsync).
//!
//! Run: `cargo run --release -p multibee-blobs --example add_throughput -- [MiB] [stream MiB]`
//! (defaults: a 256 MiB file, a 2048 MiB stream). The file and the store live in a temporary
//! folder under the system's temp dir; each figure is the best of 3 runs.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use multibee_blobs::{BlobId, Blobs};
use tokio::io::{AsyncRead, ReadBuf};

const MIB: u64 = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let stream_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2048);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("input");
    write_input(&path, file_mib * MIB)?;
    let store = Blobs::open(dir.path().join("store"))?;

    let mut hash_best = Duration::MAX;
    let mut add_best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let hash = hash_file(&path)?;
        hash_best = hash_best.min(started.elapsed());
        let started = Instant::now();
        let id = store.add_file(&path).await?;
        add_best = add_best.min(started.elapsed());
        anyhow::ensure!(id == BlobId::from(hash), "ids differ");
        store.delete(id).await?;
    }
    let bytes = file_mib * MIB;
    let hash_rate = rate(bytes, hash_best);
    let add_rate = rate(bytes, add_best);
    println!("file of {file_mib} MiB (best of 3):");
    println!("  blake3::Hasher over the file (1 MiB reads): {hash_rate:8.0} MiB/s");
    println!(
        "  Blobs::add_file (copy + outboard + fsync):  {add_rate:8.0} MiB/s ({:.0}% of the hash rate)",
        100.0 * add_rate / hash_rate
    );

    let before = peak_rss_kib();
    let started = Instant::now();
    let id = store.add_reader(Generated(stream_mib * MIB)).await?;
    let elapsed = started.elapsed();
    println!(
        "stream of {stream_mib} MiB through add_reader: {:8.0} MiB/s, peak RSS {} MiB before, {} MiB after",
        rate(stream_mib * MIB, elapsed),
        before / 1024,
        peak_rss_kib() / 1024
    );
    store.delete(id).await?;

    // Verified streaming between two stores, in 16 MiB requests (no network).
    let id = store.add_file(&path).await?;
    let receiver = Blobs::open(dir.path().join("receiver"))?;
    let (mut export_time, mut import_time) = (Duration::ZERO, Duration::ZERO);
    let piece = 16 * MIB;
    for start in (0..bytes).step_by(piece as usize) {
        let range = start..(start + piece).min(bytes);
        let range = std::slice::from_ref(&range);
        let started = Instant::now();
        let encoded = store.export_ranges(id, range).await?;
        export_time += started.elapsed();
        let started = Instant::now();
        receiver.import_ranges(id, bytes, range, &encoded).await?;
        import_time += started.elapsed();
    }
    anyhow::ensure!(receiver.has(id).await?, "the copy is not complete");
    println!("the file between two stores, in 16 MiB requests:");
    println!(
        "  export_ranges (validated against the outboard): {:8.0} MiB/s",
        rate(bytes, export_time)
    );
    println!(
        "  import_ranges (verify, write, fsync, record):   {:8.0} MiB/s",
        rate(bytes, import_time)
    );
    store.delete(id).await?;

    if std::env::var_os("BREAKDOWN").is_some() {
        println!("the parts of an add:");
        breakdown(&path, dir.path())?;
    }

    Ok(())
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

fn write_input(path: &std::path::Path, len: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; MIB as usize];
    for i in 0..len / MIB {
        fill(&mut block, i);
        std::io::Write::write_all(&mut file, &block)?;
    }
    std::io::Write::flush(&mut file)?;
    file.get_ref().sync_all()?;
    Ok(())
}

fn fill(block: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
}

fn hash_file(path: &std::path::Path) -> anyhow::Result<blake3::Hash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// The peak resident set of this process (Linux), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An async reader of `n` generated bytes (never all in memory).
struct Generated(u64);

impl AsyncRead for Generated {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = (buf.remaining() as u64).min(this.0) as usize;
        let mut chunk = vec![0u8; n];
        fill(&mut chunk, this.0);
        buf.put_slice(&chunk);
        this.0 -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Where the time of an add goes: the outboard alone, and a copy with fsync alone.
fn breakdown(path: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)?.len();
    let started = Instant::now();
    let tree = bao_tree::BaoTree::new(size, multibee_blobs::BLOCK_SIZE);
    let mut ob = bao_tree::io::outboard::PreOrderOutboard::<Vec<u8>> {
        tree,
        ..Default::default()
    };
    let file = std::io::BufReader::with_capacity(MIB as usize, std::fs::File::open(path)?);
    bao_tree::io::sync::outboard(file, tree, &mut ob)?;
    println!(
        "  outboard only: {:8.0} MiB/s",
        rate(size, started.elapsed())
    );
    let started = Instant::now();
    let copy = dir.join("copy");
    std::fs::copy(path, &copy)?;
    println!(
        "  copy only:     {:8.0} MiB/s",
        rate(size, started.elapsed())
    );
    std::fs::File::open(&copy)?.sync_all()?;
    println!(
        "  copy + fsync:  {:8.0} MiB/s",
        rate(size, started.elapsed())
    );
    std::fs::remove_file(copy)?;
    Ok(())
}
