//! Reading what an MP3 file plays: the first valid MPEG audio frame after an optional ID3v2
//! tag gives the bitrate, and the size gives a (constant-bitrate) duration.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use super::ListenError;

/// What a player needs to know of an MP3 file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Where the audio starts: the size of the ID3v2 tag before it, if any.
    pub audio_offset: u64,
    /// Bits per second.
    pub bitrate: u32,
    /// Seconds, from the size and the bitrate.
    pub duration: f64,
}

/// Bytes scanned for the first frame after the tag.
const SCAN: usize = 8192;

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
    let (at, bitrate) = first_frame(&buf[..n]).ok_or_else(|| ListenError::Probe {
        path: path.display().to_string(),
        reason: "no valid MPEG frame found".into(),
    })?;
    let audio_offset = offset + at as u64;
    let duration = size.saturating_sub(audio_offset) as f64 * 8.0 / f64::from(bitrate);
    Ok(Probe {
        audio_offset,
        bitrate,
        duration,
    })
}

/// Where the first valid frame header is in `buf`, and its bitrate in bits per second.
fn first_frame(buf: &[u8]) -> Option<(usize, u32)> {
    (0..buf.len().saturating_sub(3)).find_map(|i| frame_bitrate(&buf[i..i + 4]).map(|b| (i, b)))
}

/// The bitrate of a 4-byte frame header, if it is a valid one.
fn frame_bitrate(h: &[u8]) -> Option<u32> {
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 0: reserved, 1: III, 2: II, 3: I
    let index = usize::from(h[2] >> 4);
    let sample_rate = (h[2] >> 2) & 3;
    if version == 1 || layer == 0 || index == 0 || index == 15 || sample_rate == 3 {
        return None;
    }
    let table = usize::from(version != 3);
    let layer = usize::from(3 - layer);
    Some(u32::from(BITRATES[table][layer][index]) * 1000)
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
        assert_eq!(first_frame(&bytes), Some((8, 64_000)));
        let path = write("noise.mp3", &[0x12; 100]);
        assert!(matches!(probe(&path), Err(ListenError::Probe { .. })));
        let _ = std::fs::remove_file(path);
    }
}
