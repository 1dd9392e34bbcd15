//! Reading MessagePack by hand, for the fast paths of the task hot path (the
//! manager's `result` reader and the worker SDK's `task` reader): each function
//! takes one value off the front of a byte slice, or gives `None` for anything
//! else (another type, too few bytes), leaving the caller to fall back to serde.

// Every reader is `#[inline(always)]`: they sit on both sides' task hot path,
// where a call across the crate boundary (and a `memcmp` call for a constant
// key) costs more than the few loads they inline to.

/// Takes `expected` off the front of `rd`.
#[inline(always)]
pub fn exact(rd: &mut &[u8], expected: &[u8]) -> Option<()> {
    *rd = rd.strip_prefix(expected)?;
    Some(())
}

/// Takes `n` bytes off the front of `rd`.
#[inline(always)]
pub fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = rd.split_at_checked(n)?;
    *rd = rest;
    Some(head)
}

/// Takes `N` bytes off the front of `rd`.
#[inline(always)]
fn be<const N: usize>(rd: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = rd.split_first_chunk::<N>()?;
    *rd = rest;
    Some(*head)
}

/// An unsigned integer in any of MessagePack's unsigned forms.
#[inline(always)]
pub fn uint(rd: &mut &[u8]) -> Option<u64> {
    let [marker] = be(rd)?;
    match marker {
        0x00..=0x7f => Some(u64::from(marker)),
        0xcc => Some(u64::from(u8::from_be_bytes(be(rd)?))),
        0xcd => Some(u64::from(u16::from_be_bytes(be(rd)?))),
        0xce => Some(u64::from(u32::from_be_bytes(be(rd)?))),
        0xcf => Some(u64::from_be_bytes(be(rd)?)),
        _ => None,
    }
}

/// The bytes of a `str` in any of its forms, not checked to be UTF-8.
#[inline(always)]
pub fn str_bytes<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let [marker] = be(rd)?;
    let len = match marker {
        0xa0..=0xbf => usize::from(marker & 0x1f),
        0xd9 => usize::from(u8::from_be_bytes(be(rd)?)),
        0xda => usize::from(u16::from_be_bytes(be(rd)?)),
        0xdb => usize::try_from(u32::from_be_bytes(be(rd)?)).ok()?,
        _ => return None,
    };
    take(rd, len)
}

/// A `str` in any of its forms, checked to be UTF-8.
#[inline(always)]
pub fn string<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(str_bytes(rd)?).ok()
}

/// A `bin` in any of its forms.
#[inline(always)]
pub fn bin<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let [marker] = be(rd)?;
    let len = match marker {
        0xc4 => usize::from(u8::from_be_bytes(be(rd)?)),
        0xc5 => usize::from(u16::from_be_bytes(be(rd)?)),
        0xc6 => usize::try_from(u32::from_be_bytes(be(rd)?)).ok()?,
        _ => return None,
    };
    take(rd, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_of_an_unsigned_integer_is_read_and_a_short_one_is_refused() {
        for (bytes, want) in [
            (&[0x05][..], 5u64),
            (&[0xcc, 0xff][..], 255),
            (&[0xcd, 0x01, 0x00][..], 256),
            (&[0xce, 0, 1, 0, 0][..], 65_536),
            (&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0][..], 1 << 32),
        ] {
            let mut rd = bytes;
            assert_eq!(uint(&mut rd), Some(want));
            assert!(rd.is_empty());
        }
        assert_eq!(uint(&mut &[0xcd, 0x01][..]), None);
        assert_eq!(uint(&mut &[0xa1, b'x'][..]), None);
    }

    #[test]
    fn strings_and_bins_are_taken_whole_or_not_at_all() {
        let mut rd = &[0xa2, b'h', b'i', 0xc4, 0x01, 0x07][..];
        assert_eq!(string(&mut rd), Some("hi"));
        assert_eq!(bin(&mut rd), Some(&[0x07][..]));
        assert!(rd.is_empty());
        assert_eq!(string(&mut &[0xa2, 0xff, 0xfe][..]), None, "not UTF-8");
        assert_eq!(bin(&mut &[0xc4, 0x05, 1][..]), None, "too short");
        let mut rd = &b"typeid"[..];
        assert_eq!(exact(&mut rd, b"type"), Some(()));
        assert_eq!(rd, b"id");
        assert_eq!(exact(&mut rd, b"x"), None);
    }
}
