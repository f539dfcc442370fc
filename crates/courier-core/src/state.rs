//! Where Courier keeps its own progress (snapshot progress, added tables).
//!
//! Checkpoints of the stream itself live in the replication slot, never here
//! and never in a sink.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A failure to read or write Courier's state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state entry {key:?} is corrupt: {source}; remove it to start that part over")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// A small durable key-value store for Courier's progress records.
pub trait StateStore: Send + Sync {
    /// The stored value, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Durably replaces the value (atomic: a crash leaves old or new, never half).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Removes the value if present.
    fn delete(&self, key: &str) -> Result<(), StateError>;
}

impl dyn StateStore + '_ {
    /// Reads a JSON record.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        match self.get(key)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    key: key.to_string(),
                    source,
                }),
        }
    }

    /// Writes a JSON record.
    pub fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
            key: key.to_string(),
            source,
        })?;
        self.put(key, &bytes)
    }
}

/// A state store in a local directory: one file per key, replaced atomically.
#[derive(Debug, Clone)]
pub struct LocalStateStore {
    dir: PathBuf,
}

impl LocalStateStore {
    /// Opens (creating if needed) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(LocalStateStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }
}

impl StateStore for LocalStateStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let path = self.path(key);
        let tmp = path.with_extension("json.tmp");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(value).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StateError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_replaces_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path().join("state")).unwrap();
        let s: &dyn StateStore = &store;
        assert_eq!(s.get("snapshot/courier").unwrap(), None);
        s.put_json("snapshot/courier", &vec![1, 2]).unwrap();
        s.put_json("snapshot/courier", &vec![3]).unwrap();
        assert_eq!(
            s.get_json::<Vec<i32>>("snapshot/courier").unwrap(),
            Some(vec![3])
        );
        s.delete("snapshot/courier").unwrap();
        assert_eq!(s.get("snapshot/courier").unwrap(), None);
    }
}
