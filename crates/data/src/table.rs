//! [`Table`]s as Parquet files: one row group, one column per table column
//! (`double`, `int64`, `string`, `boolean`; only [`Column::OptI64`] is
//! nullable), created by `saepipe`, with optional key-value metadata.

use crate::error::{DataError, Result, arrow, format, io, pq};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
pub use saepipe_core::table::{Column, Table};
use std::path::Path;
use std::sync::Arc;

/// Writes `table` to `path` (replacing it). Every column must have the table's
/// number of rows.
pub fn write_parquet(table: &Table, path: &Path) -> Result<()> {
    write_parquet_with_metadata(table, path, &[])
}

/// [`write_parquet`] with key-value metadata in the file footer (what pyarrow
/// shows as `schema.metadata` and DuckDB as `parquet_kv_metadata`).
pub fn write_parquet_with_metadata(table: &Table, path: &Path, metadata: &[(String, String)]) -> Result<()> {
    let n = table.rows();
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, col) in &table.columns {
        if col.len() != n {
            return Err(format(path, format!("column `{name}` has {} rows, expected {n}", col.len())));
        }
        let (dt, arr): (DataType, ArrayRef) = match col {
            Column::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::I64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Column::OptI64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Column::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
        };
        fields.push(Field::new(name, dt, matches!(col, Column::OptI64(_))));
        arrays.push(arr);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(arrow(path))?;
    let file = std::fs::File::create(path).map_err(io(path))?;
    let kv = metadata.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect::<Vec<_>>();
    let props = WriterProperties::builder()
        .set_created_by("saepipe".into())
        .set_key_value_metadata((!kv.is_empty()).then_some(kv))
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq(path))?;
    w.write(&batch).map_err(pq(path))?;
    w.close().map_err(pq(path))?;
    Ok(())
}

/// Reads a Parquet file's `double`, `int64`, `string` and `boolean` columns
/// (others are skipped), all row groups. A nullable `int64` column reads as
/// [`Column::OptI64`]; other nulls read as NaN, "" and false.
pub fn read_parquet(path: &Path) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq(path))?.build().map_err(pq(path))?;
    let mut table = Table::default();
    for batch in reader {
        let batch = batch.map_err(arrow(path))?;
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let a = batch.column(i);
            let col = match field.data_type() {
                DataType::Float64 => Column::F64(
                    a.as_any().downcast_ref::<Float64Array>().unwrap().iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
                ),
                DataType::Int64 if field.is_nullable() => {
                    Column::OptI64(a.as_any().downcast_ref::<Int64Array>().unwrap().iter().collect())
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
                    (Column::OptI64(a), Column::OptI64(b)) => a.extend(b),
                    (Column::Str(a), Column::Str(b)) => a.extend(b),
                    (Column::Bool(a), Column::Bool(b)) => a.extend(b),
                    _ => {
                        return Err(DataError::Format {
                            path: path.to_path_buf(),
                            message: format!("column `{}` changes type between row groups", field.name()),
                        });
                    }
                },
                None => table.columns.push((field.name().clone(), col)),
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_types_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let t = Table::default()
            .with("sae", Column::Str(vec!["a".into(), "b".into()]))
            .with("step", Column::I64(vec![0, 1000]))
            .with("similarity", Column::F64(vec![0.5, f64::NAN]))
            .with("dead", Column::Bool(vec![false, true]))
            .with("checkpoint", Column::OptI64(vec![Some(7), None]));
        let meta = [("saepipe.stage".to_string(), "train".to_string())];
        write_parquet_with_metadata(&t, &path, &meta).unwrap();
        let back = read_parquet(&path).unwrap();
        assert_eq!(back.get("checkpoint"), t.get("checkpoint"));
        let footer = parquet::file::reader::FileReader::metadata(
            &parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap(),
        )
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap();
        assert!(footer.iter().any(|kv| kv.key == "saepipe.stage" && kv.value.as_deref() == Some("train")));
        assert_eq!(back.column_names(), t.column_names());
        assert_eq!(back.get("sae"), t.get("sae"));
        assert_eq!(back.get("step"), t.get("step"));
        assert_eq!(back.get("dead"), t.get("dead"));
        assert!(matches!(back.get("similarity"), Some(Column::F64(v)) if v[0] == 0.5 && v[1].is_nan()));

        let ragged = t.with("short", Column::F64(vec![1.0]));
        let e = write_parquet(&ragged, &path).unwrap_err().to_string();
        assert!(e.contains("column `short` has 1 rows, expected 2"), "{e}");
        std::fs::write(&path, b"not parquet").unwrap();
        let e = read_parquet(&path).unwrap_err().to_string();
        assert!(e.contains("not a readable Parquet file"), "{e}");
    }
}
