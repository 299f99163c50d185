//! Sensor recordings: the file format, playback ([`ReplaySource`]) and
//! recording ([`Recorder`], [`RecordingSource`]).
//!
//! # File format (`vphone sensor recording v1`)
//!
//! UTF-8 text, one record per line, fields separated by spaces or tabs:
//!
//! ```text
//! # vphone sensor recording v1
//! # comments start with '#'; blank lines are ignored
//! 1000000000 ACCELEROMETER -0.0213 5.3318 8.2301
//! 1000000000 GYROSCOPE 0.0012 -0.0407 0.0113
//! 1005000000 ACCELEROMETER -0.0198 5.3402 8.2264
//! LOC 1000000000 48.137154 11.576124 519 1.4 87.5 3.9 11
//! LOC 1000000000 48.137154 11.576124 - - - - 0
//! ```
//!
//! - Sample line: `<t_ns> <KIND> <v1> ... <vN>`. `t_ns` is the sample's
//!   monotonic timestamp in nanoseconds (any epoch: only differences
//!   matter). `KIND` is the `SensorKind` proto name without the
//!   `SENSOR_KIND_` prefix (`ACCELEROMETER`, `GYROSCOPE`, `MAGNETOMETER`,
//!   `ORIENTATION`, `LIGHT`, `PROXIMITY`, `PRESSURE`,
//!   `AMBIENT_TEMPERATURE`, `RELATIVE_HUMIDITY`,
//!   `ACCELEROMETER_UNCALIBRATED`, `GYROSCOPE_UNCALIBRATED`,
//!   `MAGNETOMETER_UNCALIBRATED`, `HEART_RATE`). Exactly as many finite
//!   decimal values as the kind has (3, 1 or 6), in its proto units.
//! - Location line: `LOC <t_ns> <lat_deg> <lon_deg> <alt_m> <speed_mps>
//!   <bearing_deg> <accuracy_m> [<satellites>]`; `-` for an unknown
//!   optional value; satellites default to 0.
//! - Timestamps never decrease from one record to the next (samples and
//!   locations share one timeline).
//!
//! Any error names the line (`file:LINE: why`).
//!
//! # Playback
//!
//! [`ReplaySource`] maps the recording's timeline onto the handset clock:
//! the first record plays at the first time the source is asked for
//! anything, and every later record `(t - t_first) / speed` after it. When
//! asked for a kind at `now` it returns the newest record of that kind due
//! by `now` that it has not returned yet (so a sampler slower than the
//! recording skips records, a faster one gets nothing new in between), with
//! its timestamp mapped to the handset clock. By default playback **loops**
//! at the end of the file (the loop length is the recording's span plus one
//! mean record interval); with [`ReplayOptions::looping`] false it ends and
//! [`SensorSource::finished`] turns true.

use std::fmt;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sensor_proto::bridge::{Location, SensorCapability, SensorKind};

use super::{Reading, SensorSource, kind_from_name, kind_name};
use crate::ClientError;

/// The first line [`Recorder`] writes.
pub const HEADER: &str = "# vphone sensor recording v1";

/// One record of a recording.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A sensor sample.
    Sample {
        /// Which sensor.
        kind: SensorKind,
        /// Its timestamp, ns.
        timestamp_ns: u64,
        /// Its values.
        values: Vec<f32>,
    },
    /// A location fix (its `timestamp_ns` is the record's time).
    Location(Location),
}

impl Record {
    /// The record's timestamp, ns.
    #[must_use]
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            Self::Sample { timestamp_ns, .. } => *timestamp_ns,
            Self::Location(l) => l.timestamp_ns,
        }
    }
}

/// A parsed recording.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recording {
    /// The records, in file order (non-decreasing time).
    pub records: Vec<Record>,
}

