//! The bounded, ordered record of a job's stdout and stderr (sans-I/O).
//!
//! Both pipes share one offset space: byte `n` is the `n`th byte the runtime read from either,
//! so a reader replays them in the order they were read. At most `cap` bytes are kept.
//!
//! Policy: while a client is attached, the runtime reads from the pipes only as far as the
//! slowest attached client leaves room ([`OutputBuffer::room`]), so the job blocks on a full pipe
//! as it would writing to a slow terminal and an attached client misses nothing. With nobody
//! attached the job is never blocked: the oldest bytes are evicted, and those no client ever
//! received are counted in [`OutputBuffer::dropped`].

use clump_api::Stream;
use std::collections::{BTreeMap, VecDeque};

/// What a job keeps by default.
pub const DEFAULT_CAP: usize = 1 << 20;

/// The most a chunk holds, so replies stay in bounded lines.
const CHUNK: usize = clump_api::jobs::MAX_CHUNK;

/// A reader's handle on a buffer.
pub type ReaderId = u64;

#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    /// Offset of the first kept byte.
    start: u64,
    /// Offset after the last byte.
    end: u64,
    cap: usize,
    dropped: u64,
    /// The furthest offset any reader was handed.
    delivered: u64,
    readers: BTreeMap<ReaderId, u64>,
    next_reader: ReaderId,
    /// Bytes still to be discarded as they come: a job restarted from a checkpoint writes
    /// again what it wrote after that checkpoint, which its readers saw already.
    skip: u64,
}

/// What [`OutputBuffer::read`] returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Read {
    /// Bytes asked for that are no longer kept.
    pub skipped: u64,
    pub chunks: Vec<(Stream, Vec<u8>)>,
    /// The offset to ask for next.
    pub next: u64,
}

impl OutputBuffer {
    pub fn new(cap: usize) -> OutputBuffer {
        OutputBuffer {
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
            cap: cap.max(1),
            dropped: 0,
            delivered: 0,
            readers: BTreeMap::new(),
            next_reader: 1,
            skip: 0,
        }
    }

    /// The next `n` bytes pushed are dropped (they repeat what is held already).
    pub fn skip_next(&mut self, n: u64) {
        self.skip = n;
    }

