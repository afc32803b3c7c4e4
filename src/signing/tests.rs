//! The key file: made private, read back the same, rotated without losing
//! the old public keys, refused when others may read it.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn signed_head(ring: &KeyRing) -> (Vec<u8>, String, [u8; 64]) {
    let message = head_bytes("org_a", 7, 1_700_000_000_000_000, &[9; 32]);
    let (key_id, signature) = ring.sign(&message);
    (message, key_id.to_owned(), signature)
}

fn verifies(ring: &KeyRing, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
    ring.published()
        .iter()
        .find(|k| k.key_id == key_id)
        .is_some_and(|k| k.verifies(message, signature))
}

#[test]
fn a_new_key_file_is_private_and_reads_back_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = KeyRing::default_path(dir.path());
    let made = KeyRing::open_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let read = KeyRing::open_or_create(&path).unwrap();
    assert_eq!(read.published(), made.published());
    let (message, key_id, signature) = signed_head(&made);
    assert!(verifies(&read, &key_id, &message, &signature));
}

#[test]
fn a_head_signed_before_a_rotation_still_verifies_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared-key");
    let before = KeyRing::open_or_create(&path).unwrap();
    let (message, old_id, signature) = signed_head(&before);
    let after = KeyRing::rotate(&path).unwrap();
    assert_ne!(
        after.current().key_id,
        old_id,
        "rotation signs with a new key"
    );
    let reread = KeyRing::open(&path).unwrap();
    assert_eq!(reread.published().len(), 2);
    assert!(verifies(&reread, &old_id, &message, &signature));
    let (message, new_id, signature) = signed_head(&reread);
    assert_eq!(new_id, after.current().key_id);
    assert!(verifies(&reread, &new_id, &message, &signature));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("ed25519-secret").count(), 1, "{text}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_changed_byte_of_the_head_fails_verification() {
    let ring = KeyRing::ephemeral().unwrap();
    let (mut message, key_id, signature) = signed_head(&ring);
    assert!(verifies(&ring, &key_id, &message, &signature));
    let last = message.len() - 1;
    message[last] ^= 1;
    assert!(!verifies(&ring, &key_id, &message, &signature));
}

#[test]
fn a_key_file_others_may_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    KeyRing::open_or_create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(KeyRing::open(&path), Err(Error::Exposed { .. })));
}

#[test]
fn a_file_without_a_secret_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let public = hex::encode(KeyRing::ephemeral().unwrap().current().key);
    std::fs::write(&path, format!("ed25519-public {public}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(KeyRing::open(&path), Err(Error::Unusable { .. })));
    std::fs::write(&path, "ed25519-secret zz\n").unwrap();
    assert!(matches!(
        KeyRing::open(&path),
        Err(Error::Malformed { line: 1, .. })
    ));
}

#[test]
fn the_signed_bytes_are_laid_out_as_documented() {
    let bytes = head_bytes("org", 2, -1, &[7; 32]);
    let mut expected = Vec::new();
    expected.extend_from_slice(&23u32.to_be_bytes());
    expected.extend_from_slice(b"hookledger tree head v1");
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(b"org");
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
    expected.extend_from_slice(&[0xff; 8]);
    expected.extend_from_slice(&[7; 32]);
    assert_eq!(bytes, expected);
}
