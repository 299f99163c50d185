//! The jitter buffer: holds the phone's sound frames until they are due,
//! in order, and says what to play in each frame's slot.
//!
//! A frame captured at `c` is due at `c + base + target`, where `base` is
//! the smallest transit (arrival minus capture, clock offset included) seen
//! in the last few seconds, i.e. the path's own delay, and `target` the
//! buffer's delay on top: a fixed floor plus the measured jitter (the 95th
//! percentile of transit above `base`), capped. Under jitter the target
//! grows, and when the path calms down it shrinks back: the playout then
//! skips a frame (preferably a silent slot) to catch up. A frame that comes
//! after its slot was played is late and dropped; a missing frame's slot is
//! concealed (from the next frame's FEC when it is there).
//!
//! Sans-IO: time comes in as arguments (µs on the handset's clock).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// How long the path's delay and jitter are remembered, µs.
const WINDOW_US: u64 = 3_000_000;
/// Missing slots concealed in a row while no later frame is here yet.
const MAX_BLIND_CONCEAL: u64 = 3;
/// After this long with nothing to play, the next frame starts afresh.
const IDLE_RESET_US: u64 = 200_000;

/// What to play in one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A frame that arrived in time.
    Frame {
        /// Its seq.
        seq: u64,
        /// When its first sample was captured (the sender's clock).
        capture_us: u64,
        /// The coded frame.
        payload: Bytes,
    },
    /// A frame that is missing while later ones are here: conceal it, from
    /// `next` (the following frame, for its FEC) when given.
    Conceal {
        /// The following frame's payload, if it is here.
        next: Option<Bytes>,
    },
}

