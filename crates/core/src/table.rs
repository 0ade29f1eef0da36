//! Plain column tables: the small results stages write (metrics per coder,
//! match pairs, loss curves) and the numbers behind every figure. Plain data
//! only; `saepipe_data::table` reads and writes them as Parquet.

/// One column's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// 64-bit floats (Parquet `double`).
    F64(Vec<f64>),
    /// 64-bit integers (Parquet `int64`).
    I64(Vec<i64>),
    /// 64-bit integers that may be missing (Parquet nullable `int64`; pandas
    /// reads them as `Int64` with `<NA>`), e.g. the training step of a model
    /// revision that names no step.
    OptI64(Vec<Option<i64>>),
    /// UTF-8 strings (Parquet `string`).
    Str(Vec<String>),
    /// Booleans (Parquet `boolean`).
    Bool(Vec<bool>),
}

impl Column {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::OptI64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// Whether the column has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Numeric view (integers and booleans as f64, missing integers as NaN);
    /// None for strings.
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        match self {
            Column::F64(v) => Some(v.clone()),
            Column::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Column::OptI64(v) => Some(v.iter().map(|x| x.map_or(f64::NAN, |x| x as f64)).collect()),
            Column::Bool(v) => Some(v.iter().map(|&x| x as u8 as f64).collect()),
            Column::Str(_) => None,
        }
    }

    /// The Parquet logical type name: `double`, `int64`, `string` or `boolean`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Column::F64(_) => "double",
            Column::I64(_) | Column::OptI64(_) => "int64",
            Column::Str(_) => "string",
            Column::Bool(_) => "boolean",
        }
    }
}

/// A column a table lacks, or has with another type than asked for.
#[derive(Debug, thiserror::Error)]
#[error("table has no {kind} column `{name}`")]
pub struct MissingColumn {
    /// The column asked for.
    pub name: String,
    /// What it was asked for as: `numeric` or `string`.
    pub kind: &'static str,
}

/// Named columns in order, in long format: every column has the same number of
/// rows (see [`Table::is_rectangular`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// (name, values), in column order.
    pub columns: Vec<(String, Column)>,
}

impl Table {
    /// The table with `col` appended under `name`.
    pub fn with(mut self, name: &str, col: Column) -> Table {
        self.columns.push((name.to_string(), col));
        self
    }

    /// The column called `name`.
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// A numeric column's values as f64 (integers and booleans converted).
    pub fn f64(&self, name: &str) -> Result<Vec<f64>, MissingColumn> {
        self.get(name).and_then(Column::as_f64).ok_or_else(|| MissingColumn { name: name.into(), kind: "numeric" })
    }

    /// A string column's values.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, MissingColumn> {
        match self.get(name) {
            Some(Column::Str(v)) => Ok(v.clone()),
            _ => Err(MissingColumn { name: name.into(), kind: "string" }),
        }
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of rows (of the first column; 0 without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// Whether every column has the same number of rows.
    pub fn is_rectangular(&self) -> bool {
        let n = self.rows();
        self.columns.iter().all(|(_, c)| c.len() == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access() {
        let t = Table::default()
            .with("name", Column::Str(vec!["a".into(), "b".into()]))
            .with("n", Column::I64(vec![1, 2]))
            .with("dead", Column::Bool(vec![true, false]));
        assert_eq!((t.rows(), t.is_rectangular()), (2, true));
        assert_eq!(t.column_names(), ["name", "n", "dead"]);
        assert_eq!(t.f64("n").unwrap(), [1.0, 2.0]);
        assert_eq!(t.f64("dead").unwrap(), [1.0, 0.0]);
        assert_eq!(t.strings("name").unwrap(), ["a", "b"]);
        let steps = Table::default().with("step", Column::OptI64(vec![Some(3), None]));
        assert!(matches!(steps.f64("step").unwrap()[..], [3.0, x] if x.is_nan()));
        assert_eq!(t.f64("name").unwrap_err().to_string(), "table has no numeric column `name`");
        assert_eq!(t.strings("n").unwrap_err().to_string(), "table has no string column `n`");
        assert!(!t.with("short", Column::F64(vec![0.5])).is_rectangular());
    }
}
