//! `verify_desired` and `verify_module`: the checks a device runs, each failure refused with a
//! clear error (no server involved).

use base64::Engine;
use ed25519_dalek::SigningKey;
use edgefn_cloud::keys::{generate, issue::certify};
use edgefn_cloud::now_ms;
use edgefn_cloud::protocol::keycert::key_id;
use edgefn_cloud::protocol::verify::sha256_hex;
use edgefn_cloud::protocol::*;

const HOUR: i64 = 3600 * 1000;

struct Fixture {
    root: SigningKey,
    key: SigningKey,
    cert: Signed<KeyCert>,
    module: Vec<u8>,
}

fn fixture() -> Fixture {
    let root = generate();
    let key = generate();
    let cert = certify(&root, &key, now_ms() - HOUR, now_ms() + HOUR);
    Fixture {
        root,
        key,
        cert,
        module: b"\0asm\x01\0\0\0".to_vec(),
    }
}

impl Fixture {
    fn kid(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    fn manifest(&self, function: &str) -> Manifest {
        Manifest {
            function: function.into(),
            version: 1,
            sha256: sha256_hex(&self.module),
            size: self.module.len() as u64,
            spec: String::new(),
            description: String::new(),
            published_ms: now_ms(),
        }
    }

    fn state(&self, sequence: u64, expires_ms: i64) -> DesiredState {
        DesiredState {
            device: "d-1".into(),
            sequence,
            issued_ms: now_ms(),
            expires_ms,
            functions: vec![FunctionState {
                name: "f".into(),
                enabled: true,
                deployment: "dep-1".into(),
                versions: vec![Signed::sign(
                    &self.manifest("f"),
                    Context::Manifest,
                    &self.kid(),
                    &self.key,
                )],
                aliases: vec![AliasState {
                    name: "prod".into(),
                    version: 1,
                    also_version: None,
                    weight: None,
                }],
            }],
            mappings: vec![],
            flows: vec![],
        }
    }

    fn doc(&self, state: &DesiredState) -> DesiredDocument {
        DesiredDocument {
            keys: vec![self.cert.clone()],
            document: Signed::sign(state, Context::Desired, &self.kid(), &self.key),
        }
    }

    fn verify(
        &self,
        doc: &DesiredDocument,
        last: Option<u64>,
    ) -> Result<VerifiedState, VerifyError> {
        verify_desired(doc, &self.root.verifying_key(), "d-1", last, now_ms())
    }
}

#[test]
fn a_good_document_verifies() {
    let f = fixture();
    let v = f
        .verify(&f.doc(&f.state(5, now_ms() + HOUR)), Some(4))
        .unwrap();
    assert_eq!(v.sequence, 5);
    assert_eq!(v.key_id, f.kid());
    assert_eq!(v.functions[0].versions[0].function, "f");
    verify_module(&v.functions[0].versions[0], &f.module).unwrap();
    // The same sequence again is the same state: accepted.
    f.verify(&f.doc(&f.state(5, now_ms() + HOUR)), Some(5))
        .unwrap();
}

#[test]
fn a_tampered_document_is_refused() {
    let f = fixture();
    let mut doc = f.doc(&f.state(1, now_ms() + HOUR));
    let mut other = f.state(1, now_ms() + HOUR);
    other.functions.clear();
    let b64 = base64::engine::general_purpose::STANDARD;
    doc.document.payload_base64 = b64.encode(serde_json::to_vec(&other).unwrap());
    let e = f.verify(&doc, None).unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    assert!(
        e.to_string().contains("bad signature on desired state"),
        "{e}"
    );
}

#[test]
fn a_document_signed_by_an_unknown_key_is_refused() {
    let f = fixture();
    let stranger = generate();
    let doc = DesiredDocument {
        keys: vec![f.cert.clone()],
        document: Signed::sign(
            &f.state(1, now_ms() + HOUR),
            Context::Desired,
            &key_id(&stranger.verifying_key()),
            &stranger,
        ),
    };
    let e = f.verify(&doc, None).unwrap_err();
    assert!(matches!(e, VerifyError::UnknownKey { .. }), "{e}");
}

#[test]
fn a_key_not_certified_by_our_root_is_refused() {
    let f = fixture();
    let other_root = generate();
    let mut doc = f.doc(&f.state(1, now_ms() + HOUR));
    doc.keys = vec![certify(
        &other_root,
        &f.key,
        now_ms() - HOUR,
        now_ms() + HOUR,
    )];
    let e = f.verify(&doc, None).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadSignature { ref what, .. } if what == "key certificate"),
        "{e}"
    );
}

