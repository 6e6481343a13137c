//! The stores' catalogs: which columns each mapped table has in the mirror and in `cdr`,
//! read once at start after the migrations ran. Only these names are ever put into SQL.

use std::collections::HashMap;

/// Columns per table of one store (without `site_id`, `lsn`, `_overflow`).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// table → (column, data type) in table order.
    pub tables: HashMap<String, Vec<(String, String)>>,
}

/// Bookkeeping columns every replicated table has.
pub const BOOKKEEPING: [&str; 3] = ["site_id", "lsn", "_overflow"];

impl Catalog {
    /// The data columns of `table`.
    pub fn columns(&self, table: &str) -> Vec<String> {
        self.tables
            .get(table)
            .map(|c| c.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// The data type of `table.column`.
    pub fn type_of(&self, table: &str, column: &str) -> Option<&str> {
        self.tables
            .get(table)?
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, t)| t.as_str())
    }
}
