//! Streamed in-progress transactions (`proto_version '2'`, `streaming 'on'`,
//! PostgreSQL 14+).
//!
//! PostgreSQL sends a large transaction in blocks (Stream Start … Stream
//! Stop) while it runs, mixed with other transactions, and only says at the
//! end whether it committed (Stream Commit) or rolled back (Stream Abort,
//! of the whole transaction or of one subtransaction). [`Streamed`] holds
//! each streamed transaction's messages, in memory up to a small budget and
//! then in a file of its own, and at Stream Commit hands them back as one
//! ordinary transaction (Begin, the messages, Commit, versioned with the
//! commit LSN), so the [`Decoder`](super::Decoder) sees what protocol 1
//! would have sent. The files are disposable: a transaction that did not
//! commit before a restart is streamed again from its start.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use courier_core::Lsn;

use super::DecodeError;

/// The file name prefix of spilled transactions.
const SPILL_PREFIX: &str = "stream-";

/// What one message of the replication stream is, once streamed
/// transactions are set aside.
#[derive(Debug)]
pub enum Routed {
    /// A message outside any stream block: decode it as usual.
    Message(Bytes),
    /// A Stream Start; `first_segment` for a transaction's first block.
    Started { xid: u32, first_segment: bool },
    /// Kept for its transaction's commit (a change, or a Stream Stop).
    Held,
    /// A streamed transaction committed: its messages, to decode in order.
    Committed(Replay),
    /// A streamed transaction, or one of its subtransactions, rolled back.
    Aborted { xid: u32, subxid: u32 },
}

/// One streamed transaction's messages so far.
struct Spool {
    memory: Vec<(u32, Bytes)>,
    memory_bytes: usize,
    file: Option<BufWriter<File>>,
    /// Subtransactions rolled back: their changes are left out.
    aborted: HashSet<u32>,
    messages: u64,
}

/// The streamed transactions in progress, and where they spill.
pub struct Streamed {
    dir: PathBuf,
    /// Bytes of messages all transactions may hold in memory together.
    budget: usize,
    in_memory: usize,
    spools: HashMap<u32, Spool>,
    /// The transaction of the open stream block.
    current: Option<u32>,
}

