//! The mapping: which source tables are replicated, their primary keys, how a row finds its
//! visit (patient, program, day), and which columns never leave the facility.
//!
//! Invariant: every table and column name in a loaded `Mapping` is a plain identifier, so the
//! names that reach SQL from here are safe to quote; names from the network are only ever
//! looked up in it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::is_identifier;

/// A mapping file problem.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("cannot read mapping {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for a mapping.
    #[error("mapping {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A semantic problem.
    #[error("mapping: {0}")]
    Invalid(String),
}

/// What a table's rows are to a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Clinical rows of a visit (encounters, obs, orders).
    Visit,
    /// Program enrolment and states.
    Program,
    /// Person rows; ship in the patient's visit of the day they changed.
    Demographics,
    /// Metadata; ships under patient 0, program 0.
    Reference,
}

/// Where a row's visit day comes from when it has a `via` lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DateFrom {
    /// The looked-up row's day (obs take their encounter's day).
    #[default]
    Via,
    /// This row's own `date` column.
    Own,
}

/// A lookup through another table: this row's `column` is the primary key of `table`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Via {
    /// Column of this row holding the other row's key.
    pub column: String,
    /// The other table (mapped, single-column primary key).
    pub table: String,
}

/// One mapped table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// Primary key columns, in order.
    pub pk: Vec<String>,
    /// What the rows are to a visit.
    pub role: Role,
    /// Column giving the patient.
    #[serde(default)]
    pub patient: Option<String>,
    /// Column giving the program.
    #[serde(default)]
    pub program: Option<String>,
    /// Column giving the visit day (DATE or DATETIME).
    #[serde(default)]
    pub date: Option<String>,
    /// Lookup through another table.
    #[serde(default)]
    pub via: Option<Via>,
    /// Where the day comes from when `via` resolves.
    #[serde(default)]
    pub date_from: DateFrom,
    /// Columns that are never shipped.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl TableMapping {
    /// Whether `column` may be shipped.
    pub fn ships_column(&self, column: &str) -> bool {
        !self.exclude.iter().any(|c| c == column)
    }
}

/// The whole mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Version of the mapping format.
    pub schema_version: u32,
    /// Program of rows that name none.
    pub default_program_id: i64,
    /// Encounter types whose commit makes a visit ready (after the settle delay).
    #[serde(default)]
    pub closing_encounter_types: Vec<i64>,
    /// Table carrying encounter types.
    pub encounter_table: String,
    /// Its encounter type column.
    pub encounter_type_column: String,
    /// MySQL mirror DDL, relative to the mapping file.
    pub mirror_schema: PathBuf,
    /// PostgreSQL cdr DDL, relative to the mapping file.
    pub cdr_schema: PathBuf,
    /// PostgreSQL IDS tables and their definitions, relative to the mapping file.
    pub ids_tables: PathBuf,
    /// PostgreSQL IDS report functions, relative to the mapping file (`ids-reports.sql` when
    /// the mapping names none).
    #[serde(default = "default_ids_reports")]
    pub ids_reports: PathBuf,
    /// The tables, by name.
    pub tables: BTreeMap<String, TableMapping>,
    /// Directory of the mapping file (set by `load`).
    #[serde(skip)]
    pub dir: PathBuf,
}

fn default_ids_reports() -> PathBuf {
    PathBuf::from("ids-reports.sql")
}

impl Mapping {
    /// Reads and validates a mapping file.
    pub fn load(path: &Path) -> Result<Self, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut mapping: Mapping = toml::from_str(&text).map_err(|e| MappingError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        mapping.dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        mapping.validate()?;
        Ok(mapping)
    }

    /// The mapping of `table`, if it is mapped.
    pub fn table(&self, table: &str) -> Option<&TableMapping> {
        self.tables.get(table)
    }

