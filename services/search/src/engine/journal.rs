//! An index's journal: the writes acknowledged since its last commit, synced before they are
//! answered, so that tantivy can commit once per refresh interval instead of once per write
//! and still lose nothing a crash interrupts.
//!
//! ```text
//! | length: u32 | crc: u32 | seq: u64 | kind: u8 | count: u32 | (len: u32 | bytes) * count |
//! ```
//!
//! All integers are little-endian. `length` counts every byte after itself and `crc` is the
//! CRC-32 of everything after it. `seq` numbers the entries of an index without gaps, across
//! clears; each commit records, as its payload, the last entry it holds, so a journal that a
//! crash left uncleared replays only what the index lacks. An upsert's items are the
//! documents' JSON as they were accepted, a deletion's the ids.
//!
//! The journal is written by the writer thread alone, and only a write that has been synced
//! is answered: a torn last entry (a crash in the middle of a write) was never acknowledged,
//! and opening cuts it off.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Change;

/// The journal's file, in the index's directory (tantivy leaves files it did not write alone).
const FILE: &str = "plinth-journal";
/// Bytes before an entry's items: length, crc, seq, kind, count.
const HEADER: usize = 4 + 4 + 8 + 1 + 4;
const UPSERT: u8 = 1;
const DELETE: u8 = 2;

/// A write read back from the journal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// Documents, as the JSON they were accepted as.
    Upsert(Vec<Vec<u8>>),
    /// Ids of documents to delete.
    Delete(Vec<String>),
}

/// The open journal of one index.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    /// The seq of the last entry written (or committed).
    last: u64,
    /// The bytes written since the last clear.
    bytes: u64,
    /// Why the journal takes no more entries: a failed write could not be cut off.
    unusable: Option<String>,
}

impl Journal {
    /// Opens the journal in `dir` for an index whose last commit holds the entries up to
    /// `committed`; returns it with the entries after that, in order. A torn end is cut off.
    ///
    /// # Errors
    ///
    /// Returns the I/O error that kept the file from being read or opened.
    pub(super) fn open(dir: &Path, committed: u64) -> std::io::Result<(Journal, Vec<Entry>)> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err),
        };
        let (read, valid) = decode_all(&bytes);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - valid,
                "index journal ends in a torn entry; cutting it off"
            );
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        let last = read
            .last()
            .map_or(committed, |&(seq, _)| seq.max(committed));
        let entries = read
            .into_iter()
            .filter(|&(seq, _)| seq > committed)
            .map(|(_, entry)| entry)
            .collect();
        // The file's name must survive a crash as well as its entries.
        File::open(dir)?.sync_all()?;
        let journal = Journal {
            path,
            file,
            last,
            bytes: valid as u64,
            unusable: None,
        };
        Ok((journal, entries))
    }

    /// The seq of the last entry written.
    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// The bytes written since the last clear.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the upserts and deletions by id among `changes` and syncs them; an empty upsert
    /// and a deletion by filter (which commits at once) are not journaled.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of the write or the sync; what was written of the entries is
    /// then not acknowledged, and a reopen cuts off a torn end.
    pub(super) fn append<'a>(
        &mut self,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut seq = self.last;
        for change in changes {
            let (kind, items): (u8, Vec<&[u8]>) = match change {
                Change::Upsert(documents) if !documents.is_empty() => (
                    UPSERT,
                    documents.iter().map(|d| d.journaled.as_slice()).collect(),
                ),
                Change::Delete(ids) if !ids.is_empty() => {
                    (DELETE, ids.iter().map(|id| id.as_bytes()).collect())
                }
                Change::Upsert(_) | Change::Delete(_) | Change::DeleteMatching(_) => continue,
            };
            seq += 1;
            encode(&mut buf, seq, kind, &items)?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(reason) = &self.unusable {
            return Err(std::io::Error::other(reason.clone()));
        }
        if let Err(err) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            // What was written of the refused entries is cut off, so that the next entries
            // follow the last good one (a reader stops at the first bad entry) and none of
            // the refused ones can be read back; a journal that cannot be cut takes nothing
            // more, and the index is whole again when it next opens.
            if let Err(cut) = self
                .file
                .set_len(self.bytes)
                .and_then(|()| self.file.sync_data())
            {
                self.unusable = Some(format!("the journal could not be cut back: {cut}"));
            }
            return Err(err);
        }
        self.last = seq;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Empties the journal once a commit holds everything in it. The truncation need not be
    /// synced: an entry a crash brings back is one the commit's payload says it holds.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of the truncation.
    pub(super) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.bytes = 0;
        self.unusable = None;
        Ok(())
    }

    /// The entries after `committed`, read back from the file (after a failed commit, to
    /// apply them again).
    ///
    /// # Errors
    ///
    /// Returns the I/O error of the read.
    pub(super) fn entries_after(&self, committed: u64) -> std::io::Result<Vec<Entry>> {
        let bytes = std::fs::read(&self.path)?;
        let (read, _) = decode_all(&bytes);
        Ok(read
            .into_iter()
            .filter(|&(seq, _)| seq > committed)
            .map(|(_, entry)| entry)
            .collect())
    }
}

