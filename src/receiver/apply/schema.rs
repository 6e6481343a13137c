//! The stores' catalogs: which columns each mapped table has in the mirror and in `cdr`,
//! read once at start after the migrations ran. Only these names are ever put into SQL.

use std::collections::HashMap;

/// Columns per table of one store (without `site_id`, `lsn`, `_overflow`).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tables: HashMap<String, Table>,
}

/// One table's columns: (name, data type) in table order, and (name, position) by name.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// (column, data type) in table order.
    pub columns: Vec<(String, String)>,
    /// (column, position in `columns`), sorted by name.
    pub by_name: Vec<(String, usize)>,
}

impl Table {
    /// The position of column `name` in table order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.by_name[i].1)
    }
}

/// Bookkeeping columns every replicated table has.
pub const BOOKKEEPING: [&str; 3] = ["site_id", "lsn", "_overflow"];

impl Catalog {
    /// Records `table`'s data columns, (name, data type) in table order.
    pub fn insert(&mut self, table: String, columns: Vec<(String, String)>) {
        let mut by_name: Vec<(String, usize)> = columns
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (c.clone(), i))
            .collect();
        by_name.sort();
        self.tables.insert(table, Table { columns, by_name });
    }

    /// The columns of `table` (none for a table the store does not have).
    pub fn table(&self, table: &str) -> &Table {
        static EMPTY: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
        self.tables
            .get(table)
            .unwrap_or_else(|| EMPTY.get_or_init(Table::default))
    }
}
