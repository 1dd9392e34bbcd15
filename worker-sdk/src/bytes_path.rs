//! Typed handlers whose input or output is bytes, without serde's copies.
//!
//! A typed handler's input is decoded by serde and its output encoded by serde,
//! and for a payload of bytes each is a copy: 2 MiB of `memcpy` for a 1 MiB
//! echo. Two cases are taken apart, with results identical to serde's:
//!
//! - an input of type [`Bytes`] whose payload is one MessagePack `bin` of
//!   [`APART_MIN`] bytes or more is a slice of the frame it came in (no copy;
//!   a smaller one is copied, so that a handler keeping it does not keep the
//!   whole read buffer the frame shares);
//! - an output that MessagePack writes as a `bin` — a [`Bytes`] or a
//!   `serde_bytes::ByteBuf` — of [`APART_MIN`] bytes or more becomes the result
//!   as it is, written after the `bin` marker from its own buffer.
//!
//! The types are told by [`Any`]; for every other type the test is decided when
//! the handler is compiled, and serde does the work as before.

use std::any::{Any, TypeId};

use bytes::Bytes;
use pool_core::protocol::cursor;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::dispatch::APART_MIN;

/// MessagePack's nil: what an empty payload means (`docs/PROTOCOL.md`,
/// "Payload convention").
const NIL: &[u8] = &[0xc0];

/// Decodes a task's payload into the handler's input type `T`, as
/// `rmp_serde::from_slice` does, an empty payload as nil (so `()` and
/// `Option<_>` inputs take it); a [`Bytes`] input that is one large `bin` is
/// a slice of `payload`, and a `ByteBuf` one takes the memory `payload` lies
/// in when nothing else holds it (see [`owned_bin`]).
#[inline]
pub(crate) fn decode_input<T: DeserializeOwned + 'static>(
    payload: Bytes,
) -> Result<T, rmp_serde::decode::Error> {
    let wanted = TypeId::of::<T>();
    if payload.is_empty() {
        return rmp_serde::from_slice(NIL);
    }
    if payload.len() < APART_MIN {
        // Too small to be taken apart (one look, not a parse).
    } else if wanted == TypeId::of::<Bytes>() {
        if let Some(input) = whole_bin(&payload).and_then(as_input::<T, Bytes>) {
            return Ok(input);
        }
    } else if wanted == TypeId::of::<ByteBuf>() {
        if let Some(bin) = whole_bin(&payload) {
            // `T` is `ByteBuf`: the cast holds.
            return as_input(owned_bin(payload, bin)).ok_or_else(|| {
                rmp_serde::decode::Error::Uncategorized("a ByteBuf input went amiss".into())
            });
        }
    }
    rmp_serde::from_slice(&payload)
}

/// `value` as the handler's input type `T`, when that is its type.
fn as_input<T: 'static, U: 'static>(value: U) -> Option<T> {
    let mut value = Some(value);
    let value: &mut dyn Any = &mut value;
    value.downcast_mut::<Option<T>>().and_then(Option::take)
}

/// The bytes of `bin` (a slice of `payload`) as an owned buffer, once
/// `payload` is let go: when they are all that holds their memory (a large
/// frame is read into a buffer of its own, `task_frames`), that memory
/// becomes the buffer, moved to its start in place instead of copied into a
/// fresh allocation (which for 1 MiB costs a page fault per 4 KiB on top of
/// the copy); else they are copied, as serde copies them.
fn owned_bin(payload: Bytes, bin: Bytes) -> ByteBuf {
    drop(payload);
    ByteBuf::from(Vec::from(bin))
}

/// The bytes of `payload` when it is one `bin` of at least [`APART_MIN`]
/// bytes and nothing after it.
fn whole_bin(payload: &Bytes) -> Option<Bytes> {
    let mut rd = &payload[..];
    let bytes = cursor::bin(&mut rd)?;
    (rd.is_empty() && bytes.len() >= APART_MIN).then(|| payload.slice_ref(bytes))
}

