//! The one rule the hand-written readers (of task lines and of daemon
//! messages) share for a field: a key seen twice is left to serde, which
//! refuses it.

/// Sets `slot` to `value` the first time; `None` when it was set already (a
/// repeated key).
pub(crate) fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}
