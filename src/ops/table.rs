//! Small columnar tables that stages write as Parquet (metrics per coder, match
//! pairs, loss curves) and read back (for plotting).

use anyhow::{Context, Result, bail};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Numeric view (integers and booleans as f64).
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        match self {
            Column::F64(v) => Some(v.clone()),
            Column::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Column::Bool(v) => Some(v.iter().map(|&x| x as u8 as f64).collect()),
            Column::Str(_) => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    pub fn with(mut self, name: &str, col: Column) -> Table {
        self.columns.push((name.to_string(), col));
        self
    }
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    pub fn f64(&self, name: &str) -> Result<Vec<f64>> {
        self.get(name).and_then(Column::as_f64).with_context(|| format!("table has no numeric column `{name}`"))
    }
    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            Some(Column::Str(v)) => Ok(v.clone()),
            _ => bail!("table has no string column `{name}`"),
        }
    }
    pub fn rows(&self) -> usize {
        self.columns.first().map(|(_, c)| c.len()).unwrap_or(0)
    }

    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let n = self.rows();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (name, col) in &self.columns {
            if col.len() != n {
                bail!("column `{name}` has {} rows, expected {n}", col.len());
            }
            let (dt, arr): (DataType, ArrayRef) = match col {
                Column::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
                Column::I64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
                Column::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
                Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            };
            fields.push(Field::new(name, dt, false));
            arrays.push(arr);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let props = WriterProperties::builder().set_created_by("saepipe".into()).build();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        w.write(&batch)?;
        w.close()?;
        Ok(())
    }

    pub fn read_parquet(path: &Path) -> Result<Table> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
            .build()?;
        let mut table = Table::default();
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            for (i, field) in batch.schema().fields().iter().enumerate() {
                let a = batch.column(i);
                let col = match field.data_type() {
                    DataType::Float64 => {
                        Column::F64(a.as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec())
                    }
                    DataType::Int64 => Column::I64(a.as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()),
                    DataType::Utf8 => Column::Str(
                        a.as_any()
                            .downcast_ref::<StringArray>()
                            .unwrap()
                            .iter()
                            .map(|s| s.unwrap_or_default().to_string())
                            .collect(),
                    ),
                    DataType::Boolean => Column::Bool(
                        a.as_any().downcast_ref::<BooleanArray>().unwrap().iter().map(|b| b.unwrap_or(false)).collect(),
                    ),
                    _ => continue,
                };
                match table.columns.iter_mut().find(|(n, _)| n == field.name()) {
                    Some((_, existing)) => match (existing, col) {
                        (Column::F64(a), Column::F64(b)) => a.extend(b),
                        (Column::I64(a), Column::I64(b)) => a.extend(b),
                        (Column::Str(a), Column::Str(b)) => a.extend(b),
                        (Column::Bool(a), Column::Bool(b)) => a.extend(b),
                        _ => bail!("column `{}` changes type between row groups", field.name()),
                    },
                    None => table.columns.push((field.name().clone(), col)),
                }
            }
        }
        Ok(table)
    }
}
