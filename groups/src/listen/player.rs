//! The host's player: a queue of MP3 files, the track loaded, and where it plays. A pure state
//! machine: every change takes the time and returns the control messages listeners need.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ListenError;
use super::mp3::Probe;

/// A loaded track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Its display name (the file's base name).
    pub name: String,
    /// Seconds.
    pub duration: f64,
    /// Bits per second.
    pub bitrate: u32,
    /// `mp3`.
    pub format: String,
    /// Always false: internet streams are not supported.
    pub is_stream: bool,
}

/// Whether a track plays, and where.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlayState {
    /// Playing or paused.
    pub playing: bool,
    /// Seconds into the track at `updated_at`.
    pub position: f64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl PlayState {
    /// The position at `now`: it moves on while playing.
    pub fn position_at(&self, now: i64) -> f64 {
        if self.playing {
            self.position + (now - self.updated_at).max(0) as f64 / 1000.0
        } else {
            self.position
        }
    }
}

/// A message from the host to its listeners: `{action, track?, position?, queue?, queue_types?,
/// queue_index, queue_total}` (Goop²'s shape; `position` left out when 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// `load`, `play`, `pause`, `seek`, `sync` or `close`.
    pub action: String,
    /// The track, for `load` and `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Seconds into the track.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub position: f64,
    /// The queue's display names, for `load` and `sync`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<String>,
    /// `file` for each queue entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_types: Vec<String>,
    /// The current entry.
    #[serde(default)]
    pub queue_index: usize,
    /// The queue's length.
    #[serde(default)]
    pub queue_total: usize,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Reads what a file plays (the MP3 probe; a stand-in in tests).
pub type Prober<'a> = &'a dyn Fn(&std::path::Path) -> Result<Probe, ListenError>;

/// A queue entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The file.
    pub path: PathBuf,
    /// Its base name.
    pub name: String,
}

impl Entry {
    /// The entry of a file path.
    pub fn of(path: PathBuf) -> Self {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self { path, name }
    }
}

/// The host's player.
#[derive(Debug, Default)]
pub struct Player {
    queue: Vec<Entry>,
    index: usize,
    track: Option<(Track, Probe)>,
    state: Option<PlayState>,
}

impl Player {
    /// The queue, for persistence.
    pub fn queue(&self) -> (&[Entry], usize) {
        (&self.queue, self.index)
    }

    /// The loaded track, where its audio starts in the file, and the file.
    pub fn current(&self) -> Option<(&Track, &Probe, &Entry)> {
        let (track, probe) = self.track.as_ref()?;
        Some((track, probe, self.queue.get(self.index)?))
    }

    /// Whether it plays, and where, at `now`.
    pub fn play_state(&self, now: i64) -> Option<PlayState> {
        self.state.map(|s| PlayState {
            position: s.position_at(now),
            updated_at: now,
            ..s
        })
    }

    /// The queue's display names and the current index.
    pub fn names(&self) -> Vec<String> {
        self.queue.iter().map(|e| e.name.clone()).collect()
    }

    fn control(&self, action: &str, position: f64, with_queue: bool) -> Control {
        Control {
            action: action.to_owned(),
            track: with_queue
                .then(|| self.track.as_ref().map(|(t, _)| t.clone()))
                .flatten(),
            position,
            queue: if with_queue { self.names() } else { Vec::new() },
            queue_types: if with_queue {
                vec!["file".to_owned(); self.queue.len()]
            } else {
                Vec::new()
            },
            queue_index: self.index,
            queue_total: self.queue.len(),
        }
    }

    /// Loads entry `index`, paused at 0.
    fn load(&mut self, index: usize, now: i64, probe: Prober<'_>) -> Result<Control, ListenError> {
        let entry = self.queue.get(index).ok_or(ListenError::BadIndex(index))?;
        let found = probe(&entry.path)?;
        self.index = index;
        self.track = Some((
            Track {
                name: entry.name.clone(),
                duration: found.duration,
                bitrate: found.bitrate,
                format: "mp3".to_owned(),
                is_stream: false,
            },
            found,
        ));
        self.state = Some(PlayState {
            playing: false,
            position: 0.0,
            updated_at: now,
        });
        Ok(self.control("load", 0.0, true))
    }

    /// Replaces the queue and loads its first entry.
    pub fn load_queue(
        &mut self,
        entries: Vec<Entry>,
        now: i64,
        probe: Prober<'_>,
    ) -> Result<Vec<Control>, ListenError> {
        if entries.is_empty() {
            return Err(ListenError::NoPaths);
        }
        self.queue = entries;
        self.track = None;
        self.state = None;
        Ok(vec![self.load(0, now, probe)?])
    }

    /// Appends to the queue (loads the first entry when nothing was queued).
    pub fn add(
        &mut self,
        entries: Vec<Entry>,
        now: i64,
        probe: Prober<'_>,
    ) -> Result<Vec<Control>, ListenError> {
        if self.queue.is_empty() {
            return self.load_queue(entries, now, probe);
        }
        if entries.is_empty() {
            return Err(ListenError::NoPaths);
        }
        self.queue.extend(entries);
        Ok(vec![self.queue_changed(now)])
    }