/// The buffer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames taken in.
    pub received: u64,
    /// Frames handed out to play.
    pub played: u64,
    /// Slots concealed (a frame lost or late while sound flowed).
    pub concealed: u64,
    /// Frames that came after their slot, dropped.
    pub late: u64,
    /// Frames dropped to shrink the delay back to the target.
    pub skipped: u64,
    /// Frames dropped as duplicates.
    pub duplicates: u64,
    /// Slots stretched (concealment played, the frame held back) to grow
    /// the delay to a larger target.
    pub held: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    frame_us: u64,
    floor_us: u64,
    max_us: u64,
    frames: BTreeMap<u64, (u64, Bytes)>,
    /// (arrival, transit) of recent frames.
    transits: VecDeque<(u64, i64)>,
    /// Next seq to play and its slot time (local µs), while playing.
    next: Option<(u64, u64)>,
    /// When a slot last had something to play.
    last_sound_us: u64,
    /// Seq and capture time of the last frame played.
    last_played: Option<(u64, u64)>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for frames of `frame_us`, whose delay never goes below
    /// `floor_us` nor above `max_us`.
    #[must_use]
    pub fn new(frame_us: u64, floor_us: u64, max_us: u64) -> Self {
        Self {
            frame_us,
            floor_us,
            max_us: max_us.max(floor_us),
            frames: BTreeMap::new(),
            transits: VecDeque::new(),
            next: None,
            last_sound_us: 0,
            last_played: None,
            stats: JitterStats::default(),
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The path's delay seen lately (smallest transit), µs.
    fn base(&self) -> Option<i64> {
        self.transits.iter().map(|t| t.1).min()
    }

    /// The buffer's delay now: the floor plus the measured jitter, µs.
    #[must_use]
    pub fn target_us(&self) -> u64 {
        let Some(base) = self.base() else {
            return self.floor_us;
        };
        let mut above: Vec<u64> = self
            .transits
            .iter()
            .map(|t| (t.1 - base).max(0) as u64)
            .collect();
        above.sort_unstable();
        let p95 = above[(above.len() * 95 / 100).min(above.len() - 1)];
        (self.floor_us + p95).min(self.max_us)
    }

    /// Sound buffered ahead of the next slot, µs.
    #[must_use]
    pub fn level_us(&self) -> u64 {
        match (self.next, self.frames.keys().next_back()) {
            (Some((next, _)), Some(&last)) if last >= next => (last - next + 1) * self.frame_us,
            (None, Some(_)) => self.frames.len() as u64 * self.frame_us,
            _ => 0,
        }
    }

    /// Takes a frame that arrived at `now_us`.
    pub fn push(&mut self, seq: u64, capture_us: u64, payload: Bytes, now_us: u64) {
        self.stats.received += 1;
        if self.frames.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        // Every arrival tells the path's delay, late ones most of all.
        self.transits
            .push_back((now_us, now_us as i64 - capture_us as i64));
        while self
            .transits
            .front()
            .is_some_and(|t| t.0 + WINDOW_US < now_us)
        {
            self.transits.pop_front();
        }
        if let Some((next, _)) = self.next
            && seq < next
        {
            self.stats.late += 1;
            return;
        }
        self.frames.insert(seq, (capture_us, payload));
    }

    /// The next slot due at `now_us`, if one is: call until `None` on
    /// every tick of the output clock.
    pub fn pop_due(&mut self, now_us: u64) -> Option<Slot> {
        let base = self.base()?;
        let target = self.target_us() as i64;
        let Some((seq, slot_us)) = self.next else {
            // Not playing: start with the first frame once it is due.
            let (&seq, &(capture, _)) = self.frames.iter().next()?;
            let due = (capture as i64 + base + target).max(0) as u64;
            if due > now_us {
                return None;
            }
            self.next = Some((seq, due));
            return self.pop_due(now_us);
        };
        if slot_us > now_us {
            return None;
        }
        if now_us.saturating_sub(self.last_sound_us) > IDLE_RESET_US
            && self.frames.range(seq..).next().is_none()
        {
            // A pause (silence not sent, the phone quiet): start afresh.
            self.next = None;
            return None;
        }
        // When this slot's frame was (or should have been) captured.
        let capture_est = match (self.frames.get(&seq), self.last_played) {
            (Some(&(c, _)), _) => Some(c),
            (None, Some((ls, lc))) if seq > ls => Some(lc + (seq - ls) * self.frame_us),
            _ => None,
        };
        if let Some(c) = capture_est {
            let delay = now_us as i64 - c as i64 - base;
            if delay + (self.frame_us as i64) < target {
                // Early for the (grown) target: stretch by one concealed
                // slot, keep this frame for the next one.
                self.next = Some((seq, slot_us + self.frame_us));
                self.stats.held += 1;
                self.last_sound_us = now_us;
                return Some(Slot::Conceal { next: None });
            }
        }
        self.next = Some((seq + 1, slot_us + self.frame_us));
        let Some((capture, payload)) = self.frames.remove(&seq) else {
            return match self.frames.range(seq + 1..).next() {
                Some((&later, (_, p))) => {
                    self.stats.concealed += 1;
                    self.last_sound_us = now_us;
                    Some(Slot::Conceal {
                        next: (later == seq + 1).then(|| p.clone()),
                    })
                }
                // Nothing newer is here yet. Right after sound (a frame
                // lost, its successor still on the way): conceal, a few
                // slots at most. Longer: silence (DTX) or an outage.
                None if self
                    .last_played
                    .is_some_and(|(ls, _)| seq - ls <= MAX_BLIND_CONCEAL) =>
                {
                    self.stats.concealed += 1;
                    self.last_sound_us = now_us;
                    Some(Slot::Conceal { next: None })
                }
                None => self.pop_due(now_us),
            };
        };
        self.last_sound_us = now_us;
        self.last_played = Some((seq, capture));
        // Too far behind the target (the delay grew, or the target shrank):
        // skip this frame to catch up, one frame per slot at most.
        let delay = now_us as i64 - capture as i64 - base;
        if delay > target + self.frame_us as i64 && self.frames.contains_key(&(seq + 1)) {
            self.stats.skipped += 1;
            // The next frame takes this slot: the delay drops by a frame.
            self.next = Some((seq + 1, slot_us));
            return self.pop_due(now_us);
        }
        self.stats.played += 1;
        Some(Slot::Frame {
            seq,
            capture_us: capture,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 20_000;

    fn p(seq: u64) -> Bytes {
        Bytes::from(vec![seq as u8])
    }

    /// Runs frames 1..=n captured every 20 ms through a path of `delay(seq)`
    /// µs, the output ticking every 5 ms; returns (slots, buffer).
    fn run(n: u64, delay: impl Fn(u64) -> Option<u64>) -> (Vec<(u64, Slot)>, JitterBuffer) {
        let mut jb = JitterBuffer::new(F, 20_000, 200_000);
        let mut arrivals: Vec<(u64, u64)> = (1..=n)
            .filter_map(|s| delay(s).map(|d| (1_000_000 + s * F + d, s)))
            .collect();
        arrivals.sort_unstable();
        let mut out = Vec::new();
        let mut now = 1_000_000;
        let mut i = 0;
        while now < 1_000_000 + (n + 30) * F {
            while i < arrivals.len() && arrivals[i].0 <= now {
                let s = arrivals[i].1;
                jb.push(s, 1_000_000 + s * F - F, p(s), arrivals[i].0);
                i += 1;
            }
            while let Some(slot) = jb.pop_due(now) {
                out.push((now, slot));
            }
            now += 5_000;
        }
        (out, jb)
    }

    #[test]
    fn a_steady_path_plays_every_frame_at_the_floor() {
        let (slots, jb) = run(100, |_| Some(3_000));
        assert_eq!(jb.stats().played, 100);
        assert_eq!(jb.stats().late + jb.stats().skipped, 0);
        // Only the slots right after the last frame (its successor might
        // have been lost).
        assert_eq!(jb.stats().concealed, MAX_BLIND_CONCEAL);
        // Played 20 ms (the frame) + 3 ms (the path) + the 20 ms floor after
        // capture, within a tick.
        for (t, s) in &slots {
            if let Slot::Frame { capture_us, .. } = s {
                let d = t - capture_us;
                assert!((43_000..=48_000).contains(&d), "{d}");
            }
        }
    }

    #[test]
    fn losses_are_concealed_with_the_next_frames_fec() {
        let (slots, jb) = run(50, |s| (s % 10 != 5).then_some(2_000));
        assert_eq!(jb.stats().played, 45);
        assert_eq!(jb.stats().concealed, 5 + MAX_BLIND_CONCEAL);
        assert!(
            slots
                .iter()
                .any(|(_, s)| matches!(s, Slot::Conceal { next: Some(n) } if n == &p(6)))
        );
    }

    #[test]
    fn jitter_grows_the_delay_and_calm_shrinks_it_back() {
        // 40 ms of jitter on every other frame for the first 3 s, then calm.
        let (_, jb) = run(450, |s| {
            Some(if s < 150 && s % 2 == 0 { 42_000 } else { 2_000 })
        });
        let st = jb.stats();
        // A few frames are late before the target has grown; none after.
        assert!(st.late <= 3, "{st:?}");
        assert!(st.held >= 1, "{st:?}");
        assert!(st.played >= 440, "{st:?}");
        assert!(st.skipped >= 1, "it caught up once calm: {st:?}");
        assert!(jb.target_us() < 25_000, "{}", jb.target_us());
    }

    #[test]
    fn late_and_duplicate_frames_are_dropped() {
        let mut jb = JitterBuffer::new(F, 20_000, 200_000);
        jb.push(1, 0, p(1), 5_000);
        jb.push(1, 0, p(1), 6_000);
        assert_eq!(jb.stats().duplicates, 1);
        // Due at capture + path (5 ms) + floor (20 ms).
        assert!(jb.pop_due(24_000).is_none());
        assert!(matches!(
            jb.pop_due(26_000),
            Some(Slot::Frame { seq: 1, .. })
        ));
        jb.push(3, 2 * F, p(3), 45_000);
        assert!(matches!(
            jb.pop_due(46_000),
            Some(Slot::Conceal { next: Some(_) })
        ));
        jb.push(2, F, p(2), 47_000);
        assert_eq!(jb.stats().late, 1);
        // The late frame grew the target: frame 3 waits a slot or two.
        let played_at = (66_000..200_000)
            .step_by(5_000)
            .find(|&t| matches!(jb.pop_due(t), Some(Slot::Frame { seq: 3, .. })));
        assert!(played_at.is_some());
        assert!(jb.stats().held >= 1);
    }

    #[test]
    fn a_lost_frame_is_concealed_before_its_successor_arrives() {
        let mut jb = JitterBuffer::new(F, 20_000, 200_000);
        jb.push(1, 0, p(1), 5_000);
        assert!(matches!(
            jb.pop_due(25_000),
            Some(Slot::Frame { seq: 1, .. })
        ));
        // Frame 2 is lost; frame 3 arrives after frame 2's slot.
        assert!(matches!(
            jb.pop_due(45_000),
            Some(Slot::Conceal { next: None })
        ));
        jb.push(3, 2 * F, p(3), 46_000);
        assert!(matches!(
            jb.pop_due(65_000),
            Some(Slot::Frame { seq: 3, .. })
        ));
        // After the sound stops, at most a few slots are concealed.
        let concealed = (85_000..400_000)
            .step_by(20_000)
            .filter(|&t| jb.pop_due(t).is_some())
            .count();
        assert_eq!(concealed, MAX_BLIND_CONCEAL as usize);
    }

    #[test]
    fn a_pause_starts_afresh() {
        let mut jb = JitterBuffer::new(F, 20_000, 200_000);
        jb.push(1, 0, p(1), 5_000);
        assert!(jb.pop_due(50_000).is_some());
        // Nothing for a second, then frame 51 (DTX: 49 frames not sent):
        // a few slots concealed, then silence.
        let concealed = (60_000..1_000_000)
            .step_by(5_000)
            .filter(|&t| jb.pop_due(t).is_some())
            .count();
        assert_eq!(concealed, MAX_BLIND_CONCEAL as usize);
        jb.push(51, 50 * F, p(51), 1_005_000);
        let mut got = None;
        for t in (1_005_000..1_100_000).step_by(5_000) {
            if let Some(s) = jb.pop_due(t) {
                got = Some((t, s));
                break;
            }
        }
        let (t, s) = got.expect("played");
        assert!(matches!(s, Slot::Frame { seq: 51, .. }));
        assert!(t <= 1_050_000, "{t}");
        assert_eq!(jb.stats().concealed, MAX_BLIND_CONCEAL);
    }
}
