// vphone browser handset: the phone's screen (WebCodecs), touches, keys,
// motion sensors and location over one WebTransport session to the host.
// The wire format is documented in device-bridge/src/web/protocol.rs.
'use strict';

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const PROOF_CONTEXT = 'vphone web handset proof v1\n';
const SET_CONTEXT = 'vphone webtransport certificates v1';
// Codes after which trying again cannot help until the operator acts.
const FINAL = new Set(['REVOKED', 'UNAUTHORIZED', 'TOKEN_INVALID', 'TOKEN_REUSED',
  'TOKEN_EXPIRED', 'NOT_ASSIGNED', 'PHONE_NOT_FOUND', 'VERSION_UNSUPPORTED', 'KICKED']);
const WHY = {
  REVOKED: 'This browser\'s access was revoked by the operator.',
  UNAUTHORIZED: 'This browser is not enrolled with this host. Ask the operator for a link (vphonectl handset enroll --web).',
  TOKEN_INVALID: 'The enrollment link is not valid. Ask the operator for a new one.',
  TOKEN_REUSED: 'The enrollment link was already used. Ask the operator for a new one.',
  TOKEN_EXPIRED: 'The enrollment link has expired. Ask the operator for a new one.',
  NOT_ASSIGNED: 'This browser may not use that phone.',
  PHONE_NOT_FOUND: 'The phone does not exist on this host.',
  PHONE_BUSY: 'The phone is in use by another handset. Trying again shortly…',
  PHONE_STOPPED: 'The phone stopped.',
  KICKED: 'The operator ended this session.',
  SHUTDOWN: 'The host is shutting down.',
};

// What tests and the stats line read.
const stats = {
  state: 'starting', code: '', message: '', phone: '', handset: '', session: '',
  decoded: 0, frames: 0, bytes: 0, dropped: 0, keyframes: 0, fps: 0, kbps: 0,
  g2g: [], decodeMs: [], offsetMs: null, audioFrames: 0, audioPeak: 0, audioLate: 0, rttMs: null, sensorsSent: 0, touchesSent: 0,
};
window.vphone = { stats };

// ----- small helpers ---------------------------------------------------------

function b64(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}
function unb64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }
function hex(bytes) { return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join(''); }
function unhex(h) { return Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16)); }
function nowMs() { return performance.timeOrigin + performance.now(); }
function nowNs() { return Math.round(nowMs() * 1e6); }
function log(...a) { console.log('[vphone]', ...a); }

function show(message, kind) {
  const m = $('message');
  m.textContent = message;
  m.className = kind || '';
  m.hidden = !message;
}
function status(text) { $('status').textContent = text; }

// ----- storage: this browser's identity and the host it enrolled with --------

function db() {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open('vphone', 1);
    r.onupgradeneeded = () => r.result.createObjectStore('kv');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
async function dbGet(key) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const r = d.transaction('kv').objectStore('kv').get(key);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
async function dbPut(key, value) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction('kv', 'readwrite');
    t.objectStore('kv').put(value, key);
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
  });
}

// The key never leaves this browser: WebCrypto makes it non-extractable and
// IndexedDB keeps the CryptoKey object itself.
async function identity() {
  let id = await dbGet('identity');
  if (!id) {
    const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const spki = await crypto.subtle.exportKey('spki', pair.publicKey);
    id = { privateKey: pair.privateKey, spki: b64(spki) };
    await dbPut('identity', id);
  }
  return id;
}

function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox' : /Chrome\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Linux/.test(ua) ? 'Linux' : /Mac OS/.test(ua) ? 'macOS' : /Windows/.test(ua) ? 'Windows' : '';
  return (os ? `${browser} on ${os}` : browser).slice(0, 64);
}

