//! Waiting work: the priority queue, the retry schedule and the dead-letter queue.

mod dead_letter;
mod priority;
mod retry;

pub use dead_letter::{DeadLetter, DeadLetterQueue};
pub use priority::{PriorityBand, PriorityQueue};
pub use retry::{InvalidRetryPolicy, RetryPolicy};
