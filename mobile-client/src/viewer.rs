//! The desktop viewer window (`vphone-companion connect --view`): the
//! phone's screen, letterboxed to its aspect ratio, in an eframe/egui window
//! drawn with OpenGL (glow).
//!
//! - Mouse: the primary button is one finger (pointer 0): press = DOWN,
//!   drag = MOVE, release = UP. A press outside the picture is ignored; a
//!   drag that leaves it is clamped to the edge.
//! - Touch screens (`egui::Event::Touch`) are real multi-touch: every
//!   finger gets the lowest free Android pointer id. egui also turns the
//!   first finger into mouse events; those are ignored while fingers are
//!   down.
//! - Keyboard: typed text becomes a `Key` with `text`; Enter, Backspace,
//!   Delete, Tab, arrows, Page Up/Down, End, Escape (Android BACK) and Home
//!   (Android HOME) become keycodes ([`crate::keys::desktop_to_android`]), as
//!   do letters, digits and punctuation with Ctrl or Alt held.
//! - An overlay shows fps, bitrate and latency, and the sound's latency,
//!   buffer level and dropped (concealed or late) frames.
//!
//! The window runs on the main thread ([`run`] blocks until it closes); the
//! session lives on a tokio runtime elsewhere. It talks to the window
//! through the channels in [`Viewer`] and through a [`ViewerHandle`]
//! (repaint when a picture arrives, close when the session ends).
//!
//! The pure parts — [`fit`], [`to_phone`], [`android_keycode`],
//! [`meta_state`] and the [`Gestures`] state machine — have no window.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eframe::egui;
use egui::{Color32, Event, FontId, Key, Modifiers, Pos2, Rect, TouchPhase, Vec2, pos2, vec2};
use sensor_proto::bridge::{KeyAction, Pointer, TouchAction, input_message};
use tokio::sync::{mpsc, watch};

use crate::ClientError;
use crate::keys::desktop_to_android;
use crate::sensors::MonotonicClock;
use crate::session::Report;
use crate::video::Picture;

/// Android `KeyEvent.META_SHIFT_ON`.
pub const META_SHIFT_ON: u32 = 0x1;
/// Android `KeyEvent.META_ALT_ON`.
pub const META_ALT_ON: u32 = 0x2;
/// Android `KeyEvent.META_CTRL_ON`.
pub const META_CTRL_ON: u32 = 0x1000;

/// The largest picture rectangle of `content`'s aspect ratio that fits in
/// `avail`, centred (letterbox / pillarbox). A degenerate `content` fills
/// `avail`.
#[must_use]
pub fn fit(avail: Rect, content: Vec2) -> Rect {
    if content.x <= 0.0 || content.y <= 0.0 || avail.width() <= 0.0 || avail.height() <= 0.0 {
        return avail;
    }
    let scale = (avail.width() / content.x).min(avail.height() / content.y);
    Rect::from_center_size(avail.center(), content * scale)
}

/// Window position `pos` (inside the displayed picture `image`) in phone
/// pixels of a `phone`-sized display. `None` when `pos` is outside the
/// picture and `clamp` is false; with `clamp` the position is pulled to the
/// picture's edge (for drags that leave it).
#[must_use]
pub fn to_phone(pos: Pos2, image: Rect, phone: Vec2, clamp: bool) -> Option<Pos2> {
    if image.width() <= 0.0 || image.height() <= 0.0 {
        return None;
    }
    if !clamp && !image.contains(pos) {
        return None;
    }
    let u = ((pos.x - image.min.x) / image.width()).clamp(0.0, 1.0);
    let v = ((pos.y - image.min.y) / image.height()).clamp(0.0, 1.0);
    // The last pixel's far edge is not on the display.
    let max = (phone - vec2(1.0, 1.0)).max(Vec2::ZERO);
    Some(pos2((u * phone.x).min(max.x), (v * phone.y).min(max.y)))
}

