//! Bytes gathered on the stack and moved to the heap only when they outgrow it: the texts the signing schemes
//! build per request (NWS4's canonical request and string to sign, the replay window's tagged token).

use arrayvec::ArrayVec;

/// Up to `N` bytes on the stack, then a `Vec`. One copy per piece: `SmallVec`'s append is an insert at the end,
/// which also moves the zero bytes after it (a second call into the C library per piece).
#[derive(Default)]
pub(crate) struct StackBuffer<const N: usize> {
    stack: ArrayVec<u8, N>,
    heap: Vec<u8>,
}

// === impl StackBuffer ===

impl<const N: usize> StackBuffer<N> {
    /// Everything written so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack
        } else {
            &self.heap
        }
    }

    /// Append `piece`.
    pub(crate) fn put(&mut self, piece: &[u8]) {
        if self.heap.is_empty() {
            if self.stack.try_extend_from_slice(piece).is_ok() {
                return;
            }
            self.heap.reserve(self.stack.len() + piece.len());
            self.heap.extend_from_slice(&self.stack);
        }
        self.heap.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::StackBuffer;

    #[test]
    fn pieces_arrive_whole_on_the_stack_and_past_it() {
        // Fits; spills with bytes already on the stack; spills from empty; spills on an empty piece's neighbour.
        for pieces in [
            &[&b"ab"[..], b"cd"][..],
            &[b"abc", b"defgh", b"ij"],
            &[b"abcdefghij", b"k"],
            &[b"", b"abcd", b"", b"efgh", b""],
        ] {
            let mut buffer = StackBuffer::<4>::default();
            for piece in pieces {
                buffer.put(piece);
            }
            assert_eq!(buffer.as_bytes(), pieces.concat(), "{pieces:?}");
        }
    }
}