    /// A file named by the mapping, resolved beside it, read to a string.
    pub fn read_beside(&self, name: &Path) -> Result<String, MappingError> {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| MappingError::Read { path, source })
    }

    fn validate(&self) -> Result<(), MappingError> {
        let bad = |m: String| Err(MappingError::Invalid(m));
        if self.schema_version != 1 {
            return bad(format!(
                "schema_version {} is not supported (1 is)",
                self.schema_version
            ));
        }
        if !self.tables.contains_key(&self.encounter_table) {
            return bad(format!(
                "encounter_table {} is not mapped",
                self.encounter_table
            ));
        }
        for (name, t) in &self.tables {
            let mut names: Vec<&String> = vec![name];
            names.extend(&t.pk);
            names.extend(t.patient.iter().chain(&t.program).chain(&t.date));
            names.extend(&t.exclude);
            if let Some(via) = &t.via {
                names.push(&via.column);
                names.push(&via.table);
                match self.tables.get(&via.table) {
                    None => return bad(format!("{name}.via names unmapped table {}", via.table)),
                    Some(target) if target.pk.len() != 1 => {
                        return bad(format!(
                            "{name}.via target {} needs a one-column key",
                            via.table
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(n) = names.iter().find(|n| !is_identifier(n)) {
                return bad(format!("{name}: {n:?} is not a plain identifier"));
            }
            if t.pk.is_empty() {
                return bad(format!("{name}.pk is empty"));
            }
            let excluded: HashSet<&String> = t.exclude.iter().collect();
            if t.pk.iter().any(|c| excluded.contains(c)) {
                return bad(format!("{name}: a primary key column is excluded"));
            }
            let needs_patient = matches!(t.role, Role::Visit | Role::Program | Role::Demographics);
            if needs_patient && t.patient.is_none() && t.via.is_none() {
                return bad(format!(
                    "{name}: a {:?} table needs `patient` or `via`",
                    t.role
                ));
            }
            if t.date_from == DateFrom::Own && t.date.is_none() {
                return bad(format!("{name}: date_from = \"own\" needs `date`"));
            }
        }
        Ok(())
    }
}

/// Splits one of the SQL files beside the mapping into statements: at semicolons outside
/// quotes ('...', "...", and PostgreSQL dollar quotes such as function bodies) and outside
/// `--` comments, which are dropped.
pub fn split_sql(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.char_indices().peekable();
    let mut dollar: Option<String> = None;
    while let Some((i, c)) = chars.next() {
        if let Some(tag) = &dollar {
            if sql[i..].starts_with(tag.as_str()) {
                current.push_str(tag);
                for _ in 1..tag.len() {
                    chars.next();
                }
                dollar = None;
            } else {
                current.push(c);
            }
            continue;
        }
        match c {
            '-' if sql[i..].starts_with("--") => {
                while chars.peek().is_some_and(|(_, c)| *c != '\n') {
                    chars.next();
                }
            }
            '\'' | '"' => {
                current.push(c);
                for (_, d) in chars.by_ref() {
                    current.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '$' => {
                let tag_len = sql[i + 1..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(0);
                if sql[i + 1 + tag_len..].starts_with('$') {
                    let tag = sql[i..i + tag_len + 2].to_owned();
                    current.push_str(&tag);
                    for _ in 0..tag_len + 1 {
                        chars.next();
                    }
                    dollar = Some(tag);
                } else {
                    current.push(c);
                }
            }
            ';' => {
                let statement = current.trim();
                if !statement.is_empty() {
                    out.push(statement.to_owned());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    let statement = current.trim();
    if !statement.is_empty() {
        out.push(statement.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_splits_outside_quotes_and_function_bodies() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x text DEFAULT ';');\n\
                   CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$;\n\
                   CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\nSELECT $1";
        let parts = split_sql(sql);
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!(parts[0], "CREATE TABLE a (x text DEFAULT ';')");
        assert!(
            parts[1].ends_with("$$ BEGIN PERFORM 1; END $$"),
            "{}",
            parts[1]
        );
        assert!(
            parts[2].ends_with("$body$ SELECT 1; $body$"),
            "{}",
            parts[2]
        );
        assert_eq!(parts[3], "SELECT $1");
    }

    use super::*;

    #[test]
    fn shipped_mapping_loads() {
        let m = Mapping::load(Path::new("mappings/openmrs.toml")).unwrap();
        assert!(m.table("obs").unwrap().via.is_some());
        assert!(!m.table("users").unwrap().ships_column("password"));
        assert!(m.table("users").unwrap().ships_column("username"));
        assert_eq!(m.closing_encounter_types, vec![54, 7]);
    }

    #[test]
    fn rejects_unsafe_names() {
        let text = r#"
            schema_version = 1
            default_program_id = 1
            encounter_table = "encounter"
            encounter_type_column = "encounter_type"
            mirror_schema = "a"
            cdr_schema = "b"
            ids_tables = "c"
            [tables.encounter]
            pk = ["encounter_id"]
            role = "visit"
            patient = "patient_id; DROP TABLE x"
        "#;
        let m: Mapping = toml::from_str(text).unwrap();
        assert!(m.validate().is_err());
    }
}
