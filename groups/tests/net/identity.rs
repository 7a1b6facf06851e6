//! The identity key: persistent, private, and never silently replaced.

use groups::identity::{IdentityError, KEY_FILE_NAME, load_or_create};

use super::support::temp_dir;

#[test]
fn the_key_persists_across_restarts_with_private_permissions() {
    let dir = temp_dir("identity");
    let first = load_or_create(&dir).unwrap().public().to_peer_id();
    let again = load_or_create(&dir).unwrap().public().to_peer_id();
    assert_eq!(first, again);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_key_is_an_error_and_is_left_alone() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(KEY_FILE_NAME);
    std::fs::write(&path, b"definitely not a key").unwrap();
    let err = load_or_create(&dir).unwrap_err();
    assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("corrupt") && text.contains(KEY_FILE_NAME),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"definitely not a key");
    std::fs::remove_dir_all(&dir).unwrap();
}
