//! A listing read a page at a time ([`TaskSource::list_page`](crate::TaskSource::list_page)):
//! each page a bounded read, so a listing of every task holds up no other
//! request of the source for longer than one page takes.

use crate::{Filter, SourceError, TaskRecord, TaskSource};

/// Which end of the order of acceptance a listing starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// The newest task first (`tasks`).
    NewestFirst,
    /// The oldest task first (`dlq list`).
    OldestFirst,
}

/// Where a listing goes on from: the place of the last task of the page
/// before, in the source's order of acceptance. Opaque to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFrom(pub u64);

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The tasks, in the listing's order.
    pub records: Vec<TaskRecord>,
    /// Where the next page starts; `None` once the listing is whole.
    pub next: Option<ListFrom>,
}

impl ListPage {
    /// The most tasks a page holds: `page`, within what is left of the
    /// listing's `limit` (0 for either: no bound from it).
    pub fn size(limit: usize, page: usize) -> usize {
        match (limit, page) {
            (0, page) | (page, 0) => page,
            (limit, page) => limit.min(page),
        }
    }

    /// The page of `page` (at most that many; 0: all) of `found`, each with
    /// its place in the order of acceptance and already in the listing's
    /// order: the next page starts after its last task when it is full.
    pub fn of(found: impl IntoIterator<Item = (u64, TaskRecord)>, page: usize) -> Self {
        let page = if page == 0 { usize::MAX } else { page };
        let mut records = Vec::new();
        let mut last = None;
        for (place, record) in found.into_iter().take(page) {
            last = Some(place);
            records.push(record);
        }
        let next = (records.len() == page)
            .then_some(last)
            .flatten()
            .map(ListFrom);
        Self { records, next }
    }
}

/// Reads a listing a page at a time ([`TaskSource::list_page`]) until it is
/// whole or its limit (the filter's; 0: none) is reached.
#[derive(Debug, Clone)]
pub struct Pager {
    filter: Filter,
    order: ListOrder,
    page: usize,
    from: Option<ListFrom>,
    /// Tasks still wanted; `None`: no limit.
    left: Option<usize>,
    done: bool,
}

impl Pager {
    /// A listing of what `filter` picks, in `order`, `page` tasks a read at
    /// the most.
    pub fn new(filter: Filter, order: ListOrder, page: usize) -> Self {
        let left = (filter.limit > 0).then_some(filter.limit);
        Self {
            filter,
            order,
            page: page.max(1),
            from: None,
            left,
            done: false,
        }
    }

    /// The next page's tasks; `None` once the listing is whole.
    ///
    /// # Errors
    /// When the source cannot be read.
    pub async fn next(
        &mut self,
        source: &(impl TaskSource + ?Sized),
    ) -> Result<Option<Vec<TaskRecord>>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let filter = Filter {
            limit: self.left.unwrap_or(0),
            ..self.filter.clone()
        };
        let page = source
            .list_page(filter, self.order, self.from, self.page)
            .await?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(page.records.len());
        }
        match page.next {
            Some(from) if self.left != Some(0) => self.from = Some(from),
            _ => self.done = true,
        }
        Ok(Some(page.records))
    }

    /// Every page's tasks, in order.
    ///
    /// # Errors
    /// When the source cannot be read.
    pub async fn all(
        mut self,
        source: &(impl TaskSource + ?Sized),
    ) -> Result<Vec<TaskRecord>, SourceError> {
        let mut all = Vec::new();
        while let Some(records) = self.next(source).await? {
            all.extend(records);
        }
        Ok(all)
    }
}

impl ListOrder {
    /// Whether the task at `place` comes after `from` in this order (every
    /// task does when there is no `from`).
    pub fn after(self, place: u64, from: Option<ListFrom>) -> bool {
        match (self, from) {
            (_, None) => true,
            (Self::NewestFirst, Some(ListFrom(from))) => place < from,
            (Self::OldestFirst, Some(ListFrom(from))) => place > from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewTask, TaskState};

    fn record(id: &str) -> TaskRecord {
        TaskRecord {
            task: NewTask {
                id: id.to_owned(),
                task_type: "echo".to_owned(),
                payload: "null".to_owned(),
                priority: 10,
                timeout_ms: None,
            },
            state: TaskState::Queued,
            attempts: 0,
            error: None,
            line: None,
            created_ms: 0,
            updated_ms: 0,
            due_ms: 0,
            history: Vec::new(),
        }
    }

    #[test]
    fn a_full_page_says_where_the_next_starts_and_a_short_one_ends_the_listing() {
        let found = || (1..=5).map(|n| (n, record(&format!("t{n}"))));
        let full = ListPage::of(found(), 3);
        assert_eq!(full.records.len(), 3);
        assert_eq!(full.next, Some(ListFrom(3)));
        let short = ListPage::of(found().skip(3), 3);
        assert_eq!(short.records.len(), 2);
        assert_eq!(short.next, None);
        assert_eq!(ListPage::of(found(), 0).next, None, "0: all, in one page");
    }

    #[test]
    fn the_order_says_which_tasks_come_after_a_place() {
        let from = Some(ListFrom(10));
        assert!(ListOrder::NewestFirst.after(9, from));
        assert!(!ListOrder::NewestFirst.after(10, from));
        assert!(ListOrder::OldestFirst.after(11, from));
        assert!(!ListOrder::OldestFirst.after(10, from));
        assert!(ListOrder::OldestFirst.after(0, None));
    }
}
