//! Reading what an MP3 file plays: where the audio starts (after an optional ID3v2 tag), how
//! long it lasts and at what bitrate. The frames are walked from the first to the last, so a
//! variable-bitrate file gets its true duration and its mean bitrate (Goop² took the first
//! frame's bitrate for the whole file). A file whose frames cannot be walked to (nearly) its
//! end is taken as constant-bitrate from its first frame. A position is placed in the file by
//! the Xing table of contents a variable-bitrate encoder writes in the first frame, when there
//! is one.

use std::io::{BufReader, Read as _, Seek as _, SeekFrom};
use std::path::Path;

use super::ListenError;

/// What a player needs to know of an MP3 file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Where the audio starts: the size of the ID3v2 tag before it, if any.
    pub audio_offset: u64,
    /// Bits per second: the frames' bitrate, or their mean when it varies.
    pub bitrate: u32,
    /// Seconds: the frames' samples over their sample rate.
    pub duration: f64,
    /// The byte positions of each percent of the duration, in 256ths of `toc_bytes`, from a
    /// Xing header (what variable-bitrate encoders write in the first frame).
    pub toc: Option<[u8; 100]>,
    /// The audio bytes the table of contents counts.
    pub toc_bytes: u64,
}

impl Probe {
    /// Where the audio `position` seconds in starts, near enough: by the Xing table of
    /// contents when the file has one (interpolated between two percents), else by the
    /// bitrate. A stream starts at the next frame from there ([`frame_start`]).
    pub fn offset_at(&self, position: f64) -> u64 {
        let position = position.clamp(0.0, self.duration.max(0.0));
        let into = match self.toc {
            Some(toc) if self.duration > 0.0 && self.toc_bytes > 0 => {
                let percent = (position / self.duration * 100.0).clamp(0.0, 99.999);
                let at = percent.floor() as usize;
                let here = f64::from(toc[at]);
                let next = if at == 99 {
                    256.0
                } else {
                    f64::from(toc[at + 1])
                };
                let share = (here + (next - here) * percent.fract()) / 256.0;
                (share * self.toc_bytes as f64) as u64
            }
            _ => (position * f64::from(self.bitrate) / 8.0) as u64,
        };
        self.audio_offset + into
    }
}

/// Bytes scanned for the first frame after the tag, or for a frame to start a stream at.
const SCAN: usize = 8192;

/// Hz by version (0: MPEG-1, 1: MPEG-2, 2: MPEG-2.5) and index.
const SAMPLE_RATES: [[u32; 3]; 3] = [
    [44_100, 48_000, 32_000],
    [22_050, 24_000, 16_000],
    [11_025, 12_000, 8_000],
];

/// One MPEG audio frame, as its header tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    /// Bits per second.
    bitrate: u32,
    /// Hz.
    sample_rate: u32,
    /// Samples it plays.
    samples: u32,
    /// Bytes, header included.
    length: u32,
}

/// Kbit/s by version (0: MPEG-1, 1: MPEG-2 and 2.5), layer (0: I, 1: II, 2: III) and index.
const BITRATES: [[[u16; 16]; 3]; 2] = [
    [
        [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 0,
        ],
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 0,
        ],
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0,
        ],
    ],
    [
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256, 0,
        ],
        [
            0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0,
        ],
        [
            0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0,
        ],
    ],
];

