//! Every job id the dispatcher knows, with what it knows of each: the slab slot of a live job,
//! the status of a finished one.
//!
//! A hash map takes each id to a *cell*; cells are numbered in the order ids arrive, and a
//! live job's cell number is its submission sequence number. What is known sits in the cell,
//! four bytes in a page of cells, so a job that finishes is recorded through its own record
//! (which holds the number) without a hash lookup. On a large queue that lookup is a cache miss
//! in a table of tens of megabytes, while the cells of jobs picked one after the other sit
//! side by side. A page is freed once every cell in it is forgotten, so a long-lived job keeps
//! one page alive, not every cell after it.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use proto::JobId;

use crate::seeded::IdMap;
use crate::state::{Known, State};

/// Pages are small in tests so that the tests fill, empty and free many of them.
const PAGE_BITS: u32 = if cfg!(test) { 4 } else { 12 };
const PAGE_CELLS: usize = 1 << PAGE_BITS;

/// What is known of one id, packed: 0 is a forgotten cell, 1 `Reserved`, 2 + i a finished job
/// in the state of index i, and `LIVE + slot` a live one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Cell(u32);

impl Cell {
    const GONE: Self = Self(0);
    const RESERVED: Self = Self(1);
    const LIVE: u32 = 2 + State::COUNT as u32;

    fn pack(known: Known) -> Self {
        match known {
            Known::Reserved => Self::RESERVED,
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a state index is below State::COUNT"
            )]
            Known::Finished(state) => Self(2 + state.index() as u32),
            // Slots are bounded by `max_live_jobs`, far below the top of the range.
            Known::Live(slot) => Self(slot.saturating_add(Self::LIVE)),
        }
    }

    fn unpack(self) -> Option<Known> {
        match self.0 {
            0 => None,
            1 => Some(Known::Reserved),
            n if n < Self::LIVE => State::from_index((n - 2) as usize).map(Known::Finished),
            n => Some(Known::Live(n - Self::LIVE)),
        }
    }
}

struct Page {
    /// Packed [`Cell`]s. Plain integers so that a new page comes zeroed from the allocator
    /// (all cells forgotten) instead of being written cell by cell.
    cells: Box<[u32]>,
    /// Cells in use (not forgotten).
    used: u32,
}

impl Page {
    fn new() -> Self {
        Self {
            cells: vec![Cell::GONE.0; PAGE_CELLS].into_boxed_slice(),
            used: 0,
        }
    }
}

/// The ids the dispatcher knows; see the module documentation.
pub(crate) struct KnownIds {
    map: IdMap<u64>,
    /// Pages of cells from `first_page` on; `None` once freed.
    pages: VecDeque<Option<Page>>,
    first_page: u64,
    /// The number the next cell gets.
    next: u64,
}