// The link's fragment: #enroll=TOKEN&pin=PIN&certs=HASH,HASH (never sent to
// a server); removed from the address bar once read.
function takeLink() {
  if (!location.hash.includes('enroll=')) return null;
  const p = new URLSearchParams(location.hash.slice(1));
  history.replaceState(null, '', location.pathname);
  const link = { token: p.get('enroll'), pin: (p.get('pin') || '').toLowerCase(), certs: (p.get('certs') || '').split(',').filter((h) => /^[0-9a-f]{64}$/.test(h)) };
  if (!link.token || !/^[0-9a-f]{64}$/.test(link.pin)) return null;
  return link;
}

// Checks /webtransport.json against the pinned host key; returns the
// certificate hashes to trust and the session path.
async function hostCerts(host) {
  let info;
  try {
    const r = await fetch('/webtransport.json', { cache: 'no-store' });
    info = await r.json();
  } catch (e) {
    log('no /webtransport.json, using the stored hashes', e);
    return { path: '/wt', certs: host.certs };
  }
  const spki = unb64(info.host_spki);
  const pin = hex(await crypto.subtle.digest('SHA-256', spki));
  if (pin !== host.pin) {
    throw Object.assign(new Error('host key mismatch: this host is not the one this browser enrolled with (pin ' + pin.slice(0, 16) + '…, enrolled ' + host.pin.slice(0, 16) + '…)'), { final: true, code: 'HOST_KEY_MISMATCH' });
  }
  let certs = host.certs;
  if (info.sig) {
    const key = await crypto.subtle.importKey('spki', spki, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
    const msg = [SET_CONTEXT, ...info.certs.map((c) => c.hash)].join('\n');
    const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, unb64(info.sig), enc.encode(msg));
    if (ok) {
      const now = Date.now() / 1000;
      certs = [...new Set([...info.certs.filter((c) => c.not_after > now).map((c) => c.hash), ...host.certs])];
      host.certs = certs.slice(0, 4);
      await dbPut('host', host);
    } else {
      log('the certificate list is not signed by the enrolled host key; ignoring it');
    }
  }
  return { path: info.path || '/wt', certs };
}

// ----- the session -----------------------------------------------------------

class LineReader {
  constructor(readable) { this.reader = readable.getReader(); this.buf = ''; this.dec = new TextDecoder(); }
  async next() {
    for (;;) {
      const i = this.buf.indexOf('\n');
      if (i >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        return JSON.parse(line);
      }
      const { value, done } = await this.reader.read();
      if (done) return null;
      this.buf += this.dec.decode(value, { stream: true });
    }
  }
}

class ByteReader {
  constructor(readable) { this.reader = readable.getReader(); this.chunks = []; this.have = 0; }
  async exactly(n) {
    while (this.have < n) {
      const { value, done } = await this.reader.read();
      if (done) return null;
      this.chunks.push(value);
      this.have += value.length;
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const take = Math.min(c.length, n - off);
      out.set(c.subarray(0, take), off);
      off += take;
      if (take === c.length) this.chunks.shift(); else this.chunks[0] = c.subarray(take);
    }
    this.have -= n;
    return out;
  }
  cancel() { this.reader.cancel().catch(() => {}); }
}

let session = null;

class Session {
  constructor(wt, writer, lines, welcome) {
    this.wt = wt; this.writer = writer; this.lines = lines;
    this.width = welcome.width; this.height = welcome.height;
    this.active = new Map();
    this.location = false;
    this.seq = new Map();
    this.pending = new Map();
    this.decoder = null;
    this.needKey = true;
    this.gop = null;
    this.pings = 0;
    this.closed = false;
    this.pointers = new Map();
    this.datagrams = wt.datagrams.writable.getWriter();
  }

  send(msg) {
    if (this.closed) return;
    this.writer.write(enc.encode(JSON.stringify(msg) + '\n')).catch(() => {});
  }

  start() {
    const canvas = $('screen');
    canvas.width = this.width; canvas.height = this.height;
    this.ctx = canvas.getContext('2d', { alpha: false, desynchronized: true });
    this.controlLoop();
    this.videoLoop();
    this.audioLoop();
    this.ping();
    this.statsTimer = setInterval(() => this.tick(), 1000);
  }

