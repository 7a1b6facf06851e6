//! The files a peer shares, on disk: `<root>/<group dir>/<file name>`.
//!
//! Names are checked, never rewritten: a name that is not a plain file name is refused, so
//! what is stored is what the caller asked for. A group's directory is its id when the id is
//! plain (letters, digits, `-`, `_`), else `~` and the id's bytes in hex, so two ids never share
//! a directory. Writes go to a temporary file in the group's directory that is synced and
//! renamed over the target, so a reader never sees half a file. Hashes are kept in memory,
//! keyed by the file's size and modification time, so a list reads only new or changed files.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::GroupId;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{FilesError, MAX_FILE_BYTES};

/// The prefix of temporary files, never listed.
const TEMP_PREFIX: &str = ".goop-doc-";
/// The longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// One shared file, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocInfo {
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, Unix seconds.
    pub mod_time: i64,
    /// `sha256:<hex>`.
    pub hash: String,
}

/// The shared files of this peer.
#[derive(Debug)]
pub struct DocStore {
    root: PathBuf,
    /// Hashes by path, with the size and modification time (to the file system's precision,
    /// not the second the listing shows) they were computed for.
    hashes: Mutex<HashMap<PathBuf, Hashed>>,
}

/// A file's size, modification time and hash.
type Hashed = (u64, Option<SystemTime>, String);

/// Refuses a name that is not a plain file name.
pub fn check_name(name: &str) -> Result<(), FilesError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name != name.trim()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(FilesError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The directory name of a group: its id when plain, else `~` and the id in hex.
fn group_dir_name(group: &GroupId) -> String {
    let id = group.as_str();
    if id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        id.to_owned()
    } else {
        format!("~{}", hex(id.as_bytes()))
    }
}

/// The group a directory holds, the inverse of [`group_dir_name`]; `None` for a name it never
/// makes.
fn group_of_dir_name(name: &str) -> Option<GroupId> {
    let id = match name.strip_prefix('~') {
        Some(hex) => {
            if hex.is_empty() || hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()?
        }
        None => name.to_owned(),
    };
    let group: GroupId = id.parse().ok()?;
    // Only the name this id maps to: `~` followed by a plain id's hex is not its directory.
    (group_dir_name(&group) == name).then_some(group)
}

impl DocStore {
    /// A store under `root`, created if missing.
    pub fn open(root: PathBuf) -> Result<Self, FilesError> {
        std::fs::create_dir_all(&root)
            .map_err(|e| FilesError::io("creating the shared directory", e))?;
        Ok(Self {
            root,
            hashes: Mutex::new(HashMap::new()),
        })
    }

    fn group_dir(&self, group: &GroupId) -> PathBuf {
        self.root.join(group_dir_name(group))
    }

    /// The path of a file, after checking its name.
    pub fn path(&self, group: &GroupId, name: &str) -> Result<PathBuf, FilesError> {
        check_name(name)?;
        Ok(self.group_dir(group).join(name))
    }