impl Streamed {
    /// Spills under `dir` (created if missing) once the transactions in
    /// progress hold more than `budget` bytes in memory. Files a previous
    /// run left are removed: PostgreSQL streams those transactions again.
    pub fn open(dir: &Path, budget: usize) -> Result<Self, DecodeError> {
        fs::create_dir_all(dir).map_err(spill_error(dir))?;
        for entry in fs::read_dir(dir).map_err(spill_error(dir))? {
            let entry = entry.map_err(spill_error(dir))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SPILL_PREFIX)
            {
                let path = entry.path();
                fs::remove_file(&path).map_err(spill_error(&path))?;
            }
        }
        Ok(Streamed {
            dir: dir.to_owned(),
            budget,
            in_memory: 0,
            spools: HashMap::new(),
            current: None,
        })
    }

    /// Bytes of streamed messages held in memory now.
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    /// How many streamed transactions are in progress.
    pub fn in_progress(&self) -> usize {
        self.spools.len()
    }

    /// Sorts one message (the payload of an XLogData).
    pub fn route(&mut self, data: Bytes) -> Result<Routed, DecodeError> {
        let Some(&tag) = data.first() else {
            return Ok(Routed::Message(data));
        };
        match (tag, self.current) {
            (b'S', None) => {
                let mut r = Fields::new(&data, "Stream Start", 6)?;
                let xid = r.u32();
                let first_segment = r.u8() == 1;
                if first_segment {
                    // A transaction streamed again after a reconnect starts over.
                    self.discard(xid);
                }
                self.current = Some(xid);
                Ok(Routed::Started { xid, first_segment })
            }
            (b'S', Some(_)) => Err(protocol("a Stream Start inside a stream block")),
            (b'E', Some(_)) => {
                Fields::new(&data, "Stream Stop", 1)?;
                let current = self.current.take();
                if let Some(spool) = current.and_then(|x| self.spools.get_mut(&x)) {
                    if let Some(file) = spool.file.as_mut() {
                        file.flush().map_err(spill_error(&self.dir))?;
                    }
                }
                Ok(Routed::Held)
            }
            (b'E', None) => Err(protocol("a Stream Stop outside a stream block")),
            // Origins carry no xid and mean nothing to Courier.
            (b'O', Some(_)) => Ok(Routed::Held),
            (b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M', Some(top)) => {
                let mut r = Fields::new(&data, "streamed change", 5)?;
                let subxid = r.u32();
                let mut message = BytesMut::with_capacity(data.len() - 4);
                message.put_u8(tag);
                message.put_slice(&data[5..]);
                self.hold(top, subxid, message.freeze())?;
                Ok(Routed::Held)
            }
            (b'c', None) => {
                let mut r = Fields::new(&data, "Stream Commit", 30)?;
                let xid = r.u32();
                let flags = r.u8();
                let commit_lsn = r.u64();
                let end_lsn = r.u64();
                let commit_time = r.u64();
                Ok(Routed::Committed(self.replay(
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                )?))
            }
            (b'A', None) => {
                // Protocol 4 adds the abort's LSN and time; 2 sends 9 bytes.
                let mut r = Fields::new(&data, "Stream Abort", 9)?;
                let xid = r.u32();
                let subxid = r.u32();
                if subxid == xid {
                    self.discard(xid);
                } else if let Some(spool) = self.spools.get_mut(&xid) {
                    spool.aborted.insert(subxid);
                }
                Ok(Routed::Aborted { xid, subxid })
            }
            (b'c' | b'A', Some(_)) => {
                Err(protocol("a Stream Commit or Abort inside a stream block"))
            }
            (_, Some(_)) => Err(DecodeError::UnknownMessage {
                tag: char::from(tag),
            }),
            (_, None) => Ok(Routed::Message(data)),
        }
    }

    fn hold(&mut self, top: u32, subxid: u32, message: Bytes) -> Result<(), DecodeError> {
        let spool = self.spools.entry(top).or_insert_with(|| Spool {
            memory: Vec::new(),
            memory_bytes: 0,
            file: None,
            aborted: HashSet::new(),
            messages: 0,
        });
        spool.messages += 1;
        if spool.file.is_none() && self.in_memory + message.len() > self.budget {
            let path = spill_path(&self.dir, top);
            let file = File::create(&path).map_err(spill_error(&path))?;
            let mut file = BufWriter::with_capacity(256 * 1024, file);
            for (subxid, m) in spool.memory.drain(..) {
                write_record(&mut file, subxid, &m).map_err(spill_error(&path))?;
            }
            self.in_memory -= spool.memory_bytes;
            spool.memory_bytes = 0;
            spool.memory = Vec::new();
            spool.file = Some(file);
            tracing::debug!(xid = top, "streamed transaction spilled to disk");
        }
        match spool.file.as_mut() {
            Some(file) => {
                write_record(file, subxid, &message).map_err(spill_error(&self.dir))?;
            }
            None => {
                self.in_memory += message.len();
                spool.memory_bytes += message.len();
                spool.memory.push((subxid, message));
            }
        }
        Ok(())
    }

    /// Forgets a transaction, and removes its file.
    fn discard(&mut self, xid: u32) {
        if let Some(spool) = self.spools.remove(&xid) {
            self.in_memory -= spool.memory_bytes;
            if spool.file.is_some() {
                drop(spool.file);
                remove_quietly(&spill_path(&self.dir, xid));
            }
        }
    }

    fn replay(
        &mut self,
        xid: u32,
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: u64,
    ) -> Result<Replay, DecodeError> {
        let mut begin = BytesMut::with_capacity(21);
        begin.put_u8(b'B');
        begin.put_u64(commit_lsn);
        begin.put_u64(commit_time);
        begin.put_u32(xid);
        let mut commit = BytesMut::with_capacity(26);
        commit.put_u8(b'C');
        commit.put_u8(flags);
        commit.put_u64(commit_lsn);
        commit.put_u64(end_lsn);
        commit.put_u64(commit_time);
        let spool = self.spools.remove(&xid);
        let mut file = None;
        let (source, aborted, messages) = match spool {
            None => (Source::Memory(Vec::new().into_iter()), HashSet::new(), 0),
            Some(spool) => {
                self.in_memory -= spool.memory_bytes;
                let source = match spool.file {
                    None => Source::Memory(spool.memory.into_iter()),
                    Some(writer) => {
                        let path = spill_path(&self.dir, xid);
                        writer
                            .into_inner()
                            .map_err(|e| e.into_error())
                            .map_err(spill_error(&path))?;
                        let reader = File::open(&path).map_err(spill_error(&path))?;
                        file = Some(path);
                        Source::File(BufReader::with_capacity(256 * 1024, reader))
                    }
                };
                (source, spool.aborted, spool.messages)
            }
        };
        Ok(Replay {
            xid,
            commit_lsn: Lsn(commit_lsn),
            messages,
            begin: Some(begin.freeze()),
            source: Some(source),
            aborted,
            commit: Some(commit.freeze()),
            file,
        })
    }
}