/// Reads the file at `path`.
pub fn probe(path: &Path) -> Result<Probe, ListenError> {
    let io = |e: std::io::Error| ListenError::Probe {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut head = [0u8; 10];
    let read = file.read(&mut head).map_err(io)?;
    let mut offset = 0u64;
    if read == 10 && &head[..3] == b"ID3" {
        // A synchsafe size: 7 bits a byte, plus the 10-byte header.
        let tag = head[6..10]
            .iter()
            .fold(0u64, |acc, b| (acc << 7) | u64::from(b & 0x7f));
        offset = tag + 10;
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; SCAN];
    let n = file.read(&mut buf).map_err(io)?;
    let (at, first) = first_frame(&buf[..n]).ok_or_else(|| ListenError::Probe {
        path: path.display().to_string(),
        reason: "no valid MPEG frame found".into(),
    })?;
    let audio_offset = offset + at as u64;
    let audio_bytes = size.saturating_sub(audio_offset);
    let xing = xing(&buf[at..n]);
    let walk = walk(&mut file, audio_offset).map_err(io)?;
    // Walked to (nearly) the end: what the frames say. Otherwise (a damaged or odd file):
    // constant bitrate from the first frame, over the whole size.
    let walked = walk.frames > 1 && walk.bytes >= audio_bytes.saturating_mul(9) / 10;
    let (bitrate, duration) = match walk.bitrate {
        _ if !walked || walk.seconds <= 0.0 => (
            first.bitrate,
            audio_bytes as f64 * 8.0 / f64::from(first.bitrate),
        ),
        Some(constant) => (constant, walk.seconds),
        // Variable: the mean over the frames walked.
        None => (
            (walk.bytes as f64 * 8.0 / walk.seconds).round() as u32,
            walk.seconds,
        ),
    };
    Ok(Probe {
        audio_offset,
        bitrate,
        duration,
        toc: xing.and_then(|x| x.toc),
        toc_bytes: xing
            .and_then(|x| x.bytes)
            .map_or(audio_bytes, u64::from)
            .min(audio_bytes),
    })
}

/// What a Xing (or `Info`) header in a first frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Xing {
    /// The audio bytes of the file, when it says.
    bytes: Option<u32>,
    /// Its table of contents, when it has one.
    toc: Option<[u8; 100]>,
}

/// The Xing header of the frame `frame` starts with, if it has one: after the header and the
/// side information (17 or 32 bytes for MPEG-1 mono or stereo, 9 or 17 otherwise).
fn xing(frame: &[u8]) -> Option<Xing> {
    let h = frame.get(..4)?;
    let mpeg1 = (h[1] >> 3) & 3 == 3;
    let mono = h[3] >> 6 == 3;
    let side = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    let tag = frame.get(4 + side..)?;
    if !(tag.starts_with(b"Xing") || tag.starts_with(b"Info")) {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(tag.get(at..at + 4)?.try_into().ok()?))
    };
    let flags = word(4)?;
    let mut at = 8;
    if flags & 1 != 0 {
        at += 4; // the frame count: the frames walked say the same
    }
    let bytes = if flags & 2 != 0 {
        at += 4;
        Some(word(at - 4)?)
    } else {
        None
    };
    let toc = if flags & 4 != 0 {
        Some(tag.get(at..at + 100)?.try_into().ok()?)
    } else {
        None
    };
    Some(Xing { bytes, toc })
}

/// What walking the frames found.
struct Walk {
    frames: u64,
    /// Bytes of the frames walked.
    bytes: u64,
    seconds: f64,
    /// The bitrate of every frame, when they all have the same.
    bitrate: Option<u32>,
}

/// Walks the frames from `start` until one is not a valid header (the end, a trailing tag).
fn walk(file: &mut std::fs::File, start: u64) -> Result<Walk, std::io::Error> {
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut walk = Walk {
        frames: 0,
        bytes: 0,
        seconds: 0.0,
        bitrate: None,
    };
    let mut header = [0u8; 4];
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let Some(frame) = frame(&header) else { break };
        walk.bitrate = match (walk.frames, walk.bitrate) {
            (0, _) => Some(frame.bitrate),
            (_, Some(b)) if b == frame.bitrate => Some(b),
            _ => None,
        };
        walk.frames += 1;
        walk.bytes += u64::from(frame.length);
        walk.seconds += f64::from(frame.samples) / f64::from(frame.sample_rate);
        reader.seek_relative(i64::from(frame.length) - 4)?;
    }
    Ok(walk)
}