/// The Android keycode for an egui key, through the desktop key names of
/// [`desktop_to_android`] (Escape = BACK, Home = HOME).
#[must_use]
pub fn android_keycode(key: Key) -> Option<i32> {
    let name = match key {
        Key::Comma => ",",
        Key::Period => ".",
        Key::Minus => "-",
        Key::Equals => "=",
        Key::Semicolon => ";",
        Key::Slash => "/",
        Key::Backslash => "\\",
        Key::OpenBracket => "[",
        Key::CloseBracket => "]",
        Key::Backtick => "`",
        Key::Quote => "'",
        other => other.name(),
    };
    desktop_to_android(name)
}

/// Keys forwarded as keycodes even without Ctrl/Alt: they type no text.
fn is_command_key(key: Key) -> bool {
    matches!(
        key,
        Key::Enter
            | Key::Backspace
            | Key::Delete
            | Key::Tab
            | Key::Escape
            | Key::Home
            | Key::End
            | Key::PageUp
            | Key::PageDown
            | Key::ArrowUp
            | Key::ArrowDown
            | Key::ArrowLeft
            | Key::ArrowRight
    )
}

/// Android meta state bits for egui modifiers.
#[must_use]
pub fn meta_state(m: Modifiers) -> u32 {
    let mut s = 0;
    if m.shift {
        s |= META_SHIFT_ON;
    }
    if m.alt {
        s |= META_ALT_ON;
    }
    if m.ctrl {
        s |= META_CTRL_ON;
    }
    s
}

/// Where a pointer comes from.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Source {
    /// The mouse's primary button.
    Mouse,
    /// A finger on a touch screen: device and touch id.
    Finger(u64, u64),
}

/// One pointer that is down: where from, its Android id and phone position.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Down {
    source: Source,
    id: u32,
    pos: Pos2,
    pressure: f32,
}

/// The pointers that are down, turning presses, moves and releases into
/// Android multi-touch events (`pointers` = every pointer down after the
/// event, plus the lifted one for UP).
#[derive(Debug, Default)]
pub struct Gestures {
    down: Vec<Down>,
}

/// A touch event without its timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct TouchOut {
    /// DOWN, MOVE, UP or CANCEL.
    pub action: TouchAction,
    /// The pointer that went down or up.
    pub action_pointer_id: u32,
    /// The pointers: `(id, x, y, pressure)`, phone pixels.
    pub pointers: Vec<(u32, f32, f32, f32)>,
}

impl Gestures {
    /// True while `source` is down.
    #[must_use]
    pub fn is_down(&self, source: Source) -> bool {
        self.down.iter().any(|d| d.source == source)
    }

    /// True while any finger (not the mouse) is down.
    #[must_use]
    pub fn fingers_down(&self) -> bool {
        self.down
            .iter()
            .any(|d| matches!(d.source, Source::Finger(..)))
    }

    fn out(&self, action: TouchAction, id: u32) -> TouchOut {
        TouchOut {
            action,
            action_pointer_id: id,
            pointers: self
                .down
                .iter()
                .map(|d| (d.id, d.pos.x, d.pos.y, d.pressure))
                .collect(),
        }
    }

    /// `source` touched down at `pos` (phone pixels). `None` if it already was.
    pub fn press(&mut self, source: Source, pos: Pos2, pressure: f32) -> Option<TouchOut> {
        if self.is_down(source) {
            return None;
        }
        let id = (0..)
            .find(|i| self.down.iter().all(|d| d.id != *i))
            .unwrap_or(0);
        self.down.push(Down {
            source,
            id,
            pos,
            pressure,
        });
        Some(self.out(TouchAction::Down, id))
    }

    /// `source` moved to `pos`. `None` if it is not down or did not move.
    pub fn moved(&mut self, source: Source, pos: Pos2, pressure: Option<f32>) -> Option<TouchOut> {
        let d = self.down.iter_mut().find(|d| d.source == source)?;
        let pressure = pressure.unwrap_or(d.pressure);
        if d.pos == pos && d.pressure == pressure {
            return None;
        }
        d.pos = pos;
        d.pressure = pressure;
        Some(self.out(TouchAction::Move, 0))
    }

