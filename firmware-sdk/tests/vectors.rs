//! The ABI v1 event encoding, checked against the shared vectors and a reference encoder.
//!
//! `event-vectors.json` is a committed copy of `shared/abi/event-vectors.json` (the file the
//! agent's tests check too); when the shared file is present, the copy must be identical.

use edgefn_sdk::abi::{DecodeError, Event};
use serde_json::Value;

const VECTORS: &str = include_str!("event-vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode(ev: &Event<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; ev.encoded_len()];
    let n = ev
        .encode_to_slice(&mut buf)
        .expect("encoded_len is enough")
        .len();
    assert_eq!(n, buf.len(), "encoded_len is exact");
    buf
}

/// The spec, written out: unsigned LEB128.
fn ref_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The spec, written out: fields in order, `str`/`bytes` = varint length + bytes.
fn ref_encode(ev: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        ref_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    };
    bytes(&mut out, ev.id.as_bytes());
    bytes(&mut out, ev.source.as_bytes());
    bytes(&mut out, ev.subject.as_bytes());
    ref_varint(&mut out, ev.time_ms);
    bytes(&mut out, ev.content_type.as_bytes());
    bytes(&mut out, ev.data);
    ref_varint(&mut out, ev.attempt as u64);
    out
}

/// Asserts that `inner` lies inside `outer` (decoding borrowed, did not copy).
fn borrows(outer: &[u8], inner: &[u8]) {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    assert!(
        o.start <= i.start && i.end <= o.end,
        "field was copied, not borrowed"
    );
}

#[test]
fn shared_vectors_encode_and_decode_exactly() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let data = unhex(v["data_hex"].as_str().unwrap());
        let ev = Event {
            id: v["id"].as_str().unwrap(),
            source: v["source"].as_str().unwrap(),
            subject: v["subject"].as_str().unwrap(),
            time_ms: v["time_ms"].as_u64().unwrap(),
            content_type: v["content_type"].as_str().unwrap(),
            data: &data,
            attempt: v["attempt"].as_u64().unwrap().try_into().unwrap(),
        };
        let expected = v["encoded_hex"].as_str().unwrap();
        let bytes = encode(&ev);
        assert_eq!(hex(&bytes), expected, "vector `{name}`: encoding");
        assert_eq!(
            hex(&ref_encode(&ev)),
            expected,
            "vector `{name}`: reference encoder"
        );

        let wire = unhex(expected);
        let back = Event::decode(&wire).unwrap_or_else(|e| panic!("vector `{name}`: {e}"));
        assert_eq!(back, ev, "vector `{name}`: decoding");
        for field in [
            back.id.as_bytes(),
            back.source.as_bytes(),
            back.subject.as_bytes(),
            back.content_type.as_bytes(),
            back.data,
        ] {
            borrows(&wire, field);
        }
    }
}

#[test]
fn committed_vectors_match_the_shared_file() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/abi/event-vectors.json"
    );
    match std::fs::read(shared) {
        Ok(bytes) => assert!(
            bytes == VECTORS.as_bytes(),
            "firmware-sdk/tests/event-vectors.json differs from {shared}: copy it again"
        ),
        Err(e) => eprintln!("skipping: {shared} not readable ({e})"),
    }
}

/// Lengths around the varint boundaries (1 → 2 bytes at 128, 2 → 3 bytes at 16384).
const LENGTHS: &[usize] = &[
    0, 1, 2, 126, 127, 128, 129, 255, 256, 16382, 16383, 16384, 16385, 70000,
];

/// A deterministic xorshift generator (no dev-dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// UTF-8 text of exactly `len` bytes with 1- to 4-byte characters.
fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        let c = rng.pick(&['a', 'Z', '/', ' ', 'é', 'ж', '€', '😀']);
        if s.len() + c.len_utf8() <= len {
            s.push(c);
        } else {
            s.push('x');
        }
    }
    s
}

fn boundary_u64s() -> Vec<u64> {
    let mut v = vec![0, 1, u64::MAX, u64::MAX - 1, 1_764_158_400_123];
    for k in 1..=9 {
        let b = 1u64 << (7 * k);
        v.extend([b - 1, b, b + 1]);
    }
    v
}