/// Where a stream of the audio should start for it to begin at `offset`: the first frame at
/// or after `offset` that the next frame follows (two headers in a row are not chance), or
/// `offset` itself when none is found near it.
pub fn frame_start(path: &Path, offset: u64) -> u64 {
    let found = (|| -> Result<Option<u64>, std::io::Error> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; SCAN];
        let n = file.read(&mut buf)?;
        let buf = &buf[..n];
        let at = (0..n.saturating_sub(3)).find(|&i| {
            frame(&buf[i..i + 4]).is_some_and(|f| {
                let next = i + f.length as usize;
                next + 4 <= n && frame(&buf[next..next + 4]).is_some()
            })
        });
        Ok(at.map(|i| offset + i as u64))
    })();
    found.ok().flatten().unwrap_or(offset)
}

/// Where the first valid frame header is in `buf`, and that frame.
fn first_frame(buf: &[u8]) -> Option<(usize, Frame)> {
    (0..buf.len().saturating_sub(3)).find_map(|i| frame(&buf[i..i + 4]).map(|f| (i, f)))
}

/// The frame a 4-byte header starts, if it is a valid one.
fn frame(h: &[u8]) -> Option<Frame> {
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 0: reserved, 1: III, 2: II, 3: I
    let index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 3);
    if version == 1 || layer == 0 || index == 0 || index == 15 || rate_index == 3 {
        return None;
    }
    let padding = u32::from((h[2] >> 1) & 1);
    let mpeg1 = version == 3;
    let table = usize::from(!mpeg1);
    let layer_index = usize::from(3 - layer);
    let bitrate = u32::from(BITRATES[table][layer_index][index]) * 1000;
    let sample_rate = SAMPLE_RATES[match version {
        3 => 0,
        2 => 1,
        _ => 2,
    }][rate_index];
    let (samples, length) = match layer {
        // Layer I: slots of 4 bytes.
        3 => (384, (12 * bitrate / sample_rate + padding) * 4),
        // Layer II.
        2 => (1152, 144 * bitrate / sample_rate + padding),
        // Layer III: half the samples outside MPEG-1.
        _ if mpeg1 => (1152, 144 * bitrate / sample_rate + padding),
        _ => (576, 72 * bitrate / sample_rate + padding),
    };
    Some(Frame {
        bitrate,
        sample_rate,
        samples,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("goop-mp3-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_frame_after_an_id3_tag_gives_the_bitrate_and_the_duration() {
        // `FF FB 90 00`: MPEG-1 Layer III, 128 kbit/s, 44.1 kHz; 16,000 bytes of audio is 1 s.
        let mut bytes = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
        bytes.extend([0u8; 10]);
        bytes.extend([0xff, 0xfb, 0x90, 0x00]);
        bytes.resize(20 + 16_000, 0);
        let path = write("tagged.mp3", &bytes);
        let probe = probe(&path).unwrap();
        assert_eq!(probe.audio_offset, 20);
        assert_eq!(probe.bitrate, 128_000);
        assert!((probe.duration - 1.0).abs() < 1e-9, "{probe:?}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn headers_with_reserved_fields_are_skipped_and_no_frame_is_an_error() {
        // Bitrate index 15, then sample-rate index 3, then MPEG-2 Layer III at 64 kbit/s.
        let bytes = [
            0xff, 0xfb, 0xf0, 0x00, 0xff, 0xfb, 0x9c, 0x00, 0xff, 0xf3, 0x80, 0x00,
        ];
        assert_eq!(
            first_frame(&bytes).map(|(at, f)| (at, f.bitrate)),
            Some((8, 64_000))
        );
        let path = write("noise.mp3", &[0x12; 100]);
        assert!(matches!(probe(&path), Err(ListenError::Probe { .. })));
        let _ = std::fs::remove_file(path);
    }

    /// `count` MPEG-1 Layer III frames at 44.1 kHz with bitrate index `index` (9: 128 kbit/s,
    /// 14: 320 kbit/s), unpadded: 417 and 1,044 bytes.
    fn frames(index: u8, count: usize) -> Vec<u8> {
        let header = [0xff, 0xfb, index << 4, 0x00];
        let length = frame(&header).unwrap().length as usize;
        let mut out = Vec::new();
        for _ in 0..count {
            out.extend(header);
            out.resize(out.len() + length - 4, 0x55);
        }
        out
    }

    #[test]
    fn the_frames_give_the_duration_and_a_variable_bitrate_its_mean() {
        assert_eq!(frames(9, 1).len(), 417);
        assert_eq!(frames(14, 1).len(), 1044);
        let seconds = 100.0 * 1152.0 / 44_100.0;
        // Constant, with an ID3v1 tag at the end.
        let mut cbr = frames(9, 100);
        cbr.extend(b"TAG");
        cbr.resize(cbr.len() + 125, b' ');
        let path = write("cbr.mp3", &cbr);
        let found = probe(&path).unwrap();
        assert_eq!(found.bitrate, 128_000);
        assert!((found.duration - seconds).abs() < 1e-9, "{found:?}");
        let _ = std::fs::remove_file(path);
        // Variable: half the frames at 128 kbit/s, half at 320. The first frame's bitrate
        // over the size would say 4.57 s.
        let mut vbr = frames(9, 50);
        vbr.extend(frames(14, 50));
        let path = write("vbr.mp3", &vbr);
        let found = probe(&path).unwrap();
        assert!((found.duration - seconds).abs() < 1e-9, "{found:?}");
        let mean = (vbr.len() as f64 * 8.0 / seconds).round() as u32;
        assert_eq!(found.bitrate, mean);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_stream_starts_at_the_next_frame() {
        let mut bytes = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
        bytes.extend([0u8; 10]);
        bytes.extend(frames(9, 20));
        let path = write("aligned.mp3", &bytes);
        assert_eq!(frame_start(&path, 20), 20, "already a frame's start");
        // In the middle of the fifth frame: the sixth.
        assert_eq!(frame_start(&path, 20 + 4 * 417 + 100), 20 + 5 * 417);
        // Past the last frame: nothing to align to.
        let end = bytes.len() as u64 - 10;
        assert_eq!(frame_start(&path, end), end);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_xing_table_of_contents_places_a_position_in_the_file() {
        // A first frame holding a Xing header (stereo MPEG-1: after 32 bytes of side
        // information) with the frame count, the byte count and a table of contents whose
        // first half of the duration covers a quarter of the bytes; then the audio.
        let mut first = frames(9, 1);
        let mut toc = [0u8; 100];
        for (i, t) in toc.iter_mut().enumerate() {
            *t = if i < 50 {
                (i * 64 / 50) as u8
            } else {
                (64 + (i - 50) * 192 / 50) as u8
            };
        }
        let mut xing_header = b"Xing".to_vec();
        xing_header.extend(7u32.to_be_bytes());
        xing_header.extend(100u32.to_be_bytes());
        xing_header.extend(40_000u32.to_be_bytes());
        xing_header.extend(toc);
        first[36..36 + xing_header.len()].copy_from_slice(&xing_header);
        let mut bytes = first;
        bytes.extend(frames(9, 49));
        bytes.extend(frames(14, 50));
        let path = write("xing.mp3", &bytes);
        let found = probe(&path).unwrap();
        assert_eq!(found.toc, Some(toc));
        assert_eq!(found.toc_bytes, 40_000);
        assert_eq!(found.offset_at(0.0), 0);
        let half = found.offset_at(found.duration / 2.0);
        assert_eq!(half, 10_000, "a quarter of the bytes, not half");
        let end = found.offset_at(found.duration);
        assert!((39_900..=40_000).contains(&end), "{end}");
        let _ = std::fs::remove_file(path);

        // `Info` without a table: by the bitrate.
        let mut info = frames(9, 1);
        info[36..44].copy_from_slice(b"Info\0\0\0\0");
        assert_eq!(
            xing(&info),
            Some(Xing {
                bytes: None,
                toc: None
            })
        );
        let plain = Probe {
            audio_offset: 10,
            bitrate: 128_000,
            duration: 2.0,
            toc: None,
            toc_bytes: 32_000,
        };
        assert_eq!(plain.offset_at(1.0), 10 + 16_000);
        assert_eq!(plain.offset_at(9.0), 10 + 32_000, "not past the end");
        assert_eq!(xing(&frames(9, 1)), None);
    }
}