impl Recording {
    /// Parses the text of a recording; `source_name` labels errors.
    ///
    /// # Errors
    ///
    /// [`ClientError::Recording`] naming the first bad line.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ClientError> {
        let mut records = Vec::new();
        let mut last_t = 0u64;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: String| ClientError::Recording {
                source_name: source_name.to_owned(),
                line: i + 1,
                why,
            };
            let record = parse_line(line).map_err(err)?;
            let t = record.timestamp_ns();
            if t < last_t {
                return Err(err(format!(
                    "timestamp {t} is before the previous record's {last_t}"
                )));
            }
            last_t = t;
            records.push(record);
        }
        Ok(Self { records })
    }

    /// Reads and parses a recording file.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`], [`ClientError::Recording`].
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = fs::read_to_string(path).map_err(|e| ClientError::io("reading", path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The recording as text in the file format (with [`HEADER`]).
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for r in &self.records {
            out.push_str(&format_record(r));
            out.push('\n');
        }
        out
    }
}

fn parse_line(line: &str) -> Result<Record, String> {
    let mut fields = line.split_ascii_whitespace();
    let first = fields.next().unwrap_or_default();
    if first == "LOC" {
        return parse_location(fields);
    }
    let timestamp_ns: u64 = first
        .parse()
        .map_err(|_| format!("expected a timestamp in ns or `LOC`, found `{first}`"))?;
    let name = fields
        .next()
        .ok_or_else(|| "missing sensor kind after the timestamp".to_owned())?;
    let kind = kind_from_name(name).ok_or_else(|| format!("unknown sensor kind `{name}`"))?;
    let values = fields.map(parse_f32).collect::<Result<Vec<_>, _>>()?;
    let expected = kind.value_count().unwrap_or(0);
    if values.len() != expected {
        return Err(format!(
            "{name} takes {expected} values, found {}",
            values.len()
        ));
    }
    Ok(Record::Sample {
        kind,
        timestamp_ns,
        values,
    })
}

fn parse_f32(field: &str) -> Result<f32, String> {
    field
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("`{field}` is not a finite number"))
}

fn parse_f64(field: &str, what: &str) -> Result<f64, String> {
    field
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{what}: `{field}` is not a finite number"))
}

fn parse_location<'a>(mut fields: impl Iterator<Item = &'a str>) -> Result<Record, String> {
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| format!("LOC line is missing {what}"))
    };
    let t = next("the timestamp")?;
    let timestamp_ns: u64 = t
        .parse()
        .map_err(|_| format!("LOC timestamp `{t}` is not a whole number of ns"))?;
    let latitude_deg = parse_f64(next("the latitude")?, "latitude")?;
    let longitude_deg = parse_f64(next("the longitude")?, "longitude")?;
    if !(-90.0..=90.0).contains(&latitude_deg) || !(-180.0..=180.0).contains(&longitude_deg) {
        return Err("latitude/longitude out of range".into());
    }
    let mut optional = |what: &str| -> Result<Option<f64>, String> {
        match next(what)? {
            "-" => Ok(None),
            f => parse_f64(f, what).map(Some),
        }
    };
    let altitude_m = optional("the altitude")?;
    let speed_mps = optional("the speed")?;
    let bearing_deg = optional("the bearing")?;
    let accuracy_m = optional("the accuracy")?;
    let satellites = match fields.next() {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| format!("satellites: `{s}` is not a whole number"))?,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected field `{extra}` after the satellites"));
    }
    Ok(Record::Location(Location {
        latitude_deg,
        longitude_deg,
        altitude_m,
        speed_mps,
        bearing_deg,
        accuracy_m,
        satellites,
        timestamp_ns,
    }))
}

/// One record as a line of the file format (no newline).
#[must_use]
pub fn format_record(record: &Record) -> String {
    use std::fmt::Write as _;
    let mut line = String::new();
    match record {
        Record::Sample {
            kind,
            timestamp_ns,
            values,
        } => {
            let _ = write!(line, "{timestamp_ns} {}", kind_name(*kind));
            for v in values {
                // `Display` of floats is the shortest text that parses back
                // to the same value.
                let _ = write!(line, " {v}");
            }
        }
        Record::Location(l) => {
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let _ = write!(
                line,
                "LOC {} {} {} {} {} {} {} {}",
                l.timestamp_ns,
                l.latitude_deg,
                l.longitude_deg,
                opt(l.altitude_m),
                opt(l.speed_mps),
                opt(l.bearing_deg),
                opt(l.accuracy_m),
                l.satellites
            );
        }
    }
    line
}

