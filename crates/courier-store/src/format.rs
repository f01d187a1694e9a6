//! The on-disk format of the write-ahead log: file names, file headers, frames and the
//! record encoding inside a frame. `DESIGN.md` in this crate describes the same layout
//! for readers who do not want to read code; keep the two in step.
//!
//! All integers are little-endian. Nothing here touches a file except through the
//! `Read` it is handed, so the layout can be tested byte by byte.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::Record;

/// Format version written in every file header. Bump it (and teach the reader the old
/// one) whenever a byte of the layout changes: files outlive the binary that wrote them.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CRWALSEG";
/// Magic at the start of every checkpoint file.
pub(crate) const CHECKPOINT_MAGIC: [u8; 8] = *b"CRWALCKP";

/// Segment header: magic, version, crc, index, first position, checkpoint position.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 40;
/// Checkpoint header: magic, version, crc, index, position, record count.
pub(crate) const CHECKPOINT_HEADER_LEN: u64 = 40;

/// Frame header: length, crc, position.
pub(crate) const FRAME_HEADER_LEN: usize = 16;
/// The `len` field counts the position and the records, so it is never below this.
const FRAME_MIN_LEN: u32 = 8;
/// Largest encoded records section of one frame; `len` is a u32 that also counts the position.
pub(crate) const MAX_FRAME_RECORDS_BYTES: u64 = (u32::MAX - FRAME_MIN_LEN) as u64;

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_SUFFIX: &str = ".ckpt";
/// Files are written under this suffix and renamed when complete, so a file without it
/// always has a complete header (segments) or complete contents (checkpoints).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// `wal-{index:016x}.log`
pub(crate) fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{index:016x}{SEGMENT_SUFFIX}"))
}

/// `checkpoint-{index:016x}.ckpt`
pub(crate) fn checkpoint_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!(
        "{CHECKPOINT_PREFIX}{index:016x}{CHECKPOINT_SUFFIX}"
    ))
}

/// The temporary name a file is written under before its rename.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// What a directory entry is to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Checkpoint(u64),
    /// A leftover from a crash between create and rename.
    Tmp,
}

/// Classifies a file name; `None` for files the store does not own (left alone).
pub(crate) fn classify(name: &str) -> Option<FileKind> {
    if let Some(base) = name.strip_suffix(TMP_SUFFIX) {
        return classify(base).map(|_| FileKind::Tmp);
    }
    if let Some(index) = parse_index(name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
        return Some(FileKind::Segment(index));
    }
    parse_index(name, CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX).map(FileKind::Checkpoint)
}

fn parse_index(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The index in the file name, repeated so a renamed or copied file is caught.
    pub(crate) index: u64,
    /// Position the first frame of this segment carries; frames follow one by one.
    pub(crate) first_position: u64,
    /// The position of the checkpoint that started this segment, or 0. That checkpoint
    /// took `first_position - 1`; if it never completed, the position is simply unused.
    pub(crate) checkpoint_position: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut out = [0u8; SEGMENT_HEADER_LEN as usize];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.index.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_position.to_le_bytes());
        out[32..40].copy_from_slice(&self.checkpoint_position.to_le_bytes());
        let crc = header_crc(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<Self, String> {
        check_header(bytes, &SEGMENT_MAGIC)?;
        Ok(Self {
            index: le_u64(&bytes[16..24]),
            first_position: le_u64(&bytes[24..32]),
            checkpoint_position: le_u64(&bytes[32..40]),
        })
    }

    /// Whether this segment continues a log whose next position is `expected`.
    ///
    /// A checkpoint takes a position and then starts a segment after it, so if the
    /// checkpoint file never became complete (a crash or failure mid-checkpoint) the log
    /// skips exactly that one position, and only at a segment the checkpoint started.
    pub(crate) fn continues(&self, expected: u64) -> bool {
        self.first_position == expected
            || (self.checkpoint_position == expected && self.first_position == expected + 1)
    }
}

/// Header of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointHeader {
    /// The index in the file name: the checkpoint covers every segment below it.
    pub(crate) index: u64,
    /// The log position the checkpoint took; every frame in the file carries it.
    pub(crate) position: u64,
    /// Number of records in the file, checked after reading the last frame.
    pub(crate) record_count: u64,
}