#[test]
fn generated_events_round_trip() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let times = boundary_u64s();
    let attempts: Vec<u32> = vec![
        0,
        1,
        2,
        127,
        128,
        16383,
        16384,
        2_097_151,
        2_097_152,
        u32::MAX,
    ];
    for round in 0..400 {
        // Walk every length through every field at least once, then mix randomly.
        let field_len = |rng: &mut Rng, field: usize| {
            if round / LENGTHS.len() % 6 == field {
                LENGTHS[round % LENGTHS.len()]
            } else {
                rng.pick(&[0usize, 1, 5, 20, 127, 128])
            }
        };
        let mut field_text = |field| {
            let n = field_len(&mut rng, field);
            text(&mut rng, n)
        };
        let id = field_text(0);
        let source = field_text(1);
        let subject = field_text(2);
        let content_type = field_text(3);
        let n = field_len(&mut rng, 4);
        let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let ev = Event {
            id: &id,
            source: &source,
            subject: &subject,
            time_ms: rng.pick(&times),
            content_type: &content_type,
            data: &data,
            attempt: rng.pick(&attempts),
        };
        let bytes = encode(&ev);
        assert_eq!(
            bytes,
            ref_encode(&ev),
            "round {round}: encoding differs from the reference"
        );
        assert_eq!(Event::decode(&bytes), Ok(ev), "round {round}: round trip");
    }
}

#[test]
fn truncated_or_extended_inputs_fail_to_decode() {
    let mut rng = Rng(42);
    for &n in &[0usize, 1, 127, 128, 16383, 16384] {
        let data = vec![0xa5u8; n];
        let subject = text(&mut rng, 130);
        let ev = Event {
            id: "01J9Z3K6Q0000000000000000A",
            source: "mqtt",
            subject: &subject,
            time_ms: u64::MAX,
            content_type: "application/octet-stream",
            data: &data,
            attempt: u32::MAX,
        };
        let bytes = encode(&ev);
        // Every cut inside the header and around the data's end; every cut for small events.
        let cuts: Vec<usize> = if bytes.len() <= 600 {
            (0..bytes.len()).collect()
        } else {
            (0..300).chain(bytes.len() - 300..bytes.len()).collect()
        };
        for cut in cuts {
            assert_eq!(
                Event::decode(&bytes[..cut]),
                Err(DecodeError),
                "prefix of {cut}/{} bytes decoded",
                bytes.len()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Event::decode(&longer),
            Err(DecodeError),
            "trailing byte accepted"
        );
    }
}

#[test]
fn malformed_varints_and_text_are_refused() {
    // minimal event: id "", source "invoke", subject "", time 0, content_type "", data "", attempt
    let head = unhex("0006696e766f6b650000000000");
    let with_attempt = |attempt: &[u8]| {
        let mut b = head[..head.len() - 1].to_vec();
        b.extend_from_slice(attempt);
        b
    };
    // attempt (u32): at most 5 bytes, the 5th carrying at most bits 28..31.
    assert_eq!(
        Event::decode(&with_attempt(&[0xff, 0xff, 0xff, 0xff, 0x0f]))
            .unwrap()
            .attempt,
        u32::MAX
    );
    assert_eq!(
        Event::decode(&with_attempt(&[0xff, 0xff, 0xff, 0xff, 0x10])),
        Err(DecodeError)
    );
    assert_eq!(
        Event::decode(&with_attempt(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])),
        Err(DecodeError)
    );
    // A non-minimal varint is accepted (postcard's decoder does); hosts always write minimal ones.
    assert_eq!(
        Event::decode(&with_attempt(&[0x81, 0x00])).unwrap().attempt,
        1
    );

    // time_ms (u64): at most 10 bytes, the 10th carrying only bit 63.
    let with_time = |time: &[u8]| {
        let mut b = unhex("0006696e766f6b6500");
        b.extend_from_slice(time);
        b.extend_from_slice(&[0, 0, 1]);
        b
    };
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(Event::decode(&with_time(&max)).unwrap().time_ms, u64::MAX);
    let mut over = max;
    over[9] = 0x02;
    assert_eq!(Event::decode(&with_time(&over)), Err(DecodeError));

    // Strings must be UTF-8 (data need not be).
    let bad_id = unhex("01ff06696e766f6b650000000001");
    assert_eq!(Event::decode(&bad_id), Err(DecodeError));
    let binary_data = unhex("0006696e766f6b65000000 01ff 01".replace(' ', "").as_str());
    assert_eq!(Event::decode(&binary_data).unwrap().data, &[0xff]);
}