/// Takes `output`'s buffer when it is a [`Bytes`] or a `ByteBuf` of at least
/// [`APART_MIN`] bytes: the bytes of the `bin` MessagePack writes for it.
pub(crate) fn large_bin<O: 'static>(output: &mut Option<O>) -> Option<Bytes> {
    let output: &mut dyn Any = output;
    if let Some(buf) = output.downcast_mut::<Option<ByteBuf>>() {
        return buf
            .take_if(|b| b.len() >= APART_MIN)
            .map(|b| Bytes::from(b.into_vec()));
    }
    output
        .downcast_mut::<Option<Bytes>>()?
        .take_if(|b| b.len() >= APART_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<T: serde::Serialize>(value: &T) -> Bytes {
        Bytes::from(rmp_serde::to_vec(value).expect("encode"))
    }

    #[test]
    fn a_large_bytes_input_in_one_bin_is_a_slice_of_the_payload_equal_to_serdes() {
        for len in [0, 5, 300, APART_MIN - 1, APART_MIN, 200_000] {
            let payload = encoded(&ByteBuf::from(vec![9u8; len]));
            let input: Bytes = decode_input(payload.clone()).expect("decodes");
            let serde: Bytes = rmp_serde::from_slice(&payload).expect("serde decodes");
            assert_eq!(input, serde);
            // A small one is copied: kept, it must not pin the frame's buffer.
            let sliced = payload.as_ptr_range().contains(&input.as_ptr());
            assert_eq!(sliced, len >= APART_MIN, "{len} bytes");
        }
    }

    #[test]
    fn other_payloads_for_a_bytes_input_are_left_to_serde() {
        // A string, an array of bytes, a bin with bytes after it.
        let mut trailing = encoded(&ByteBuf::from(vec![1u8, 2])).to_vec();
        trailing.push(0xc0);
        for payload in [
            encoded(&"text"),
            encoded(&vec![1u8, 2, 3]),
            Bytes::from(trailing),
        ] {
            let ours = decode_input::<Bytes>(payload.clone()).map_err(|e| e.to_string());
            let serde = rmp_serde::from_slice::<Bytes>(&payload).map_err(|e| e.to_string());
            assert_eq!(ours, serde, "payload {payload:?}");
        }
    }

    #[test]
    fn inputs_of_other_types_decode_as_serde_decodes_them() {
        let payload = encoded(&ByteBuf::from(vec![4u8; 10]));
        let ours: ByteBuf = decode_input(payload.clone()).expect("decodes");
        assert_eq!(ours.into_vec(), vec![4u8; 10]);
        let refused = decode_input::<u32>(payload.clone()).map_err(|e| e.to_string());
        let serde = rmp_serde::from_slice::<u32>(&payload).map_err(|e| e.to_string());
        assert_eq!(refused, serde);
    }

    #[test]
    fn a_large_byte_buf_input_takes_the_payloads_memory_when_nothing_else_holds_it() {
        for len in [APART_MIN - 1, APART_MIN, 200_000] {
            let payload = encoded(&ByteBuf::from(vec![3u8; len]));
            let serde: ByteBuf = rmp_serde::from_slice(&payload).expect("serde decodes");
            // Shared with another holder (a read buffer): copied.
            let kept = payload.clone();
            let shared: ByteBuf = decode_input(payload.clone()).expect("decodes");
            assert_eq!(shared, serde);
            assert!(
                !kept.as_ptr_range().contains(&shared.as_ptr()),
                "{len}: a copy"
            );
            drop(kept);
            // Alone: a large one is the payload's own memory.
            let memory = payload.as_ptr_range();
            let alone: ByteBuf = decode_input(payload).expect("decodes");
            assert_eq!(alone, serde);
            assert_eq!(
                memory.contains(&alone.as_ptr()),
                len >= APART_MIN,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn an_empty_payload_decodes_as_nil() {
        decode_input::<()>(Bytes::new()).expect("() takes nil");
        assert_eq!(
            decode_input::<Option<u32>>(Bytes::new()).expect("decodes"),
            None
        );
        assert_eq!(
            decode_input::<serde_json::Value>(Bytes::new()).expect("decodes"),
            serde_json::Value::Null
        );
        // A type nil is not refuses it as it refuses an encoded nil.
        let refused = decode_input::<u32>(Bytes::new()).map_err(|e| e.to_string());
        let serde = rmp_serde::from_slice::<u32>(NIL).map_err(|e| e.to_string());
        assert!(refused.is_err());
        assert_eq!(refused, serde);
    }

    #[test]
    fn only_large_byte_outputs_are_taken() {
        let large = Bytes::from(vec![1u8; APART_MIN]);
        let mut output = Some(large.clone());
        assert_eq!(
            large_bin(&mut output).map(|b| b.as_ptr()),
            Some(large.as_ptr())
        );
        let mut small = Some(Bytes::from(vec![1u8; APART_MIN - 1]));
        assert_eq!(large_bin(&mut small), None);
        assert!(small.is_some(), "a small output is left for serde");
        let mut text = Some("x".repeat(APART_MIN));
        assert_eq!(large_bin(&mut text), None);
    }
}
