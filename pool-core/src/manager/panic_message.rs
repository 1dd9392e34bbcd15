//! The text of a caught panic, for the reason a pool gives when one of its
//! own tasks (the actor, a worker's lane) panicked.

use std::any::Any;

/// The message `panic!` was given, or a placeholder when it was not text.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panics_text_is_its_message_whatever_its_string_type() {
        let caught = |f: fn()| std::panic::catch_unwind(f).expect_err("it panicked");
        assert_eq!(panic_message(&*caught(|| panic!("plain"))), "plain");
        assert_eq!(
            panic_message(&*caught(|| panic!("formatted {}", 7))),
            "formatted 7"
        );
        assert_eq!(
            panic_message(&*caught(|| std::panic::panic_any(7u8))),
            "a panic without a message"
        );
    }
}