    /// The `sync` that tells listeners the queue changed while the track stays.
    fn queue_changed(&self, now: i64) -> Control {
        let position = self.play_state(now).map_or(0.0, |s| s.position);
        self.control("sync", position, true)
    }

    fn check_index(&self, index: usize) -> Result<(), ListenError> {
        if index < self.queue.len() {
            Ok(())
        } else {
            Err(ListenError::BadIndex(index))
        }
    }

    fn state_mut(&mut self) -> Result<&mut PlayState, ListenError> {
        self.state.as_mut().ok_or(ListenError::NoTrack)
    }

    /// Plays from where it stands.
    pub fn play(&mut self, now: i64) -> Result<Vec<Control>, ListenError> {
        self.set_playing(true, now)
    }

    /// Stops where it stands.
    pub fn pause(&mut self, now: i64) -> Result<Vec<Control>, ListenError> {
        self.set_playing(false, now)
    }

    fn set_playing(&mut self, playing: bool, now: i64) -> Result<Vec<Control>, ListenError> {
        let state = self.state_mut()?;
        let position = state.position_at(now);
        *state = PlayState {
            playing,
            position,
            updated_at: now,
        };
        let action = if playing { "play" } else { "pause" };
        Ok(vec![self.control(action, position, false)])
    }

    /// Moves to `position` seconds, playing on if it played.
    pub fn seek(&mut self, position: f64, now: i64) -> Result<Vec<Control>, ListenError> {
        let duration = self.track.as_ref().map_or(0.0, |(t, _)| t.duration);
        let state = self.state_mut()?;
        if !position.is_finite() || position < 0.0 {
            return Err(ListenError::BadPosition(position));
        }
        let position = position.min(duration);
        state.position = position;
        state.updated_at = now;
        Ok(vec![self.control("seek", position, false)])
    }

    /// Loads entry `index`, playing it from 0 if the player was playing.
    pub fn skip(
        &mut self,
        index: usize,
        now: i64,
        probe: Prober<'_>,
    ) -> Result<Vec<Control>, ListenError> {
        self.check_index(index)?;
        let playing = self.state.is_some_and(|s| s.playing);
        let mut out = vec![self.load(index, now, probe)?];
        if playing {
            out.extend(self.play(now)?);
        }
        Ok(out)
    }

    /// The next entry.
    pub fn next(&mut self, now: i64, probe: Prober<'_>) -> Result<Vec<Control>, ListenError> {
        if self.index + 1 >= self.queue.len() {
            return Err(ListenError::AtEnd);
        }
        self.skip(self.index + 1, now, probe)
    }

    /// The previous entry, or the start of this one when more than 3 s in or at the first.
    pub fn prev(&mut self, now: i64, probe: Prober<'_>) -> Result<Vec<Control>, ListenError> {
        let position = self.play_state(now).ok_or(ListenError::NoTrack)?.position;
        if position > 3.0 || self.index == 0 {
            return self.seek(0.0, now);
        }
        self.skip(self.index - 1, now, probe)
    }

    /// Takes entry `index` out of the queue.
    pub fn remove(
        &mut self,
        index: usize,
        now: i64,
        probe: Prober<'_>,
    ) -> Result<Vec<Control>, ListenError> {
        self.check_index(index)?;
        self.queue.remove(index);
        if self.queue.is_empty() {
            self.index = 0;
            self.track = None;
            self.state = None;
            return Ok(vec![self.control("pause", 0.0, false)]);
        }
        if index < self.index {
            self.index -= 1;
            return Ok(vec![self.queue_changed(now)]);
        }
        if index == self.index {
            let next = self.index.min(self.queue.len() - 1);
            return self.skip(next, now, probe);
        }
        Ok(vec![self.queue_changed(now)])
    }

    /// What time does on its own: at the end of a track, the next playable one plays; at the
    /// end of the queue, the player stops and says so.
    pub fn tick(&mut self, now: i64, probe: Prober<'_>) -> Vec<Control> {
        let Some(state) = self.state.filter(|s| s.playing) else {
            return Vec::new();
        };
        let duration = self.track.as_ref().map_or(0.0, |(t, _)| t.duration);
        if duration <= 0.0 || state.position_at(now) < duration {
            return Vec::new();
        }
        let mut next = self.index + 1;
        while next < self.queue.len() {
            if let Ok(load) = self.load(next, now, probe) {
                let mut out = vec![load];
                out.extend(self.play(now).unwrap_or_default());
                return out;
            }
            next += 1;
        }
        self.pause(now).unwrap_or_default()
    }

    /// Everything a listener needs to catch up: the track and queue, then play or pause.
    pub fn resync(&self, now: i64) -> Vec<Control> {
        let Some(state) = self.play_state(now) else {
            return Vec::new();
        };
        let action = if state.playing { "play" } else { "pause" };
        vec![
            self.control("load", 0.0, true),
            self.control(action, state.position, false),
        ]
    }