    /// The offset the job's own writing has reached: `end` less what is still to be skipped.
    pub fn resume_point(&self) -> u64 {
        self.end - self.skip.min(self.end)
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// How many bytes the runtime may read from the pipes now (see the module's policy).
    pub fn room(&self) -> usize {
        match self.readers.values().min() {
            None => CHUNK,
            Some(&slowest) => {
                let behind = usize::try_from(self.end - slowest).unwrap_or(usize::MAX);
                self.cap.saturating_sub(behind).min(CHUNK)
            }
        }
    }

    /// Appends bytes the job wrote, evicting the oldest beyond the cap.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let repeated = usize::try_from(self.skip).unwrap_or(usize::MAX).min(bytes.len());
        self.skip -= repeated as u64;
        for piece in bytes[repeated..].chunks(CHUNK) {
            match self.chunks.back_mut() {
                Some((s, last)) if *s == stream && last.len() + piece.len() <= CHUNK => {
                    last.extend_from_slice(piece)
                }
                _ => self.chunks.push_back((stream, piece.to_vec())),
            }
            self.end += piece.len() as u64;
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.end - self.start > self.cap as u64 {
            let excess = usize::try_from(self.end - self.start - self.cap as u64).unwrap_or(usize::MAX);
            let Some((_, front)) = self.chunks.front_mut() else {
                break;
            };
            let n = excess.min(front.len());
            let first = self.start;
            if n == front.len() {
                self.chunks.pop_front();
            } else {
                front.drain(..n);
            }
            self.start += n as u64;
            // Of the evicted bytes, those at or past `delivered` were never seen.
            self.dropped += self.start.saturating_sub(first.max(self.delivered));
        }
    }

    /// Up to `max` bytes from `offset` on (clamped to what is kept), in order.
    pub fn read(&self, offset: u64, max: usize) -> Read {
        let skipped = self.start.saturating_sub(offset);
        let mut at = offset.max(self.start);
        let mut chunks = Vec::new();
        let mut left = max;
        let mut chunk_start = self.start;
        for (stream, bytes) in &self.chunks {
            let chunk_end = chunk_start + bytes.len() as u64;
            if left > 0 && at < chunk_end {
                let from = usize::try_from(at - chunk_start).unwrap_or(0);
                let take = (bytes.len() - from).min(left);
                chunks.push((*stream, bytes[from..from + take].to_vec()));
                at += take as u64;
                left -= take;
            }
            chunk_start = chunk_end;
        }
        Read {
            skipped,
            chunks,
            next: at.min(self.end),
        }
    }

    /// A new reader starting at `offset` (default: the oldest kept byte).
    pub fn attach(&mut self, offset: Option<u64>) -> (ReaderId, u64) {
        let id = self.next_reader;
        self.next_reader += 1;
        let at = offset.unwrap_or(self.start).min(self.end);
        self.readers.insert(id, at);
        (id, at)
    }

    /// Records that `reader` was handed everything before `offset`.
    pub fn advance(&mut self, reader: ReaderId, offset: u64) {
        if let Some(at) = self.readers.get_mut(&reader) {
            *at = offset.min(self.end).max(*at);
            self.delivered = self.delivered.max(*at);
        }
    }

    pub fn detach(&mut self, reader: ReaderId) {
        self.readers.remove(&reader);
    }

    pub fn attached(&self) -> usize {
        self.readers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(read: &Read) -> String {
        read.chunks
            .iter()
            .map(|(s, b)| {
                format!(
                    "{}:{}",
                    if *s == Stream::Stdout { 'o' } else { 'e' },
                    String::from_utf8_lossy(b)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn keeps_both_streams_in_the_order_they_came() {
        let mut b = OutputBuffer::new(100);
        b.push(Stream::Stdout, b"out1 ");
        b.push(Stream::Stdout, b"out2 ");
        b.push(Stream::Stderr, b"err ");
        b.push(Stream::Stdout, b"out3");
        let r = b.read(0, 1000);
        assert_eq!(text(&r), "o:out1 out2  e:err  o:out3");
        assert_eq!((r.skipped, r.next), (0, 18));
        // A read from the middle of a chunk, bounded.
        let r = b.read(7, 6);
        assert_eq!(text(&r), "o:t2  e:err");
        assert_eq!(r.next, 13);
    }

    #[test]
    fn without_readers_the_oldest_bytes_go_and_count_as_dropped() {
        let mut b = OutputBuffer::new(10);
        b.push(Stream::Stdout, b"0123456789");
        assert_eq!(b.room(), CHUNK);
        b.push(Stream::Stderr, b"abcd");
        assert_eq!((b.start(), b.end(), b.dropped()), (4, 14, 4));
        let r = b.read(0, 100);
        assert_eq!(r.skipped, 4);
        assert_eq!(text(&r), "o:456789 e:abcd");
    }

    #[test]
    fn an_attached_reader_holds_the_pipes_back_instead_of_losing_bytes() {
        let mut b = OutputBuffer::new(10);
        let (reader, at) = b.attach(None);
        assert_eq!(at, 0);
        b.push(Stream::Stdout, b"0123456");
        assert_eq!(b.room(), 3);
        b.push(Stream::Stdout, b"789");
        assert_eq!(b.room(), 0);
        let r = b.read(at, 4);
        b.advance(reader, r.next);
        assert_eq!(b.room(), 4);
        // Bytes the reader already has may go without counting as dropped.
        b.push(Stream::Stdout, b"abcd");
        assert_eq!((b.start(), b.dropped()), (4, 0));
        b.detach(reader);
        assert_eq!(b.room(), CHUNK);
        b.push(Stream::Stdout, b"XY");
        assert_eq!(b.dropped(), 2);
    }

    #[test]
    fn big_writes_are_split_into_bounded_chunks() {
        let mut b = OutputBuffer::new(DEFAULT_CAP);
        b.push(Stream::Stdout, &vec![b'x'; CHUNK * 2 + 5]);
        let r = b.read(0, usize::MAX);
        assert_eq!(r.chunks.len(), 3);
        assert!(r.chunks.iter().all(|(_, c)| c.len() <= CHUNK));
        assert_eq!(r.next, (CHUNK * 2 + 5) as u64);
    }

    #[test]
    fn a_reader_past_the_end_starts_at_the_end() {
        let mut b = OutputBuffer::new(10);
        b.push(Stream::Stdout, b"abc");
        let (_, at) = b.attach(Some(99));
        assert_eq!(at, 3);
        assert!(b.read(at, 10).chunks.is_empty());
    }

    #[test]
    fn bytes_repeated_after_a_restart_from_a_checkpoint_are_dropped_once() {
        let mut b = OutputBuffer::new(DEFAULT_CAP);
        b.push(Stream::Stdout, b"1\n2\n3\n");
        // Checkpoint after "1\n"; the job ran on to "3\n", then restarted from the checkpoint.
        b.skip_next(4);
        assert_eq!(b.resume_point(), 2);
        b.push(Stream::Stdout, b"2\n");
        b.push(Stream::Stdout, b"3\n4\n");
        assert_eq!(b.resume_point(), 8);
        let r = b.read(0, usize::MAX);
        let all: Vec<u8> = r.chunks.into_iter().flat_map(|(_, c)| c).collect();
        assert_eq!(all, b"1\n2\n3\n4\n");
    }
}