impl CheckpointHeader {
    pub(crate) fn encode(&self) -> [u8; CHECKPOINT_HEADER_LEN as usize] {
        let mut out = [0u8; CHECKPOINT_HEADER_LEN as usize];
        out[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.index.to_le_bytes());
        out[24..32].copy_from_slice(&self.position.to_le_bytes());
        out[32..40].copy_from_slice(&self.record_count.to_le_bytes());
        let crc = header_crc(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8; CHECKPOINT_HEADER_LEN as usize]) -> Result<Self, String> {
        check_header(bytes, &CHECKPOINT_MAGIC)?;
        Ok(Self {
            index: le_u64(&bytes[16..24]),
            position: le_u64(&bytes[24..32]),
            record_count: le_u64(&bytes[32..40]),
        })
    }
}

/// CRC of a header with its own crc field (bytes 12..16) taken as zero.
fn header_crc(header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..12]);
    hasher.update(&[0; 4]);
    hasher.update(&header[16..]);
    hasher.finalize()
}

fn check_header(bytes: &[u8], magic: &[u8; 8]) -> Result<(), String> {
    if &bytes[0..8] != magic {
        return Err("bad magic".to_owned());
    }
    let version = le_u32(&bytes[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    if le_u32(&bytes[12..16]) != header_crc(bytes) {
        return Err("header checksum mismatch".to_owned());
    }
    Ok(())
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

/// Bytes one record takes inside a frame.
pub(crate) fn record_encoded_len(record: &Record) -> u64 {
    8 + record.stream.len() as u64 + record.payload.len() as u64
}

/// Bytes a frame holding `records` takes on disk, header included.
pub(crate) fn frame_encoded_len(records: &[Record]) -> u64 {
    FRAME_HEADER_LEN as u64 + records.iter().map(record_encoded_len).sum::<u64>()
}

/// Appends one frame holding `records` at `position` to `out`.
///
/// The caller has checked that the records fit in one frame (`MAX_FRAME_RECORDS_BYTES`).
pub(crate) fn encode_frame(out: &mut Vec<u8>, position: u64, records: &[Record]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    for record in records {
        // Lengths fit: the caller bounded the whole frame below u32::MAX.
        out.extend_from_slice(&(record.stream.len() as u32).to_le_bytes());
        out.extend_from_slice(record.stream.as_bytes());
        out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&record.payload);
    }
    let len = (out.len() - start - 8) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&position.to_le_bytes());
    // The CRC covers the length too, so a flipped length bit cannot pass as a shorter frame.
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[start..start + 4]);
    hasher.update(&out[start + 8..]);
    let crc = hasher.finalize();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the next bytes of a file hold.
#[derive(Debug)]
pub(crate) enum FrameRead<'a> {
    /// A complete frame with a valid checksum.
    Frame { position: u64, records: &'a [u8] },
    /// The file (or the readable range) ends exactly here.
    End,
    /// The bytes from here on are not a valid frame: a torn write in the last segment,
    /// corruption anywhere else.
    Bad { reason: &'static str },
}

/// Reads frames one after another from a byte range whose length is known up front, so
/// a length field is checked against the bytes that exist before anything is allocated.
pub(crate) struct FrameReader<R> {
    reader: R,
    /// Offset of the next unread byte, from the start of the file.
    offset: u64,
    /// Offset where the readable range ends.
    end: u64,
    body: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// `reader` must be positioned at `offset`.
    pub(crate) fn new(reader: R, offset: u64, end: u64) -> Self {
        Self {
            reader,
            offset,
            end,
            body: Vec::new(),
        }
    }

    /// Offset of the first byte of the next frame (after `Bad`, of the bad frame).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next frame. `Bad` does not advance `offset`.
    pub(crate) fn next_frame(&mut self) -> io::Result<FrameRead<'_>> {
        let remaining = self.end - self.offset;
        if remaining == 0 {
            return Ok(FrameRead::End);
        }
        if remaining < FRAME_HEADER_LEN as u64 {
            return Ok(FrameRead::Bad {
                reason: "incomplete frame header",
            });
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.reader.read_exact(&mut header)?;
        let len = le_u32(&header[0..4]);
        let crc = le_u32(&header[4..8]);
        if len < FRAME_MIN_LEN {
            return Ok(FrameRead::Bad {
                reason: "frame length below minimum",
            });
        }
        let records_len = u64::from(len - FRAME_MIN_LEN);
        if records_len > remaining - FRAME_HEADER_LEN as u64 {
            return Ok(FrameRead::Bad {
                reason: "frame extends past the end of the file",
            });
        }
        // Fits in usize: it is at most u32::MAX and no larger than the file.
        self.body.resize(records_len as usize, 0);
        self.reader.read_exact(&mut self.body)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[0..4]);
        hasher.update(&header[8..16]);
        hasher.update(&self.body);
        if hasher.finalize() != crc {
            return Ok(FrameRead::Bad {
                reason: "frame checksum mismatch",
            });
        }
        self.offset += FRAME_HEADER_LEN as u64 + records_len;
        Ok(FrameRead::Frame {
            position: le_u64(&header[8..16]),
            records: &self.body,
        })
    }
}

/// Iterates the `(stream, payload)` pairs of a frame's records section.
pub(crate) struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> RecordIter<'a> {
    pub(crate) fn new(records: &'a [u8]) -> Self {
        Self { rest: records }
    }

    fn take_field(&mut self) -> Option<&'a [u8]> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = le_u32(self.rest) as usize;
        let after = &self.rest[4..];
        if after.len() < len {
            return None;
        }
        let (field, rest) = after.split_at(len);
        self.rest = rest;
        Some(field)
    }
}