/// The seq of the last entry a commit holds, from its payload (none: no entry).
pub(super) fn committed_through(payload: Option<&str>) -> u64 {
    payload.and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// Appends one entry to `buf`.
fn encode(buf: &mut Vec<u8>, seq: u64, kind: u8, items: &[&[u8]]) -> std::io::Result<()> {
    let too_big = || std::io::Error::other("a journal entry holds at most 4 GiB");
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(kind);
    let count = u32::try_from(items.len()).map_err(|_| too_big())?;
    buf.extend_from_slice(&count.to_le_bytes());
    for item in items {
        let len = u32::try_from(item.len()).map_err(|_| too_big())?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(item);
    }
    let length = u32::try_from(buf.len() - start - 4).map_err(|_| too_big())?;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&length.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Every whole, valid entry from the start of `bytes`, and how many bytes they take; reading
/// stops at the first entry that is cut short or does not match its checksum.
fn decode_all(bytes: &[u8]) -> (Vec<(u64, Entry)>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some((seq, entry, len)) = decode(&bytes[at..]) {
        entries.push((seq, entry));
        at += len;
    }
    (entries, at)
}

/// The entry at the start of `buf`, with the bytes it takes.
fn decode(buf: &[u8]) -> Option<(u64, Entry, usize)> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let len = 4 + u32_at(0)? as usize;
    if len < HEADER || buf.len() < len {
        return None;
    }
    if crc32fast::hash(&buf[8..len]) != u32_at(4)? {
        return None;
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    let kind = buf[16];
    let count = u32_at(17)? as usize;
    let mut items = Vec::with_capacity(count.min(len));
    let mut at = HEADER;
    for _ in 0..count {
        let item_len = u32_at(at)? as usize;
        let item = buf.get(at + 4..at + 4 + item_len)?;
        if at + 4 + item_len > len {
            return None;
        }
        items.push(item.to_vec());
        at += 4 + item_len;
    }
    let entry = match kind {
        UPSERT => Entry::Upsert(items),
        DELETE => Entry::Delete(
            items
                .into_iter()
                .map(String::from_utf8)
                .collect::<Result<_, _>>()
                .ok()?,
        ),
        _ => return None,
    };
    Some((seq, entry, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::document::Prepared;

    fn upsert(lines: &[&str]) -> Entry {
        Entry::Upsert(lines.iter().map(|l| l.as_bytes().to_vec()).collect())
    }

    /// Appends the entries as the writer would, one change each.
    fn write(journal: &mut Journal, entries: &[Entry]) {
        let changes: Vec<Change> = entries
            .iter()
            .map(|entry| match entry {
                Entry::Upsert(lines) => Change::Upsert(
                    lines
                        .iter()
                        .map(|line| Prepared {
                            id: String::new(),
                            document: tantivy::TantivyDocument::default(),
                            journaled: line.clone(),
                        })
                        .collect(),
                ),
                Entry::Delete(ids) => Change::Delete(ids.clone()),
            })
            .collect();
        journal.append(&changes).unwrap();
    }

    #[test]
    fn entries_after_the_commit_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, entries) = Journal::open(dir.path(), 0).unwrap();
        assert!(entries.is_empty());
        write(
            &mut journal,
            &[
                upsert(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#]),
                Entry::Delete(vec!["a".into()]),
                upsert(&[r#"{"id":"c"}"#]),
            ],
        );
        drop(journal);

        let (journal, entries) = Journal::open(dir.path(), 1).unwrap();
        assert_eq!(
            entries,
            vec![Entry::Delete(vec!["a".into()]), upsert(&[r#"{"id":"c"}"#])]
        );
        assert_eq!(journal.last(), 3);
        assert_eq!(journal.entries_after(2).unwrap(), entries[1..]);
    }

    #[test]
    fn a_torn_end_is_cut_off_and_writing_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 0).unwrap();
        write(&mut journal, &[upsert(&["one"]), upsert(&["two"])]);
        drop(journal);
        let path = dir.path().join(FILE);
        let whole = std::fs::read(&path).unwrap();
        // Every cut inside the second entry leaves only the first.
        let first = 4 + u32::from_le_bytes(whole[0..4].try_into().unwrap()) as usize;
        for cut in first..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (journal, entries) = Journal::open(dir.path(), 0).unwrap();
            assert_eq!(entries, vec![upsert(&["one"])], "cut at {cut}");
            assert_eq!(journal.last(), 1);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first as u64);
        }
        // A flipped byte is damage, not an entry.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (mut journal, entries) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(entries, vec![upsert(&["one"])]);

        write(&mut journal, &[upsert(&["three"])]);
        drop(journal);
        let (_, entries) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(entries, vec![upsert(&["one"]), upsert(&["three"])]);
    }

    #[test]
    fn seqs_go_on_after_a_clear_and_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 0).unwrap();
        write(&mut journal, &[upsert(&["one"]), upsert(&["two"])]);
        journal.clear().unwrap();
        assert_eq!(journal.bytes(), 0);
        write(&mut journal, &[upsert(&["three"])]);
        assert_eq!(journal.last(), 3);
        drop(journal);

        // A commit through 3 that the crash kept: nothing to replay, and the next seq is 4.
        let (journal, entries) = Journal::open(dir.path(), 3).unwrap();
        assert!(entries.is_empty());
        assert_eq!(journal.last(), 3);
        // A journal emptied after a commit through 5: seqs go on from there.
        let (journal, _) = Journal::open(dir.path(), 5).unwrap();
        assert_eq!(journal.last(), 5);
        assert_eq!(committed_through(Some("5")), 5);
        assert_eq!(committed_through(None), 0);
    }
}
