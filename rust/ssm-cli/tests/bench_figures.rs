//! The unit tests of the benchmarks' pure parts (medians, ratios, the transfer check, the
//! table, /proc parsing): a bench target has no test harness, so they run from here.

#[path = "../benches/common/figures.rs"]
mod figures;