    /// The periodic `sync` while playing.
    pub fn sync(&self, now: i64) -> Option<Control> {
        let state = self.play_state(now).filter(|s| s.playing)?;
        Some(self.control("sync", state.position, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file is 10 s at 128 kbit/s, unless its name says `bad`.
    fn probe(path: &std::path::Path) -> Result<Probe, ListenError> {
        if path.to_string_lossy().contains("bad") {
            return Err(ListenError::Probe {
                path: path.display().to_string(),
                reason: "no valid MPEG frame found".into(),
            });
        }
        Ok(Probe {
            audio_offset: 0,
            bitrate: 128_000,
            duration: 10.0,
            toc: None,
            toc_bytes: 160_000,
        })
    }

    fn player(names: &[&str]) -> Player {
        let mut player = Player::default();
        let entries = names.iter().map(|n| Entry::of(PathBuf::from(n))).collect();
        let out = player.load_queue(entries, 0, &probe).unwrap();
        assert_eq!(out[0].action, "load");
        player
    }

    fn actions(out: &[Control]) -> Vec<&str> {
        out.iter().map(|c| c.action.as_str()).collect()
    }

    #[test]
    fn the_position_moves_only_while_playing() {
        let mut p = player(&["/m/a.mp3"]);
        assert_eq!(p.play_state(5_000).unwrap().position, 0.0);
        p.play(1_000).unwrap();
        assert_eq!(p.play_state(3_500).unwrap().position, 2.5);
        let out = p.pause(4_000).unwrap();
        assert_eq!((out[0].action.as_str(), out[0].position), ("pause", 3.0));
        assert_eq!(p.play_state(9_000).unwrap().position, 3.0);
        // A seek while playing plays on from there.
        p.play(9_000).unwrap();
        p.seek(1.0, 10_000).unwrap();
        assert_eq!(p.play_state(12_000).unwrap().position, 3.0);
        assert!(p.seek(-1.0, 12_000).is_err());
        assert_eq!(p.seek(99.0, 12_000).unwrap()[0].position, 10.0);
    }

    #[test]
    fn the_end_of_a_track_plays_the_next_playable_one_and_the_end_of_the_queue_pauses() {
        let mut p = player(&["/m/a.mp3", "/m/bad.mp3", "/m/c.mp3"]);
        p.play(0).unwrap();
        assert!(p.tick(9_999, &probe).is_empty());
        let out = p.tick(10_000, &probe);
        assert_eq!(actions(&out), ["load", "play"]);
        assert_eq!(out[0].track.as_ref().unwrap().name, "c.mp3");
        assert_eq!(p.queue().1, 2);
        // The listeners hear that it stopped.
        let out = p.tick(20_000, &probe);
        assert_eq!(actions(&out), ["pause"]);
        assert!(!p.play_state(30_000).unwrap().playing);
    }

    #[test]
    fn next_prev_skip_and_remove_move_through_the_queue() {
        let mut p = player(&["/m/a.mp3", "/m/b.mp3", "/m/c.mp3"]);
        assert_eq!(actions(&p.next(0, &probe).unwrap()), ["load"]);
        p.play(0).unwrap();
        assert_eq!(actions(&p.next(1_000, &probe).unwrap()), ["load", "play"]);
        assert!(matches!(p.next(1_000, &probe), Err(ListenError::AtEnd)));
        // More than 3 s in, prev starts the track again; else it goes back.
        assert_eq!(actions(&p.prev(5_000, &probe).unwrap()), ["seek"]);
        assert_eq!(actions(&p.prev(6_000, &probe).unwrap()), ["load", "play"]);
        assert_eq!(p.queue().1, 1);
        assert!(matches!(
            p.skip(3, 0, &probe),
            Err(ListenError::BadIndex(3))
        ));
        // Removing an earlier entry keeps the track; removing the current one loads the next.
        assert_eq!(actions(&p.remove(0, 7_000, &probe).unwrap()), ["sync"]);
        assert_eq!(p.current().unwrap().2.name, "b.mp3");
        assert_eq!(
            actions(&p.remove(0, 7_000, &probe).unwrap()),
            ["load", "play"]
        );
        assert_eq!(p.current().unwrap().2.name, "c.mp3");
        assert_eq!(actions(&p.remove(0, 7_000, &probe).unwrap()), ["pause"]);
        assert!(p.current().is_none());
        assert!(matches!(p.play(8_000), Err(ListenError::NoTrack)));
    }

    #[test]
    fn a_newcomer_gets_the_track_the_queue_and_where_it_plays() {
        let mut p = player(&["/m/a.mp3", "/m/b.mp3"]);
        p.play(0).unwrap();
        let out = p.resync(2_000);
        assert_eq!(actions(&out), ["load", "play"]);
        assert_eq!(out[0].queue, ["a.mp3", "b.mp3"]);
        assert_eq!(out[0].queue_total, 2);
        assert_eq!(out[1].position, 2.0);
        let json = serde_json::to_value(&out[1]).unwrap();
        assert_eq!(json["action"], "play");
        assert!(json.get("track").is_none());
    }
}