  async controlLoop() {
    try {
      for (;;) {
        const m = await this.lines.next();
        if (!m) break;
        if (m.t === 'pong') this.pong(m);
        else if (m.t === 'active') this.setActive(m);
        else if (m.t === 'video') this.configure();
        else if (m.t === 'closed') { this.end(m.code, m.message); return; }
      }
      this.end('CONNECTION_LOST', 'the host closed the session');
    } catch (e) {
      this.end('CONNECTION_LOST', 'connection lost: ' + (e && e.message ? e.message : e));
    }
  }

  // Clock: host minus page, from the ping with the smallest round trip.
  ping() {
    if (this.closed) return;
    this.send({ t: 'ping', id: ++this.pings, c: nowNs() });
    setTimeout(() => this.ping(), this.pings < 8 ? 150 : 2000);
  }
  // The offset of the ping with the smallest round trip among the last 16
  // is the most accurate (its one-way asymmetry is smallest).
  pong(m) {
    const t4 = nowMs();
    const c = m.c / 1e6, r = m.r / 1e6, s = m.s / 1e6;
    const rtt = (t4 - c) - (s - r);
    this.clock = (this.clock || []).concat([{ rtt, offset: ((r - c) + (s - t4)) / 2 }]).slice(-16);
    const best = this.clock.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    stats.rttMs = best.rtt;
    if (stats.offsetMs !== best.offset) {
      stats.offsetMs = best.offset;
      this.send({ t: 'stats', offset_ns: Math.round(stats.offsetMs * 1e6), decoded: stats.decoded, g2g_us: Math.round((stats.g2g[stats.g2g.length - 1] || 0) * 1000) });
    }
  }

  configure() {
    if (this.decoder && this.decoder.state !== 'closed') return;
    this.decoder = new VideoDecoder({
      output: (frame) => this.output(frame),
      error: (e) => { log('decoder error', e.message); this.decoder = null; this.needKey = true; this.send({ t: 'keyframe' }); this.configure(); },
    });
    this.decoder.configure({ codec: 'avc1.42E01F', optimizeForLatency: true, hardwareAcceleration: 'no-preference' });
    this.needKey = true;
  }

  // Glass-to-glass ends when the picture is decoded (as the native
  // companion measures it); drawing it on the canvas follows. The session's
  // first picture (seq 1) was drawn before the session began: not timed.
  output(frame) {
    const now = nowMs();
    const sent = this.pending.get(frame.timestamp);
    this.pending.delete(frame.timestamp);
    stats.decoded++;
    if (sent !== undefined) {
      stats.decodeMs.push(now - sent.at);
      if (stats.decodeMs.length > 2000) stats.decodeMs.splice(0, 1000);
      if (stats.offsetMs !== null && frame.timestamp !== 1) {
        stats.g2g.push(now - (sent.capture / 1000 - stats.offsetMs));
        if (stats.g2g.length > 2000) stats.g2g.splice(0, 1000);
      }
    }
    this.ctx.drawImage(frame, 0, 0, this.width, this.height);
    frame.close();
  }

  async videoLoop() {
    const streams = this.wt.incomingUnidirectionalStreams.getReader();
    for (;;) {
      let next;
      try { next = await streams.read(); } catch (e) { return; }
      if (next.done) return;
      if (this.gop) this.gop.cancel();
      const gop = new ByteReader(next.value);
      this.gop = gop;
      this.readGop(gop).catch((e) => log('video stream', e && e.message));
    }
  }

