//! Android key codes (what handsets send) to the W3C `KeyboardEvent.key`
//! values the Android Emulator's `sendKey` / `streamInputEvent` accept.

/// The W3C key for an Android `KeyEvent` keycode, or `None` for codes the
/// host does not forward (they are dropped and counted).
pub fn android_to_w3c(keycode: i32) -> Option<&'static str> {
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    Some(match keycode {
        3 => "GoHome",
        4 => "GoBack",
        7..=16 => DIGITS[(keycode - 7) as usize],
        19 => "ArrowUp",
        20 => "ArrowDown",
        21 => "ArrowLeft",
        22 => "ArrowRight",
        23 => "Enter",
        24 => "AudioVolumeUp",
        25 => "AudioVolumeDown",
        26 => "Power",
        29..=54 => LETTERS[(keycode - 29) as usize],
        55 => ",",
        56 => ".",
        57 | 58 => "Alt",
        59 | 60 => "Shift",
        61 => "Tab",
        62 => " ",
        66 => "Enter",
        67 => "Backspace",
        69 => "-",
        70 => "=",
        71 => "[",
        72 => "]",
        73 => "\\",
        74 => ";",
        75 => "'",
        76 => "/",
        77 => "@",
        92 => "PageUp",
        93 => "PageDown",
        111 => "Escape",
        112 => "Delete",
        113 | 114 => "Control",
        122 => "Home",
        123 => "End",
        164 => "AudioVolumeMute",
        187 => "AppSwitch",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_keys_map() {
        assert_eq!(android_to_w3c(29), Some("a"));
        assert_eq!(android_to_w3c(54), Some("z"));
        assert_eq!(android_to_w3c(7), Some("0"));
        assert_eq!(android_to_w3c(16), Some("9"));
        assert_eq!(android_to_w3c(66), Some("Enter"));
        assert_eq!(android_to_w3c(4), Some("GoBack"));
        assert_eq!(android_to_w3c(3), Some("GoHome"));
        assert_eq!(android_to_w3c(187), Some("AppSwitch"));
        assert_eq!(android_to_w3c(0), None);
        assert_eq!(android_to_w3c(-5), None);
        assert_eq!(android_to_w3c(100_000), None);
    }
}
