//! How a long check reports how far it got: the library never prints, the caller draws.

/// Told of progress while a log is verified: `done` of `total` entries checked so far.
pub trait Progress {
    fn update(&mut self, done: u64, total: u64);
    /// The run is over (passed or not): clear whatever was drawn.
    fn finish(&mut self) {}
}

/// No progress reports, for callers that do not show any.
pub struct Silent;

impl Progress for Silent {
    fn update(&mut self, _done: u64, _total: u64) {}
}

impl<F: FnMut(u64, u64)> Progress for F {
    fn update(&mut self, done: u64, total: u64) {
        self(done, total)
    }
}