/// How a [`ReplaySource`] plays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayOptions {
    /// Playback speed: 2.0 plays twice as fast. Must be finite and > 0.
    pub speed: f64,
    /// Start over at the end of the recording (default) or end.
    pub looping: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            looping: true,
        }
    }
}

/// (loop cycle, index) of a record; ordered by playback time.
type Cursor = (u64, usize);

/// The records of one kind (or the locations), times relative to the
/// recording's first record.
#[derive(Debug)]
struct Track<T> {
    times: Vec<u64>,
    items: Vec<T>,
    last: Option<Cursor>,
}

impl<T> Default for Track<T> {
    fn default() -> Self {
        Self {
            times: Vec::new(),
            items: Vec::new(),
            last: None,
        }
    }
}

impl<T> Track<T> {
    /// The newest record due at recording offset `offset` in loop `cycle`
    /// that has not been returned yet.
    fn take_due(&mut self, cycle: u64, offset: u64) -> Option<(Cursor, &T)> {
        let due = self.times.partition_point(|&t| t <= offset);
        let cursor = if due > 0 {
            (cycle, due - 1)
        } else if cycle > 0 && !self.times.is_empty() {
            (cycle - 1, self.times.len() - 1)
        } else {
            return None;
        };
        if self.last.is_some_and(|last| last >= cursor) {
            return None;
        }
        self.last = Some(cursor);
        self.items.get(cursor.1).map(|item| (cursor, item))
    }
}

/// Plays a [`Recording`] back (see the module docs).
#[derive(Debug)]
pub struct ReplaySource {
    name: String,
    options: ReplayOptions,
    tracks: Vec<(SensorKind, Track<Vec<f32>>)>,
    locations: Track<Location>,
    /// Recording span (first to last record), ns.
    span_ns: u64,
    /// Loop length, ns (> 0).
    period_ns: u64,
    /// Handset time the recording's first record plays at.
    origin_ns: Option<u64>,
    /// Recording offset of the latest request.
    elapsed_ns: u64,
}

impl ReplaySource {
    /// A source playing `recording`; `name` is used in capability names.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for a speed that is not finite and
    /// positive.
    pub fn new(
        recording: Recording,
        name: &str,
        options: ReplayOptions,
    ) -> Result<Self, ClientError> {
        if !(options.speed.is_finite() && options.speed > 0.0) {
            return Err(ClientError::InvalidArgument(format!(
                "replay speed must be a positive number, got {}",
                options.speed
            )));
        }
        let first = recording.records.first().map_or(0, Record::timestamp_ns);
        let last = recording.records.last().map_or(0, Record::timestamp_ns);
        let span_ns = last - first;
        let n = recording.records.len() as u64;
        let gap = if n > 1 && span_ns > 0 {
            span_ns / (n - 1)
        } else {
            1_000_000_000
        };
        let mut tracks: Vec<(SensorKind, Track<Vec<f32>>)> = Vec::new();
        let mut locations = Track::default();
        for record in recording.records {
            let t = record.timestamp_ns() - first;
            match record {
                Record::Sample { kind, values, .. } => {
                    let track = if let Some(i) = tracks.iter().position(|(k, _)| *k == kind) {
                        &mut tracks[i].1
                    } else {
                        tracks.push((kind, Track::default()));
                        &mut tracks.last_mut().expect("just pushed").1
                    };
                    track.times.push(t);
                    track.items.push(values);
                }
                Record::Location(l) => {
                    locations.times.push(t);
                    locations.items.push(l);
                }
            }
        }
        if tracks.is_empty() && locations.items.is_empty() {
            tracing::warn!(recording = name, "sensor recording holds no records");
        }
        Ok(Self {
            name: name.to_owned(),
            options,
            tracks,
            locations,
            span_ns,
            period_ns: span_ns.saturating_add(gap).max(1),
            origin_ns: None,
            elapsed_ns: 0,
        })
    }