impl KnownIds {
    pub(crate) fn new(map: IdMap<u64>) -> Self {
        Self {
            map,
            pages: VecDeque::new(),
            first_page: 0,
            next: 0,
        }
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    pub(crate) fn contains(&self, id: JobId) -> bool {
        self.map.contains_key(&id)
    }

    pub(crate) fn get(&self, id: JobId) -> Option<Known> {
        self.map.get(&id).and_then(|&cell| self.cell(cell))
    }

    /// The cell `id` is recorded in.
    pub(crate) fn cell_of(&self, id: JobId) -> Option<u64> {
        self.map.get(&id).copied()
    }

    /// Records a new id in a new cell and returns the cell's number, or `None` (changing
    /// nothing) if the id is known already.
    pub(crate) fn claim(&mut self, id: JobId, known: Known) -> Option<u64> {
        let next = self.next;
        match self.map.entry(id) {
            Entry::Occupied(_) => None,
            Entry::Vacant(entry) => {
                entry.insert(next);
                self.push(known);
                Some(next)
            }
        }
    }

    /// Records `id`, known or not, in a new cell (a retried job starts a new life) and
    /// returns the cell's number.
    pub(crate) fn rebind(&mut self, id: JobId, known: Known) -> u64 {
        let next = self.next;
        if let Some(old) = self.map.insert(id, next) {
            self.clear(old);
        }
        self.push(known);
        next
    }

    /// Updates what is known in cell `cell`, which must be in use.
    pub(crate) fn set_cell(&mut self, cell: u64, known: Known) {
        if let Some((page, at)) = self.locate(cell)
            && let Some(page) = self.pages[page].as_mut()
        {
            debug_assert_ne!(page.cells[at], Cell::GONE.0, "cell {cell} is in use");
            page.cells[at] = Cell::pack(known).0;
        }
    }

    /// Forgets `id`, returning what was known of it.
    pub(crate) fn remove(&mut self, id: JobId) -> Option<Known> {
        let cell = self.map.remove(&id)?;
        let known = self.cell(cell);
        self.clear(cell);
        known
    }

    /// Forgets `id` if it is still recorded in `cell` as a finished job; says whether it was.
    pub(crate) fn evict(&mut self, id: JobId, cell: u64) -> bool {
        if !self.is_finished(cell) {
            return false;
        }
        debug_assert_eq!(self.map.get(&id), Some(&cell), "a cell in use is its id's");
        self.map.remove(&id);
        self.clear(cell);
        true
    }

    /// Whether cell `cell` records a finished job. Cell numbers are never given twice, and a
    /// cell is cleared when its id is forgotten or moves on, so the job is still the one that
    /// was recorded there: no lookup of its id is needed.
    pub(crate) fn is_finished(&self, cell: u64) -> bool {
        matches!(self.cell(cell), Some(Known::Finished(_)))
    }

    /// Forgets every finished id (a walk over every id known).
    pub(crate) fn forget_finished(&mut self) {
        let finished: Vec<(JobId, u64)> = self
            .map
            .iter()
            .filter(|&(_, &cell)| self.is_finished(cell))
            .map(|(&id, &cell)| (id, cell))
            .collect();
        for (id, cell) in finished {
            self.map.remove(&id);
            self.clear(cell);
        }
    }

    fn cell(&self, cell: u64) -> Option<Known> {
        let (page, at) = self.locate(cell)?;
        Cell(self.pages[page].as_ref()?.cells[at]).unpack()
    }

    /// The page index in `pages` and the position in it of cell `cell`, if its page exists.
    fn locate(&self, cell: u64) -> Option<(usize, usize)> {
        let page = usize::try_from((cell >> PAGE_BITS).checked_sub(self.first_page)?).ok()?;
        #[expect(clippy::cast_possible_truncation, reason = "masked to the page size")]
        let at = (cell as usize) & (PAGE_CELLS - 1);
        (page < self.pages.len()).then_some((page, at))
    }

    fn push(&mut self, known: Known) {
        let cell = self.next;
        self.next += 1;
        #[expect(clippy::cast_possible_truncation, reason = "masked to the page size")]
        let at = (cell as usize) & (PAGE_CELLS - 1);
        // Within a page, the last page is this cell's: it was made for the page's first cell
        // given, and is not freed while cells still go to it.
        if at != 0
            && let Some(Some(page)) = self.pages.back_mut()
        {
            page.cells[at] = Cell::pack(known).0;
            page.used += 1;
            return;
        }
        if self.pages.is_empty() {
            self.first_page = cell >> PAGE_BITS;
        }
        let Some(index) = usize::try_from((cell >> PAGE_BITS) - self.first_page).ok() else {
            return;
        };
        while self.pages.len() <= index {
            self.pages.push_back(None);
        }
        let page = self.pages[index].get_or_insert_with(Page::new);
        page.cells[at] = Cell::pack(known).0;
        page.used += 1;
        if at == 0 && index > 0 {
            // The page before may have emptied while cells still went to it.
            self.release_if_empty(index - 1);
        }
    }

    /// Marks a cell forgotten, freeing its page when it was the page's last one in use.
    fn clear(&mut self, cell: u64) {
        let Some((index, at)) = self.locate(cell) else {
            return;
        };
        let Some(page) = self.pages[index].as_mut() else {
            return;
        };
        if page.cells[at] == Cell::GONE.0 {
            return;
        }
        page.cells[at] = Cell::GONE.0;
        page.used -= 1;
        self.release_if_empty(index);
    }

    /// Frees the page at `index` if none of its cells is in use, unless the next cell goes
    /// to it (a queue that fills and empties would otherwise allocate a page each time; it is
    /// checked again when the next cell moves on).
    fn release_if_empty(&mut self, index: usize) {
        let first = self.first_page;
        let next_page = self.next >> PAGE_BITS;
        let Some(slot) = self.pages.get_mut(index) else {
            return;
        };
        let is_next = first + index as u64 == next_page;
        if slot.as_ref().is_some_and(|page| page.used == 0) && !is_next {
            *slot = None;
            while matches!(self.pages.front(), Some(None)) {
                self.pages.pop_front();
                self.first_page += 1;
            }
        }
    }

    /// Pages allocated, for tests.
    #[cfg(test)]
    fn pages_alive(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::seeded::SeededState;

    fn ids() -> KnownIds {
        KnownIds::new(SeededState::new(1).id_map())
    }

    fn id(n: u64) -> JobId {
        JobId::from_u64(n)
    }

    #[test]
    fn cells_pack_every_kind_of_knowledge() {
        for known in [
            Known::Reserved,
            Known::Live(0),
            Known::Live(123_456),
            Known::Finished(State::Completed),
            Known::Finished(State::Failed),
            Known::Finished(State::Cancelled),
        ] {
            assert_eq!(Cell::pack(known).unpack(), Some(known));
        }
        assert_eq!(Cell::GONE.unpack(), None);
    }

    #[test]
    fn a_finished_job_is_recorded_through_its_cell() {
        let mut known = ids();
        let cell = known.claim(id(7), Known::Live(3)).unwrap();
        assert_eq!(
            known.claim(id(7), Known::Live(4)),
            None,
            "a duplicate is refused"
        );
        known.set_cell(cell, Known::Finished(State::Completed));
        assert_eq!(known.get(id(7)), Some(Known::Finished(State::Completed)));
        assert_eq!(known.remove(id(7)), Some(Known::Finished(State::Completed)));
        assert_eq!(known.get(id(7)), None);
    }

    #[test]
    fn a_long_lived_job_keeps_only_its_own_page() {
        let mut known = ids();
        known.claim(id(0), Known::Live(0)).unwrap();
        for n in 1..10 * PAGE_CELLS as u64 {
            known
                .claim(id(n), Known::Finished(State::Completed))
                .unwrap();
            known.remove(id(n));
        }
        assert_eq!(known.get(id(0)), Some(Known::Live(0)));
        // Only the first page, held by job 0: the page the next cell goes to is made when
        // that cell is.
        assert_eq!(known.pages_alive(), 1);
        // Freed pages behind a held one leave an empty entry each (8 bytes per page).
        assert_eq!(known.pages.len(), 10);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Claim(u64, u32),
        Rebind(u64, u32),
        Finish(u64),
        Remove(u64),
        /// Evicts the id through the cell it had `back` changes ago (perhaps no longer its).
        Evict(u64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct ids, so operations hit the same ones; many operations, so pages fill,
        // empty and are freed.
        let id = 0..64u64;
        prop_oneof![
            4 => (id.clone(), 0..1000u32).prop_map(|(i, s)| Op::Claim(i, s)),
            1 => (id.clone(), 0..1000u32).prop_map(|(i, s)| Op::Rebind(i, s)),
            2 => id.clone().prop_map(Op::Finish),
            3 => id.clone().prop_map(Op::Remove),
            2 => (id, 0..4usize).prop_map(|(i, back)| Op::Evict(i, back)),
        ]
    }

    proptest! {
        /// Against a plain map: every lookup answers the same after any sequence of changes,
        /// and the pages kept stay proportional to the ids known.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..3000)) {
            let mut known = ids();
            let mut model: HashMap<u64, Known> = HashMap::new();
            // The cells each id was given, latest last.
            let mut cells: HashMap<u64, Vec<u64>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Claim(i, slot) => {
                        let claimed = known.claim(id(i), Known::Live(slot));
                        prop_assert_eq!(claimed.is_some(), !model.contains_key(&i));
                        cells.entry(i).or_default().extend(claimed);
                        model.entry(i).or_insert(Known::Live(slot));
                    }
                    Op::Rebind(i, slot) => {
                        cells.entry(i).or_default().push(known.rebind(id(i), Known::Live(slot)));
                        model.insert(i, Known::Live(slot));
                    }
                    Op::Finish(i) => {
                        if let Some(cell) = known.cell_of(id(i)) {
                            known.set_cell(cell, Known::Finished(State::Failed));
                            model.insert(i, Known::Finished(State::Failed));
                        }
                    }
                    Op::Remove(i) => {
                        prop_assert_eq!(known.remove(id(i)), model.remove(&i));
                    }
                    Op::Evict(i, back) => {
                        let given = cells.get(&i).map_or(&[][..], Vec::as_slice);
                        if let Some(&cell) = given.iter().rev().nth(back) {
                            let current = known.cell_of(id(i)) == Some(cell);
                            let finished = matches!(model.get(&i), Some(Known::Finished(_)));
                            prop_assert_eq!(known.evict(id(i), cell), current && finished);
                            if current && finished {
                                model.remove(&i);
                            }
                        }
                    }
                }
                for i in 0..64 {
                    prop_assert_eq!(known.get(id(i)), model.get(&i).copied());
                }
                prop_assert!(known.pages_alive() <= model.len() + 1);
            }
        }
    }
}