  async readGop(gop) {
    const head = await gop.exactly(20);
    if (!head) return;
    if (head[0] !== 0x56 || head[1] !== 0x50 || head[2] !== 0x48 || head[3] !== 0x56) throw new Error('not a video stream'); // "VPHV"
    this.configure();
    for (;;) {
      const lenBytes = await gop.exactly(4);
      if (!lenBytes || this.gop !== gop) return;
      const len = new DataView(lenBytes.buffer).getUint32(0);
      const body = await gop.exactly(len);
      if (!body || this.gop !== gop) return;
      const v = new DataView(body.buffer);
      const key = (body[0] & 1) === 1;
      const capture = Number(v.getBigUint64(1));
      const seq = Number(v.getBigUint64(9));
      stats.frames++; stats.bytes += len;
      if (key) stats.keyframes++;
      if (this.needKey && !key) { stats.dropped++; continue; }
      if (!this.decoder || this.decoder.state !== 'configured') { stats.dropped++; continue; }
      // A decoder that falls behind skips to the next keyframe.
      if (this.decoder.decodeQueueSize > 3 && !key) { stats.dropped++; this.needKey = true; this.send({ t: 'keyframe' }); continue; }
      this.needKey = false;
      this.pending.set(seq, { capture, at: nowMs() });
      if (this.pending.size > 64) this.pending.delete(this.pending.keys().next().value);
      this.decoder.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp: seq, data: body.subarray(17) }));
    }
  }

  // The phone's sound: Opus datagrams -> AudioDecoder -> scheduled on an
  // AudioContext a little ahead (40 ms) of now; a late frame is dropped.
  async audioLoop() {
    if (!('AudioDecoder' in window)) return;
    const reader = this.wt.datagrams.readable.getReader();
    this.nextPlay = 0;
    const decoder = new AudioDecoder({
      output: (data) => this.play(data),
      error: (e) => log('audio decoder', e.message),
    });
    decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
    this.audioDecoder = decoder;
    for (;;) {
      let d;
      try { d = await reader.read(); } catch (e) { return; }
      if (d.done || this.closed) return;
      const b = d.value;
      if (b.length < 18 || b[0] !== 0x41) continue;
      const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const seq = Number(v.getBigUint64(1));
      if (decoder.state === 'configured') {
        decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: seq * 20000, data: b.subarray(17) }));
      }
    }
  }

  play(data) {
    const n = data.numberOfFrames;
    const pcm = new Float32Array(n);
    data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
    data.close();
    stats.audioFrames++;
    let peak = 0;
    for (const x of pcm) peak = Math.max(peak, Math.abs(x));
    stats.audioPeak = Math.max(stats.audioPeak * 0.98, peak);
    const ctx = audio.context;
    if (!ctx || ctx.state !== 'running') return;
    const buffer = ctx.createBuffer(1, n, 48000);
    buffer.copyToChannel(pcm, 0);
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(ctx.destination);
    const now = ctx.currentTime;
    if (this.nextPlay < now) this.nextPlay = now + 0.04;
    if (this.nextPlay > now + 0.2) { stats.audioLate++; this.nextPlay = now + 0.04; }
    src.start(this.nextPlay);
    this.nextPlay += n / 48000;
  }

  setActive(m) {
    this.active = new Map(m.sensors.map((s) => [s.kind, s.rate_hz]));
    this.location = m.location;
    listenMotion(this.active);
    sensors.update();
  }

  // Latest wins: one datagram per browser event with what the phone listens to.
  sendSamples(samples) {
    const want = samples.filter((s) => this.active.has(s.k));
    if (!want.length || this.closed) return;
    for (const s of want) { const n = (this.seq.get(s.k) || 0) + 1; this.seq.set(s.k, n); s.n = n; }
    this.datagrams.write(enc.encode(JSON.stringify({ s: want }))).catch(() => {});
    stats.sensorsSent += want.length;
  }

  touch(action, e) {
    const canvas = $('screen');
    const r = canvas.getBoundingClientRect();
    const scale = Math.min(r.width / this.width, r.height / this.height);
    const ox = r.left + (r.width - this.width * scale) / 2;
    const oy = r.top + (r.height - this.height * scale) / 2;
    const x = Math.max(0, Math.min(this.width - 1, (e.clientX - ox) / scale));
    const y = Math.max(0, Math.min(this.height - 1, (e.clientY - oy) / scale));
    const id = e.pointerId & 0xffff;
    if (action === 'down' || action === 'move') this.pointers.set(id, { id, x, y, p: e.pressure || 0.5 });
    else this.pointers.set(id, { id, x, y, p: 0 });
    const pointers = [...this.pointers.values()];
    if (action === 'up' || action === 'cancel') this.pointers.delete(id);
    this.send({ t: 'touch', action, id, pointers, ts: nowNs() });
    stats.touchesSent++;
  }

  key(e, action) {
    const code = KEYS[e.key] || (e.key.length === 1 ? 0 : undefined);
    if (code === undefined) return false;
    if (code === 0) { if (action === 'down') this.send({ t: 'key', code: 0, action: 'press', text: e.key, ts: nowNs() }); return true; }
    this.send({ t: 'key', code, action, ts: nowNs() });
    return true;
  }

  tick() {
    stats.fps = stats.decoded - (this.lastDecoded || 0);
    this.lastDecoded = stats.decoded;
    stats.kbps = Math.round((stats.bytes - (this.lastBytes || 0)) * 8 / 1000);
    this.lastBytes = stats.bytes;
    const recent = stats.g2g.slice(-60).sort((a, b) => a - b);
    const p50 = recent.length ? recent[Math.floor(recent.length / 2)].toFixed(1) : '–';
    $('stats').textContent = `${stats.fps} fps · ${stats.kbps} kbit/s · latency ${p50} ms · rtt ${stats.rttMs === null ? '–' : stats.rttMs.toFixed(1)} ms`;
    if (stats.offsetMs !== null) this.send({ t: 'stats', offset_ns: Math.round(stats.offsetMs * 1e6), decoded: stats.decoded, g2g_us: Math.round((stats.g2g[stats.g2g.length - 1] || 0) * 1000) });
  }

  end(code, message) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.statsTimer);
    stats.state = 'closed'; stats.code = code; stats.message = message;
    if (this.decoder && this.decoder.state !== 'closed') this.decoder.close();
    if (this.audioDecoder && this.audioDecoder.state !== 'closed') this.audioDecoder.close();
    try { this.wt.close(); } catch (e) { /* already closed */ }
    // A late end of an older session must not touch a newer one.
    if (session !== this && session !== null) return;
    session = null;
    listenMotion(new Map());
    if (sensors.watch !== undefined) { navigator.geolocation.clearWatch(sensors.watch); sensors.watch = undefined; }
    log('session ended', code, message);
    ended(code, message);
  }
}

