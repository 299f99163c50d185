//! Sound: 48 kHz mono PCM (`i16`) to Opus and back, and the small tools
//! that tell what a sound is (level, dominant frequency) and make one (a
//! tone). Opus comes from the reference libopus through the `opus` crate:
//! the codec every browser and phone decodes, with packet-loss concealment
//! and discontinuous transmission (DTX) built in.

use std::f32::consts::TAU;

use bytes::Bytes;

use crate::MediaError;

/// The sample rate of every coded frame, Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per millisecond at [`SAMPLE_RATE`].
pub const SAMPLES_PER_MS: usize = (SAMPLE_RATE / 1000) as usize;

/// The largest Opus packet we produce or accept (RFC 6716 allows 1275 bytes
/// per frame; a datagram holds about 1200).
pub const MAX_PACKET: usize = 1000;

/// Frame lengths the bridge allows, ms.
pub const FRAME_MS: [u32; 2] = [10, 20];

fn opus_err(what: &'static str) -> impl Fn(opus::Error) -> MediaError {
    move |e| MediaError::Audio(format!("{what}: {e}"))
}

fn check_frame_ms(frame_ms: u32) -> Result<usize, MediaError> {
    if FRAME_MS.contains(&frame_ms) {
        Ok(frame_ms as usize * SAMPLES_PER_MS)
    } else {
        Err(MediaError::Invalid {
            what: "audio frame length",
            why: format!("{frame_ms} ms; use 10 or 20"),
        })
    }
}

/// What a sound is for: tunes the encoder.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Content {
    /// A phone's sound (music, games, tones): full band.
    Media,
    /// A microphone: speech.
    Voice,
}

/// An Opus encoder for mono 48 kHz frames of a fixed length, with DTX.
#[derive(Debug)]
pub struct OpusEncoder {
    enc: opus::Encoder,
    frame: usize,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// An encoder of `frame_ms` (10 or 20) frames at `bitrate_bps`.
    /// DTX is on: a frame of silence codes to nothing ([`Self::encode`]
    /// returns `None`) but for a comfort-noise update every 400 ms. In-band
    /// FEC is on for speech, so one lost frame is rebuilt from the next.
    ///
    /// # Errors
    /// [`MediaError::Invalid`] for a frame length or bitrate out of range;
    /// [`MediaError::Audio`] when libopus refuses.
    pub fn new(frame_ms: u32, bitrate_bps: u32, content: Content) -> Result<Self, MediaError> {
        let frame = check_frame_ms(frame_ms)?;
        if !(6_000..=510_000).contains(&bitrate_bps) {
            return Err(MediaError::Invalid {
                what: "audio bitrate",
                why: format!("{bitrate_bps} bit/s; Opus takes 6000..510000"),
            });
        }
        let app = match content {
            Content::Media => opus::Application::LowDelay,
            Content::Voice => opus::Application::Voip,
        };
        let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, app)
            .map_err(opus_err("opening the Opus encoder"))?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate_bps as i32))
            .map_err(opus_err("setting the bitrate"))?;
        enc.set_dtx(true).map_err(opus_err("enabling DTX"))?;
        if content == Content::Voice {
            enc.set_inband_fec(true)
                .map_err(opus_err("enabling in-band FEC"))?;
            enc.set_packet_loss_perc(5)
                .map_err(opus_err("setting the expected loss"))?;
        }
        Ok(Self {
            enc,
            frame,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Samples per frame.
    #[must_use]
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Encodes one frame (exactly [`Self::frame_samples`] samples). `None`
    /// when DTX says the frame need not be sent (silence).
    ///
    /// # Errors
    /// [`MediaError::BufferSize`] for a wrong length; [`MediaError::Audio`]
    /// when libopus fails.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<Bytes>, MediaError> {
        if pcm.len() != self.frame {
            return Err(MediaError::BufferSize {
                expected: self.frame,
                actual: pcm.len(),
            });
        }
        let n = self
            .enc
            .encode(pcm, &mut self.out)
            .map_err(opus_err("encoding a frame"))?;
        // libopus marks a DTX frame by coding it in at most 2 bytes (the
        // TOC byte alone); such a frame is not to be transmitted.
        Ok((n > 2).then(|| Bytes::copy_from_slice(&self.out[..n])))
    }
}

/// An Opus decoder for mono 48 kHz frames, with loss concealment.
#[derive(Debug)]
pub struct OpusDecoder {
    dec: opus::Decoder,
    frame: usize,
    buf: Vec<i16>,
}