#[test]
fn an_expired_signing_key_is_refused() {
    let f = fixture();
    let mut doc = f.doc(&f.state(1, now_ms() + HOUR));
    doc.keys = vec![certify(
        &f.root,
        &f.key,
        now_ms() - 2 * HOUR,
        now_ms() - HOUR,
    )];
    let e = f.verify(&doc, None).unwrap_err();
    assert!(matches!(e, VerifyError::KeyExpired { .. }), "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn a_key_certificate_signed_as_something_else_is_refused() {
    // A manifest signature replayed as a key certificate: domain separation refuses it.
    let f = fixture();
    let cert = KeyCert {
        key_id: f.kid(),
        public_key_base64: edgefn_cloud::protocol::keycert::encode_public(&f.key.verifying_key()),
        not_before_ms: 0,
        not_after_ms: i64::MAX,
    };
    let mut doc = f.doc(&f.state(1, now_ms() + HOUR));
    doc.keys = vec![Signed::sign(&cert, Context::Manifest, "root", &f.root)];
    assert!(matches!(
        f.verify(&doc, None),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn a_lower_sequence_is_refused() {
    let f = fixture();
    let e = f
        .verify(&f.doc(&f.state(3, now_ms() + HOUR)), Some(4))
        .unwrap_err();
    assert_eq!(e, VerifyError::Rollback { last: 4, got: 3 });
    assert!(e.to_string().contains("rollback"), "{e}");
}

#[test]
fn an_expired_document_is_refused() {
    let f = fixture();
    let e = f
        .verify(&f.doc(&f.state(1, now_ms() - 1)), None)
        .unwrap_err();
    assert!(matches!(e, VerifyError::Expired { .. }), "{e}");
}

#[test]
fn a_document_for_another_device_is_refused() {
    let f = fixture();
    let doc = f.doc(&f.state(1, now_ms() + HOUR));
    let e = verify_desired(&doc, &f.root.verifying_key(), "d-2", None, now_ms()).unwrap_err();
    assert!(matches!(e, VerifyError::WrongDevice { .. }), "{e}");
}

#[test]
fn a_bad_manifest_signature_is_refused() {
    let f = fixture();
    let mut state = f.state(1, now_ms() + HOUR);
    let mut m = f.manifest("f");
    let good = Signed::sign(&m, Context::Manifest, &f.kid(), &f.key);
    m.size += 1;
    let mut forged = Signed::sign(&m, Context::Manifest, &f.kid(), &f.key);
    forged.signature_base64 = good.signature_base64;
    state.functions[0].versions = vec![forged];
    let e = f.verify(&f.doc(&state), None).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadSignature { ref what, .. } if what.contains("manifest")),
        "{e}"
    );
}

#[test]
fn a_manifest_of_another_function_is_refused() {
    // Mix-and-match: a validly signed manifest of g listed under f.
    let f = fixture();
    let mut state = f.state(1, now_ms() + HOUR);
    state.functions[0].versions = vec![Signed::sign(
        &f.manifest("g"),
        Context::Manifest,
        &f.kid(),
        &f.key,
    )];
    let e = f.verify(&f.doc(&state), None).unwrap_err();
    assert!(matches!(e, VerifyError::Inconsistent(_)), "{e}");
}

#[test]
fn an_alias_to_a_missing_version_is_refused() {
    let f = fixture();
    let mut state = f.state(1, now_ms() + HOUR);
    state.functions[0].aliases[0].version = 9;
    assert!(matches!(
        f.verify(&f.doc(&state), None),
        Err(VerifyError::Inconsistent(_))
    ));
}

#[test]
fn a_module_of_the_wrong_size_or_hash_is_refused() {
    let f = fixture();
    let m = f.manifest("f");
    let mut longer = f.module.clone();
    longer.push(0);
    let e = verify_module(&m, &longer).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::SizeMismatch {
                expected: 8,
                got: 9,
                ..
            }
        ),
        "{e}"
    );
    let mut flipped = f.module.clone();
    flipped[7] = 1;
    let e = verify_module(&m, &flipped).unwrap_err();
    assert!(matches!(e, VerifyError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("sha256"), "{e}");
}
