use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::*;
use crate::protocol::{ErrorReply, Heartbeat, TaskFrame, PROTOCOL_VERSION};

fn frame_of<T: Serialize>(msg: &T) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    buf
}

#[test]
fn task_round_trips_with_borrowed_payload() {
    let payload = vec![7u8; 300];
    let msg = ToWorker::Task(TaskFrame {
        id: 42,
        task_type: "echo",
        payload: &payload,
        attempt: 2,
        timeout_ms: 1000,
    });
    let mut buf = frame_of(&msg);
    let body = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(decode_to_worker(&body).unwrap(), msg);
}

#[test]
fn every_worker_message_round_trips() {
    let msgs = [
        FromWorker::Ready {
            version: PROTOCOL_VERSION,
            pid: 9,
            task_types: vec!["echo", "sleep"],
            batches_replies: true,
        },
        FromWorker::Result {
            id: 1,
            payload: b"\x91\x01",
        },
        FromWorker::Error(ErrorReply {
            id: 2,
            kind: "handler",
            message: "boom",
            retryable: false,
        }),
        FromWorker::Heartbeat(Heartbeat::new(1 << 20, 12, 3, 1)),
        FromWorker::Log {
            level: LogLevel::Warn,
            message: "careful",
        },
    ];
    for msg in msgs {
        let mut buf = frame_of(&msg);
        let body = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decode_from_worker(&body).unwrap(), msg);
    }
}

use super::super::LogLevel;

#[test]
fn messages_are_maps_with_a_type_field() {
    let buf = frame_of(&ToWorker::Cancel { id: 5 });
    // 0x82: fixmap of two entries; first key "type".
    assert_eq!(buf[4], 0x82);
    assert_eq!(&buf[5..10], b"\xa4type");
}

#[test]
fn oversized_prefix_is_rejected_before_allocating() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
    let cap_before = buf.capacity();
    let err = FrameCodec::new(1024).decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        FrameError::TooLarge {
            len: 0xffff_ffff,
            max: 1024
        }
    ));
    assert_eq!(buf.capacity(), cap_before);
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let full = frame_of(&ToWorker::Shutdown { graceful: true });
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for (i, byte) in full.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = codec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == full.len() - 1);
    }
}

#[test]
fn eof_mid_frame_is_truncated() {
    let mut buf = BytesMut::from(&[0, 0, 0, 10, 1, 2, 3][..]);
    let err = FrameCodec::default().decode_eof(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        FrameError::Truncated {
            expected: 14,
            got: 7
        }
    ));
}

#[test]
fn garbage_body_is_malformed() {
    assert!(matches!(
        decode_from_worker(b"\xc1\xc1\xc1"),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode_from_worker(&rmp_serde::to_vec_named(&serde_json_like()).unwrap()),
        Err(FrameError::Malformed(_))
    ));
}

fn serde_json_like() -> std::collections::BTreeMap<&'static str, &'static str> {
    [("type", "no_such_message")].into_iter().collect()
}

#[test]
fn encoding_over_the_maximum_leaves_the_buffer_untouched() {
    let payload = vec![0u8; 100];
    let msg = ToWorker::Task(TaskFrame {
        id: 1,
        task_type: "echo",
        payload: &payload,
        attempt: 1,
        timeout_ms: 1,
    });
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = encode_frame(&msg, &mut buf, 64).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max: 64, .. }));
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn an_array_body_is_malformed_even_where_serde_would_take_it() {
    let array = rmp_serde::to_vec(&("result", 7u64, serde_bytes::Bytes::new(b"x"))).unwrap();
    let err = decode_from_worker(&array).unwrap_err();
    assert!(
        matches!(&err, FrameError::Malformed(m) if m.contains("map")),
        "{err}"
    );
    let task = rmp_serde::to_vec(&("cancel", 7u64)).unwrap();
    assert!(matches!(
        decode_to_worker(&task),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode_from_worker(b""),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn an_error_without_retryable_is_retryable_not_a_protocol_error() {
    #[derive(serde::Serialize)]
    struct Bare<'a> {
        #[serde(rename = "type")]
        kind_of: &'a str,
        id: u64,
        kind: &'a str,
        message: &'a str,
    }
    let body = rmp_serde::to_vec_named(&Bare {
        kind_of: "error",
        id: 9,
        kind: "handler",
        message: "boom",
    })
    .unwrap();
    assert_eq!(
        decode_from_worker(&body).unwrap(),
        FromWorker::Error(ErrorReply {
            id: 9,
            kind: "handler",
            message: "boom",
            retryable: true,
        })
    );
}

#[test]
fn a_result_payload_sent_as_str_is_taken_as_its_bytes() {
    let mut body = Vec::new();
    rmp::encode::write_map_len(&mut body, 3).unwrap();
    rmp::encode::write_str(&mut body, "type").unwrap();
    rmp::encode::write_str(&mut body, "result").unwrap();
    rmp::encode::write_str(&mut body, "id").unwrap();
    rmp::encode::write_uint(&mut body, 9).unwrap();
    rmp::encode::write_str(&mut body, "payload").unwrap();
    rmp::encode::write_str(&mut body, "xy").unwrap();
    assert_eq!(
        decode_from_worker(&body).unwrap(),
        FromWorker::Result {
            id: 9,
            payload: b"xy"
        }
    );
}