impl OpusDecoder {
    /// A decoder of `frame_ms` (10 or 20) frames.
    ///
    /// # Errors
    /// [`MediaError::Invalid`] for a frame length; [`MediaError::Audio`].
    pub fn new(frame_ms: u32) -> Result<Self, MediaError> {
        let frame = check_frame_ms(frame_ms)?;
        let dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
            .map_err(opus_err("opening the Opus decoder"))?;
        Ok(Self {
            dec,
            frame,
            // The largest Opus packet holds 120 ms.
            buf: vec![0; 120 * SAMPLES_PER_MS],
        })
    }

    /// Samples per frame.
    #[must_use]
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Decodes one packet; the samples are appended to `out`.
    ///
    /// # Errors
    /// [`MediaError::Audio`] for a packet that is not Opus (the decoder
    /// stays usable).
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<usize, MediaError> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Err(MediaError::Audio(format!(
                "an Opus packet of {} bytes",
                packet.len()
            )));
        }
        let n = self
            .dec
            .decode(packet, &mut self.buf, false)
            .map_err(opus_err("decoding a frame"))?;
        out.extend_from_slice(&self.buf[..n]);
        Ok(n)
    }

    /// Rebuilds a lost frame: from the next packet's in-band FEC when that
    /// packet is given (and carries it), else by concealment (the decoder
    /// extends the last sound and fades it out). Appends one frame to `out`.
    ///
    /// # Errors
    /// [`MediaError::Audio`] when libopus fails.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut Vec<i16>) -> Result<(), MediaError> {
        let frame = self.frame;
        let n = match next {
            Some(p) if !p.is_empty() && p.len() <= MAX_PACKET => self
                .dec
                .decode(p, &mut self.buf[..frame], true)
                .map_err(opus_err("recovering a frame"))?,
            _ => self
                .dec
                .decode(&[], &mut self.buf[..frame], false)
                .map_err(opus_err("concealing a frame"))?,
        };
        out.extend_from_slice(&self.buf[..n]);
        // A short answer (it should not happen) is padded to a whole frame.
        out.extend(std::iter::repeat_n(0, frame.saturating_sub(n)));
        Ok(())
    }
}

/// The level of `pcm`, dB relative to full scale (RMS); -120 for silence.
#[must_use]
pub fn level_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return -120.0;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / pcm.len() as f64).sqrt() / 32768.0;
    if rms <= 1e-6 {
        -120.0
    } else {
        (20.0 * rms.log10()) as f32
    }
}

