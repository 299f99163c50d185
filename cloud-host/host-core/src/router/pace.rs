//! Video pacing: never more video in flight than the path carries.
//!
//! Two queues can hold a session's video on a slow path. QUIC takes every
//! frame the host writes into the connection's send buffer (32 MiB here),
//! and the slowest router on the way buffers what the congestion window
//! lets through; either way each picture arrives later than the last, and
//! glass-to-glass grows by seconds while nothing looks wrong on the host.
//! The pacer keeps both short:
//!
//! - **Send buffer.** It compares the video bytes written with the bytes
//!   that actually left the host (the connection's UDP bytes sent) and holds
//!   new frames while more than about 150 ms of video at the target rate
//!   waits; the newest frame goes as soon as the queue drains.
//! - **Router buffers.** It watches the round-trip time against the lowest
//!   seen in the last 30 s: a rise of more than 50 ms is a queue building on
//!   the path. Then the target is cut to 85% of what left the host in the
//!   last second (and x0.85 at least; at most once per round trip, and not
//!   again while the queue already shrinks), and nothing is sent for about
//!   as long as the queue is (at most a second), so it drains at the path's
//!   full rate rather than at the small margin between the path and the new
//!   target. An overflowing send buffer cuts x0.7. Never below a floor
//!   (1/40 of the cap, at least 64 kbit/s).
//! - **The rate.** Frames leave at no more than the target on average (a
//!   token bucket with a quarter second of burst; a large keyframe borrows
//!   and later frames wait), so a cut takes effect at once, as fewer
//!   pictures per second, before the encoder's own rate follows at its next
//!   keyframe. It starts at a quarter of the configured cap and, after each
//!   calm second, rises by a quarter (at least 25 kbit/s), up to the cap,
//!   so a picture that a fault slowed down is back to full speed within
//!   seconds of the fault clearing.
//!
//! Keyframes wait like any frame, so a handset asking for them under loss
//! cannot stuff the pipe with pictures that supersede each other before
//! they arrive.
//!
//! Sans IO: the caller passes the time and the path's counters, so the
//! rules are tested with made-up numbers.

use std::time::{Duration, Instant};

use device_bridge::PathInfo;

/// How much queued video is always allowed (a keyframe's head).
const MIN_QUEUE: u64 = 16 * 1024;
/// The queue allowed, in time at the target rate.
const QUEUE_TIME_MS: u64 = 150;
/// Calm time before the target rises.
const RAISE_AFTER: Duration = Duration::from_secs(1);
/// The target starts at this fraction of the cap (a session may begin on
/// a slow path; screen content rarely needs the cap).
const START_DIVISOR: u32 = 4;
/// A round trip this much above the lowest is a queue on the path.
const QUEUE_DELAY: Duration = Duration::from_millis(50);
/// Below this much above the lowest, the path is calm.
const CALM_DELAY: Duration = Duration::from_millis(25);
/// How long the lowest round trip is remembered.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(30);
/// The rate limiter's burst, in time at the target rate.
const BURST_MS: u64 = 250;

/// Whether to send a frame now.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    /// Encode and send it.
    Send,
    /// Too much video waits to leave: keep the newest frame for later.
    Hold,
}

/// The pacer of one session's video.
#[derive(Debug)]
pub(crate) struct Pacer {
    max_bps: u32,
    min_bps: u32,
    target_bps: u32,
    connection: Option<usize>,
    /// The connection's wire bytes when `written` was last zero.
    wire_base: u64,
    /// Video bytes written since `wire_base`.
    written: u64,
    last_change: Instant,
    /// The lowest round trip lately, and when it was seen.
    min_rtt: Option<(Duration, Instant)>,
    /// The rate limiter: bytes that may go now (negative: owed).
    tokens: i64,
    refilled: Instant,
    /// Where the last send-rate measurement began: when, the wire bytes
    /// then, on which connection.
    rate_mark: Option<(Instant, u64, usize)>,
    /// What left the host per second over the last measurement, bit/s.
    sent_bps: Option<u32>,
    /// The path's queue delay at the last cut: a queue that is already
    /// shrinking is not cut for again.
    delay_at_cut: Duration,
    /// After a cut for a queue on the path: nothing is sent until then, so
    /// the standing queue drains at the path's full rate.
    quiet_until: Option<Instant>,
    /// The connection's wire bytes at the last cut for a path queue: the
    /// round trip only tells something new once more has been sent (with
    /// nothing in flight the estimate stays where it was).
    wire_at_cut: Option<u64>,
}

