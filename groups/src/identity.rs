//! The peer's identity: an Ed25519 key kept in the data directory.
//!
//! The key file holds the libp2p protobuf encoding of the key pair (the form go-libp2p writes
//! too). It is created on first start with mode 0600 inside a directory with mode 0700. A key
//! file that exists but cannot be read as a key is an error that names the file: replacing it
//! would silently change the peer id and orphan every group that knows this peer.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read identity key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error(
        "identity key {path} is corrupt ({reason}); refusing to replace it, which would change \
         this peer's id: restore it or move it away to start with a new identity"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A new key file could not be written.
    #[error("cannot write identity key {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Loads the key from `<data_dir>/identity.key`, creating the directory and a new key when
/// there is none yet.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    create_private_dir(data_dir)?;
    let path = data_dir.join(KEY_FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Keypair, IdentityError> {
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|e| corrupt(e.to_string()))?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(corrupt(format!(
            "expected an ed25519 key, found {:?}",
            key.key_type()
        )));
    }
    Ok(key)
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let key = Keypair::generate_ed25519();
    let write_err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| write_err(io::Error::other(e)))?;
    // Write to a temporary file first and rename, so a crash never leaves a half-written key
    // that the next start would then refuse as corrupt.
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = open_private(&tmp).map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    // `hard_link` fails when the target exists, so two processes starting at once on the same
    // directory cannot overwrite each other's key: the loser reads the winner's.
    match fs::hard_link(&tmp, path) {
        Ok(()) => {
            let _ = fs::remove_file(&tmp);
            tracing::info!(path = %path.display(), "created a new identity key");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            let bytes = fs::read(path).map_err(|source| IdentityError::Read {
                path: path.to_owned(),
                source,
            })?;
            decode(path, &bytes)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(write_err(e))
        }
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|source| IdentityError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}