// Android key codes for the keys a desktop keyboard sends.
const KEYS = {
  Enter: 66, Backspace: 67, Tab: 61, Escape: 111, ' ': 62, ArrowUp: 19, ArrowDown: 20,
  ArrowLeft: 21, ArrowRight: 22, Home: 3, Delete: 112, PageUp: 92, PageDown: 93,
  AudioVolumeUp: 24, AudioVolumeDown: 25,
};

// ----- sound -------------------------------------------------------------------

// Browsers start sound only from a user gesture: the first tap anywhere (or
// the button) starts it.
const audio = {
  context: null,
  start() {
    if (!('AudioContext' in window)) return;
    if (!this.context) this.context = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    this.context.resume().then(() => { $('sound-btn').hidden = this.context.state === 'running'; }, () => {});
  },
};

// ----- sensors ---------------------------------------------------------------

const sensors = {
  granted: false,
  available() {
    const a = [];
    if ('DeviceMotionEvent' in window) a.push('accelerometer', 'gyroscope');
    if ('DeviceOrientationEvent' in window) a.push('orientation');
    if ('Magnetometer' in window) a.push('magnetometer');
    return a;
  },
  async grant() {
    // iOS asks only from a user gesture.
    try {
      if (typeof DeviceMotionEvent !== 'undefined' && DeviceMotionEvent.requestPermission) {
        if (await DeviceMotionEvent.requestPermission() !== 'granted') throw new Error('motion sensors refused');
      }
      if (typeof DeviceOrientationEvent !== 'undefined' && DeviceOrientationEvent.requestPermission) {
        await DeviceOrientationEvent.requestPermission();
      }
      this.granted = true;
      $('sensors-btn').hidden = true;
      this.update();
    } catch (e) {
      show('Motion sensors: ' + e.message + '. The phone will not follow this device\'s motion.', 'info');
    }
  },
  update() {
    // Location has its own prompt (the browser asks at the first watch).
    if (session && session.location && this.watch === undefined && navigator.geolocation) {
      this.watch = navigator.geolocation.watchPosition((p) => {
        if (!session) return;
        const c = p.coords;
        session.send({ t: 'location', lat: c.latitude, lon: c.longitude, alt: c.altitude, accuracy: c.accuracy, speed: c.speed, bearing: c.heading, ts: nowNs() });
      }, (e) => log('location', e.message), { enableHighAccuracy: true });
    }
    const needGesture = typeof DeviceMotionEvent !== 'undefined' && DeviceMotionEvent.requestPermission && !this.granted;
    $('sensors-btn').hidden = !(session && session.active.size && needGesture);
  },
};