    /// `source` lifted (at `pos` if given, else where it was).
    pub fn release(&mut self, source: Source, pos: Option<Pos2>) -> Option<TouchOut> {
        let i = self.down.iter().position(|d| d.source == source)?;
        if let Some(p) = pos {
            self.down[i].pos = p;
        }
        let id = self.down[i].id;
        let out = self.out(TouchAction::Up, id);
        self.down.remove(i);
        Some(out)
    }

    /// Aborts the gesture (every pointer up). `None` if nothing was down.
    pub fn cancel(&mut self) -> Option<TouchOut> {
        if self.down.is_empty() {
            return None;
        }
        let out = self.out(TouchAction::Cancel, 0);
        self.down.clear();
        Some(out)
    }
}

/// Lets the session side poke the window from another thread.
#[derive(Clone, Debug)]
pub struct ViewerHandle {
    ctx: egui::Context,
    close: Arc<AtomicBool>,
}

impl Default for ViewerHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ViewerHandle {
    /// A handle for a window not open yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            ctx: egui::Context::default(),
            close: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Redraw soon (a new picture or new numbers).
    pub fn repaint(&self) {
        self.ctx.request_repaint();
    }

    /// Close the window (the session ended); [`run`] then returns.
    pub fn close(&self) {
        self.close.store(true, Ordering::SeqCst);
        self.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        self.ctx.request_repaint();
    }
}

/// What the window shows and where its input goes.
#[derive(Debug)]
pub struct Viewer {
    /// Window title.
    pub title: String,
    /// The phone display in pixels (touch coordinates), if known; else the
    /// picture size is used.
    pub phone_size: Option<(u32, u32)>,
    /// Touches and keys go here.
    pub input: mpsc::Sender<input_message::Event>,
    /// The newest decoded picture.
    pub pictures: watch::Receiver<Option<Arc<Picture>>>,
    /// The numbers for the overlay.
    pub stats: watch::Receiver<Option<Report>>,
    /// The handle the session side keeps.
    pub handle: ViewerHandle,
    /// Pastes go to the phone's clipboard here (then Ctrl+V on the phone);
    /// `None`: a paste is typed as text.
    pub paste: Option<mpsc::Sender<String>>,
    /// The phone's clipboard: each change is put on this device's.
    pub phone_clipboard: Option<watch::Receiver<Option<String>>>,
}

/// Opens the window and runs it on this (the main) thread until it is
/// closed by the user or by [`ViewerHandle::close`].
///
/// # Errors
/// [`ClientError::Session`] when the window cannot be opened (no display,
/// no OpenGL).
pub fn run(viewer: Viewer) -> Result<(), ClientError> {
    let initial = initial_window_size(viewer.phone_size);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(viewer.title.clone())
            .with_app_id("vphone-companion")
            .with_inner_size(initial)
            .with_min_inner_size([120.0, 160.0]),
        ..eframe::NativeOptions::default()
    };
    let ctx = viewer.handle.ctx.clone();
    let app = App::new(viewer);
    eframe::run_native_ext(
        "vphone-companion",
        options,
        Some(ctx),
        Box::new(move |_cc| Ok(Box::new(app))),
    )
    .map_err(|e| {
        ClientError::Session(format!(
            "cannot open the viewer window: {e} (is an X11/Wayland display with OpenGL available? \
             use --headless to run without a window)"
        ))
    })
}

/// A window of the phone's aspect ratio at most 900 points tall / 1200 wide.
fn initial_window_size(phone: Option<(u32, u32)>) -> Vec2 {
    let (w, h) = match phone {
        Some((w, h)) if w > 0 && h > 0 => (w as f32, h as f32),
        _ => (1080.0, 2400.0),
    };
    let scale = (900.0 / h).min(1200.0 / w).min(1.0);
    vec2((w * scale).round(), (h * scale).round())
}