impl Pacer {
    /// A pacer starting at a quarter of `max_bps` (at least its floor),
    /// never above `max_bps`.
    pub(crate) fn new(max_bps: u32, now: Instant) -> Self {
        let min_bps = (max_bps / 40).max(64_000).min(max_bps);
        let mut p = Self {
            max_bps,
            min_bps,
            target_bps: (max_bps / START_DIVISOR).max(min_bps),
            connection: None,
            wire_base: 0,
            written: 0,
            last_change: now,
            min_rtt: None,
            tokens: 0,
            refilled: now,
            rate_mark: None,
            sent_bps: None,
            delay_at_cut: Duration::ZERO,
            quiet_until: None,
            wire_at_cut: None,
        };
        p.tokens = p.burst();
        p
    }

    fn burst(&self) -> i64 {
        i64::from(self.target_bps / 8) * BURST_MS as i64 / 1000
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let add = (f64::from(self.target_bps) / 8.0 * dt.as_secs_f64()) as i64;
        self.tokens = self.tokens.saturating_add(add).min(self.burst());
    }

    /// Measures what leaves the host per second, over spans of a second.
    fn measure_rate(&mut self, now: Instant, p: &PathInfo) {
        match self.rate_mark {
            Some((at, wire, conn)) if conn == p.connection && p.wire_bytes >= wire => {
                let dt = now.saturating_duration_since(at);
                if dt >= Duration::from_secs(1) {
                    let bps = (p.wire_bytes - wire) as f64 * 8.0 / dt.as_secs_f64();
                    self.sent_bps = Some(bps.min(f64::from(u32::MAX)) as u32);
                    self.rate_mark = Some((now, p.wire_bytes, p.connection));
                }
            }
            _ => self.rate_mark = Some((now, p.wire_bytes, p.connection)),
        }
    }

    /// How far the round trip is above the lowest seen lately.
    fn queue_delay(&mut self, now: Instant, rtt: Duration) -> Duration {
        match self.min_rtt {
            Some((min, at)) if min <= rtt && now.saturating_duration_since(at) < MIN_RTT_WINDOW => {
                rtt - min
            }
            _ => {
                self.min_rtt = Some((rtt, now));
                Duration::ZERO
            }
        }
    }

    /// The bitrate the encoder should aim for now.
    pub(crate) fn target_bps(&self) -> u32 {
        self.target_bps
    }

    fn rebase(&mut self, p: &PathInfo) {
        self.connection = Some(p.connection);
        self.wire_base = p.wire_bytes;
        self.written = 0;
    }

    /// Video bytes still waiting in the connection: written, minus what
    /// left since. Other traffic (control, acknowledgements) also counts as
    /// having left, so this errs low; it never counts the past's other
    /// traffic as room for the future (see [`Pacer::admit`]).
    fn queued(&mut self, p: &PathInfo) -> u64 {
        if self.connection != Some(p.connection) || p.wire_bytes < self.wire_base {
            // A new connection (a resume) starts with an empty buffer.
            self.rebase(p);
        }
        let left = p.wire_bytes - self.wire_base;
        if left > self.written {
            self.wire_base = p.wire_bytes - self.written;
        }
        self.written - (p.wire_bytes - self.wire_base)
    }

    /// A new GOP begins: the session resets the last GOP's stream, which
    /// drops whatever of it still waited.
    pub(crate) fn new_gop(&mut self, path: Option<&PathInfo>) {
        if let Some(p) = path {
            self.rebase(p);
        }
    }

