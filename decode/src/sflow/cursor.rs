//! A bounds-checked reader of XDR (RFC 4506) data, the encoding of sFlow: big-endian
//! 32-bit words, variable-length opaques prefixed by their length and padded to 4.

use super::error::SflowError;

/// Reads from the front of a byte slice; every read either succeeds whole or fails
/// with [`SflowError::Truncated`], leaving the cursor where it was.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `len` bytes.
    pub(crate) fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], SflowError> {
        match self.data.split_at_checked(len) {
            Some((head, tail)) => {
                self.data = tail;
                Ok(head)
            }
            None => Err(SflowError::Truncated { what, needed: len, available: self.data.len() }),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], SflowError> {
        match self.data.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.data = tail;
                Ok(*head)
            }
            None => Err(SflowError::Truncated { what, needed: N, available: self.data.len() }),
        }
    }

    /// One big-endian unsigned 32-bit word.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, SflowError> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }

    /// Skips `len` bytes.
    pub(crate) fn skip(&mut self, len: usize, what: &'static str) -> Result<(), SflowError> {
        self.bytes(len, what).map(|_| ())
    }

    /// A variable-length opaque: a length word, that many bytes, then padding to a
    /// multiple of 4. Padding missing at the very end of the data is tolerated (it
    /// carries nothing); a length past the end is [`SflowError::LengthPastEnd`].
    pub(crate) fn opaque(&mut self, what: &'static str) -> Result<&'a [u8], SflowError> {
        let mut probe = self.clone();
        let declared = probe.u32(what)?;
        let len = usize::try_from(declared).unwrap_or(usize::MAX);
        let body = probe
            .bytes(len, what)
            .map_err(|_| SflowError::LengthPastEnd { what, length: declared })?;
        let padding = (4 - len % 4) % 4;
        let skipped = padding.min(probe.remaining());
        probe.skip(skipped, what)?;
        *self = probe;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_words_and_fails_without_moving_when_short() {
        let mut cur = Cursor::new(&[0, 0, 1, 2, 9, 9]);
        assert_eq!(cur.u32("a"), Ok(0x0102));
        assert_eq!(cur.u32("b"), Err(SflowError::Truncated { what: "b", needed: 4, available: 2 }));
        assert_eq!(cur.remaining(), 2);
    }

    #[test]
    fn opaque_skips_padding_and_rejects_lengths_past_the_end() {
        let mut cur = Cursor::new(&[0, 0, 0, 3, 7, 8, 9, 0, 0xAA]);
        assert_eq!(cur.opaque("o"), Ok(&[7u8, 8, 9][..]));
        assert_eq!(cur.remaining(), 1);

        let mut long = Cursor::new(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(long.opaque("o"), Err(SflowError::LengthPastEnd { what: "o", length: 9 }));
        assert_eq!(long.remaining(), 6);

        let mut huge = Cursor::new(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(huge.opaque("o").is_err());
    }

    #[test]
    fn opaque_tolerates_missing_final_padding() {
        let mut cur = Cursor::new(&[0, 0, 0, 2, 5, 6]);
        assert_eq!(cur.opaque("o"), Ok(&[5u8, 6][..]));
        assert!(cur.is_empty());
    }
}
