//! Desktop keyboard keys to Android `KeyEvent` keycodes.
//!
//! The companion's viewer receives key names (W3C `KeyboardEvent.key`
//! style, plus a few common aliases) and sends Android keycodes in
//! `KeyEvent`s on the input stream. The reverse direction (Android keycode
//! to the W3C key the Android Emulator accepts) is the host's business and
//! lives in `cloud-host`.
//!
//! Desktop conveniences: `Escape` is Android BACK and `Home` is Android HOME
//! (the home screen, not "move to line start"), so a desktop user can
//! navigate the phone from the keyboard.

/// Android `KeyEvent.KEYCODE_*` values used here.
pub mod keycode {
    /// `KEYCODE_HOME`.
    pub const HOME: i32 = 3;
    /// `KEYCODE_BACK`.
    pub const BACK: i32 = 4;
    /// `KEYCODE_0`; `KEYCODE_1..=9` follow (8..=16).
    pub const DIGIT_0: i32 = 7;
    /// `KEYCODE_DPAD_UP`.
    pub const DPAD_UP: i32 = 19;
    /// `KEYCODE_DPAD_DOWN`.
    pub const DPAD_DOWN: i32 = 20;
    /// `KEYCODE_DPAD_LEFT`.
    pub const DPAD_LEFT: i32 = 21;
    /// `KEYCODE_DPAD_RIGHT`.
    pub const DPAD_RIGHT: i32 = 22;
    /// `KEYCODE_VOLUME_UP`.
    pub const VOLUME_UP: i32 = 24;
    /// `KEYCODE_VOLUME_DOWN`.
    pub const VOLUME_DOWN: i32 = 25;
    /// `KEYCODE_POWER`.
    pub const POWER: i32 = 26;
    /// `KEYCODE_A`; `KEYCODE_B..=Z` follow (30..=54).
    pub const A: i32 = 29;
    /// `KEYCODE_TAB`.
    pub const TAB: i32 = 61;
    /// `KEYCODE_SPACE`.
    pub const SPACE: i32 = 62;
    /// `KEYCODE_ENTER`.
    pub const ENTER: i32 = 66;
    /// `KEYCODE_DEL` (backspace).
    pub const DEL: i32 = 67;
    /// `KEYCODE_MENU`.
    pub const MENU: i32 = 82;
    /// `KEYCODE_FORWARD_DEL` (the Delete key).
    pub const FORWARD_DEL: i32 = 112;
    /// `KEYCODE_APP_SWITCH` (recent apps).
    pub const APP_SWITCH: i32 = 187;
}

/// The Android keycode for a desktop key name, or `None` if the key is not
/// forwarded.
///
/// Accepted: single characters `a`-`z` / `A`-`Z` (same keycode; the shift
/// state travels as a modifier), `0`-`9`, the punctuation of a US keyboard
/// (`, . - = [ ] \ ; ' / ` @`), `" "`; and the W3C names `Enter`,
/// `Backspace`, `Delete`, `Tab`, `Escape` (BACK), `Home` (HOME), `End`,
/// `PageUp`, `PageDown`, `ArrowUp`/`ArrowDown`/`ArrowLeft`/`ArrowRight`,
/// `Shift`, `Control`, `Alt`, `ContextMenu`, `AudioVolumeUp`,
/// `AudioVolumeDown`, `AudioVolumeMute`, `Power`, `GoBack`, `GoHome`,
/// `AppSwitch`, with aliases `Return`, `Esc`, `Space`, `Up`/`Down`/`Left`/
/// `Right`, `Back`, `Menu`. Names (more than one character) are matched case
/// insensitively.
#[must_use]
pub fn desktop_to_android(key: &str) -> Option<i32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return char_keycode(c);
    }
    let code = match key.to_ascii_lowercase().as_str() {
        "enter" | "return" => keycode::ENTER,
        "backspace" => keycode::DEL,
        "delete" | "del" => keycode::FORWARD_DEL,
        "tab" => keycode::TAB,
        "space" | "spacebar" => keycode::SPACE,
        "escape" | "esc" | "goback" | "back" | "browserback" => keycode::BACK,
        "home" | "gohome" => keycode::HOME,
        "end" => 123,
        "pageup" => 92,
        "pagedown" => 93,
        "arrowup" | "up" => keycode::DPAD_UP,
        "arrowdown" | "down" => keycode::DPAD_DOWN,
        "arrowleft" | "left" => keycode::DPAD_LEFT,
        "arrowright" | "right" => keycode::DPAD_RIGHT,
        "shift" => 59,
        "control" | "ctrl" => 113,
        "alt" => 57,
        "contextmenu" | "menu" => keycode::MENU,
        "audiovolumeup" | "volumeup" => keycode::VOLUME_UP,
        "audiovolumedown" | "volumedown" => keycode::VOLUME_DOWN,
        "audiovolumemute" | "volumemute" => 164,
        "power" => keycode::POWER,
        "appswitch" => keycode::APP_SWITCH,
        _ => return None,
    };
    Some(code)
}

fn char_keycode(c: char) -> Option<i32> {
    let code = match c {
        'a'..='z' => keycode::A + i32::from(c as u8 - b'a'),
        'A'..='Z' => keycode::A + i32::from(c as u8 - b'A'),
        '0'..='9' => keycode::DIGIT_0 + i32::from(c as u8 - b'0'),
        ' ' => keycode::SPACE,
        '\n' | '\r' => keycode::ENTER,
        '\t' => keycode::TAB,
        ',' => 55,
        '.' => 56,
        '`' => 68,
        '-' => 69,
        '=' => 70,
        '[' => 71,
        ']' => 72,
        '\\' => 73,
        ';' => 74,
        '\'' => 75,
        '/' => 76,
        '@' => 77,
        _ => return None,
    };
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_named_keys() {
        assert_eq!(desktop_to_android("a"), Some(29));
        assert_eq!(desktop_to_android("A"), Some(29));
        assert_eq!(desktop_to_android("z"), Some(54));
        assert_eq!(desktop_to_android("0"), Some(7));
        assert_eq!(desktop_to_android("9"), Some(16));
        assert_eq!(desktop_to_android("Enter"), Some(66));
        assert_eq!(desktop_to_android("Backspace"), Some(67));
        assert_eq!(desktop_to_android("Escape"), Some(4));
        assert_eq!(desktop_to_android("Home"), Some(3));
        assert_eq!(desktop_to_android(" "), Some(62));
        assert_eq!(desktop_to_android("Space"), Some(62));
        assert_eq!(desktop_to_android("ArrowUp"), Some(19));
        assert_eq!(desktop_to_android("ArrowDown"), Some(20));
        assert_eq!(desktop_to_android("ArrowLeft"), Some(21));
        assert_eq!(desktop_to_android("ArrowRight"), Some(22));
        assert_eq!(desktop_to_android("arrowright"), Some(22));
        assert_eq!(desktop_to_android("Power"), Some(26));
    }

    #[test]
    fn every_letter_and_digit_is_contiguous() {
        for (i, c) in ('a'..='z').enumerate() {
            assert_eq!(
                desktop_to_android(&c.to_string()),
                Some(29 + i32::try_from(i).unwrap())
            );
        }
        for (i, c) in ('0'..='9').enumerate() {
            assert_eq!(
                desktop_to_android(&c.to_string()),
                Some(7 + i32::try_from(i).unwrap())
            );
        }
    }

    #[test]
    fn unknown_keys_are_none() {
        for k in ["", "F13", "é", "Hyper", "ab", "€"] {
            assert_eq!(desktop_to_android(k), None, "{k:?}");
        }
    }
}