/// A committed streamed transaction's messages, as protocol 1 sends a
/// transaction: Begin (whose final LSN is the commit LSN), its messages in
/// order (those of rolled-back subtransactions left out, their table
/// descriptions kept), Commit. Its file, if any, is removed when it is dropped.
pub struct Replay {
    pub xid: u32,
    pub commit_lsn: Lsn,
    /// Messages received for the transaction (rolled-back ones included).
    pub messages: u64,
    begin: Option<Bytes>,
    source: Option<Source>,
    aborted: HashSet<u32>,
    commit: Option<Bytes>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("xid", &self.xid)
            .field("commit_lsn", &self.commit_lsn)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

enum Source {
    Memory(std::vec::IntoIter<(u32, Bytes)>),
    File(BufReader<File>),
}

impl Replay {
    /// The next message, `None` after the Commit.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if let Some(begin) = self.begin.take() {
            return Ok(Some(begin));
        }
        while let Some(source) = self.source.as_mut() {
            let next = match source {
                Source::Memory(it) => it.next(),
                Source::File(reader) => {
                    let path = self.file.as_deref().unwrap_or(Path::new(""));
                    read_record(reader).map_err(spill_error(path))?
                }
            };
            let Some((subxid, message)) = next else {
                self.source = None;
                break;
            };
            let describes = matches!(message.first(), Some(b'R' | b'Y'));
            if describes || !self.aborted.contains(&subxid) {
                return Ok(Some(message));
            }
        }
        Ok(self.commit.take())
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.source = None;
        if let Some(path) = self.file.take() {
            remove_quietly(&path);
        }
    }
}

fn spill_path(dir: &Path, xid: u32) -> PathBuf {
    dir.join(format!("{SPILL_PREFIX}{xid}"))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a streamed transaction's file");
        }
    }
}

fn write_record(w: &mut impl Write, subxid: u32, message: &[u8]) -> io::Result<()> {
    let len = u32::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    w.write_all(&subxid.to_be_bytes())?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(message)
}

fn read_record(r: &mut impl Read) -> io::Result<Option<(u32, Bytes)>> {
    let mut header = [0u8; 8];
    match r.read_exact(&mut header[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut header[1..])?;
    let subxid = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut message = vec![0u8; len];
    r.read_exact(&mut message)?;
    Ok(Some((subxid, Bytes::from(message))))
}

fn spill_error(path: &Path) -> impl Fn(io::Error) -> DecodeError + '_ {
    move |source| DecodeError::Spill {
        path: path.to_owned(),
        source,
    }
}

fn protocol(reason: &'static str) -> DecodeError {
    DecodeError::Protocol {
        lsn: Lsn::ZERO,
        reason,
    }
}

/// A fixed-layout message's fields, after its type byte.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Refuses a message shorter than `len` bytes (type byte included).
    fn new(data: &'a [u8], message: &'static str, len: usize) -> Result<Self, DecodeError> {
        if data.len() < len {
            return Err(DecodeError::Malformed {
                message,
                reason: "message ends early",
            });
        }
        Ok(Fields { data, pos: 1 })
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[self.pos..self.pos + N]);
        self.pos += N;
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

#[cfg(test)]
#[path = "streamed_tests.rs"]
mod tests;
