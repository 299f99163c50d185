//! The rule for handset names, shared by the host (which stores them and
//! shows them to operators) and the companion (which checks its own name
//! before it sends it).
//!
//! A name is what an operator reads in `vphonectl handset list`, in logs and
//! in a terminal, so it must print as what it is: 1 to
//! [`MAX_HANDSET_NAME`] characters, no control characters (newlines, ANSI
//! escapes), no invisible or direction-changing format characters, no
//! leading or trailing space.

use crate::ProtoError;

/// The longest handset name, in characters.
pub const MAX_HANDSET_NAME: usize = 64;

/// Checks a handset name against the rule above.
///
/// # Errors
/// [`ProtoError::BadName`] saying which part of the rule `name` breaks.
pub fn check_handset_name(name: &str) -> Result<(), ProtoError> {
    let bad = |why: &'static str| Err(ProtoError::BadName(why));
    let len = name.chars().count();
    if len == 0 {
        return bad("it is empty");
    }
    if len > MAX_HANDSET_NAME {
        return bad("it is longer than 64 characters");
    }
    if name.trim() != name {
        return bad("it starts or ends with a space");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character (newline, tab, escape, ...)");
    }
    if name.chars().any(is_invisible) {
        return bad("it contains an invisible or direction-changing character");
    }
    Ok(())
}

/// Zero-width, bidirectional-override and other format characters: they
/// make a name print as something it is not.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_pass_and_the_rest_say_why() {
        for ok in [
            "pixel",
            "Anna's phone",
            "Téléphone 2",
            "手机",
            &"x".repeat(64),
        ] {
            assert!(check_handset_name(ok).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(65) as &str, "longer than 64"),
            (" pixel", "space"),
            ("pixel\n[ok] admin", "control character"),
            ("\u{1b}[31mred", "control character"),
            ("evil\u{202E}txt.exe", "invisible"),
            ("zero\u{200B}width", "invisible"),
        ] {
            let e = check_handset_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