    /// Loads and plays a recording file.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`], [`ClientError::Recording`],
    /// [`ClientError::InvalidArgument`].
    pub fn open(path: &Path, options: ReplayOptions) -> Result<Self, ClientError> {
        let recording = Recording::load(path)?;
        tracing::info!(
            path = %path.display(),
            records = recording.records.len(),
            looping = options.looping,
            speed = options.speed,
            "replaying sensor recording"
        );
        Self::new(recording, &path.display().to_string(), options)
    }

    /// Where in the recording `now` is: (loop cycle, offset from the first
    /// record), both in recording ns.
    fn position(&mut self, now_ns: u64) -> (u64, u64) {
        let origin = *self.origin_ns.get_or_insert(now_ns);
        let elapsed = (now_ns.saturating_sub(origin) as f64 * self.options.speed) as u64;
        self.elapsed_ns = self.elapsed_ns.max(elapsed);
        if self.options.looping {
            (elapsed / self.period_ns, elapsed % self.period_ns)
        } else {
            (0, elapsed)
        }
    }

    /// Handset time of a record.
    fn handset_time(&self, cursor: Cursor, t: u64) -> u64 {
        let recording_ns = cursor.0.saturating_mul(self.period_ns).saturating_add(t);
        let origin = self.origin_ns.unwrap_or(0);
        origin.saturating_add((recording_ns as f64 / self.options.speed) as u64)
    }
}

impl SensorSource for ReplaySource {
    fn capabilities(&self) -> Vec<SensorCapability> {
        self.tracks
            .iter()
            .map(|(kind, track)| {
                // The recorded rate is the best guess of the max rate.
                let n = track.times.len();
                let span = track.times.last().copied().unwrap_or(0)
                    - track.times.first().copied().unwrap_or(0);
                let rate = if n > 1 && span > 0 {
                    (n - 1) as f64 * 1e9 / span as f64
                } else {
                    0.0
                };
                SensorCapability {
                    kind: *kind as i32,
                    max_rate_hz: rate as f32,
                    name: format!("replay {} ({})", kind_name(*kind), self.name),
                }
            })
            .collect()
    }

    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError> {
        let (cycle, offset) = self.position(now_ns);
        let Some(i) = self.tracks.iter().position(|(k, _)| *k == kind) else {
            return Ok(None);
        };
        let track = &mut self.tracks[i].1;
        let Some((cursor, values)) = track.take_due(cycle, offset) else {
            return Ok(None);
        };
        let values = values.clone();
        let t = track.times[cursor.1];
        Ok(Some(Reading {
            timestamp_ns: self.handset_time(cursor, t),
            values,
        }))
    }

    fn location(&mut self, now_ns: u64) -> Result<Option<Location>, ClientError> {
        let (cycle, offset) = self.position(now_ns);
        let Some((cursor, location)) = self.locations.take_due(cycle, offset) else {
            return Ok(None);
        };
        let location = *location;
        let t = self.locations.times[cursor.1];
        Ok(Some(Location {
            timestamp_ns: self.handset_time(cursor, t),
            ..location
        }))
    }

    fn finished(&self) -> bool {
        !self.options.looping && self.origin_ns.is_some() && self.elapsed_ns > self.span_ns
    }
}

/// Writes records in the file format.
pub struct Recorder<W: Write> {
    out: W,
    label: PathBuf,
}

impl<W: Write> fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("to", &self.label)
            .finish_non_exhaustive()
    }
}