impl<'a> Iterator for RecordIter<'a> {
    /// A record, or why the section does not parse (the frame passed its CRC, so this is
    /// a writer bug or a collision, never a torn write).
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = self
            .take_field()
            .and_then(|stream| self.take_field().map(|payload| (stream, payload)));
        match parsed {
            Some(pair) => Some(Ok(pair)),
            None => {
                self.rest = &[];
                Some(Err("record overruns its frame"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, payload: &[u8]) -> Record {
        Record {
            stream: stream.to_owned(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn frame_round_trips_and_its_length_is_predicted() {
        let records = vec![
            record("d/a", b"hello"),
            record("", b""),
            record("x", &[7; 300]),
        ];
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, &records);
        assert_eq!(buf.len() as u64, frame_encoded_len(&records));

        let mut reader = FrameReader::new(&buf[..], 0, buf.len() as u64);
        let FrameRead::Frame {
            position,
            records: section,
        } = reader.next_frame().unwrap()
        else {
            panic!("expected a frame");
        };
        assert_eq!(position, 42);
        let decoded: Vec<Record> = RecordIter::new(section)
            .map(|r| {
                let (s, p) = r.unwrap();
                record(std::str::from_utf8(s).unwrap(), p)
            })
            .collect();
        assert_eq!(decoded, records);
        assert!(matches!(reader.next_frame().unwrap(), FrameRead::End));
    }

    #[test]
    fn every_single_bit_flip_in_a_frame_is_detected() {
        let mut clean = Vec::new();
        encode_frame(&mut clean, 7, &[record("registry", b"payload")]);
        for bit in 0..clean.len() * 8 {
            let mut bytes = clean.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let mut reader = FrameReader::new(&bytes[..], 0, bytes.len() as u64);
            let read = reader.next_frame().unwrap();
            assert!(matches!(read, FrameRead::Bad { .. }), "bit {bit}: {read:?}");
        }
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let segment = SegmentHeader {
            index: 3,
            first_position: 99,
            checkpoint_position: 98,
        };
        let mut bytes = segment.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(segment));
        bytes[20] ^= 1;
        assert!(SegmentHeader::decode(&bytes).is_err());

        let checkpoint = CheckpointHeader {
            index: 5,
            position: 12,
            record_count: 1000,
        };
        let bytes = checkpoint.encode();
        assert_eq!(CheckpointHeader::decode(&bytes), Ok(checkpoint));
        assert!(SegmentHeader::decode(&bytes).is_err());
    }

    #[test]
    fn file_names_classify_back_to_their_index() {
        let dir = Path::new("/x");
        let name = |p: PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            classify(&name(segment_path(dir, 0xabc))),
            Some(FileKind::Segment(0xabc))
        );
        assert_eq!(
            classify(&name(checkpoint_path(dir, u64::MAX))),
            Some(FileKind::Checkpoint(u64::MAX))
        );
        assert_eq!(
            classify(&name(tmp_path(&checkpoint_path(dir, 1)))),
            Some(FileKind::Tmp)
        );
        assert_eq!(classify("wal-1.log"), None);
        assert_eq!(classify("notes.txt"), None);
        assert_eq!(classify("notes.txt.tmp"), None);
    }
}
