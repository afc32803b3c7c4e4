//! The read model's tables by size, read from its closed file with redb's
//! own statistics: what each table takes, and what the attempt indexes take
//! per attempt.

use std::path::Path;

/// Each table of the model: its name, entries, bytes of pages, bytes of keys
/// and values (redb's own count, read from the closed file).
pub fn table_sizes(model: &Path) -> Vec<(String, u64, u64, u64)> {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    let db = redb::ReadOnlyDatabase::open(model).expect("the model opens read-only");
    let txn = db.begin_read().expect("a read transaction");
    let mut tables: Vec<_> = txn
        .list_tables()
        .expect("the model's tables")
        .map(|handle| {
            let name = handle.name().to_owned();
            let table = txn.open_untyped_table(handle).expect("a table");
            let stats = table.stats().expect("table stats");
            let pages = (stats.leaf_pages() + stats.branch_pages()) * 4096;
            (name, table.len().unwrap_or(0), pages, stats.stored_bytes())
        })
        .collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.2));
    tables
}

/// The model's tables by size, and what the attempt indexes take per attempt.
pub fn report_tables(tables: &[(String, u64, u64, u64)], attempts: u64) {
    println!("\nthe model's tables (4 KiB pages):");
    for (name, entries, pages, stored) in tables {
        println!(
            "  {name:<32} {entries:>11} entries {:>8} MB of pages {:>8} MB stored ({:.0} bytes of pages per attempt)",
            pages / 1_000_000,
            stored / 1_000_000,
            *pages as f64 / attempts as f64
        );
    }
    let all: u64 = tables.iter().map(|t| t.2).sum();
    let indexes: u64 = tables
        .iter()
        .filter(|t| t.0.starts_with("attempts_by_"))
        .map(|t| t.2)
        .sum();
    println!(
        "pages of every table: {:.0} bytes per attempt; the attempt indexes {:.0} of them ({:.0}%); without them {:.0}",
        all as f64 / attempts as f64,
        indexes as f64 / attempts as f64,
        100.0 * indexes as f64 / all as f64,
        (all - indexes) as f64 / attempts as f64
    );
}
