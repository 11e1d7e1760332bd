//! A fixed-capacity ring buffer.

/// A ring buffer that holds at most `capacity` items and never grows past it: pushing into a
/// full ring evicts the oldest item. Iteration and indexing go from oldest to newest.
///
/// The backing storage is allocated once, at construction; `push` never allocates.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    buf: Vec<T>,
    /// Index in `buf` of the oldest item once the ring is full (0 before).
    head: usize,
    capacity: usize,
}

impl<T> Ring<T> {
    /// A ring holding at most `capacity` items. A capacity of 0 is raised to 1 (a ring that can
    /// hold nothing is never what the caller meant, and this constructor never panics).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            buf: Vec::with_capacity(capacity),
            head: 0,
            capacity,
        }
    }

    /// The most items the ring holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many items the ring holds now.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the next push evicts the oldest item.
    pub fn is_full(&self) -> bool {
        self.buf.len() == self.capacity
    }

    /// Appends `item` as the newest; returns the evicted oldest item if the ring was full.
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.buf.len() < self.capacity {
            self.buf.push(item);
            return None;
        }
        let slot = self.buf.get_mut(self.head)?;
        let old = std::mem::replace(slot, item);
        self.head = (self.head + 1) % self.capacity;
        Some(old)
    }

    /// The `i`-th item counting from the oldest (0), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.buf.len() {
            return None;
        }
        self.buf.get((self.head + i) % self.buf.len())
    }

    /// The oldest item.
    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }

    /// The newest item.
    pub fn last(&self) -> Option<&T> {
        self.get(self.buf.len().checked_sub(1)?)
    }

    /// The newest item, mutably.
    pub fn last_mut(&mut self) -> Option<&mut T> {
        let len = self.buf.len();
        let i = (self.head + len.checked_sub(1)?) % len;
        self.buf.get_mut(i)
    }

    /// The items as two slices, oldest first: `a` then `b`.
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let (newer, older) = self.buf.split_at(self.head);
        (older, newer)
    }

    /// Items from oldest to newest.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator + '_ {
        let (a, b) = self.as_slices();
        Chained {
            a: a.iter(),
            b: b.iter(),
        }
    }

    /// Removes every item; the capacity (and its allocation) stays.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

/// `a` then `b`, exact-sized (std's `Chain` is not `ExactSizeIterator`).
struct Chained<I> {
    a: I,
    b: I,
}

impl<I: Iterator> Iterator for Chained<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.a.next().or_else(|| self.b.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (a, _) = self.a.size_hint();
        let (b, _) = self.b.size_hint();
        (a + b, Some(a + b))
    }
}

impl<I: DoubleEndedIterator> DoubleEndedIterator for Chained<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        self.b.next_back().or_else(|| self.a.next_back())
    }
}

impl<I: ExactSizeIterator> ExactSizeIterator for Chained<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_iterates_in_order() {
        let mut r = Ring::new(3);
        assert_eq!(r.push(1), None);
        assert_eq!(r.push(2), None);
        assert_eq!(r.push(3), None);
        assert!(r.is_full());
        assert_eq!(r.push(4), Some(1));
        assert_eq!(r.push(5), Some(2));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(r.iter().rev().copied().collect::<Vec<_>>(), vec![5, 4, 3]);
        assert_eq!(r.iter().len(), 3);
        assert_eq!(r.first(), Some(&3));
        assert_eq!(r.last(), Some(&5));
        assert_eq!(r.get(1), Some(&4));
        assert_eq!(r.get(3), None);
        if let Some(x) = r.last_mut() {
            *x = 50;
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![3, 4, 50]);
        r.clear();
        assert!(r.is_empty());
        assert_eq!(r.last(), None);
        assert_eq!(r.capacity(), 3);
    }

    #[test]
    fn zero_capacity_is_one() {
        let mut r = Ring::new(0);
        assert_eq!(r.capacity(), 1);
        assert_eq!(r.push('a'), None);
        assert_eq!(r.push('b'), Some('a'));
        assert_eq!(r.last(), Some(&'b'));
    }
}