impl Recorder<BufWriter<fs::File>> {
    /// Creates (or truncates) `path` and writes the header.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn create(path: &Path) -> Result<Self, ClientError> {
        let file = fs::File::create(path).map_err(|e| ClientError::io("creating", path, e))?;
        Self::new(BufWriter::new(file), path)
    }
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out` (the header first); `label` names it in
    /// errors.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn new(out: W, label: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let mut recorder = Self {
            out,
            label: label.into(),
        };
        recorder.write_line(HEADER)?;
        Ok(recorder)
    }

    fn write_line(&mut self, line: &str) -> Result<(), ClientError> {
        writeln!(self.out, "{line}").map_err(|e| ClientError::io("writing", &self.label, e))
    }

    /// Records one record.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn write(&mut self, record: &Record) -> Result<(), ClientError> {
        self.write_line(&format_record(record))
    }

    /// Records one sample.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn write_sample(&mut self, kind: SensorKind, reading: &Reading) -> Result<(), ClientError> {
        self.write(&Record::Sample {
            kind,
            timestamp_ns: reading.timestamp_ns,
            values: reading.values.clone(),
        })
    }

    /// Records one location fix.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn write_location(&mut self, location: &Location) -> Result<(), ClientError> {
        self.write(&Record::Location(*location))
    }

    /// Flushes buffered lines.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.out
            .flush()
            .map_err(|e| ClientError::io("flushing", &self.label, e))
    }

    /// Flushes and returns the writer.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn into_inner(mut self) -> Result<W, ClientError> {
        self.flush()?;
        Ok(self.out)
    }
}

/// A source that records everything another source produces
/// (`--record-sensors FILE`). Since the sampler only asks for active
/// sensors at their rates, the recording holds exactly what was sent.
pub struct RecordingSource<S, W: Write> {
    inner: S,
    recorder: Recorder<W>,
}

impl<S: fmt::Debug, W: Write> fmt::Debug for RecordingSource<S, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingSource")
            .field("inner", &self.inner)
            .field("recorder", &self.recorder)
            .finish()
    }
}

impl<S: SensorSource, W: Write> RecordingSource<S, W> {
    /// Records `inner`'s output with `recorder`.
    pub fn new(inner: S, recorder: Recorder<W>) -> Self {
        Self { inner, recorder }
    }

    /// Flushes the recording and returns the parts.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn into_parts(self) -> Result<(S, W), ClientError> {
        Ok((self.inner, self.recorder.into_inner()?))
    }

    /// Flushes the recording.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.recorder.flush()
    }
}

impl<S: SensorSource, W: Write + Send> SensorSource for RecordingSource<S, W> {
    fn capabilities(&self) -> Vec<SensorCapability> {
        self.inner.capabilities()
    }

    fn sample(&mut self, kind: SensorKind, now_ns: u64) -> Result<Option<Reading>, ClientError> {
        let reading = self.inner.sample(kind, now_ns)?;
        if let Some(r) = &reading {
            self.recorder.write_sample(kind, r)?;
        }
        Ok(reading)
    }

    fn location(&mut self, now_ns: u64) -> Result<Option<Location>, ClientError> {
        let location = self.inner.location(now_ns)?;
        if let Some(l) = &location {
            self.recorder.write_location(l)?;
        }
        Ok(location)
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# vphone sensor recording v1
   # indented comment

1000 ACCELEROMETER 0 0 9.80665
1000 LIGHT 300
2000\tGYROSCOPE  0.5 -0.25 1e-3
LOC 2500 48.1 11.5 519 1.4 90 3.9 7
LOC 3000 48.2 11.6 - - - -
";

    #[test]
    fn parses_the_documented_format() {
        let rec = Recording::parse(SAMPLE, "t").unwrap();
        assert_eq!(rec.records.len(), 5);
        assert_eq!(
            rec.records[0],
            Record::Sample {
                kind: SensorKind::Accelerometer,
                timestamp_ns: 1000,
                values: vec![0.0, 0.0, 9.806_65]
            }
        );
        assert_eq!(
            rec.records[2],
            Record::Sample {
                kind: SensorKind::Gyroscope,
                timestamp_ns: 2000,
                values: vec![0.5, -0.25, 0.001]
            }
        );
        let Record::Location(l) = &rec.records[3] else {
            panic!("not a location");
        };
        assert_eq!(l.bearing_deg, Some(90.0));
        assert_eq!(l.satellites, 7);
        let Record::Location(l) = &rec.records[4] else {
            panic!("not a location");
        };
        assert_eq!((l.altitude_m, l.accuracy_m, l.satellites), (None, None, 0));
        // Text round trip.
        assert_eq!(Recording::parse(&rec.to_text(), "t").unwrap(), rec);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("1 ACCELEROMETER 1 2\n", 1, "takes 3 values"),
            ("# c\n\n1 WARP_DRIVE 1\n", 3, "unknown sensor kind"),
            ("1 LIGHT 1\nx LIGHT 1\n", 2, "timestamp"),
            ("5 LIGHT 1\n4 LIGHT 1\n", 2, "before the previous"),
            ("1 LIGHT nan\n", 1, "finite"),
            ("1 LIGHT\n", 1, "takes 1 values"),
            ("1\n", 1, "missing sensor kind"),
            ("LOC 1 48 11 - - -\n", 1, "accuracy"),
            ("LOC 1 95 11 - - - -\n", 1, "out of range"),
            ("LOC 1 48 11 - - - - 3 extra\n", 1, "unexpected field"),
            ("LOC -1 48 11 - - - -\n", 1, "timestamp"),
        ];
        for (text, line, why) in cases {
            match Recording::parse(text, "rec.txt") {
                Err(ClientError::Recording {
                    source_name,
                    line: l,
                    why: w,
                }) => {
                    assert_eq!((source_name.as_str(), l), ("rec.txt", line), "{text:?}");
                    assert!(w.contains(why), "{text:?}: {w}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let err = Recording::parse("1 LIGHT 1 2\n", "f.rec").unwrap_err();
        assert!(err.to_string().starts_with("f.rec:1: "), "{err}");
    }

    fn light_recording(times: &[u64]) -> Recording {
        Recording {
            records: times
                .iter()
                .enumerate()
                .map(|(i, &t)| Record::Sample {
                    kind: SensorKind::Light,
                    timestamp_ns: t,
                    values: vec![i as f32],
                })
                .collect(),
        }
    }

    #[test]
    fn playback_honours_relative_timing_and_speed() {
        // Records at 0, 100, 200, 300 ms (file epoch 5 s); played at 2x from
        // handset time 1 s.
        let rec = light_recording(&[5_000_000_000, 5_100_000_000, 5_200_000_000, 5_300_000_000]);
        let mut src = ReplaySource::new(
            rec,
            "t",
            ReplayOptions {
                speed: 2.0,
                looping: false,
            },
        )
        .unwrap();
        let k = SensorKind::Light;
        let base = 1_000_000_000;
        let r = src.sample(k, base).unwrap().unwrap();
        assert_eq!((r.values[0], r.timestamp_ns), (0.0, base));
        assert!(src.sample(k, base + 49_000_000).unwrap().is_none());
        let r = src.sample(k, base + 50_000_000).unwrap().unwrap();
        assert_eq!((r.values[0], r.timestamp_ns), (1.0, base + 50_000_000));
        // A slow reader skips to the newest due record.
        let r = src.sample(k, base + 140_000_000).unwrap().unwrap();
        assert_eq!((r.values[0], r.timestamp_ns), (2.0, base + 100_000_000));
        assert!(!src.finished());
        let r = src.sample(k, base + 10_000_000_000).unwrap().unwrap();
        assert_eq!((r.values[0], r.timestamp_ns), (3.0, base + 150_000_000));
        assert!(src.sample(k, base + 10_000_000_001).unwrap().is_none());
        assert!(src.finished());
        // Kinds not in the recording produce nothing.
        assert!(src.sample(SensorKind::Gyroscope, base).unwrap().is_none());
    }

    #[test]
    fn playback_loops_by_default() {
        // Span 300 ms, mean interval 100 ms: loop length 400 ms.
        let rec = light_recording(&[0, 100, 200, 300].map(|ms| ms * 1_000_000));
        let mut src = ReplaySource::new(rec, "t", ReplayOptions::default()).unwrap();
        let k = SensorKind::Light;
        let mut got = Vec::new();
        for ms in (0..1000).step_by(10) {
            if let Some(r) = src.sample(k, ms * 1_000_000).unwrap() {
                got.push((r.values[0], r.timestamp_ns / 1_000_000));
            }
        }
        let expected: Vec<(f32, u64)> = (0..10u64)
            .map(|i| ((i % 4) as f32, (i / 4) * 400 + (i % 4) * 100))
            .collect();
        assert_eq!(got, expected);
        assert!(!src.finished());
    }

    #[test]
    fn replay_rejects_bad_speed() {
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                ReplaySource::new(
                    Recording::default(),
                    "t",
                    ReplayOptions {
                        speed,
                        looping: true
                    }
                )
                .is_err()
            );
        }
    }
}
