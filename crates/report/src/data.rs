//! Columnar table of the numbers behind a figure (written by the caller as Parquet).

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parquet-ish logical type name: `double`, `int64` or `string`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ColumnData::F64(_) => "double",
            ColumnData::I64(_) => "int64",
            ColumnData::Str(_) => "string",
        }
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// A table in long format: every column has the same number of rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotData {
    pub columns: Vec<Column>,
}

impl PlotData {
    pub fn n_rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.data.len())
    }

    pub fn column(&self, name: &str) -> Option<&ColumnData> {
        self.columns.iter().find(|c| c.name == name).map(|c| &c.data)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub(crate) fn with_f64(mut self, name: &str, v: Vec<f64>) -> Self {
        self.columns.push(Column { name: name.into(), data: ColumnData::F64(v) });
        self
    }

    pub(crate) fn with_i64(mut self, name: &str, v: Vec<i64>) -> Self {
        self.columns.push(Column { name: name.into(), data: ColumnData::I64(v) });
        self
    }

    pub(crate) fn with_str(mut self, name: &str, v: Vec<String>) -> Self {
        self.columns.push(Column { name: name.into(), data: ColumnData::Str(v) });
        self
    }

    /// Every column has the same length (the builders guarantee it; checked in debug builds).
    pub fn is_rectangular(&self) -> bool {
        let n = self.n_rows();
        self.columns.iter().all(|c| c.data.len() == n)
    }
}