function onMotion(e) {
  if (!session) return;
  const t = nowNs();
  const out = [];
  const g = e.accelerationIncludingGravity;
  if (g && g.x !== null) out.push({ k: 'accelerometer', ts: t, v: [g.x, g.y, g.z] });
  const r = e.rotationRate;
  const rad = Math.PI / 180;
  if (r && r.alpha !== null) out.push({ k: 'gyroscope', ts: t, v: [r.beta * rad, r.gamma * rad, r.alpha * rad] });
  session.sendSamples(out);
}
function onOrientation(e) {
  if (!session || e.alpha === null) return;
  session.sendSamples([{ k: 'orientation', ts: nowNs(), v: [(360 - e.alpha) % 360, -e.beta, e.gamma] }]);
}
// Listen only while the phone wants motion: the browser starts its sensors
// when a listener is added.
let magnetometer = null;
function listenMotion(active) {
  window.removeEventListener('devicemotion', onMotion);
  window.removeEventListener('deviceorientation', onOrientation);
  if (active.has('accelerometer') || active.has('gyroscope')) window.addEventListener('devicemotion', onMotion);
  if (active.has('orientation')) window.addEventListener('deviceorientation', onOrientation);
  if (magnetometer) { magnetometer.stop(); magnetometer = null; }
  // The Generic Sensor API's magnetometer, where the browser has one (µT).
  if (active.has('magnetometer') && 'Magnetometer' in window) {
    try {
      magnetometer = new Magnetometer({ frequency: Math.min(60, active.get('magnetometer') || 10) });
      magnetometer.addEventListener('reading', () => {
        if (session) session.sendSamples([{ k: 'magnetometer', ts: nowNs(), v: [magnetometer.x, magnetometer.y, magnetometer.z] }]);
      });
      magnetometer.addEventListener('error', (e) => log('magnetometer', e.error && e.error.message));
      magnetometer.start();
    } catch (e) {
      log('magnetometer', e.message);
      magnetometer = null;
    }
  }
}

// ----- connecting ------------------------------------------------------------

let retryMs = 1000;
let linkToken = null;