/// The strongest frequency in `pcm` (sampled at `rate` Hz), by an FFT with
/// a Hann window and parabolic interpolation between bins (accurate to a
/// few Hz for a steady tone over 50 ms or more). `None` for quiet input
/// (below -50 dBFS) or fewer than 256 samples.
#[must_use]
pub fn dominant_hz(pcm: &[i16], rate: u32) -> Option<f32> {
    use rustfft::FftPlanner;
    use rustfft::num_complex::Complex;

    if pcm.len() < 256 || level_dbfs(pcm) < -50.0 {
        return None;
    }
    let n = pcm.len().min(16_384);
    let pcm = &pcm[pcm.len() - n..];
    let mut buf: Vec<Complex<f32>> = pcm
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (TAU * i as f32 / (n - 1) as f32).cos();
            Complex::new(f32::from(s) * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let mags: Vec<f32> = buf[..n / 2].iter().map(|c| c.norm()).collect();
    let (k, _) = mags
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let (a, b, c) = (
        mags[k - 1],
        mags[k],
        mags.get(k + 1).copied().unwrap_or(0.0),
    );
    let denom = a - 2.0 * b + c;
    let delta = if denom.abs() > f32::EPSILON {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some((k as f32 + delta) * rate as f32 / n as f32)
}

/// A sine generator that keeps its phase from call to call.
#[derive(Clone, Debug)]
pub struct Tone {
    /// Frequency, Hz.
    pub hz: f32,
    /// Peak amplitude, 0..1 of full scale.
    pub amplitude: f32,
    rate: f32,
    phase: f32,
}

impl Tone {
    /// A tone of `hz` at `amplitude` (0..1) sampled at `rate` Hz.
    #[must_use]
    pub fn new(hz: f32, amplitude: f32, rate: u32) -> Self {
        Self {
            hz,
            amplitude: amplitude.clamp(0.0, 1.0),
            rate: rate as f32,
            phase: 0.0,
        }
    }

    /// Adds the next `out.len()` samples of the tone to `out`, saturating.
    pub fn add_to(&mut self, out: &mut [i16]) {
        let step = TAU * self.hz / self.rate;
        let amp = self.amplitude * 32767.0;
        for s in out {
            let v = f32::from(*s) + amp * self.phase.sin();
            *s = v.clamp(-32768.0, 32767.0) as i16;
            self.phase = (self.phase + step) % TAU;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, amp: f32, ms: usize) -> Vec<i16> {
        let mut v = vec![0; ms * SAMPLES_PER_MS];
        Tone::new(hz, amp, SAMPLE_RATE).add_to(&mut v);
        v
    }

    #[test]
    fn a_tone_survives_opus_with_its_pitch() {
        let pcm = tone(1234.0, 0.5, 400);
        let mut enc = OpusEncoder::new(20, 64_000, Content::Media).unwrap();
        let mut dec = OpusDecoder::new(20).unwrap();
        let mut out = Vec::new();
        for f in pcm.chunks(enc.frame_samples()) {
            let p = enc.encode(f).unwrap().expect("a tone is not silence");
            assert!(p.len() < 400, "{} bytes", p.len());
            dec.decode(&p, &mut out).unwrap();
        }
        assert_eq!(out.len(), pcm.len());
        let hz = dominant_hz(&out[out.len() / 2..], SAMPLE_RATE).unwrap();
        assert!((hz - 1234.0).abs() < 5.0, "{hz}");
        assert!((level_dbfs(&out[out.len() / 2..]) - level_dbfs(&pcm)).abs() < 1.5);
    }

    #[test]
    fn silence_is_not_sent_but_for_rare_updates() {
        let mut enc = OpusEncoder::new(20, 64_000, Content::Media).unwrap();
        let silence = vec![0i16; enc.frame_samples()];
        let sent = (0..100)
            .filter(|_| enc.encode(&silence).unwrap().is_some())
            .count();
        // 2 s of silence: a handful of frames while DTX settles, then one
        // every 400 ms.
        assert!(sent <= 15, "{sent} of 100 silent frames sent");
    }

    #[test]
    fn a_lost_frame_is_concealed_and_garbage_is_refused() {
        let pcm = tone(440.0, 0.3, 100);
        let mut enc = OpusEncoder::new(20, 32_000, Content::Voice).unwrap();
        let mut dec = OpusDecoder::new(20).unwrap();
        let packets: Vec<Bytes> = pcm
            .chunks(enc.frame_samples())
            .map(|f| enc.encode(f).unwrap().unwrap())
            .collect();
        let mut out = Vec::new();
        dec.decode(&packets[0], &mut out).unwrap();
        dec.conceal(Some(&packets[2]), &mut out).unwrap();
        dec.decode(&packets[2], &mut out).unwrap();
        dec.conceal(None, &mut out).unwrap();
        assert_eq!(out.len(), 4 * 960);
        assert!(
            level_dbfs(&out[960..1920]) > -30.0,
            "the rebuilt frame has sound"
        );
        let e = dec.decode(&[0xff; 3], &mut out);
        assert!(e.is_err() || out.len() >= 4 * 960);
        assert!(dec.decode(&[], &mut out).is_err());
        dec.decode(&packets[3], &mut out).unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let e = OpusEncoder::new(15, 64_000, Content::Media).unwrap_err();
        assert!(e.to_string().contains("10 or 20"), "{e}");
        let e = OpusEncoder::new(20, 1, Content::Media).unwrap_err();
        assert!(e.to_string().contains("bitrate"), "{e}");
        let mut enc = OpusEncoder::new(10, 64_000, Content::Media).unwrap();
        assert!(enc.encode(&[0; 10]).is_err());
    }

    #[test]
    fn dominant_frequency_and_level() {
        assert_eq!(dominant_hz(&vec![0; 4800], SAMPLE_RATE), None);
        let hz = dominant_hz(&tone(300.0, 0.1, 100), SAMPLE_RATE).unwrap();
        assert!((hz - 300.0).abs() < 3.0, "{hz}");
        let mut mix = tone(1500.0, 0.5, 100);
        Tone::new(220.0, 0.05, SAMPLE_RATE).add_to(&mut mix);
        let hz = dominant_hz(&mix, SAMPLE_RATE).unwrap();
        assert!((hz - 1500.0).abs() < 3.0, "{hz}");
        let db = level_dbfs(&tone(1000.0, 0.5, 100));
        assert!((db - -9.03).abs() < 0.2, "{db}");
    }
}