    /// Stores what `content` reads as `name` in the group's directory, replacing a file of that
    /// name at once; refused when it is over [`MAX_FILE_BYTES`]. Blocking.
    pub fn save(
        &self,
        group: &GroupId,
        name: &str,
        content: &mut dyn std::io::Read,
    ) -> Result<DocInfo, FilesError> {
        let target = self.path(group, name)?;
        let dir = self.group_dir(group);
        std::fs::create_dir_all(&dir)
            .map_err(|e| FilesError::io("creating the group directory", e))?;
        let temp = dir.join(format!("{TEMP_PREFIX}{}", unique()));
        let written = std::fs::File::create(&temp)
            .map_err(|e| FilesError::io("creating a temporary file", e))
            .and_then(|mut file| {
                let done = hash_copy(content, Some(&mut file), Some(MAX_FILE_BYTES))?;
                file.sync_all()
                    .map_err(|e| FilesError::io("syncing the file", e))?;
                Ok(done)
            });
        let (size, hash) = match written {
            Ok(done) => done,
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
        };
        std::fs::rename(&temp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            FilesError::io("renaming the file into place", e)
        })?;
        let stamp = modified(&target);
        let mod_time = unix_seconds(stamp);
        if let Ok(mut hashes) = self.hashes.lock() {
            hashes.insert(target, (size, stamp, hash.clone()));
        }
        Ok(DocInfo {
            name: name.to_owned(),
            size,
            mod_time,
            hash,
        })
    }

    /// Opens a file for reading, with its size. Blocking.
    pub fn open_file(
        &self,
        group: &GroupId,
        name: &str,
    ) -> Result<(std::fs::File, u64), FilesError> {
        let path = self.path(group, name)?;
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FilesError::NotFound(name.to_owned()),
            _ => FilesError::io("opening the file", e),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| FilesError::io("reading the file's size", e))?;
        if !meta.is_file() {
            return Err(FilesError::NotFound(name.to_owned()));
        }
        Ok((file, meta.len()))
    }

    /// Deletes a file; a missing one is [`FilesError::NotFound`]. Blocking.
    pub fn delete(&self, group: &GroupId, name: &str) -> Result<(), FilesError> {
        let path = self.path(group, name)?;
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FilesError::NotFound(name.to_owned()),
            _ => FilesError::io("deleting the file", e),
        })?;
        if let Ok(mut hashes) = self.hashes.lock() {
            hashes.remove(&path);
        }
        Ok(())
    }

    /// Whether the group has a directory here. Blocking.
    pub fn has_dir(&self, group: &GroupId) -> bool {
        self.group_dir(group).is_dir()
    }

    /// The groups that have a directory here, whatever this peer's part in them now. Blocking.
    pub fn groups_on_disk(&self) -> Result<Vec<GroupId>, FilesError> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| FilesError::io("listing the shared directory", e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FilesError::io("listing the shared directory", e))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let group = entry
                .file_name()
                .to_str()
                .and_then(group_of_dir_name)
                .filter(|_| is_dir);
            out.extend(group);
        }
        out.sort();
        Ok(out)
    }

    /// The group's files, by name; none when it has no directory. Blocking.
    pub fn list(&self, group: &GroupId) -> Result<Vec<DocInfo>, FilesError> {
        let dir = self.group_dir(group);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FilesError::io("listing the group directory", e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FilesError::io("listing the group directory", e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) || check_name(&name).is_err() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let path = entry.path();
            let (size, stamp) = (meta.len(), meta.modified().ok());
            let mod_time = unix_seconds(stamp);
            let hash = match self.cached_hash(&path, size, stamp) {
                Some(hash) => hash,
                None => {
                    let hash = hash_file(&path)?;
                    if let Ok(mut hashes) = self.hashes.lock() {
                        hashes.insert(path, (size, stamp, hash.clone()));
                    }
                    hash
                }
            };
            out.push(DocInfo {
                name,
                size,
                mod_time,
                hash,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn cached_hash(&self, path: &Path, size: u64, stamp: Option<SystemTime>) -> Option<String> {
        let hashes = self.hashes.lock().ok()?;
        let (s, m, hash) = hashes.get(path)?;
        (*s == size && stamp.is_some() && *m == stamp).then(|| hash.clone())
    }
}

fn hash_file(path: &Path) -> Result<String, FilesError> {
    let mut file =
        std::fs::File::open(path).map_err(|e| FilesError::io("reading a file to hash it", e))?;
    Ok(hash_copy(&mut file, None, None)?.1)
}

/// Reads `content` to its end, writing it to `out` when given, and returns its size and its
/// `sha256:` hash; more than `limit` bytes is [`FilesError::TooLarge`].
fn hash_copy(
    content: &mut dyn std::io::Read,
    mut out: Option<&mut std::fs::File>,
    limit: Option<u64>,
) -> Result<(u64, String), FilesError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = content
            .read(&mut buf)
            .map_err(|e| FilesError::io("reading the file", e))?;
        if n == 0 {
            return Ok((size, format!("sha256:{}", hex(&hasher.finalize()))));
        }
        size += n as u64;
        if let Some(max) = limit.filter(|max| size > *max) {
            return Err(FilesError::TooLarge { max });
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_mut() {
            out.write_all(&buf[..n])
                .map_err(|e| FilesError::io("writing the file", e))?;
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn unix_seconds(time: Option<SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name for a temporary file no other writer in this process or another uses.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn store(name: &str) -> (DocStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("goop-docs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (DocStore::open(dir.clone()).unwrap(), dir)
    }

    #[test]
    fn names_that_are_not_plain_file_names_are_refused_not_rewritten() {
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "../x", " x", "x ", "a\u{7}b",
        ] {
            assert!(
                matches!(check_name(bad), Err(FilesError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        for good in ["a..b.txt", "report 2026.pdf", "ü.md", "x"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn group_ids_map_to_distinct_directories() {
        let plain: GroupId = "9f3a-x_1".parse().unwrap();
        assert_eq!(group_dir_name(&plain), "9f3a-x_1");
        let (a, b): (GroupId, GroupId) = ("a/b".parse().unwrap(), "ab".parse().unwrap());
        assert_ne!(group_dir_name(&a), group_dir_name(&b));
        assert_eq!(group_dir_name(&a), "~612f62");
        let dots: GroupId = "..".parse().unwrap();
        assert_eq!(group_dir_name(&dots), "~2e2e");
        for group in [&plain, &a, &b, &dots] {
            assert_eq!(
                group_of_dir_name(&group_dir_name(group)).as_ref(),
                Some(group)
            );
        }
        // Names no group id maps to.
        for name in ["~", "~6", "~zz", "~6162", "~ff", "a b", ".goop-doc-1"] {
            assert_eq!(group_of_dir_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_groups_on_disk_are_the_directories_an_id_maps_to() {
        let (store, dir) = store("on-disk");
        let (a, b): (GroupId, GroupId) = ("a/b".parse().unwrap(), "plain".parse().unwrap());
        store.save(&a, "x.txt", &mut &b"1"[..]).unwrap();
        store.save(&b, "y.txt", &mut &b"2"[..]).unwrap();
        std::fs::create_dir(dir.join("~zz")).unwrap();
        std::fs::write(dir.join("stray-file"), b"not a directory").unwrap();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(store.groups_on_disk().unwrap(), expected);
        assert!(store.has_dir(&a));
        assert!(!store.has_dir(&"other".parse().unwrap()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn files_are_saved_listed_read_and_deleted() {
        let (store, dir) = store("round-trip");
        let group: GroupId = "g".parse().unwrap();
        let saved = store.save(&group, "a..b.txt", &mut &b"hello"[..]).unwrap();
        assert_eq!(saved.name, "a..b.txt");
        assert_eq!(saved.size, 5);
        assert_eq!(
            saved.hash,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        store.save(&group, "b.bin", &mut &[0u8; 3][..]).unwrap();
        let listed = store.list(&group).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0], saved);
        let (mut file, size) = store.open_file(&group, "a..b.txt").unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), size), ("hello", 5));
        // Replacing a file changes its hash in the list.
        store.save(&group, "a..b.txt", &mut &b"bye"[..]).unwrap();
        assert_ne!(store.list(&group).unwrap()[0].hash, saved.hash);
        store.delete(&group, "a..b.txt").unwrap();
        assert!(matches!(
            store.delete(&group, "a..b.txt"),
            Err(FilesError::NotFound(_))
        ));
        assert!(matches!(
            store.open_file(&group, "a..b.txt"),
            Err(FilesError::NotFound(_))
        ));
        assert_eq!(store.list(&group).unwrap().len(), 1);
        assert!(store.list(&"other".parse().unwrap()).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_changed_outside_within_the_same_second_is_hashed_again() {
        let (store, dir) = store("changed-outside");
        let group: GroupId = "g".parse().unwrap();
        store.save(&group, "a.txt", &mut &b"hello"[..]).unwrap();
        let path = dir.join(group_dir_name(&group)).join("a.txt");
        let second = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_100);
        let touch = |content: &[u8], at: SystemTime| {
            std::fs::write(&path, content).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(at).unwrap();
        };
        touch(b"hello", second);
        let before = store.list(&group).unwrap();
        // Same size, same second, other bytes: the listing must not keep the old hash.
        touch(b"world", second + std::time::Duration::from_millis(1));
        let after = store.list(&group).unwrap();
        assert_eq!(before[0].mod_time, after[0].mod_time);
        assert_ne!(before[0].hash, after[0].hash);
        assert_eq!(after[0].hash, hash_file(&path).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_leaves_nothing() {
        let (store, dir) = store("too-large");
        let group: GroupId = "g".parse().unwrap();
        let mut big = std::io::repeat(7).take(MAX_FILE_BYTES + 1);
        assert!(matches!(
            store.save(&group, "big", &mut big),
            Err(FilesError::TooLarge { .. })
        ));
        assert!(store.list(&group).unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.join("g")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