function ended(code, message) {
  const why = WHY[code] || message || code;
  status(FINAL.has(code) ? 'Not connected' : 'Disconnected');
  if (FINAL.has(code)) {
    show(why + (message && WHY[code] ? '\n(' + message + ')' : ''));
    $('reconnect-btn').hidden = code !== 'KICKED';
    return;
  }
  show(why + '\nReconnecting…', 'info');
  setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

async function connect() {
  $('reconnect-btn').hidden = true;
  let host = await dbGet('host');
  if (!host) {
    status('Not enrolled');
    show(WHY.UNAUTHORIZED);
    stats.state = 'closed'; stats.code = 'NOT_ENROLLED';
    return;
  }
  let target;
  try {
    target = await hostCerts(host);
  } catch (e) {
    status('Refused');
    show(e.message);
    stats.state = 'closed'; stats.code = e.code || 'ERROR'; stats.message = e.message;
    return;
  }
  if (!target.certs.length) {
    // Without a pin the browser would trust any CA-valid certificate:
    // refuse rather than hand the token and the key's proof to it.
    status('Not connected');
    show('No pinned certificate for this host is left in this browser. Ask the operator for a new link (vphonectl handset enroll --web).');
    stats.state = 'closed'; stats.code = 'NO_PIN'; stats.message = 'no pinned certificate';
    return;
  }
  // The key first (made once, on the first visit), so the host's handshake
  // deadline covers only the exchange itself.
  const id = await identity();
  status('Connecting…');
  stats.state = 'connecting';
  // A development page at http://localhost: QUIC goes to the loopback
  // addresses themselves (the host listens on one of them, and a browser may
  // try the other first for "localhost").
  const hosts = location.hostname === 'localhost' ? ['127.0.0.1', '[::1]'] : [location.hostname];
  const port = location.port || 443;
  const hashes = target.certs.map((h) => ({ algorithm: 'sha-256', value: unhex(h) }));
  let wt;
  let failure;
  for (const host of hosts) {
    try {
      wt = new WebTransport(`https://${host}:${port}${target.path}`, { serverCertificateHashes: hashes });
      await wt.ready;
      break;
    } catch (e) {
      log('WebTransport', host, e && e.message);
      failure = e;
      wt = null;
    }
  }
  if (!wt) {
    const e = failure;
    stats.state = 'closed'; stats.code = 'UNREACHABLE'; stats.message = String(e && e.message);
    show('Cannot reach the host (' + (e && e.message ? e.message : e) + ').\nTrying again…', 'info');
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
    return;
  }
  try {
    const bidi = await wt.createBidirectionalStream();
    const writer = bidi.writable.getWriter();
    const lines = new LineReader(bidi.readable);
    const send = (m) => writer.write(enc.encode(JSON.stringify(m) + '\n'));
    await send({
      t: 'hello', name: (await dbGet('name')) || deviceName(), spki: id.spki, token: linkToken || undefined,
      sensors: sensors.available(), width: Math.round(screen.width * devicePixelRatio),
      height: Math.round(screen.height * devicePixelRatio), client: navigator.userAgent,
      audio: 'AudioDecoder' in window && 'AudioContext' in window,
    });
    const challenge = await lines.next();
    if (!challenge || challenge.t !== 'challenge') {
      const code = challenge && challenge.t === 'closed' ? challenge.code : 'CONNECTION_LOST';
      stats.state = 'closed'; stats.code = code; stats.message = challenge ? challenge.message : '';
      try { wt.close(); } catch (e) { /* closed */ }
      ended(code, stats.message);
      return;
    }
    const signed = new Uint8Array([...enc.encode(PROOF_CONTEXT), ...unb64(challenge.nonce)]);
    const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, id.privateKey, signed);
    await send({ t: 'proof', sig: b64(sig) });
    const welcome = await lines.next();
    if (!welcome || welcome.t !== 'welcome') {
      const code = welcome && welcome.t === 'closed' ? welcome.code : 'CONNECTION_LOST';
      stats.state = 'closed'; stats.code = code; stats.message = welcome ? welcome.message : '';
      try { wt.close(); } catch (e) { /* closed */ }
      ended(code, stats.message);
      return;
    }
    linkToken = null;
    // The backoff starts over only once a session has lasted a while (a
    // phone that is busy or stopped ends it right after the welcome).
    const upSince = Date.now();
    setTimeout(() => { if (session && Date.now() - upSince >= 10000) retryMs = 1000; }, 10000);
    stats.state = 'connected'; stats.code = ''; stats.message = '';
    stats.phone = welcome.phone; stats.handset = welcome.handset; stats.session = welcome.session;
    status(`${welcome.phone} · driven by ${welcome.handset}`);
    show('');
    const s = new Session(wt, writer, lines, welcome);
    session = s;
    s.start();
    wt.closed.then(() => s.end('CONNECTION_LOST', 'the connection closed'),
      (e) => s.end('CONNECTION_LOST', 'connection lost: ' + (e && e.message)));
  } catch (e) {
    log('session setup', e);
    try { wt.close(); } catch (x) { /* closed */ }
    ended('CONNECTION_LOST', 'the session could not start: ' + (e && e.message ? e.message : e));
  }
}