    /// `bytes` of video were written.
    pub(crate) fn wrote(&mut self, bytes: u64) {
        self.written += bytes;
        // A large frame (a keyframe) owes at most one burst: how fast it
        // actually leaves is the send-buffer check's business, so it does
        // not hold the frames after it for seconds once the path is free.
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX))
            .max(-self.burst());
    }

    /// Whether a frame may go now; adjusts the target. `None` path: not
    /// connected (the write will fail and be handled elsewhere).
    pub(crate) fn admit(&mut self, now: Instant, path: Option<&PathInfo>) -> Verdict {
        let Some(p) = path else {
            return Verdict::Send;
        };
        self.refill(now);
        let queued = self.queued(p);
        let delay = self.queue_delay(now, p.rtt);
        self.measure_rate(now, p);
        let allowed = (u64::from(self.target_bps) / 8 * QUEUE_TIME_MS / 1000).max(MIN_QUEUE);
        let since = now.saturating_duration_since(self.last_change);
        let once_per_rtt = since >= p.rtt.max(Duration::from_millis(100));
        if queued > allowed {
            if once_per_rtt {
                self.cut(now, 7);
            }
            return Verdict::Hold;
        }
        if delay > QUEUE_DELAY {
            // A queue on the path: send less than what gets through (what
            // left the host lately, which the queue's exit paces), unless
            // the queue already shrinks since the last cut.
            let fresh = self
                .wire_at_cut
                .is_none_or(|w| p.wire_bytes > w + MIN_QUEUE / 4);
            if once_per_rtt && fresh && delay >= self.delay_at_cut {
                self.cut(now, 8);
                if let Some(sent) = self.sent_bps {
                    self.target_bps = self.target_bps.min(sent / 20 * 17).max(self.min_bps);
                }
                self.delay_at_cut = delay;
                self.wire_at_cut = Some(p.wire_bytes);
                // The queue standing on the path is about `delay` long at
                // its rate: send nothing for that long and it is gone,
                // instead of draining at the small difference between the
                // path's rate and the new target.
                self.quiet_until = Some(now + delay.min(Duration::from_secs(1)));
            } else {
                self.delay_at_cut = self.delay_at_cut.min(delay);
            }
        } else {
            self.delay_at_cut = Duration::ZERO;
            if delay < CALM_DELAY && since >= RAISE_AFTER && self.target_bps < self.max_bps {
                let step = (self.target_bps / 4).max(25_000);
                self.target_bps = self.target_bps.saturating_add(step).min(self.max_bps);
                self.last_change = now;
            }
        }
        if self.tokens < 0 || self.quiet_until.is_some_and(|q| now < q) {
            return Verdict::Hold;
        }
        Verdict::Send
    }

    /// Cuts the target to `tenths`/10 (0.85 for 8: a gentler cut).
    fn cut(&mut self, now: Instant, tenths: u32) {
        let next = if tenths == 8 {
            self.target_bps / 20 * 17
        } else {
            self.target_bps / 10 * tenths
        };
        self.target_bps = next.max(self.min_bps);
        self.tokens = self.tokens.min(self.burst());
        self.last_change = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn path(connection: usize, wire_bytes: u64, rtt_ms: u64) -> PathInfo {
        PathInfo {
            connection,
            wire_bytes,
            rtt: MS * u32::try_from(rtt_ms).unwrap(),
        }
    }

    #[test]
    fn holds_while_more_than_the_allowed_queue_waits_and_sends_when_it_drains() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000, t0);
        assert_eq!(p.target_bps(), 500_000, "starts at a quarter of the cap");
        p.target_bps = 2_000_000;
        // 150 ms at 2 Mbit/s = 37.5 kB may wait in the send buffer.
        assert_eq!(p.admit(t0, Some(&path(1, 1000, 50))), Verdict::Send);
        p.wrote(60_000);
        let t1 = t0 + 500 * MS; // the rate limiter has refilled
        assert_eq!(
            p.admit(t1, Some(&path(1, 1000, 50))),
            Verdict::Hold,
            "60 kB queued"
        );
        assert_eq!(
            p.admit(t1, Some(&path(1, 1000 + 40_000, 50))),
            Verdict::Send,
            "drained"
        );
        // Other traffic never becomes room for video.
        let mut q = Pacer::new(2_000_000, t0);
        q.target_bps = 2_000_000;
        assert_eq!(q.admit(t0, Some(&path(1, 0, 50))), Verdict::Send);
        assert_eq!(q.admit(t0, Some(&path(1, 500_000, 50))), Verdict::Send);
        q.wrote(60_000);
        assert_eq!(q.admit(t1, Some(&path(1, 500_000, 50))), Verdict::Hold);
    }

    #[test]
    fn frames_leave_at_the_target_rate_on_average() {
        let t0 = Instant::now();
        let mut p = Pacer::new(800_000, t0);
        p.target_bps = 800_000; // 100 kB/s, the cap: it stays there
        let mut t = t0;
        let mut wire = 0;
        let mut sent = 0u64;
        // 10 kB frames offered every 10 ms (8 Mbit/s) for 5 s, on a path
        // that takes them at once.
        for _ in 0..500 {
            t += 10 * MS;
            if p.admit(t, Some(&path(1, wire, 50))) == Verdict::Send {
                p.wrote(10_000);
                wire += 10_000;
                sent += 10_000;
            }
        }
        let rate = sent as f64 / 5.0;
        assert!((90_000.0..=130_000.0).contains(&rate), "{rate} B/s");
    }

    #[test]
    fn a_queue_on_the_path_cuts_the_target_and_calm_raises_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000, t0);
        let mut t = t0;
        // The lowest round trip: 40 ms.
        p.admit(t, Some(&path(1, 0, 40)));
        // The round trip grows to 300 ms: a router's buffer fills.
        let mut seen = vec![p.target_bps()];
        let mut wire = 0;
        for _ in 0..30 {
            t += 300 * MS;
            wire += 10_000;
            p.admit(t, Some(&path(1, wire, 300)));
            seen.push(p.target_bps());
        }
        // Nothing new sent: the round trip is stale and cuts nothing more.
        let mut q = Pacer::new(2_000_000, t0);
        q.admit(t0, Some(&path(1, 0, 40)));
        q.admit(t0 + 500 * MS, Some(&path(1, 0, 300)));
        let once = q.target_bps();
        q.admit(t0 + 1500 * MS, Some(&path(1, 0, 300)));
        assert_eq!(q.target_bps(), once);
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert!(p.target_bps() < 100_000, "{seen:?}");
        assert_eq!(p.target_bps(), 64_000, "down to the floor: {seen:?}");
        // The queue drains (round trip back to 45 ms): up again.
        t += 2 * RAISE_AFTER;
        p.admit(t, Some(&path(1, wire, 45)));
        assert_eq!(p.target_bps(), 89_000);
        for _ in 0..60 {
            t += RAISE_AFTER;
            p.admit(t, Some(&path(1, wire, 45)));
        }
        assert_eq!(p.target_bps(), 2_000_000, "never above the cap");
        // Jitter below the threshold cuts nothing.
        t += RAISE_AFTER;
        p.admit(t, Some(&path(1, wire, 80)));
        assert_eq!(p.target_bps(), 2_000_000);
    }

    #[test]
    fn a_queue_on_the_path_cuts_to_below_what_gets_through_once_not_while_it_drains() {
        let t0 = Instant::now();
        let mut p = Pacer::new(4_000_000, t0);
        // 300 kbit/s leave the host for two seconds, round trip 40 ms.
        let mut t = t0;
        let mut wire = 0u64;
        for _ in 0..20 {
            p.admit(t, Some(&path(1, wire, 40)));
            t += 100 * MS;
            wire += 3_750;
        }
        // Then the round trip jumps to 400 ms: one cut, to 85% of 300 kbit/s.
        p.admit(t, Some(&path(1, wire, 400)));
        assert!(
            (240_000..=260_000).contains(&p.target_bps()),
            "{}",
            p.target_bps()
        );
        let after = p.target_bps();
        // The queue drains (the round trip falls): no further cut.
        for rtt in [380, 300, 200, 120, 95] {
            t += 500 * MS;
            p.admit(t, Some(&path(1, wire, rtt)));
        }
        assert_eq!(p.target_bps(), after);
    }

    #[test]
    fn after_a_cut_for_a_path_queue_nothing_is_sent_while_it_drains() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000, t0);
        p.admit(t0, Some(&path(1, 0, 40)));
        // A 340 ms queue on the path (a round trip after the last change):
        // cut, then quiet for about that long.
        let t = t0 + 500 * MS;
        assert_eq!(p.admit(t, Some(&path(1, 0, 380))), Verdict::Hold);
        assert_eq!(p.admit(t + 300 * MS, Some(&path(1, 0, 380))), Verdict::Hold);
        assert_eq!(p.admit(t + 400 * MS, Some(&path(1, 0, 60))), Verdict::Send);
    }

    #[test]
    fn an_overflowing_send_buffer_cuts_harder() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000, t0);
        p.target_bps = 2_000_000;
        p.admit(t0, Some(&path(1, 0, 50)));
        p.wrote(1_000_000);
        p.admit(t0 + 200 * MS, Some(&path(1, 0, 50)));
        assert_eq!(p.target_bps(), 1_400_000);
    }

    #[test]
    fn a_new_gop_or_connection_starts_with_an_empty_queue() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000, t0);
        p.admit(t0, Some(&path(1, 0, 50)));
        p.wrote(500_000);
        let t = t0 + Duration::from_secs(10);
        assert_eq!(p.admit(t, Some(&path(1, 0, 50))), Verdict::Hold);
        p.new_gop(Some(&path(1, 10, 50)));
        let t = t + Duration::from_secs(10);
        assert_eq!(
            p.admit(t, Some(&path(1, 10, 50))),
            Verdict::Send,
            "the old GOP was reset"
        );
        p.wrote(500_000);
        let t = t + Duration::from_secs(10);
        assert_eq!(
            p.admit(t, Some(&path(2, 0, 50))),
            Verdict::Send,
            "a resumed connection"
        );
        assert_eq!(
            p.admit(t, None),
            Verdict::Send,
            "disconnected: nothing to pace"
        );
    }
}
