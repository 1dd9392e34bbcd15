//! The fixed bytes of the two hot-path messages, `task` and `result`, as the
//! manager and the SDKs write them: the map header with the `type` tag and the
//! raw MessagePack of each further key, in the order they are written
//! (`docs/PROTOCOL.md`). The hand writers copy them
//! ([`Scratch::put`](super::emit::Scratch::put)); the hand readers compare
//! against them ([`cursor::exact`](super::cursor::exact)).

/// map(6), "type", "task", "id": the start of a `task` body.
pub const TASK_HEAD: &[u8] = b"\x86\xa4type\xa4task\xa2id";
/// map(3), "type", "result", "id": the start of a `result` body.
pub const RESULT_HEAD: &[u8] = b"\x83\xa4type\xa6result\xa2id";
/// "task_type", after a `task`'s id.
pub const TASK_TYPE_KEY: &[u8] = b"\xa9task_type";
/// "payload", after a `task`'s type and a `result`'s id.
pub const PAYLOAD_KEY: &[u8] = b"\xa7payload";
/// "attempt", after a `task`'s payload.
pub const ATTEMPT_KEY: &[u8] = b"\xa7attempt";
/// "timeout_ms", after a `task`'s attempt.
pub const TIMEOUT_KEY: &[u8] = b"\xaatimeout_ms";

#[cfg(test)]
mod tests {
    use super::*;

    fn str_of(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_str(&mut out, s).unwrap();
        out
    }

    fn head(fields: u32, kind: &str) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, fields).unwrap();
        out.extend(str_of("type"));
        out.extend(str_of(kind));
        out.extend(str_of("id"));
        out
    }

    #[test]
    fn each_constant_is_the_messagepack_rmp_writes_for_it() {
        assert_eq!(TASK_HEAD, head(6, "task"));
        assert_eq!(RESULT_HEAD, head(3, "result"));
        assert_eq!(TASK_TYPE_KEY, str_of("task_type"));
        assert_eq!(PAYLOAD_KEY, str_of("payload"));
        assert_eq!(ATTEMPT_KEY, str_of("attempt"));
        assert_eq!(TIMEOUT_KEY, str_of("timeout_ms"));
    }
}