function lacking() {
  const missing = [];
  if (!window.isSecureContext) return 'This page must be opened over HTTPS (or as http://localhost): browsers keep WebTransport and motion sensors from plain-HTTP pages.';
  if (typeof WebTransport === 'undefined') missing.push('WebTransport (Chrome, Edge and Firefox have it)');
  if (typeof VideoDecoder === 'undefined') missing.push('WebCodecs video decoding');
  if (!crypto.subtle) missing.push('WebCrypto');
  if (!window.indexedDB) missing.push('IndexedDB');
  return missing.length ? 'This browser cannot be a vphone handset: it lacks ' + missing.join(' and ') + '.' : null;
}

async function main() {
  const why = lacking();
  if (why) { status('Unsupported browser'); show(why); stats.state = 'closed'; stats.code = 'UNSUPPORTED'; stats.message = why; return; }
  const h264 = await VideoDecoder.isConfigSupported({ codec: 'avc1.42E01F' }).catch(() => ({ supported: false }));
  if (!h264.supported) { status('Unsupported browser'); show('This browser cannot decode H.264 video (WebCodecs avc1.42E01F).'); stats.state = 'closed'; stats.code = 'UNSUPPORTED'; return; }
  const link = takeLink();
  if (link) {
    const old = await dbGet('host');
    await dbPut('host', { pin: link.pin, certs: link.certs.length ? link.certs : (old && old.pin === link.pin ? old.certs : []) });
    linkToken = link.token;
  }
  const canvas = $('screen');
  canvas.addEventListener('pointerdown', (e) => { if (session) { canvas.setPointerCapture(e.pointerId); session.touch('down', e); e.preventDefault(); } });
  canvas.addEventListener('pointermove', (e) => { if (session && session.pointers.has(e.pointerId & 0xffff)) { session.touch('move', e); e.preventDefault(); } });
  canvas.addEventListener('pointerup', (e) => { if (session && session.pointers.has(e.pointerId & 0xffff)) session.touch('up', e); });
  canvas.addEventListener('pointercancel', (e) => { if (session && session.pointers.has(e.pointerId & 0xffff)) session.touch('cancel', e); });
  window.addEventListener('keydown', (e) => { if (session && !e.repeat && session.key(e, 'down')) e.preventDefault(); });
  window.addEventListener('keyup', (e) => { if (session && session.key(e, 'up')) e.preventDefault(); });
  $('sensors-btn').addEventListener('click', () => sensors.grant());
  $('sound-btn').addEventListener('click', () => audio.start());
  window.addEventListener('pointerdown', () => audio.start(), { once: true });
  audio.start();
  $('sound-btn').hidden = !('AudioContext' in window) || (audio.context && audio.context.state === 'running');
  $('reconnect-btn').addEventListener('click', () => { show(''); connect(); });
  $('fullscreen-btn').addEventListener('click', () => {
    const stage = $('stage');
    if (document.fullscreenElement) document.exitFullscreen(); else if (stage.requestFullscreen) stage.requestFullscreen().catch(() => {});
  });
  // Browsers without a permission prompt for motion deliver it at once;
  // where there is one, it may already be granted (Chrome answers without a
  // gesture; iOS Safari refuses until the button is tapped).
  sensors.granted = !(typeof DeviceMotionEvent !== 'undefined' && DeviceMotionEvent.requestPermission);
  if (!sensors.granted) {
    DeviceMotionEvent.requestPermission().then((r) => { sensors.granted = r === 'granted'; sensors.update(); }, () => {});
  }
  connect();
}

main();
