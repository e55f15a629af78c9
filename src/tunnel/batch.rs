//! A write batch toward a target: the chunks already queued for one connection, handed to the
//! socket in one vectored write (`bytes::Buf` over a queue of `Bytes`).

use bytes::Bytes;

/// Most bytes handed to one write toward the target: chunks already queued are written
/// together (one `writev`), so a burst costs one syscall and one wake of the target.
pub const WRITE_BATCH: usize = 256 * 1024;

/// Chunks queued for one vectored write, consumed front to back as the socket takes them.
#[derive(Default)]
pub struct Batch {
    chunks: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Batch {
    pub fn push(&mut self, chunk: Bytes) {
        // An empty CHANNEL_DATA is legal; queued, it would make `chunk()` empty while bytes
        // remain, and a writer that loops on `chunk()` would spin.
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl bytes::Buf for Batch {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks.iter()) {
            *slot = std::io::IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of a write batch");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    fn batch_of(parts: &[&'static [u8]]) -> Batch {
        let mut b = Batch::default();
        for p in parts {
            b.push(Bytes::from_static(p));
        }
        b
    }

    #[test]
    fn a_batch_yields_its_chunks_in_order_across_partial_writes() {
        let mut b = batch_of(&[b"abc", b"", b"defg", b"h"]);
        assert_eq!(b.remaining(), 8);
        let mut out = Vec::new();
        // Steps that stop inside a chunk, at its end, and across two chunks and an empty one,
        // as short writes do (`copy_to_bytes` walks `chunk` + `advance`).
        for step in [2, 1, 3, 2] {
            out.extend_from_slice(&b.copy_to_bytes(step));
        }
        assert_eq!(out, b"abcdefgh");
        assert_eq!(b.remaining(), 0);
        assert!(b.chunk().is_empty());
    }

    #[test]
    fn a_batch_offers_every_chunk_for_one_vectored_write() {
        let mut b = batch_of(&[b"one", b"two", b"three"]);
        b.advance(1);
        let mut slots = [std::io::IoSlice::new(&[]); 8];
        let n = b.chunks_vectored(&mut slots);
        let joined: Vec<u8> = slots[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, b"netwothree");
        // Fewer slots than chunks: the first ones, in order.
        let mut two = [std::io::IoSlice::new(&[]); 2];
        assert_eq!(b.chunks_vectored(&mut two), 2);
        assert_eq!(&*two[1], b"two");
    }
}