struct App {
    viewer: Viewer,
    texture: Option<egui::TextureHandle>,
    picture_size: Option<Vec2>,
    gestures: Gestures,
    keys_down: HashSet<Key>,
    clock: MonotonicClock,
    dropped: u64,
}

impl App {
    fn new(viewer: Viewer) -> Self {
        Self {
            viewer,
            texture: None,
            picture_size: None,
            gestures: Gestures::default(),
            keys_down: HashSet::new(),
            clock: MonotonicClock::new(),
            dropped: 0,
        }
    }

    fn send(&mut self, ev: input_message::Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.viewer.input.try_send(ev) {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "input queue full; dropping events");
            }
        }
    }

    fn send_touch(&mut self, t: Option<TouchOut>) {
        let Some(t) = t else { return };
        tracing::trace!(action = ?t.action, id = t.action_pointer_id, pointers = ?t.pointers, "touch");
        let ev = input_message::Event::Touch(sensor_proto::bridge::Touch {
            action: t.action as i32,
            action_pointer_id: t.action_pointer_id,
            pointers: t
                .pointers
                .into_iter()
                .map(|(id, x, y, pressure)| Pointer {
                    id,
                    x,
                    y,
                    pressure,
                    major_px: 0.0,
                    minor_px: 0.0,
                })
                .collect(),
            timestamp_ns: self.clock.now_ns(),
        });
        self.send(ev);
    }

    fn send_key(&mut self, keycode: i32, action: KeyAction, text: Option<String>, meta: u32) {
        tracing::trace!(keycode, ?action, ?text, meta, "key");
        let ev = input_message::Event::Key(sensor_proto::bridge::Key {
            keycode,
            action: action as i32,
            text,
            meta_state: meta,
            timestamp_ns: self.clock.now_ns(),
        });
        self.send(ev);
    }

    /// Uploads the newest picture if it changed.
    fn update_texture(&mut self, ctx: &egui::Context) {
        if !self.viewer.pictures.has_changed().unwrap_or(false) {
            return;
        }
        let Some(pic) = self.viewer.pictures.borrow_and_update().clone() else {
            return;
        };
        let size = [pic.width as usize, pic.height as usize];
        if pic.rgba.len() != size[0] * size[1] * 4 {
            return;
        }
        let image = egui::ColorImage::from_rgba_unmultiplied(size, &pic.rgba);
        let options = egui::TextureOptions::LINEAR;
        match &mut self.texture {
            Some(t) => t.set(image, options),
            None => self.texture = Some(ctx.load_texture("phone-screen", image, options)),
        }
        self.picture_size = Some(vec2(pic.width as f32, pic.height as f32));
    }

    fn phone_size(&self) -> Option<Vec2> {
        match self.viewer.phone_size {
            Some((w, h)) if w > 0 && h > 0 => Some(vec2(w as f32, h as f32)),
            _ => self.picture_size,
        }
    }

    fn handle_events(&mut self, events: Vec<Event>, image: Rect) {
        let Some(phone) = self.phone_size() else {
            return;
        };
        for ev in events {
            match ev {
                Event::PointerButton {
                    pos,
                    button: egui::PointerButton::Primary,
                    pressed,
                    ..
                } => {
                    if pressed {
                        // egui also reports the first finger as a mouse.
                        if self.gestures.fingers_down() {
                            continue;
                        }
                        if let Some(p) = to_phone(pos, image, phone, false) {
                            let t = self.gestures.press(Source::Mouse, p, 1.0);
                            self.send_touch(t);
                        }
                    } else {
                        let p = to_phone(pos, image, phone, true);
                        let t = self.gestures.release(Source::Mouse, p);
                        self.send_touch(t);
                    }
                }
                Event::PointerMoved(pos) => {
                    if let Some(p) = to_phone(pos, image, phone, true) {
                        let t = self.gestures.moved(Source::Mouse, p, None);
                        self.send_touch(t);
                    }
                }
                Event::Touch {
                    device_id,
                    id,
                    phase,
                    pos,
                    force,
                } => {
                    let source = Source::Finger(device_id.0, id.0);
                    let pressure = force.filter(|f| *f > 0.0).map(|f| f.min(1.0));
                    let t = match phase {
                        TouchPhase::Start => {
                            // A mouse drag in progress ends where fingers begin.
                            if self.gestures.is_down(Source::Mouse) {
                                let t = self.gestures.release(Source::Mouse, None);
                                self.send_touch(t);
                            }
                            to_phone(pos, image, phone, false).and_then(|p| {
                                self.gestures.press(source, p, pressure.unwrap_or(1.0))
                            })
                        }
                        TouchPhase::Move => to_phone(pos, image, phone, true)
                            .and_then(|p| self.gestures.moved(source, p, pressure)),
                        TouchPhase::End => self
                            .gestures
                            .release(source, to_phone(pos, image, phone, true)),
                        TouchPhase::Cancel => {
                            if self.gestures.is_down(source) {
                                self.gestures.cancel()
                            } else {
                                None
                            }
                        }
                    };
                    self.send_touch(t);
                }
                Event::Text(text) => self.type_text(text),
                Event::Ime(egui::ImeEvent::Commit(text)) => self.type_text(text),
                Event::Paste(text) => self.paste(text),
                Event::Copy => self.shortcut(Key::C),
                Event::Cut => self.shortcut(Key::X),
                Event::Key {
                    key,
                    pressed,
                    modifiers,
                    ..
                } => self.key(key, pressed, modifiers),
                Event::WindowFocused(false) => self.release_all(),
                _ => {}
            }
        }
    }

    /// A paste: the text becomes the phone's clipboard and the phone
    /// pastes it (Ctrl+V). Only a paste sends this device's clipboard, never
    /// a copy made elsewhere.
    fn paste(&mut self, text: String) {
        let Some(tx) = &self.viewer.paste else {
            return self.type_text(text);
        };
        if tx.try_send(text).is_err() {
            tracing::warn!("a paste was dropped: the session is busy");
            return;
        }
        const KEYCODE_CTRL_LEFT: i32 = 113;
        const KEYCODE_V: i32 = 50;
        self.send_key(KEYCODE_CTRL_LEFT, KeyAction::Down, None, META_CTRL_ON);
        self.send_key(KEYCODE_V, KeyAction::Press, None, META_CTRL_ON);
        self.send_key(KEYCODE_CTRL_LEFT, KeyAction::Up, None, 0);
    }

    fn type_text(&mut self, text: String) {
        if !text.is_empty() {
            self.send_key(0, KeyAction::Press, Some(text), 0);
        }
    }

    /// Ctrl+`key` that egui turned into a clipboard command.
    fn shortcut(&mut self, key: Key) {
        if let Some(code) = android_keycode(key) {
            self.send_key(code, KeyAction::Press, None, META_CTRL_ON);
        }
    }

    fn key(&mut self, key: Key, pressed: bool, modifiers: Modifiers) {
        let Some(code) = android_keycode(key) else {
            return;
        };
        if pressed {
            // Text-typing keys travel as `Event::Text`, unless Ctrl/Alt make
            // them a shortcut (then there is no text).
            if is_command_key(key) || modifiers.ctrl || modifiers.alt {
                self.keys_down.insert(key);
                self.send_key(code, KeyAction::Down, None, meta_state(modifiers));
            }
        } else if self.keys_down.remove(&key) {
            self.send_key(code, KeyAction::Up, None, meta_state(modifiers));
        }
    }

    /// Focus lost: nothing stays pressed on the phone.
    fn release_all(&mut self) {
        let t = self.gestures.cancel();
        self.send_touch(t);
        let keys: Vec<Key> = self.keys_down.drain().collect();
        for k in keys {
            if let Some(code) = android_keycode(k) {
                self.send_key(code, KeyAction::Up, None, 0);
            }
        }
    }

    fn overlay(&self, painter: &egui::Painter, area: Rect) {
        let stats = self.viewer.stats.borrow().clone();
        let text = match stats {
            Some(r) => {
                let mut t = format!(
                    "{:.0} fps  {:.0} kbit/s\nlatency p50 {:.0} ms  p99 {:.0} ms\nrtt {:.1} ms",
                    r.fps,
                    r.bitrate_bps / 1000.0,
                    r.g2g_p50_ms,
                    r.g2g_p99_ms,
                    r.rtt_us as f64 / 1000.0
                );
                if let Some(a) = r.audio.as_ref().filter(|a| a.playback) {
                    t.push_str(&format!(
                        "\nsound {:.0} ms  buffer {:.0} ms  dropped {}",
                        a.latency_p50_ms,
                        a.buffer_ms,
                        a.jitter.concealed + a.jitter.late
                    ));
                }
                t
            }
            None => "connecting…".to_owned(),
        };
        let galley = painter.layout_no_wrap(text, FontId::monospace(11.0), Color32::WHITE);
        let pos = area.min + vec2(6.0, 6.0);
        let bg = Rect::from_min_size(pos, galley.size()).expand(4.0);
        painter.rect_filled(bg, 4.0, Color32::from_black_alpha(160));
        painter.galley(pos, galley, Color32::WHITE);
    }
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if self.viewer.handle.close.load(Ordering::SeqCst) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        self.update_texture(&ctx);
        // The phone copied something: it goes on this device's clipboard.
        if let Some(clip) = self.viewer.phone_clipboard.as_mut()
            && clip.has_changed().unwrap_or(false)
            && let Some(text) = clip.borrow_and_update().clone()
        {
            ctx.copy_text(text);
        }

        let area = ui.max_rect();
        let painter = ui.painter().clone();
        painter.rect_filled(area, 0.0, Color32::BLACK);
        let image = self
            .picture_size
            .map(|size| fit(area, size))
            .unwrap_or(Rect::NOTHING);
        match &self.texture {
            Some(t) => {
                painter.image(
                    t.id(),
                    image,
                    Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
                    Color32::WHITE,
                );
            }
            None => {
                painter.text(
                    area.center(),
                    egui::Align2::CENTER_CENTER,
                    "waiting for the phone's screen…",
                    FontId::proportional(16.0),
                    Color32::GRAY,
                );
            }
        }
        let events = ui.input(|i| i.events.clone());
        if self.texture.is_some() {
            self.handle_events(events, image);
        }
        self.overlay(&painter, area);
        // The numbers change even when the screen does not.
        ctx.request_repaint_after(Duration::from_millis(500));
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.release_all();
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("viewer::App")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::keycode;

    fn r(x0: f32, y0: f32, x1: f32, y1: f32) -> Rect {
        Rect::from_min_max(pos2(x0, y0), pos2(x1, y1))
    }

    #[test]
    fn tall_phone_in_a_wide_window_is_pillarboxed() {
        // 1080x2400 in 1000x800: scale 1/3, 360x800 centred.
        let img = fit(r(0.0, 0.0, 1000.0, 800.0), vec2(1080.0, 2400.0));
        assert!((img.width() - 360.0).abs() < 1e-3, "{img:?}");
        assert!((img.height() - 800.0).abs() < 1e-3);
        assert!((img.min.x - 320.0).abs() < 1e-3);
        assert!(img.min.y.abs() < 1e-3);
    }

    #[test]
    fn wide_picture_in_a_tall_window_is_letterboxed() {
        let img = fit(r(10.0, 20.0, 410.0, 1020.0), vec2(800.0, 400.0));
        assert!((img.width() - 400.0).abs() < 1e-3, "{img:?}");
        assert!((img.height() - 200.0).abs() < 1e-3);
        assert!((img.min.x - 10.0).abs() < 1e-3);
        assert!((img.min.y - 420.0).abs() < 1e-3);
    }

    #[test]
    fn degenerate_sizes_fill_the_area() {
        let a = r(0.0, 0.0, 100.0, 100.0);
        assert_eq!(fit(a, vec2(0.0, 10.0)), a);
    }

    #[test]
    fn window_points_map_to_phone_pixels() {
        let img = fit(r(0.0, 0.0, 1000.0, 800.0), vec2(1080.0, 2400.0));
        let phone = vec2(1080.0, 2400.0);
        let c = to_phone(img.center(), img, phone, false).unwrap();
        assert!(
            (c.x - 540.0).abs() < 0.01 && (c.y - 1200.0).abs() < 0.01,
            "{c:?}"
        );
        let tl = to_phone(img.min, img, phone, false).unwrap();
        assert_eq!(tl, pos2(0.0, 0.0));
        // A quarter across, three quarters down.
        let p = img.min + vec2(img.width() * 0.25, img.height() * 0.75);
        let q = to_phone(p, img, phone, false).unwrap();
        assert!(
            (q.x - 270.0).abs() < 0.01 && (q.y - 1800.0).abs() < 0.01,
            "{q:?}"
        );
        // The bottom-right corner stays on the display.
        let br = to_phone(img.max, img, phone, false).unwrap();
        assert_eq!(br, pos2(1079.0, 2399.0));
    }

    #[test]
    fn phone_pixels_may_differ_from_the_picture() {
        // A half-size stream of a 1080x2400 phone: touches are in phone pixels.
        let img = fit(r(0.0, 0.0, 540.0, 1200.0), vec2(540.0, 1200.0));
        let q = to_phone(pos2(270.0, 600.0), img, vec2(1080.0, 2400.0), false).unwrap();
        assert_eq!(q, pos2(540.0, 1200.0));
    }

    #[test]
    fn outside_the_picture_is_none_unless_clamped() {
        let img = fit(r(0.0, 0.0, 1000.0, 800.0), vec2(1080.0, 2400.0));
        let phone = vec2(1080.0, 2400.0);
        // In the black bar left of the picture.
        assert_eq!(to_phone(pos2(100.0, 400.0), img, phone, false), None);
        let c = to_phone(pos2(100.0, 400.0), img, phone, true).unwrap();
        assert!(c.x.abs() < 1e-3 && (c.y - 1200.0).abs() < 0.01, "{c:?}");
        let c = to_phone(pos2(2000.0, -50.0), img, phone, true).unwrap();
        assert_eq!(c, pos2(1079.0, 0.0));
    }

    #[test]
    fn egui_keys_map_to_android_keycodes() {
        assert_eq!(android_keycode(Key::Enter), Some(keycode::ENTER));
        assert_eq!(android_keycode(Key::Backspace), Some(keycode::DEL));
        assert_eq!(android_keycode(Key::Delete), Some(keycode::FORWARD_DEL));
        assert_eq!(android_keycode(Key::Escape), Some(keycode::BACK));
        assert_eq!(android_keycode(Key::Home), Some(keycode::HOME));
        assert_eq!(android_keycode(Key::Tab), Some(keycode::TAB));
        assert_eq!(android_keycode(Key::ArrowUp), Some(keycode::DPAD_UP));
        assert_eq!(android_keycode(Key::ArrowDown), Some(keycode::DPAD_DOWN));
        assert_eq!(android_keycode(Key::ArrowLeft), Some(keycode::DPAD_LEFT));
        assert_eq!(android_keycode(Key::ArrowRight), Some(keycode::DPAD_RIGHT));
        assert_eq!(android_keycode(Key::PageUp), Some(92));
        assert_eq!(android_keycode(Key::PageDown), Some(93));
        assert_eq!(android_keycode(Key::End), Some(123));
        assert_eq!(android_keycode(Key::Space), Some(keycode::SPACE));
        assert_eq!(android_keycode(Key::A), Some(keycode::A));
        assert_eq!(android_keycode(Key::Z), Some(keycode::A + 25));
        assert_eq!(android_keycode(Key::Num0), Some(keycode::DIGIT_0));
        assert_eq!(android_keycode(Key::Num9), Some(keycode::DIGIT_0 + 9));
        assert_eq!(android_keycode(Key::Comma), Some(55));
        assert_eq!(android_keycode(Key::Period), Some(56));
        assert_eq!(android_keycode(Key::Minus), Some(69));
        assert_eq!(android_keycode(Key::Slash), Some(76));
        assert_eq!(android_keycode(Key::F13), None);
        assert_eq!(android_keycode(Key::Insert), None);
    }

    #[test]
    fn every_command_key_has_a_keycode() {
        for k in Key::ALL {
            if is_command_key(*k) {
                assert!(android_keycode(*k).is_some(), "{k:?}");
            }
        }
    }

    #[test]
    fn modifiers_become_android_meta_bits() {
        assert_eq!(meta_state(Modifiers::NONE), 0);
        assert_eq!(meta_state(Modifiers::SHIFT), META_SHIFT_ON);
        assert_eq!(
            meta_state(Modifiers::CTRL | Modifiers::ALT),
            META_CTRL_ON | META_ALT_ON
        );
    }

    #[test]
    fn a_mouse_click_is_down_then_up() {
        let mut g = Gestures::default();
        let d = g.press(Source::Mouse, pos2(10.0, 20.0), 1.0).unwrap();
        assert_eq!(d.action, TouchAction::Down);
        assert_eq!(d.action_pointer_id, 0);
        assert_eq!(d.pointers, vec![(0, 10.0, 20.0, 1.0)]);
        assert_eq!(g.press(Source::Mouse, pos2(0.0, 0.0), 1.0), None);
        let m = g.moved(Source::Mouse, pos2(15.0, 25.0), None).unwrap();
        assert_eq!(m.action, TouchAction::Move);
        assert_eq!(m.pointers, vec![(0, 15.0, 25.0, 1.0)]);
        assert_eq!(g.moved(Source::Mouse, pos2(15.0, 25.0), None), None);
        let u = g.release(Source::Mouse, None).unwrap();
        assert_eq!(u.action, TouchAction::Up);
        assert_eq!(u.pointers, vec![(0, 15.0, 25.0, 1.0)]);
        // Hovering moves nothing.
        assert_eq!(g.moved(Source::Mouse, pos2(1.0, 1.0), None), None);
        assert_eq!(g.release(Source::Mouse, None), None);
    }

    #[test]
    fn two_fingers_get_their_own_ids_and_ids_are_reused() {
        let mut g = Gestures::default();
        let a = Source::Finger(1, 100);
        let b = Source::Finger(1, 101);
        let c = Source::Finger(1, 102);
        g.press(a, pos2(1.0, 1.0), 1.0).unwrap();
        let d = g.press(b, pos2(2.0, 2.0), 0.5).unwrap();
        assert_eq!(d.action_pointer_id, 1);
        assert_eq!(d.pointers.len(), 2);
        assert!(g.fingers_down());
        let u = g.release(a, Some(pos2(3.0, 3.0))).unwrap();
        assert_eq!(u.action, TouchAction::Up);
        assert_eq!(u.action_pointer_id, 0);
        // The lifted pointer is listed at its last position.
        assert_eq!(u.pointers, vec![(0, 3.0, 3.0, 1.0), (1, 2.0, 2.0, 0.5)]);
        let d = g.press(c, pos2(4.0, 4.0), 1.0).unwrap();
        assert_eq!(d.action_pointer_id, 0, "the lowest free id is reused");
        let x = g.cancel().unwrap();
        assert_eq!(x.action, TouchAction::Cancel);
        assert_eq!(x.pointers.len(), 2);
        assert!(!g.fingers_down());
        assert_eq!(g.cancel(), None);
    }

    #[test]
    fn the_initial_window_keeps_the_phone_aspect() {
        let s = initial_window_size(Some((1080, 2400)));
        assert_eq!(s, vec2(405.0, 900.0));
        let s = initial_window_size(Some((1920, 1080)));
        assert_eq!(s, vec2(1200.0, 675.0));
        let s = initial_window_size(Some((320, 480)));
        assert_eq!(s, vec2(320.0, 480.0));
    }
}
